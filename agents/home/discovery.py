"""Home Assistant MQTT discovery, device-based, for both fusion modes.

A fusion agent announces one Home Assistant *device* per result stream, one for itself (the hub) and one per sensor
agent, each with one retained config on ``<prefix>/device/nairbus-<fusion_id>/<object_id>/config`` whose ``cmps``
lists its entities (the tables of :mod:`nairbus.agents.home.entities`); streams and sensors hang off the hub with
``via_device``. What the entities read:

- the ``event`` entity reads ``…/streams/<id>/events``, one event per label change (the default), or with
  ``events = "frame"`` the result topic, one event per decided frame carrying its label alone;
- the enum label ``sensor`` reads ``…/streams/<id>/state`` (retained :class:`schemas.StreamState`), published only
  when the label changes, at most every ``label_interval_s`` (the latest label, at most that late), and on the first
  result ``heartbeat_s`` after the last publication -- never by a timer alone --, with ``expire_after`` so a stalled
  or paused camera's label goes unavailable at most ``expire_after_s + label_interval_s`` after its last decided frame
  instead of staying current; Home Assistant's recorder writes a row only when the label changes;
- the numeric sensors read ``…/streams/<id>/metrics`` (retained :class:`schemas.StreamMetrics`), published at most
  every ``metrics_interval_s``; a silent stream's once, with 0 fps and no confidence or latency;
- availability: the fusion agent's status and ``…/streams/<id>/availability``, which goes ``offline`` only once every
  sensor of the stream has been offline for ``offline_grace_s`` (longer than the deadline), so the results of a
  stream's last frames land before its entities turn unavailable.

Configs are published (retained, QoS 1) only when they differ from what the broker holds; after a short settle time
at start the configs of streams that no longer exist are cleared, and so are the per-entity configs of nairbus
versions before device-based discovery. When Home Assistant announces itself (``<prefix>/status`` = ``online``) the
configs and the latest *states* are re-published after a random delay, at most once per ``announce_min_interval_s``
— never a copy of a result on the result topic.

The builders are pure functions; :class:`HomeAssistantDiscovery` is the small stateful publisher a fusion agent
drives from its worker loop.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Final, Protocol

from nairbus.agents.home.entities import (
    CAPTURE_ENTITIES,
    FUSION_ENTITIES,
    LABELS,
    SENSOR_ENTITIES,
    STATE_JSON,
    STREAM_ENTITIES,
    EntitySpec,
)
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.fusion_base import FusionBase
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.settings import DiscoverySettings
from nairbus.schemas import CONTENT_TYPE_JSON, Result, StreamMetrics, StreamState
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree

log = get_logger("nairbus.discovery")

COMPONENT: Final = "device"
LEGACY_COMPONENT: Final = "sensor"
"""Per-entity configs of nairbus before device-based discovery (cleared when found)."""
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


def _version() -> str:
    try:
        return metadata.version("nairbus")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# ---- pure builders ---------------------------------------------------------------------------------------------


def node_id(fusion_id: str) -> str:
    """The discovery node id of a fusion agent: ``nairbus-<fusion_id>`` (the broker ACL grants exactly this)."""
    return f"nairbus-{fusion_id}"


def id_base(topics: TopicTree) -> str:
    """``nairbus_<site>`` (``nairbus_<root>_<site>`` for another topic root): every id of this site starts with it."""
    root = "" if topics.root == "nairbus" else _NOT_ID.sub("_", topics.root) + "_"
    return f"nairbus_{root}{topics.site}"


def stream_object_id(topics: TopicTree, stream_id: str) -> str:
    """Object id (and device identifier) of a stream's device."""
    return f"{id_base(topics)}_{stream_id}"


def fusion_object_id(topics: TopicTree, fusion_id: str) -> str:
    """Object id (and device identifier) of a fusion agent's device."""
    return f"{id_base(topics)}_fusion_{fusion_id}"


def sensor_object_id(topics: TopicTree, sensor_id: str) -> str:
    """Object id (and device identifier) of a sensor agent's device."""
    return f"{id_base(topics)}_sensor_{sensor_id}"


def config_topic(prefix: str, fusion_id: str, object_id: str) -> str:
    """``<prefix>/device/nairbus-<fusion_id>/<object_id>/config``."""
    return f"{prefix}/{COMPONENT}/{node_id(fusion_id)}/{object_id}/config"


