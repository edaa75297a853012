"""Home Assistant MQTT discovery for nairbus result streams.

For each result stream a fusion agent serves, one retained discovery config makes an MQTT ``sensor`` entity appear in
Home Assistant (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery):

- topic ``<prefix>/sensor/nairbus-<fusion_id>/<object_id>/config``, ``object_id`` = ``<root>_<site>_<stream>``
  (``/`` in the root becomes ``_``);
- state = the result's ``label`` (``value_template`` on the result topic), attributes = confidence, class index,
  top-k, fraction of the IR received and more (``json_attributes_topic`` + ``json_attributes_template``);
- availability from the fusion agent's retained status and each of the stream's sensors' (``availability_mode:
  all``): the entity is unavailable as soon as either side is offline;
- a ``device`` block per stream and the ``origin`` (``o``) block naming nairbus.

The configs follow Zigbee2MQTT's contract: published (retained, QoS 1) only when they differ from what the broker
holds; at start, after a short settle time for the retained configs under this agent's node id to arrive, those of
streams that no longer exist are cleared with an empty retained payload, and a stream that disappears later (its
sensors' births cleared) is cleared the same way. When Home Assistant announces itself (``<prefix>/status`` =
``online``, its birth message) the last state of every stream is re-published after a random delay, so a restarted
Home Assistant shows states at once without a flood from every device at the same instant.

The builders (:func:`config_topic`, :func:`stream_config`, ...) are pure functions; :class:`HomeAssistantDiscovery`
is the small stateful publisher a fusion agent drives from its worker loop.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Final, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.runtime.logging import get_logger
from agents.runtime.mqtt import Communicator, InboundMessage
from schemas import CONTENT_TYPE_JSON
from schemas.topics import TopicTree

log = get_logger("nairbus.discovery")

COMPONENT: Final = "sensor"
ORIGIN_URL: Final = "https://github.com/nairbus/nairbus"
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")
_PREFIX = re.compile(r"[^#+\s]+")

ATTRIBUTES_TEMPLATE: Final = (
    "{{ {'confidence': value_json.confidence, 'class_index': value_json.class_index, 'topk': value_json.topk, "
    "'fraction_received': value_json.fraction_received, 'complete': value_json.complete, "
    "'frame_id': value_json.frame_id, 'latency_ms': value_json.latency_ms, 'sensors': value_json.sensors, "
    "'fusion_id': value_json.fusion_id} | tojson }}"
)
"""Picks the entity attributes out of a :class:`schemas.Result` (Home Assistant renders it with Jinja)."""


def _version() -> str:
    try:
        return metadata.version("nairbus")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class DiscoverySettings(BaseModel):
    """Home Assistant MQTT discovery, done by the fusion agent (``[discovery]`` in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    prefix: str = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration setting of the same name)."""
    settle_s: float = Field(default=2.0, ge=0)
    """After connecting, wait this long for the retained configs on the broker before publishing or clearing any."""
    announce_delay_s: tuple[float, float] = (1.0, 5.0)
    """Re-publish states this many seconds (uniformly random in the range) after Home Assistant comes online."""

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value) or value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError(f"discovery prefix {value!r} must be a topic without wildcards or empty levels")
        return value

    @model_validator(mode="after")
    def _check_delay(self) -> Self:
        low, high = self.announce_delay_s
        if not 0 <= low <= high:
            raise ValueError("announce_delay_s must be (low, high) with 0 <= low <= high")
        return self


# ---- pure builders ---------------------------------------------------------------------------------------------


def node_id(fusion_id: str) -> str:
    """The discovery node id of a fusion agent: ``nairbus-<fusion_id>`` (the broker ACL grants exactly this)."""
    return f"nairbus-{fusion_id}"


def object_prefix(topics: TopicTree) -> str:
    """``<root>_<site>_``: every object id of this deployment and site starts with it."""
    return _NOT_ID.sub("_", f"{topics.root}_{topics.site}_")


def object_id(topics: TopicTree, stream_id: str) -> str:
    """The discovery object id of a stream: ``<root>_<site>_<stream>`` with ``/`` replaced by ``_``."""
    return object_prefix(topics) + stream_id


def unique_id(topics: TopicTree, stream_id: str) -> str:
    """Home Assistant's unique id of a stream's entity (stable across fusion agents and restarts)."""
    return f"nairbus_{object_id(topics, stream_id)}"


def config_topic(prefix: str, fusion_id: str, topics: TopicTree, stream_id: str) -> str:
    """``<prefix>/sensor/nairbus-<fusion_id>/<object_id>/config``."""
    return f"{prefix}/{COMPONENT}/{node_id(fusion_id)}/{object_id(topics, stream_id)}/config"


def stream_config(topics: TopicTree, stream_id: str, fusion_id: str, sensor_ids: Sequence[str],
                  version: str | None = None) -> dict[str, Any]:
    """The discovery config of one result stream (a Home Assistant MQTT ``sensor``)."""
    version = version or _version()
    result_topic = topics.result(stream_id)
    availability = [{"topic": topics.fusion_status(fusion_id), "value_template": "{{ value_json.state }}"}]
    availability += [{"topic": topics.sensor_status(s), "value_template": "{{ value_json.state }}"}
                     for s in sorted(sensor_ids)]
    uid = unique_id(topics, stream_id)
    return {
        "name": "Classification",
        "unique_id": uid,
        "state_topic": result_topic,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": result_topic,
        "json_attributes_template": ATTRIBUTES_TEMPLATE,
        "availability": availability,
        "availability_mode": "all",
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:label-outline",
        "qos": 0,
        "device": {
            "identifiers": [uid],
            "name": f"nairbus {stream_id}",
            "manufacturer": "nairbus",
            "model": "NAIR split-computing result stream",
            "sw_version": version,
        },
        "o": {"name": "nairbus", "sw": version, "url": ORIGIN_URL},
    }


def encode_config(config: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes (sorted keys), so an unchanged config compares equal byte for byte."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


class StreamSource(Protocol):
    """What the publisher needs to know of a sensor: its id and the stream its frames feed."""

    @property
    def sensor_id(self) -> str: ...

    @property
    def stream_id(self) -> str: ...


def streams_of(sensors: Iterable[StreamSource]) -> dict[str, list[str]]:
    """Stream id -> sorted ids of the sensors that feed it."""
    out: dict[str, list[str]] = {}
    for sensor in sensors:
        out.setdefault(sensor.stream_id, []).append(sensor.sensor_id)
    return {stream: sorted(ids) for stream, ids in out.items()}


# ---- publisher -------------------------------------------------------------------------------------------------


@dataclass
class HomeAssistantDiscovery:
    """Keeps a fusion agent's discovery configs on the broker in step with the streams it serves.

    Call :meth:`attach` before the communicator starts, feed every inbound message to :meth:`handle` (it returns
    ``True`` for the messages it consumed), call :meth:`update` from the worker loop and :meth:`note_result` for
    every result published.
    """

    comm: Communicator
    topics: TopicTree
    fusion_id: str
    settings: DiscoverySettings = field(default_factory=DiscoverySettings)
    rng: random.Random = field(default_factory=random.Random)
    on_broker: dict[str, bytes] = field(default_factory=dict)
    """Our node's retained config topics as the broker holds them (learned at start, then kept up to date)."""
    last_state: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"published": 0, "cleared": 0, "announced": 0})
    _settle_until: float | None = None
    _announce_at: float | None = None

    @property
    def node_filter(self) -> str:
        """Subscription filter for this agent's configs."""
        return f"{self.settings.prefix}/{COMPONENT}/{node_id(self.fusion_id)}/+/config"

    @property
    def status_topic(self) -> str:
        """Home Assistant's birth/will topic."""
        return f"{self.settings.prefix}/status"

    def attach(self) -> None:
        """Register the subscriptions (made on every connect by the communicator)."""
        # QoS 0, so the retained configs come again on a resumed persistent session (see Communicator.subscribe).
        self.comm.subscribe(self.node_filter, qos=0)
        self.comm.subscribe(self.status_topic, qos=0)

    def _ours(self, topic: str) -> bool:
        head = f"{self.settings.prefix}/{COMPONENT}/{node_id(self.fusion_id)}/"
        if not (topic.startswith(head) and topic.endswith("/config")):
            return False
        obj = topic[len(head) : -len("/config")]
        return "/" not in obj and obj.startswith(object_prefix(self.topics))

    def handle(self, message: InboundMessage, now: float) -> bool:
        """Consume discovery and Home Assistant status messages; ``False`` for anything else."""
        if message.topic == self.status_topic:
            state = message.payload.decode(errors="replace").strip()
            if state == "online" and not message.retain:
                low, high = self.settings.announce_delay_s
                self._announce_at = now + self.rng.uniform(low, high)
                log.info("discovery.ha_online", announce_in_s=round(self._announce_at - now, 2))
            return True
        if message.topic.startswith(f"{self.settings.prefix}/{COMPONENT}/{node_id(self.fusion_id)}/"):
            if self._ours(message.topic):
                if message.payload:
                    self.on_broker[message.topic] = message.payload
                else:
                    self.on_broker.pop(message.topic, None)
            return True
        return False

    def note_result(self, stream_id: str, payload: bytes) -> None:
        """Remember a stream's latest result, to re-announce it when Home Assistant restarts."""
        self.last_state[stream_id] = payload

    def update(self, streams: Mapping[str, Sequence[str]], now: float) -> None:
        """Publish changed configs, clear those of vanished streams, and re-announce states when due.

        ``streams`` maps each stream id to the sensor ids feeding it. Nothing is published during the settle time
        after the first call, while the broker's retained configs are still arriving.
        """
        if self._settle_until is None:
            self._settle_until = now + self.settings.settle_s
        if now < self._settle_until:
            return
        desired = {
            config_topic(self.settings.prefix, self.fusion_id, self.topics, stream): encode_config(
                stream_config(self.topics, stream, self.fusion_id, sensors))
            for stream, sensors in streams.items()
        }
        for topic, payload in desired.items():
            if self.on_broker.get(topic) == payload:
                continue  # the broker holds exactly this config already
            if self.comm.publish(topic, payload, qos=1, retain=True, content_type=CONTENT_TYPE_JSON):
                self.on_broker[topic] = payload
                self.counts["published"] += 1
                log.info("discovery.published", topic=topic)
        for topic in [t for t in self.on_broker if t not in desired]:
            if self.comm.publish(topic, b"", qos=1, retain=True, content_type=CONTENT_TYPE_JSON):
                del self.on_broker[topic]
                self.counts["cleared"] += 1
                log.info("discovery.cleared", topic=topic)
        for stream in [s for s in self.last_state if s not in streams]:
            del self.last_state[stream]
        if self._announce_at is not None and now >= self._announce_at:
            self._announce_at = None
            for stream, payload in self.last_state.items():
                self.comm.publish(self.topics.result(stream), payload, qos=0, content_type=CONTENT_TYPE_JSON)
                self.counts["announced"] += 1
            log.info("discovery.states_announced", streams=len(self.last_state))
