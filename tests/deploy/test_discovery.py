"""Home Assistant MQTT discovery through a real broker: a stand-in for Home Assistant subscribes like it does and
checks every field it needs, renders the templates with Jinja (Home Assistant's template engine) against real
results and states, and watches the device configs appear, stay put when nothing changes, change when a stream
changes, and disappear; the label state changes only with the label; Home Assistant's restart brings states back
and never a second copy of a result. (A real Home Assistant: deploy/homeassistant/ha_check.py.)"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jinja2
import pytest

from nairbus.agents.home.discovery import (
    DiscoverySettings,
    config_topic,
    encode_config,
    entity_slug,
    fusion_object_id,
    sensor_config,
    sensor_object_id,
    stream_config,
    stream_object_id,
)
from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator, InboundMessage
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas import Result, StreamState
from nairbus.schemas.topics import TopicTree

pytestmark = pytest.mark.broker
SITE = "home"


class HomeAssistantStandIn:
    """Subscribes to the discovery prefix and the result topics, as Home Assistant's MQTT integration does."""

    def __init__(self, broker: PrivateMosquitto, prefix: str, topics: TopicTree) -> None:
        self.comm = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"t-ha-{uuid.uuid4().hex[:6]}",
                                 None, lambda s: b"")
        self.comm.subscribe(f"{prefix}/#", qos=1)
        self.comm.subscribe(topics.all_results(), qos=0)
        self.comm.start()
        self.messages: list[InboundMessage] = []

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.comm.get(timeout=0.05)
            if msg is not None:
                self.messages.append(msg)

    def wait(self, predicate: Any, timeout: float = 15.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.pump(0.05)
        return predicate()

    def on(self, topic: str) -> list[InboundMessage]:
        return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.comm.stop()


def _config(broker: PrivateMosquitto, root: str, prefix: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site=SITE),
                       discovery=DiscoverySettings(prefix=prefix, settle_s=0.5, announce_delay_s=(0.2, 0.6),
                                                   metrics_interval_s=0.5, offline_grace_s=1.0),
                       **sections)


@pytest.fixture
def prefix(topic_root: str) -> str:
    return f"{topic_root}/homeassistant"  # Home Assistant's discovery prefix is configurable; one per test


class RunningFusion:
    def __init__(self, config: AgentConfig, pipeline: NairPipeline) -> None:
        self.agent = FusionAgent(config, pipeline)
        self.agent.start()
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.agent.stop()
        self.thread.join(10)
        self.agent.close()


@pytest.fixture
def start_fusion(broker: PrivateMosquitto, topic_root: str, prefix: str,
                 tiny_pipeline: NairPipeline) -> Iterator[Any]:
    running: list[RunningFusion] = []

    def start() -> RunningFusion:
        config = _config(broker, topic_root, prefix, fusion=FusionSettings(deadline_ms=300, stats_interval_s=1.0))
        running.append(RunningFusion(config, tiny_pipeline))
        return running[-1]

    yield start
    for fusion in running:
        if fusion.thread.is_alive():
            fusion.close()


def _sensor(broker: PrivateMosquitto, root: str, prefix: str, pipeline: NairPipeline, sensor_id: str, *,
            stream_id: str, count: int = 5) -> SensorAgent:
    # --stay: these sensors stand for cameras that run on; a finished one-shot run would withdraw its stream.
    settings = SensorSettings(sensor_id=sensor_id, stream_id=stream_id, count=count, fps=200.0, deadline_ms=10000,
                              stay=True)
    agent = SensorAgent(_config(broker, root, prefix, sensor=settings), pipeline)
    agent.start()
    return agent


def _render(template: str, value_json: Any) -> str:
    return jinja2.Environment().from_string(template).render(value_json=value_json)


