"""The Home Assistant entities nairbus declares, as data: one table per kind of device.

A fusion agent announces three kinds of device with device-based MQTT discovery (one retained config per device,
its entities under ``cmps``, https://www.home-assistant.io/integrations/mqtt/#device-discovery-payload):

- a **stream** (a camera's results): the classification as an ``event`` entity (one event per label change, or
  per decided frame), the current label as an enum ``sensor`` (published on change and on a heartbeat, with
  ``expire_after`` so a stalled camera goes unknown), and numeric ``sensor`` entities for confidence, latency and
  frames per second (rate-limited);
- the **fusion agent** (the hub): its connectivity and the figures of its stats;
- each **sensor agent** (a device): its connectivity, and the controls its command topic takes;
- each **capture agent** (frames for variant-parallel sensors): its connectivity.

Each row says where its state comes from (``source``: a key of :data:`SOURCES`, resolved to a topic by the
discovery) and the Home Assistant fields beside it. ``{labels}`` in a field stands for the stream's label list.
A new entity is one row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Source = Literal["result", "events", "state", "metrics", "fusion_status", "fusion_stats", "sensor_status",
                 "sensor_controls", "none"]
LABELS: Final = "{labels}"
"""Placeholder replaced by the stream's labels (enum options, event types)."""


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One Home Assistant entity of a device: its key (the last part of its unique id), platform, name, state
    source and the platform's own fields."""

    key: str
    platform: Literal["event", "sensor", "binary_sensor", "number", "switch", "button"]
    name: str
    source: Source
    fields: Mapping[str, Any] = field(default_factory=dict)
    diagnostic: bool = False
    command: bool = False
    """The entity sends commands to the sensor's command topic (``command_topic`` is filled in)."""


def when_json(expression: str) -> str:
    """A value template that renders ``expression`` from a JSON payload and nothing from an empty one: a sensor
    that ends clears its retained status and controls (an empty payload, no ``value_json``) before fusion's removal
    of its entities reaches Home Assistant, which would log a template error per entity; an empty state is ignored."""
    return "{{ (" + expression + ") if value_json is defined else '' }}"


STATE_JSON: Final = when_json("value_json.state")

STREAM_ENTITIES: Final[tuple[EntitySpec, ...]] = (
    EntitySpec("classification", "event", "Classification", "events", {
        "event_types": LABELS,
        # Confidence to a tenth and no frame id: Home Assistant's recorder shares an attributes row between events
        # with equal attributes, so at most 11 per label are ever written instead of one per event.
        "value_template": "{{ {'event_type': value_json.label, 'confidence': value_json.confidence | round(1)} "
                          "| tojson }}",
        "icon": "mdi:label-outline",
    }),
    EntitySpec("label", "sensor", "Label", "state", {
        "device_class": "enum",
        "options": LABELS,
        "value_template": "{{ value_json.label }}",
        "icon": "mdi:label",
    }),
    EntitySpec("confidence", "sensor", "Confidence", "metrics", {
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "suggested_display_precision": 0,
        "value_template": "{{ value_json.confidence_pct }}",
        "icon": "mdi:percent-circle-outline",
    }),
    EntitySpec("latency", "sensor", "Latency", "metrics", {
        "device_class": "duration",
        "unit_of_measurement": "ms",
        "state_class": "measurement",
        "suggested_display_precision": 0,
        "value_template": "{{ value_json.latency_ms }}",
    }, diagnostic=True),
    EntitySpec("fps", "sensor", "Frames per second", "metrics", {
        "unit_of_measurement": "fps",
        "state_class": "measurement",
        "suggested_display_precision": 1,
        "value_template": "{{ value_json.fps }}",
        "icon": "mdi:camera-timer",
    }, diagnostic=True),
)
"""Per result stream."""

FUSION_ENTITIES: Final[tuple[EntitySpec, ...]] = (
    EntitySpec("connectivity", "binary_sensor", "Connected", "fusion_status", {
        "device_class": "connectivity", "value_template": STATE_JSON, "payload_on": "online",
        "payload_off": "offline",
    }, diagnostic=True),
    EntitySpec("frames_decided", "sensor", "Frames decided", "fusion_stats", {
        "state_class": "total_increasing", "value_template": "{{ value_json.frames_decided }}",
        "icon": "mdi:counter",
    }, diagnostic=True),
    EntitySpec("latency_p99", "sensor", "Latency p99", "fusion_stats", {
        "device_class": "duration", "unit_of_measurement": "ms", "state_class": "measurement",
        "suggested_display_precision": 0,
        "value_template": "{{ value_json.latency_p99_ms | round(0) if value_json.latency_p99_ms is not none "
                          "else 'None' }}",
    }, diagnostic=True),
    EntitySpec("rejected", "sensor", "Rejected messages", "fusion_stats", {
        "state_class": "total_increasing", "value_template": "{{ value_json.rejected.values() | sum }}",
        "icon": "mdi:shield-alert-outline",
    }, diagnostic=True),
)
"""Per fusion agent (the hub device every stream and sensor hangs off with ``via_device``)."""

SENSOR_ENTITIES: Final[tuple[EntitySpec, ...]] = (
    EntitySpec("connectivity", "binary_sensor", "Connected", "sensor_status", {
        "device_class": "connectivity", "value_template": STATE_JSON, "payload_on": "online",
        "payload_off": "offline",
    }, diagnostic=True),
    # No budget set (the link decides) shows as the largest one; "None" is Home Assistant's "unknown" for a sensor.
    EntitySpec("budget", "number", "Budget", "sensor_controls", {
        "min": 16, "max": 65000, "step": 1, "mode": "box", "unit_of_measurement": "B",
        "value_template": when_json("value_json.budget_bytes if value_json.budget_bytes is not none else 65000"),
        "command_template": '{"budget_bytes": {{ value | int }}}', "entity_category": "config",
        "icon": "mdi:network-strength-2",
    }, command=True),
    EntitySpec("deadline", "number", "Deadline", "sensor_controls", {
        "min": 10, "max": 60000, "step": 10, "mode": "box", "unit_of_measurement": "ms",
        "value_template": when_json("value_json.deadline_ms"), "command_template": '{"deadline_ms": {{ value }}}',
        "entity_category": "config", "icon": "mdi:timer-outline",
    }, command=True),
    EntitySpec("fps_limit", "number", "Frame rate", "sensor_controls", {
        "min": 0, "max": 100, "step": 0.5, "mode": "box", "unit_of_measurement": "fps",
        "value_template": when_json("value_json.fps if value_json.fps is not none else 0"),
        "command_template": '{"fps": {{ value | float(0) }}}', "entity_category": "config",
    }, command=True),
    EntitySpec("paused", "switch", "Paused", "sensor_controls", {
        "value_template": when_json("'ON' if value_json.paused else 'OFF'"), "state_on": "ON", "state_off": "OFF",
        "payload_on": '{"paused": true}', "payload_off": '{"paused": false}', "icon": "mdi:pause-circle-outline",
    }, command=True),
)
"""Per sensor agent."""

CAPTURE_ENTITIES: Final[tuple[EntitySpec, ...]] = SENSOR_ENTITIES[:1]
"""Per capture agent (it takes no commands): its connectivity."""