FRAME_EVENT_JSON = "{{ {'event_type': value_json.label} | tojson }}"
"""A per-frame event carries its label alone: attributes that change every frame (confidence, frame id) would make
Home Assistant's recorder write a new attributes row per frame."""


def _source_topic(spec: EntitySpec, topics: TopicTree, ident: str, fusion_id: str, events: str) -> str | None:
    if spec.source == "result":
        return topics.result(ident)
    if spec.source == "events":
        return topics.result(ident) if events == "frame" else topics.stream(ident, "events")
    if spec.source in ("state", "metrics"):
        return topics.stream(ident, spec.source)
    if spec.source == "fusion_status":
        return topics.fusion_status(fusion_id)
    if spec.source == "fusion_stats":
        return topics.fusion_stats(fusion_id)
    if spec.source == "sensor_status":
        return topics.sensor_status(ident)
    if spec.source == "sensor_controls":
        return topics.sensor_controls(ident)
    return None


def entity_slug(unique_id: str) -> str:
    """The object id part of an entity id for a unique id: lower case, every character outside ``[a-z0-9_]`` an
    underscore (``nairbus_home_sensor_cam-01_budget`` -> ``nairbus_home_sensor_cam_01_budget``), as Home Assistant
    requires of entity ids."""
    return re.sub(r"[^a-z0-9_]", "_", unique_id.lower())