def _check_device_config(config: dict[str, Any], topics: TopicTree, stream: str, labels: list[str]) -> None:
    """Every field Home Assistant needs for device-based discovery of a stream: device, origin, components."""
    oid = stream_object_id(topics, stream)
    assert config["dev"]["identifiers"] == [oid]
    assert config["dev"]["name"]
    assert config["dev"]["manufacturer"] == "nairbus"
    assert config["dev"]["via_device"] == fusion_object_id(topics, "fusion-1")
    assert config["o"]["name"] == "nairbus"
    assert config["o"]["sw"]
    assert config["availability_mode"] == "all"
    assert [a["topic"] for a in config["availability"]] == [topics.fusion_status("fusion-1"),
                                                            topics.stream(stream, "availability")]
    for entry in config["availability"]:
        assert _render(entry["value_template"], {"state": "online"}) == "online"
    cmps = config["cmps"]
    assert set(cmps) == {f"{oid}_{k}" for k in ("classification", "label", "confidence", "latency", "fps")}
    for key, cmp in cmps.items():
        assert cmp["unique_id"] == key
        assert cmp["default_entity_id"] == f"{cmp['p']}.{entity_slug(key)}"
        assert re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", cmp["default_entity_id"]), cmp["default_entity_id"]
        assert "object_id" not in cmp  # deprecated since Home Assistant 2025.10
    event, label = cmps[f"{oid}_classification"], cmps[f"{oid}_label"]
    # One event per label change by default (the recorder writes a row per event); per frame as an option, with the
    # label alone (a confidence or frame id in the attributes would make a new attributes row per frame).
    assert (event["p"], event["state_topic"], event["event_types"]) == \
        ("event", topics.stream(stream, "events"), labels)
    sample = {"label": labels[0], "confidence": 0.8765, "frame_id": 7}
    # The confidence to a tenth and no frame id: events with equal attributes share one attributes row.
    assert json.loads(_render(event["value_template"], sample)) == {"event_type": labels[0], "confidence": 0.9}
    per_frame = stream_config(topics, stream, "fusion-1", labels, DiscoverySettings(events="frame"))
    frame_event = per_frame["cmps"][f"{oid}_classification"]
    assert frame_event["state_topic"] == topics.result(stream)
    assert json.loads(_render(frame_event["value_template"], sample)) == {"event_type": labels[0]}
    assert (label["p"], label["device_class"], label["options"]) == ("sensor", "enum", labels)
    assert label["state_topic"] == topics.stream(stream, "state")
    assert label["expire_after"] > 0
    assert _render(label["value_template"], {"label": None}) == "None"  # a quiet stream: Home Assistant's unknown
    for key in ("confidence", "latency", "fps"):
        assert cmps[f"{oid}_{key}"]["state_class"] == "measurement"
        assert cmps[f"{oid}_{key}"]["state_topic"] == topics.stream(stream, "metrics")


