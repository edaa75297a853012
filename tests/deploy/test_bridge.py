"""A site broker bridged to the hub's (``broker/mosquitto.site.conf``): sensors on the site broker, fusion on the hub.

Two private Mosquitto processes: the hub from the development config, the site from the shipped bridge config with
its ``address`` pointed at the hub (and the test's topic root). The sensor publishes to the site, fusion decides on
the hub, and the results match the offline evaluator on what arrived; a command sent on the hub reaches the sensor,
and the results come back to the site for local subscribers.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.calibration import CalibrationSettings, calibrate
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas import Result
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.topics import TopicTree
from tests.agents.running import running
from tests.manifests import in_memory_manifest

pytestmark = pytest.mark.broker
SITE_CONFIG = Path(__file__).resolve().parents[2] / "broker" / "mosquitto.site.conf"
MANIFEST = in_memory_manifest("tiny", "d" * 64, labels=tuple(f"class{i}" for i in range(10)))
FRAMES = 30


@pytest.fixture(scope="module")
def pipeline() -> NairPipeline:
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval()
    artifact = calibrate(model, "tiny", MANIFEST.sha256, load_split("train").images[:300],
                         CalibrationSettings(first_fragment=16))
    return NairPipeline(model, MANIFEST, artifact)


@pytest.fixture
def hub_and_site(tmp_path: Path, topic_root: str) -> Iterator[tuple[PrivateMosquitto, PrivateMosquitto]]:
    with PrivateMosquitto() as hub:
        text = SITE_CONFIG.read_text()
        text = re.sub(r"^address .*$", f"address {hub.host}:{hub.port}", text, flags=re.MULTILINE)
        text = text.replace("topic nairbus/v1/", f"topic {topic_root}/v1/")
        text = text.replace("connection nairbus-hub", f"connection bridge-{uuid.uuid4().hex[:8]}")
        config = tmp_path / "site.conf"
        config.write_text(text)
        with PrivateMosquitto(config) as site:
            yield hub, site


def _config(broker: PrivateMosquitto, root: str, **sections: object) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)  # type: ignore[arg-type]


def _listener(broker: PrivateMosquitto, topics: TopicTree) -> Communicator:
    comm = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"listener-{uuid.uuid4().hex[:8]}",
                        None, lambda state: b"{}")
    comm.subscribe(topics.all_results(), qos=0)
    comm.start()
    return comm


def _results(comm: Communicator, topics: TopicTree, want: int, timeout: float) -> dict[int, Result]:
    out: dict[int, Result] = {}
    end = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < end:
        msg = comm.get(timeout=0.1)
        if msg is None:
            continue
        parsed = topics.parse(msg.topic)
        if parsed is not None and parsed.kind == "result":
            result = wire_decode(msg.payload, Result)
            out[result.frame_id] = result
    return out


def test_sensors_on_a_site_broker_are_decided_by_fusion_on_the_hub(
        hub_and_site: tuple[PrivateMosquitto, PrivateMosquitto], topic_root: str, pipeline: NairPipeline) -> None:
    hub, site = hub_and_site
    topics = TopicTree(topic_root, "lab")
    fusion = FusionAgent(_config(hub, topic_root, fusion=FusionSettings(deadline_ms=2000)), pipeline)
    with running(fusion):
        at_hub, at_site = _listener(hub, topics), _listener(site, topics)
        time.sleep(1.0)  # the bridge is up (restart_timeout 1 s) and subscribed on the hub
        births = Communicator(BrokerSettings(host=hub.host, port=hub.port), f"births-{uuid.uuid4().hex[:8]}", None,
                              lambda state: b"{}")
        births.subscribe(topics.sensor_birth("cam-site"), qos=1)
        births.start()
        sensor = SensorAgent(_config(site, topic_root, sensor=SensorSettings(
            sensor_id="cam-site", count=FRAMES, fps=10.0, deadline_ms=10000, budget_fraction=0.25)), pipeline)
        sensor.start()
        worker = threading.Thread(target=sensor.run_replay)
        worker.start()
        first_birth = births.get(timeout=5)  # the birth crossed the bridge
        # A command sent on the hub (fusion's rebirth request) reaches the sensor at the site: its birth comes again.
        fusion.request_rebirth("cam-site")
        rebirth = births.get(timeout=5)
        worker.join(timeout=60)
        hub_results = _results(at_hub, topics, FRAMES, timeout=20)
        site_results = _results(at_site, topics, FRAMES, timeout=5)
        births.stop()
        sensor.stop()
        at_hub.stop()
        at_site.stop()
    assert sorted(hub_results) == list(range(FRAMES))  # every frame crossed the bridge and was decided
    ids = np.arange(FRAMES)
    got = [hub_results[int(i)] for i in ids]
    offline = pipeline.prefix_probs(pipeline.encode_all(load_split("test").images[ids]),
                                    np.array([r.components_received for r in got])).argmax(1)
    assert np.array_equal(np.array([r.class_index for r in got]), offline)  # live = offline
    assert len(site_results) >= FRAMES - 2  # the results came back to the site's subscribers
    assert all(site_results[i].class_index == hub_results[i].class_index for i in site_results)
    assert first_birth is not None
    assert rebirth is not None


def test_the_bridge_config_sends_every_topic_one_way_only() -> None:
    """Loop-free by construction: no topic pattern is bridged both ways."""
    lines = [line.split() for line in SITE_CONFIG.read_text().splitlines() if line.startswith("topic ")]
    out = {w[1] for w in lines if w[2] == "out"}
    into = {w[1] for w in lines if w[2] == "in"}
    assert out
    assert into
    assert not out & into
    assert all(w[2] in ("in", "out") for w in lines)  # never "both"
    leaves = {w[1].split("/")[-1] for w in lines}
    assert {"frag", "image", "topk", "birth", "status", "set"} <= leaves