def _component(spec: EntitySpec, object_id: str, state_topic: str | None, labels: Sequence[str],
               command_topic: str | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    uid = f"{object_id}_{spec.key}"
    out: dict[str, Any] = {"p": spec.platform, "unique_id": uid, "name": spec.name,
                           "default_entity_id": f"{spec.platform}.{entity_slug(uid)}"}
    if state_topic is not None:
        out["state_topic"] = state_topic
    for key, value in spec.fields.items():
        out[key] = list(labels) if value == LABELS else value
    if spec.diagnostic:
        out["entity_category"] = "diagnostic"
    if spec.command and command_topic is not None:
        out["command_topic"] = command_topic
    out.update(extra)
    return out


def _availability(*topics_: str) -> dict[str, Any]:
    return {"availability": [{"topic": t, "value_template": STATE_JSON} for t in topics_],
            "availability_mode": "all", "payload_available": "online", "payload_not_available": "offline"}


def _device(object_id: str, name: str, model: str, version: str, via: str | None) -> dict[str, Any]:
    device: dict[str, Any] = {"identifiers": [object_id], "name": name, "manufacturer": "nairbus", "model": model,
                              "sw_version": version}
    if via is not None:
        device["via_device"] = via
    return device


def _origin(version: str) -> dict[str, Any]:
    return {"name": "nairbus", "sw": version}  # no support URL: there is no public home page to name


def stream_config(topics: TopicTree, stream_id: str, fusion_id: str, labels: Sequence[str],
                  settings: DiscoverySettings | None = None, version: str | None = None) -> dict[str, Any]:
    """The device config of one result stream: its entities (:data:`STREAM_ENTITIES`), hung off the hub."""
    settings = settings or DiscoverySettings()
    version = version or _version()
    oid = stream_object_id(topics, stream_id)
    cmps = {}
    for spec in STREAM_ENTITIES:
        extra: dict[str, Any] = {"expire_after": settings.expire_after_s} if spec.source == "state" else {}
        if spec.source == "events" and settings.events == "frame":
            extra["value_template"] = FRAME_EVENT_JSON
        cmps[f"{oid}_{spec.key}"] = _component(
            spec, oid, _source_topic(spec, topics, stream_id, fusion_id, settings.events), labels, None, extra)
    return {"dev": _device(oid, f"nairbus {stream_id}", "result stream", version,
                           fusion_object_id(topics, fusion_id)),
            "o": _origin(version), "cmps": cmps, "qos": 0,
            **_availability(topics.fusion_status(fusion_id), topics.stream(stream_id, "availability"))}


def fusion_config(topics: TopicTree, fusion_id: str, version: str | None = None) -> dict[str, Any]:
    """The device config of the fusion agent itself (the hub): connectivity and its stats."""
    version = version or _version()
    oid = fusion_object_id(topics, fusion_id)
    cmps = {f"{oid}_{spec.key}": _component(spec, oid, _source_topic(spec, topics, fusion_id, fusion_id, "frame"),
                                            (), None, {})
            for spec in FUSION_ENTITIES}
    # The connectivity entity must stay available to show "disconnected"; the stats follow the agent's status.
    for key, cmp in cmps.items():
        if not key.endswith("_connectivity"):
            cmp.update(_availability(topics.fusion_status(fusion_id)))
    return {"dev": _device(oid, f"nairbus fusion {fusion_id}", "fusion agent", version, None),
            "o": _origin(version), "cmps": cmps, "qos": 0}


def sensor_config(topics: TopicTree, sensor_id: str, fusion_id: str, version: str | None = None) -> dict[str, Any]:
    """The device config of one sensor agent: connectivity and the controls its command topic takes."""
    version = version or _version()
    oid = sensor_object_id(topics, sensor_id)
    cmps = {}
    for spec in SENSOR_ENTITIES:
        cmp = _component(spec, oid, _source_topic(spec, topics, sensor_id, fusion_id, "frame"), (),
                         topics.sensor_set(sensor_id), {})
        if spec.source != "sensor_status":
            cmp.update(_availability(topics.sensor_status(sensor_id)))
        cmps[f"{oid}_{spec.key}"] = cmp
    return {"dev": _device(oid, f"nairbus sensor {sensor_id}", "sensor agent", version,
                           fusion_object_id(topics, fusion_id)),
            "o": _origin(version), "cmps": cmps, "qos": 0}


def capture_config(topics: TopicTree, agent_id: str, fusion_id: str, version: str | None = None) -> dict[str, Any]:
    """The device config of a capture agent (it feeds variant-parallel sensors frames): its connectivity."""
    version = version or _version()
    oid = sensor_object_id(topics, agent_id)
    cmps = {f"{oid}_{spec.key}": _component(spec, oid, topics.sensor_status(agent_id), (), None, {})
            for spec in CAPTURE_ENTITIES}
    return {"dev": _device(oid, f"nairbus capture {agent_id}", "capture agent", version,
                           fusion_object_id(topics, fusion_id)),
            "o": _origin(version), "cmps": cmps, "qos": 0}


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


# ---- per-stream state ------------------------------------------------------------------------------------------


@dataclass
class _StreamTrack:
    """What the publisher remembers of one stream between results."""

    state: StreamState | None = None
    state_sent_at: float = 0.0
    sent_label: str | None = None
    """The label of the last state published (None: none yet)."""
    unsent: bool = False
    """A newer label than the one published is waiting: it came within ``label_interval_s`` of the last publication
    (or the publication failed), and goes out when the interval ends. Otherwise the state is published only when a
    result arrives -- a changed label, or the heartbeat on the first result ``heartbeat_s`` after the last
    publication --, never by a timer alone, so a stalled camera's label expires in Home Assistant (``expire_after``)
    at most ``expire_after_s + label_interval_s`` after its last decided frame."""
    last_result_at: float = 0.0
    quiet: bool = False
    """No frame for ``quiet_after_s``: the state published says no label (``label`` null)."""
    idle: bool = False
    """The last metrics published said no frames: a silent stream publishes that once, not every interval."""
    confidences: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    metrics_since: float = 0.0
    metrics: bytes | None = None
    available: str | None = None


# ---- publisher -------------------------------------------------------------------------------------------------


@dataclass
class HomeAssistantDiscovery:
    """Keeps a fusion agent's discovery configs and home-automation states on the broker in step with its streams.

    Call :meth:`attach` before the communicator starts, feed every inbound message to :meth:`handle` (it returns
    ``True`` for the messages it consumed), :meth:`note_sensor_status` for every sensor status, :meth:`note_result`
    for every result published, and :meth:`update` from the worker loop.
    """

    comm: Bus
    topics: TopicTree
    fusion_id: str
    settings: DiscoverySettings = field(default_factory=DiscoverySettings)
    deadline_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Any = time.monotonic
    on_broker: dict[str, bytes] = field(default_factory=dict)
    """Our node's retained config topics as the broker holds them (learned at start, then kept up to date)."""
    counts: dict[str, int] = field(default_factory=lambda: {"published": 0, "cleared": 0, "announced": 0,
                                                            "states": 0, "metrics": 0})
    streams: dict[str, _StreamTrack] = field(default_factory=dict)
    offline_since: dict[str, float | None] = field(default_factory=dict)
    """Sensor id -> when it went offline (None: online)."""
    captures: set[str] = field(default_factory=set)
    """Capture agents seen by their status (at most 256)."""
    _settle_until: float | None = None
    _announce_at: float | None = None
    _announced_at: float | None = None
    _desired_key: Any = None
    _desired_cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def node_filters(self) -> tuple[str, str]:
        """Subscription filters for this agent's configs: device-based, and the legacy per-entity ones."""
        node = node_id(self.fusion_id)
        return (f"{self.settings.prefix}/{COMPONENT}/{node}/+/config",
                f"{self.settings.prefix}/{LEGACY_COMPONENT}/{node}/+/config")

    @property
    def status_topic(self) -> str:
        """Home Assistant's birth/will topic."""
        return f"{self.settings.prefix}/status"

    @property
    def grace_s(self) -> float:
        """How long a stream stays available after its last sensor went offline."""
        return max(self.settings.offline_grace_s, self.deadline_s + 1.0)

    def attach(self) -> None:
        """Register the subscriptions (made on every connect by the communicator)."""
        # QoS 0, so the retained configs come again on a resumed persistent session (see Communicator.subscribe).
        for node_filter in self.node_filters:
            self.comm.subscribe(node_filter, qos=0)
        self.comm.subscribe(self.status_topic, qos=0)

    def _ours(self, topic: str) -> bool:
        node = node_id(self.fusion_id)
        legacy_prefix = _NOT_ID.sub("_", f"{self.topics.root}_{self.topics.site}_")  # the old object ids
        for component, prefix in ((COMPONENT, id_base(self.topics) + "_"), (LEGACY_COMPONENT, legacy_prefix)):
            head = f"{self.settings.prefix}/{component}/{node}/"
            if topic.startswith(head) and topic.endswith("/config"):
                obj = topic[len(head) : -len("/config")]
                return "/" not in obj and obj.startswith(prefix)
        return False

    def handle(self, message: InboundMessage, now: float) -> bool:
        """Consume discovery and Home Assistant status messages; ``False`` for anything else."""
        if message.topic == self.status_topic:
            state = message.payload.decode(errors="replace").strip()
            recent = self._announced_at is not None and now - self._announced_at < self.settings.announce_min_interval_s
            if state == "online" and not message.retain and self._announce_at is None and not recent:
                low, high = self.settings.announce_delay_s
                self._announce_at = now + self.rng.uniform(low, high)
                log.info("discovery.ha_online", announce_in_s=round(self._announce_at - now, 2))
            return True
        node = node_id(self.fusion_id)
        if any(message.topic.startswith(f"{self.settings.prefix}/{c}/{node}/") for c in (COMPONENT,
                                                                                          LEGACY_COMPONENT)):
            if self._ours(message.topic):
                if message.payload:
                    self.on_broker[message.topic] = message.payload
                else:
                    self.on_broker.pop(message.topic, None)
            return True
        return False

    # ----- states -----------------------------------------------------------------------------------------------

    def note_sensor_status(self, sensor_id: str, online: bool, now: float | None = None, role: str = "sensor") -> None:
        """A sensor's status changed (its retained status, its clean ``offline`` or its last will); a capture agent
        (``role="capture"``) gets a device of its own."""
        now = self.clock() if now is None else now
        self.offline_since[sensor_id] = None if online else (self.offline_since.get(sensor_id) or now)
        if role == "capture" and len(self.captures) < 256:
            self.captures.add(sensor_id)

    def forget_agent(self, agent_id: str) -> None:
        """An agent's retained status was cleared: it is gone (a capture agent's device goes with it)."""
        self.offline_since.pop(agent_id, None)
        self.captures.discard(agent_id)

    def note_result(self, result: Result, now: float | None = None) -> None:
        """A result was published: the label state on change (and heartbeat), the label-change event, the
        figures of the interval."""
        now = self.clock() if now is None else now
        track = self.streams.setdefault(result.stream_id, _StreamTrack(metrics_since=now))
        changed = track.state is None or track.quiet or track.state.label != result.label  # after quiet: an event
        since = result.decided_ts if changed or track.state is None else track.state.since_ts
        track.state = StreamState(stream_id=result.stream_id, label=result.label, class_index=result.class_index,
                                  since_ts=since, frame_id=result.frame_id, ts=result.decided_ts)
        track.last_result_at, track.quiet = now, False
        since_sent = now - track.state_sent_at
        differs = track.sent_label != result.label
        if (differs and since_sent >= self.settings.label_interval_s) or since_sent >= self.settings.heartbeat_s:
            self._publish_state(result.stream_id, track, now)
        elif differs:
            track.unsent = True  # sent when the interval ends (_keep_streams), unless the label comes back first
        if changed and self.settings.events == "change":
            self.comm.publish(self.topics.stream(result.stream_id, "events"), wire_encode(result), qos=0,
                              content_type=CONTENT_TYPE_JSON)
        track.confidences.append(result.confidence)
        track.latencies.append(result.latency_ms)
        if len(track.confidences) > 100_000:  # bounded: a stream that never reaches its interval
            del track.confidences[:50_000], track.latencies[:50_000]

    def _publish_state(self, stream_id: str, track: _StreamTrack, now: float) -> None:
        assert track.state is not None
        state = track.state.model_copy(update={"label": None, "class_index": None}) if track.quiet else track.state
        if self.comm.publish(self.topics.stream(stream_id, "state"), wire_encode(state), qos=0, retain=True,
                             content_type=CONTENT_TYPE_JSON):
            track.state_sent_at = now
            track.sent_label = state.label
            track.unsent = False
            self.counts["states"] += 1
        else:
            track.unsent = True

    def _publish_metrics(self, stream_id: str, track: _StreamTrack, now: float) -> None:
        interval = now - track.metrics_since
        if interval < self.settings.metrics_interval_s or (track.idle and not track.confidences):
            return
        frames = len(track.confidences)  # none: the stream is silent, 0 fps and no confidence or latency to show
        metrics = StreamMetrics(
            stream_id=stream_id, frames=frames, interval_s=round(interval, 3), fps=round(frames / interval, 1),
            confidence_pct=min(100.0, round(100 * statistics.fmean(track.confidences), 1)) if frames else None,
            latency_ms=float(round(statistics.median(track.latencies))) if frames else None, ts=time.time())
        track.idle = not frames
        track.metrics = wire_encode(metrics)
        track.confidences.clear()
        track.latencies.clear()
        track.metrics_since = now
        if self.comm.publish(self.topics.stream(stream_id, "metrics"), track.metrics, qos=0, retain=True,
                             content_type=CONTENT_TYPE_JSON):
            self.counts["metrics"] += 1

    def _availability(self, sensors: Sequence[str], now: float) -> str:
        for sid in sensors:
            since = self.offline_since.get(sid)
            if since is None or now - since < self.grace_s:
                return "online"
        return "offline"

    # ----- configs ----------------------------------------------------------------------------------------------

    def update(self, streams: Mapping[str, Sequence[str]], labels: Mapping[str, Sequence[str]], now: float) -> None:
        """Publish changed configs, clear those of vanished streams, keep states, figures and availability current,
        and re-announce when due.

        ``streams`` maps each stream id to the sensor ids feeding it, ``labels`` each stream to its labels. Nothing
        is published during the settle time after the first call, while the broker's retained configs arrive.
        """
        if self._settle_until is None:
            self._settle_until = now + self.settings.settle_s
        if now < self._settle_until:
            return
        key = (tuple((s, tuple(v)) for s, v in sorted(streams.items())),
               tuple((s, tuple(v)) for s, v in sorted(labels.items())), tuple(sorted(self.captures)))
        if key != self._desired_key:  # the configs are rebuilt only when what they describe changed
            self._desired_key, self._desired_cache = key, self._desired(streams, labels)
        desired = self._desired_cache
        self._sync_configs(desired)
        self._keep_streams(streams, now)
        if self._announce_at is not None and now >= self._announce_at:
            self._announce(desired, now)

    def _sync_configs(self, desired: Mapping[str, bytes]) -> None:
        """Publish the configs the broker does not hold yet; clear the ones no longer desired."""
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

    def _keep_streams(self, streams: Mapping[str, Sequence[str]], now: float) -> None:
        """Forget vanished streams; keep each stream's availability and figures current (and send a label state a
        lost connection held back)."""
        for stream in [s for s in self.streams if s not in streams]:
            del self.streams[stream]
        for stream, sensors in streams.items():
            track = self.streams.setdefault(stream, _StreamTrack(metrics_since=now))
            available = self._availability(sensors, now)
            if available != track.available and self.comm.publish(
                    self.topics.stream(stream, "availability"), json.dumps({"state": available}).encode(), qos=1,
                    retain=True, content_type=CONTENT_TYPE_JSON):
                track.available = available
            self._publish_metrics(stream, track, now)
            self._keep_label(stream, track, now)

    def _keep_label(self, stream: str, track: _StreamTrack, now: float) -> None:
        """The label state a frame called for but ``label_interval_s`` held back; no label once the stream has been
        quiet for ``quiet_after_s`` (then again every ``heartbeat_s``, so ``expire_after`` stays for a silent hub)."""
        if track.state is None:
            return
        since_sent = now - track.state_sent_at
        if track.quiet:
            due = since_sent >= self.settings.heartbeat_s
        elif now - track.last_result_at >= self.settings.quiet_after_s:
            track.quiet = due = True
        else:
            due = (track.unsent and track.state.label != track.sent_label
                   and since_sent >= self.settings.label_interval_s)
        if due:
            self._publish_state(stream, track, now)

    def _desired(self, streams: Mapping[str, Sequence[str]],
                 labels: Mapping[str, Sequence[str]]) -> dict[str, bytes]:
        prefix, fid, topics = self.settings.prefix, self.fusion_id, self.topics
        desired = {config_topic(prefix, fid, fusion_object_id(topics, fid)): encode_config(fusion_config(topics, fid))}
        for stream, sensors in streams.items():
            desired[config_topic(prefix, fid, stream_object_id(topics, stream))] = encode_config(
                stream_config(topics, stream, fid, labels.get(stream, ()), self.settings))
            for sid in sensors:
                desired[config_topic(prefix, fid, sensor_object_id(topics, sid))] = encode_config(
                    sensor_config(topics, sid, fid))
        for cid in sorted(self.captures):
            desired[config_topic(prefix, fid, sensor_object_id(topics, cid))] = encode_config(
                capture_config(topics, cid, fid))
        return desired

    def _announce(self, desired: Mapping[str, bytes], now: float) -> None:
        """Home Assistant (re)started: configs and the latest states again — never a result on the result topic."""
        self._announce_at = None
        self._announced_at = now
        for topic, payload in desired.items():
            self.comm.publish(topic, payload, qos=1, retain=True, content_type=CONTENT_TYPE_JSON)
        for stream, track in self.streams.items():
            if track.state is not None:
                self._publish_state(stream, track, now)
            if track.metrics is not None:
                self.comm.publish(self.topics.stream(stream, "metrics"), track.metrics, qos=0, retain=True,
                                  content_type=CONTENT_TYPE_JSON)
        self.counts["announced"] += 1
        log.info("discovery.announced", configs=len(desired), streams=len(self.streams))

    # ----- the fusion observer (nairbus.agents.runtime.observers.FusionObserver) ------------------------------

    def note_deadline(self, deadline_s: float) -> None:
        """The fusion deadline changed: a stream's grace before it turns unavailable follows it."""
        self.deadline_s = deadline_s

    def after_round(self, sensors: Iterable[object], labels: Mapping[str, Sequence[str]], now: float) -> None:
        """Keep the configs and states in step with the sensors the fusion agent knows."""
        self.update(streams_of(sensors), labels, now)  # type: ignore[arg-type]


def attach_home_assistant(fusion: FusionBase) -> HomeAssistantDiscovery | None:
    """Give ``fusion`` Home Assistant discovery as an observer when its config enables it; the discovery or None."""
    settings = fusion.config.discovery
    if not settings.enabled:
        return None
    discovery = HomeAssistantDiscovery(fusion.comm, fusion.topics, fusion.settings.fusion_id, settings,
                                       deadline_s=fusion.settings.deadline_ms / 1000.0)
    fusion.add_observer(discovery)
    return discovery