def test_discovery_lifecycle_through_the_broker(broker: PrivateMosquitto, topic_root: str, prefix: str,
                                                tiny_pipeline: NairPipeline, start_fusion: Any) -> None:
    topics = TopicTree(topic_root, SITE)
    labels = list(tiny_pipeline.labels)
    kitchen = config_topic(prefix, "fusion-1", stream_object_id(topics, "kitchen"))
    hub = config_topic(prefix, "fusion-1", fusion_object_id(topics, "fusion-1"))
    cam_a = config_topic(prefix, "fusion-1", sensor_object_id(topics, "cam-a"))
    stale = config_topic(prefix, "fusion-1", stream_object_id(topics, "gone-stream"))
    legacy = f"{prefix}/sensor/nairbus-fusion-1/{topic_root.replace('/', '_')}_{SITE}_kitchen/config"
    foreign = f"{prefix}/sensor/zigbee2mqtt/lamp/config"

    # Left on the broker by an earlier run: a stream that no longer exists, the per-entity config of the nairbus
    # version before device-based discovery, and another program's config.
    seeder = Communicator(BrokerSettings(host=broker.host, port=broker.port), "t-seeder", None, lambda s: b"")
    seeder.start()
    for topic in (stale, legacy, foreign):
        seeder.publish(topic, b'{"name": "old"}', qos=1, retain=True, content_type="application/json")
    assert seeder.wait_published()

    ha = HomeAssistantStandIn(broker, prefix, topics)
    ha.comm.subscribe(f"{topics.prefix}/streams/#", qos=0)
    sensor = _sensor(broker, topic_root, prefix, tiny_pipeline, "cam-a", stream_id="kitchen", count=8)
    fusion = start_fusion()
    try:
        # The device configs appear (retained), the stale and legacy ones are cleared, the foreign one stays.
        assert ha.wait(lambda: ha.on(kitchen) and ha.on(hub) and ha.on(cam_a)
                       and all(ha.on(t) and ha.on(t)[-1].payload == b"" for t in (stale, legacy)))
        config = json.loads(ha.on(kitchen)[-1].payload)
        _check_device_config(config, topics, "kitchen", labels)
        hub_config, cam_config = json.loads(ha.on(hub)[-1].payload), json.loads(ha.on(cam_a)[-1].payload)
        assert hub_config["dev"]["identifiers"] == [fusion_object_id(topics, "fusion-1")]
        assert cam_config["dev"]["via_device"] == fusion_object_id(topics, "fusion-1")
        connectivity = cam_config["cmps"][f"{sensor_object_id(topics, 'cam-a')}_connectivity"]
        assert (connectivity["p"], connectivity["device_class"], connectivity["entity_category"]) == \
            ("binary_sensor", "connectivity", "diagnostic")
        assert connectivity["state_topic"] == topics.sensor_status("cam-a")
        budget = cam_config["cmps"][f"{sensor_object_id(topics, 'cam-a')}_budget"]
        assert budget["command_topic"] == topics.sensor_set("cam-a")

        # Results flow: an event per label change (the template gives its label as the event type); the label state
        # is published only when the label changes; the figures come rate-limited.
        sensor.run_replay()
        assert ha.wait(lambda: len(ha.on(topics.result("kitchen"))) == 8)
        event = config["cmps"][f"{stream_object_id(topics, 'kitchen')}_classification"]
        results = [Result.model_validate_json(m.payload) for m in ha.on(topics.result("kitchen"))]
        changes = 1 + sum(a.label != b.label for a, b in itertools.pairwise(results))
        assert ha.wait(lambda: len(ha.on(topics.stream("kitchen", "events"))) >= changes)
        fired = [json.loads(_render(event["value_template"], json.loads(m.payload)))["event_type"]
                 for m in ha.on(topics.stream("kitchen", "events"))]
        assert fired == [r.label for i, r in enumerate(results) if i == 0 or r.label != results[i - 1].label]
        assert set(fired) <= set(event["event_types"])
        def latest_state() -> str | None:
            got = ha.on(topics.stream("kitchen", "state"))
            return StreamState.model_validate_json(got[-1].payload).label if got else None

        assert ha.wait(lambda: latest_state() == results[-1].label)  # the latest label, at most label_interval_s late
        ha.pump(0.5)
        states = [StreamState.model_validate_json(m.payload) for m in ha.on(topics.stream("kitchen", "state"))]
        assert 1 <= len(states) <= changes  # on a change, at most one per label_interval_s (heartbeat: 30 s away)
        label = config["cmps"][f"{stream_object_id(topics, 'kitchen')}_label"]
        assert _render(label["value_template"], json.loads(ha.on(topics.stream("kitchen", "state"))[-1].payload)) \
            == results[-1].label
        assert ha.wait(lambda: ha.on(topics.stream("kitchen", "metrics")))
        metrics = json.loads(ha.on(topics.stream("kitchen", "metrics"))[-1].payload)
        for key in ("confidence", "latency", "fps"):
            template = config["cmps"][f"{stream_object_id(topics, 'kitchen')}_{key}"]["value_template"]
            assert float(_render(template, metrics)) >= 0

        # Nothing changed: no config re-published, however often the worker loop goes round.
        ha.pump(1.0)
        assert len([m for m in ha.on(kitchen) if m.payload]) == 1

        # Home Assistant restarts: its birth brings configs and the label state back after a random delay, and
        # never a second copy of a result on the result topic.
        results_before, states_before = len(ha.on(topics.result("kitchen"))), len(states)
        born = time.monotonic()
        for _ in range(3):  # however often it says so: one re-announce
            seeder.publish(f"{prefix}/status", b"online", qos=1, content_type="text/plain")
        assert ha.wait(lambda: len(ha.on(topics.stream("kitchen", "state"))) > states_before, timeout=5)
        assert time.monotonic() - born >= 0.15  # not at once: announce_delay_s is (0.2, 0.6)
        ha.pump(1.0)
        assert len(ha.on(topics.result("kitchen"))) == results_before
        assert len(ha.on(topics.stream("kitchen", "state"))) == states_before + 1
        assert fusion.agent.discovery is not None
        assert fusion.agent.discovery.counts["announced"] == 1

        # The sensor stops cleanly: the stream stays available for the grace period (its last results land),
        # then turns unavailable.
        sensor.stop()
        availability = topics.stream("kitchen", "availability")
        stopped = time.monotonic()
        assert ha.wait(lambda: ha.on(availability) and json.loads(ha.on(availability)[-1].payload)["state"]
                       == "offline", timeout=10)
        assert time.monotonic() - stopped >= 0.9  # offline_grace_s 1.0 (the deadline 0.3 s is shorter)

        # The stream goes away (its birth cleared): its configs are cleared, so Home Assistant removes the device.
        seeder.publish(topics.sensor_birth("cam-a"), b"", qos=1, retain=True, content_type="application/json")
        assert ha.wait(lambda: ha.on(kitchen)[-1].payload == b"" and ha.on(cam_a)[-1].payload == b"")
    finally:
        sensor.stop()
        fusion.close()
        ha.close()
        seeder.stop()

    # What the broker keeps of discovery: the hub's own device, and the foreign config untouched.
    late = HomeAssistantStandIn(broker, prefix, topics)
    late.pump(0.5)
    late.close()
    assert {m.topic for m in late.messages if m.retain and m.payload and m.topic.startswith(prefix)} == {hub, foreign}


