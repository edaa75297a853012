"""Home Assistant MQTT discovery through a real broker: a stand-in for Home Assistant subscribes like it does and
checks every field it needs, renders the templates with Jinja (Home Assistant's template engine) against real
results, and watches configs appear, stay put when nothing changes, change when a stream changes, and disappear."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jinja2
import pytest

from agents.home.discovery import (
    DiscoverySettings,
    config_topic,
    encode_config,
    object_id,
    stream_config,
    unique_id,
)
from agents.nair.fusion import FusionAgent
from agents.nair.sensor import SensorAgent
from agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from agents.runtime.mosquitto import PrivateMosquitto
from agents.runtime.mqtt import Communicator, InboundMessage
from agents.runtime.settings import BrokerSettings, TopicSettings
from models.pipeline import NairPipeline
from schemas import Result
from schemas.topics import TopicTree

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
                       discovery=DiscoverySettings(prefix=prefix, settle_s=0.5, announce_delay_s=(0.2, 0.6)),
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
    settings = SensorSettings(sensor_id=sensor_id, stream_id=stream_id, count=count, fps=200.0, deadline_ms=10000)
    agent = SensorAgent(_config(broker, root, prefix, sensor=settings), pipeline)
    agent.start()
    return agent


def _check_ha_required_fields(config: dict[str, Any], topics: TopicTree, stream: str) -> None:
    """Every field Home Assistant needs for a discovered MQTT sensor with a device, origin and availability."""
    assert config["state_topic"] == topics.result(stream)  # required for an MQTT sensor
    assert config["unique_id"] == unique_id(topics, stream)  # required for a device and for the entity registry
    assert config["device"]["identifiers"]
    assert isinstance(config["device"]["identifiers"], list)
    assert config["device"]["name"]
    assert config["device"]["manufacturer"] == "nairbus"
    assert config["o"]["name"] == "nairbus"
    assert config["o"]["sw"]
    assert config["json_attributes_topic"] == topics.result(stream)
    assert config["availability_mode"] == "all"
    assert config["availability"][0]["topic"] == topics.fusion_status("fusion-1")
    for entry in config["availability"]:
        assert topics.parse(entry["topic"]).kind in ("fusion_status", "sensor_status")  # type: ignore[union-attr]
        assert jinja2.Template(entry["value_template"]).render(value_json={"state": "online"}) == "online"
    assert config["payload_available"] == "online"
    assert config["payload_not_available"] == "offline"


def test_discovery_lifecycle_through_the_broker(broker: PrivateMosquitto, topic_root: str, prefix: str,
                                                tiny_pipeline: NairPipeline, start_fusion: Any) -> None:
    topics = TopicTree(topic_root, SITE)
    kitchen = config_topic(prefix, "fusion-1", topics, "kitchen")
    stale = config_topic(prefix, "fusion-1", topics, "gone-stream")
    foreign = f"{prefix}/sensor/zigbee2mqtt/lamp/config"

    # Left on the broker by an earlier run: a config for a stream that no longer exists, and another program's config.
    seeder = Communicator(BrokerSettings(host=broker.host, port=broker.port), "t-seeder", None, lambda s: b"")
    seeder.start()
    seeder.publish(stale, b'{"name": "old"}', qos=1, retain=True, content_type="application/json")
    seeder.publish(foreign, b'{"name": "lamp"}', qos=1, retain=True, content_type="application/json")
    assert seeder.wait_published()

    ha = HomeAssistantStandIn(broker, prefix, topics)
    sensor = _sensor(broker, topic_root, prefix, tiny_pipeline, "cam-a", stream_id="kitchen")
    fusion = start_fusion()
    try:
        # The config appears (retained), the stale one is cleared, the foreign one is left alone.
        assert ha.wait(lambda: ha.on(kitchen) and ha.on(stale) and ha.on(stale)[-1].payload == b"")
        config = json.loads(ha.on(kitchen)[-1].payload)
        _check_ha_required_fields(config, topics, "kitchen")
        assert [e["topic"] for e in config["availability"][1:]] == [topics.sensor_status("cam-a")]
        assert ha.on(kitchen)[-1].content_type == "application/json"

        # Results flow; the templates Home Assistant renders give the label and the attributes.
        sensor.run_replay()
        assert ha.wait(lambda: len(ha.on(topics.result("kitchen"))) == 5)  # every replayed frame decided
        result_msg = ha.on(topics.result("kitchen"))[-1]
        result = Result.model_validate_json(result_msg.payload)
        value_json = json.loads(result_msg.payload)
        assert jinja2.Template(config["value_template"]).render(value_json=value_json) == result.label
        env = jinja2.Environment()
        attributes = json.loads(env.from_string(config["json_attributes_template"]).render(value_json=value_json))
        assert attributes["confidence"] == result.confidence
        assert attributes["fraction_received"] == result.fraction_received
        assert [t["label"] for t in attributes["topk"]] == [t.label for t in result.topk]

        # Nothing changed: nothing re-published, however often the worker loop goes round.
        ha.pump(1.0)
        assert len([m for m in ha.on(kitchen) if m.payload]) == 1

        # A second sensor joins the stream: the availability list changes, so the config is published again.
        second = _sensor(broker, topic_root, prefix, tiny_pipeline, "cam-b", stream_id="kitchen", count=1)
        assert ha.wait(lambda: len([m for m in ha.on(kitchen) if m.payload]) == 2)
        updated = json.loads(ha.on(kitchen)[-1].payload)
        assert [e["topic"] for e in updated["availability"][1:]] == [topics.sensor_status("cam-a"),
                                                                    topics.sensor_status("cam-b")]

        # Home Assistant restarts: its birth message brings the last state back after a random delay.
        states_before = len(ha.on(topics.result("kitchen")))
        born = time.monotonic()
        seeder.publish(f"{prefix}/status", b"online", qos=1, content_type="text/plain")
        assert ha.wait(lambda: len(ha.on(topics.result("kitchen"))) > states_before, timeout=5)
        assert time.monotonic() - born >= 0.15  # not at once: announce_delay_s is (0.2, 0.6)
        assert ha.on(topics.result("kitchen"))[-1].payload == result_msg.payload

        # The stream goes away (both births cleared): its config is cleared, so Home Assistant removes the entity.
        for sensor_id in ("cam-a", "cam-b"):
            seeder.publish(topics.sensor_birth(sensor_id), b"", qos=1, retain=True, content_type="application/json")
        assert ha.wait(lambda: ha.on(kitchen)[-1].payload == b"")
        second.stop()
    finally:
        sensor.stop()
        fusion.close()
        ha.close()
        seeder.stop()

    # What the broker keeps: nothing for the removed stream or the stale one, the foreign config untouched.
    late = HomeAssistantStandIn(broker, prefix, topics)
    late.pump(0.5)
    late.close()
    assert {m.topic for m in late.messages if m.retain and m.payload} == {foreign}


def test_an_unchanged_config_is_not_republished_after_a_restart(broker: PrivateMosquitto, topic_root: str,
                                                                prefix: str, tiny_pipeline: NairPipeline,
                                                                start_fusion: Any) -> None:
    topics = TopicTree(topic_root, SITE)
    topic = config_topic(prefix, "fusion-1", topics, "porch")
    sensor = _sensor(broker, topic_root, prefix, tiny_pipeline, "cam-p", stream_id="porch", count=1)
    ha = HomeAssistantStandIn(broker, prefix, topics)
    try:
        first = start_fusion()
        assert ha.wait(lambda: ha.on(topic))
        first.close()
        second = start_fusion()
        ha.pump(1.5)  # settle (0.5 s) and a good number of worker-loop rounds
        assert second.agent.discovery is not None
        assert second.agent.discovery.counts == {"published": 0, "cleared": 0, "announced": 0}
        assert len([m for m in ha.on(topic) if m.payload]) == 1
    finally:
        sensor.stop()
        ha.close()


def test_builders_are_pure_and_ids_are_valid() -> None:
    topics = TopicTree("acme/lab", "site-1")
    config = stream_config(topics, "door", "fusion-2", ["cam-2", "cam-1"], version="1.2.3")
    assert config == stream_config(topics, "door", "fusion-2", ["cam-1", "cam-2"], version="1.2.3")
    assert encode_config(config) == encode_config(dict(reversed(list(config.items()))))
    assert object_id(topics, "door") == "acme_lab_site-1_door"  # [a-zA-Z0-9_-] only, as Home Assistant requires
    assert config_topic("homeassistant", "fusion-2", topics, "door") == \
        "homeassistant/sensor/nairbus-fusion-2/acme_lab_site-1_door/config"
    with pytest.raises(ValueError, match="wildcards"):
        DiscoverySettings(prefix="home/#")