def test_an_unchanged_config_is_not_republished_after_a_restart(broker: PrivateMosquitto, topic_root: str,
                                                                prefix: str, tiny_pipeline: NairPipeline,
                                                                start_fusion: Any) -> None:
    topics = TopicTree(topic_root, SITE)
    topic = config_topic(prefix, "fusion-1", stream_object_id(topics, "porch"))
    sensor = _sensor(broker, topic_root, prefix, tiny_pipeline, "cam-p", stream_id="porch", count=1)
    ha = HomeAssistantStandIn(broker, prefix, topics)
    try:
        first = start_fusion()
        assert ha.wait(lambda: ha.on(topic))
        first.close()
        second = start_fusion()
        ha.pump(1.5)  # settle (0.5 s) and a good number of worker-loop rounds
        assert second.agent.discovery is not None
        assert second.agent.discovery.counts["published"] == 0
        assert second.agent.discovery.counts["cleared"] == 0
        assert len([m for m in ha.on(topic) if m.payload]) == 1
    finally:
        sensor.stop()
        ha.close()


def test_builders_are_pure_and_ids_are_valid() -> None:
    topics = TopicTree("acme/lab", "site-1")
    config = stream_config(topics, "door", "fusion-2", ["a", "b"], version="1.2.3")
    assert config == stream_config(topics, "door", "fusion-2", ["a", "b"], version="1.2.3")
    assert encode_config(config) == encode_config(dict(reversed(list(config.items()))))
    # [a-zA-Z0-9_-] only, as Home Assistant requires; "nairbus" once, whatever the root
    assert stream_object_id(topics, "door") == "nairbus_acme_lab_site-1_door"
    assert stream_object_id(TopicTree("nairbus", "home"), "door") == "nairbus_home_door"
    assert config_topic("homeassistant", "fusion-2", stream_object_id(topics, "door")) == \
        "homeassistant/device/nairbus-fusion-2/nairbus_acme_lab_site-1_door/config"
    with pytest.raises(ValueError, match="wildcards"):
        DiscoverySettings(prefix="home/#")
    with pytest.raises(ValueError, match="expire_after_s"):
        DiscoverySettings(heartbeat_s=100, expire_after_s=50)


def test_the_frame_rate_number_sends_no_cap_as_zero_which_the_sensor_obeys() -> None:
    """Issue 36: 0 ("no cap") from Home Assistant's frame-rate number was sent as ``{"fps": null}``, which a sensor
    reads as "no change"; the command template now sends the number itself, and 0 lifts the cap."""
    from nairbus.agents.home.entities import SENSOR_ENTITIES
    from nairbus.agents.runtime.commands import SensorControl

    template = next(e for e in SENSOR_ENTITIES if e.key == "fps_limit").fields["command_template"]
    control = SensorControl(_NullBus(), TopicTree("unit", "lab"), SensorSettings(sensor_id="cam"),
                            lambda _s: None, lambda: None)
    for value, cap in (("2.5", 2.5), ("0", None), ("7", 7.0), ("0.0", None)):
        payload = jinja2.Environment().from_string(template).render(value=value).encode()
        assert control.handle(payload).status == "ok", payload
        assert control.max_fps == cap, payload


class _NullBus:
    def route(self, *_a: Any, **_k: Any) -> None: ...

    def publish(self, *_a: Any, **_k: Any) -> bool:
        return True


def test_a_stalled_stream_shows_no_label_and_zero_frames_per_second() -> None:
    """Issue 36: with no frame arriving, the label state is not re-published by a timer; after ``quiet_after_s`` it
    says no label (Home Assistant's unknown: a paused or stalled camera shows no current label, while a stopped
    one's stream turns unavailable) and the metrics say 0 fps once, with no confidence or latency,
    instead of freezing at the last interval's figures."""
    from nairbus.agents.home.discovery import HomeAssistantDiscovery
    from nairbus.schemas import ClassScore, StreamMetrics
    from nairbus.schemas import decode as wire_decode

    published: list[tuple[str, bytes]] = []

    class Bus:
        def publish(self, topic: str, payload: bytes, **_k: Any) -> bool:
            published.append((topic, payload))
            return True

    topics = TopicTree("unit", "lab")
    settings = DiscoverySettings(settle_s=0.0, heartbeat_s=30.0, metrics_interval_s=5.0)
    ha = HomeAssistantDiscovery(Bus(), topics, "f", settings)  # type: ignore[arg-type]
    state, metrics = topics.stream("cam", "state"), topics.stream("cam", "metrics")

    def result(frame: int, now: float) -> None:
        ha.note_result(Result(stream_id="cam", fusion_id="f", frame_id=frame, label="cat", class_index=0,
                              confidence=0.9, topk=(ClassScore(class_index=0, label="cat", score=0.9),),
                              fraction_received=1.0, bytes_received=1, fragments_received=1, sensors=("cam",),
                              capture_ts=1.0, decided_ts=1.0, latency_ms=12.0, complete=True), now=now)

    streams, labels = {"cam": ["cam"]}, {"cam": ["cat", "dog"]}
    ha.note_sensor_status("cam", True, now=0.0)
    result(1, now=0.0)
    result(2, now=1.0)
    ha.update(streams, labels, now=6.0)  # metrics of the first interval: 2 frames
    assert wire_decode(next(p for t, p in reversed(published) if t == metrics), StreamMetrics).frames == 2
    def labels_sent() -> list[str | None]:
        return [StreamState.model_validate_json(p).label for t, p in published if t == state]

    for now in (31.0, 62.0, 93.0, 124.0):  # silence: no timer re-sends a label no frame confirms since
        ha.update(streams, labels, now=now)
    # quiet_after_s (30 s) after frame 2: no label (Home Assistant's unknown), again every heartbeat_s while quiet
    assert labels_sent() == ["cat", None, None, None, None]
    silent = [wire_decode(p, StreamMetrics) for t, p in published if t == metrics][1:]
    assert [(m.frames, m.fps, m.confidence_pct, m.latency_ms) for m in silent] == [(0, 0.0, None, None)]  # once
    result(3, now=130.0)  # a frame again: its label is current (and an event: the label came back)
    assert labels_sent()[-1] == "cat"
    assert len([t for t, _p in published if t == topics.stream("cam", "events")]) == 2
    ha.update(streams, labels, now=136.0)
    assert wire_decode(next(p for t, p in reversed(published) if t == metrics), StreamMetrics).frames == 1


def test_a_label_state_the_connection_held_back_is_sent_when_it_can_be() -> None:
    """A state whose publication failed (no connection) is sent by the next update, not lost until the next change."""
    from nairbus.agents.home.discovery import HomeAssistantDiscovery
    from nairbus.schemas import ClassScore

    up = {"on": False}
    sent: list[str] = []

    class Bus:
        def publish(self, topic: str, payload: bytes, **_k: Any) -> bool:
            if up["on"]:
                sent.append(topic)
            return up["on"]

    topics = TopicTree("unit", "lab")
    ha = HomeAssistantDiscovery(Bus(), topics, "f", DiscoverySettings(settle_s=0.0))  # type: ignore[arg-type]
    ha.note_result(Result(stream_id="cam", fusion_id="f", frame_id=1, label="cat", class_index=0, confidence=0.9,
                          topk=(ClassScore(class_index=0, label="cat", score=0.9),), fraction_received=1.0,
                          bytes_received=1, fragments_received=1, sensors=("cam",), capture_ts=1.0, decided_ts=1.0,
                          latency_ms=12.0, complete=True), now=0.0)
    up["on"] = True
    ha.update({"cam": ["cam"]}, {"cam": ["cat"]}, now=1.0)
    assert sent.count(topics.stream("cam", "state")) == 1
    ha.update({"cam": ["cam"]}, {"cam": ["cat"]}, now=2.0)
    assert sent.count(topics.stream("cam", "state")) == 1  # once


def test_a_cleared_status_or_controls_topic_renders_nothing_instead_of_a_template_error() -> None:
    """A sensor that ends clears its retained status and controls (empty payloads) before fusion's removal of its
    entities reaches Home Assistant; each entity's template then rendered ``value_json.…`` of nothing and Home
    Assistant logged a template error per entity (seen in the real-HA check). Rendered with Home Assistant's strict
    undefined, an empty payload (no ``value_json``) gives an empty state, which Home Assistant ignores; a payload
    still gives its value."""
    topics = TopicTree("nairbus", "home")
    config = sensor_config(topics, "cam-1", "fusion-1", version="1")
    strict = jinja2.Environment(undefined=jinja2.StrictUndefined)
    controls = {"budget_bytes": None, "deadline_ms": 500, "fps": 2.5, "paused": True}
    templates = [(c["value_template"], controls if c.get("command_topic") else {"state": "online"})
                 for c in config["cmps"].values() if "value_template" in c]
    templates += [(a["value_template"], {"state": "online"})
                  for c in config["cmps"].values() for a in c.get("availability", ())]
    assert len(templates) >= 6
    for template, payload in templates:
        assert strict.from_string(template).render() == "", template
        assert strict.from_string(template).render(value_json=payload) != "", template
    by_key = {key.rsplit("_", 1)[-1]: c for key, c in config["cmps"].items()}
    assert strict.from_string(by_key["deadline"]["value_template"]).render(value_json=controls) == "500"
    assert strict.from_string(by_key["paused"]["value_template"]).render(value_json=controls) == "ON"


def test_a_label_that_changes_on_most_frames_is_published_at_most_once_per_interval_and_never_left_behind() -> None:
    """Issue 36's recorder bar: Home Assistant writes a row per label state that differs, so a label changing on most
    frames is published at most once per ``label_interval_s`` -- the latest label, sent when the interval ends even
    if no frame follows -- while every change is still an event."""
    from nairbus.agents.home.discovery import HomeAssistantDiscovery
    from nairbus.schemas import ClassScore

    sent: list[tuple[float, str, bytes]] = []
    clock = {"now": 0.0}

    class Bus:
        def publish(self, topic: str, payload: bytes, **_k: Any) -> bool:
            sent.append((clock["now"], topic, payload))
            return True

    topics = TopicTree("unit", "lab")
    ha = HomeAssistantDiscovery(Bus(), topics, "f", DiscoverySettings(settle_s=0.0, label_interval_s=1.0))  # type: ignore[arg-type]
    labels = ["cat", "dog"]
    for frame in range(50):  # 5 fps for 10 s, the label changing on every frame
        clock["now"] = frame * 0.2
        label = labels[frame % 2]
        ha.note_result(Result(stream_id="s", fusion_id="f", frame_id=frame, label=label, class_index=frame % 2,
                              confidence=0.9, topk=(ClassScore(class_index=frame % 2, label=label, score=0.9),),
                              fraction_received=1.0, bytes_received=1, fragments_received=1, sensors=("s",),
                              capture_ts=1.0, decided_ts=1.0, latency_ms=1.0, complete=True), now=clock["now"])
        ha.update({"s": ["s"]}, {"s": labels}, now=clock["now"])
    clock["now"] = 10.5
    ha.update({"s": ["s"]}, {"s": labels}, now=clock["now"])
    states = [(t, StreamState.model_validate_json(p).label) for t, topic, p in sent
              if topic == topics.stream("s", "state")]
    assert 8 <= len(states) <= 11  # about one a second, not 50
    assert all(b - a >= 1.0 - 1e-9 for (a, _), (b, _) in itertools.pairwise(states))
    assert states[-1][1] == "dog"  # frame 49's label, sent after the last frame when its interval ended
    assert len([1 for _t, topic, _p in sent if topic == topics.stream("s", "events")]) == 50
