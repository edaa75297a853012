"""Sensor and fusion agents over a real private Mosquitto: frames classify, garbage is counted, nothing stalls.

A tiny untrained model stands in only for plumbing checks; what is asserted is that the live bus reproduces the
offline evaluator frame for frame, which holds for any model. Figures in reports come from the shipped weights.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import torch

from agents.config import AgentConfig, FusionSettings, LossSettings, SensorSettings
from agents.fusion import FusionAgent
from agents.mosquitto import PrivateMosquitto
from agents.mqtt import Communicator
from agents.sensor import SensorAgent
from agents.settings import BrokerSettings, TopicSettings
from models.calibration import CalibrationSettings, calibrate
from models.data import load_split
from models.loss import LossModel
from models.pipeline import NairPipeline
from models.resnet import ResNet, ResNetConfig
from schemas import CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, Fragment, Result, Stats, encode
from schemas import decode as wire_decode
from schemas.topics import TopicTree

pytestmark = pytest.mark.broker
MANIFEST = {"name": "tiny", "sha256": "c" * 64, "labels": [f"class{i}" for i in range(10)]}


@pytest.fixture(scope="module")
def pipeline() -> NairPipeline:
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval()
    train = load_split("train")
    artifact = calibrate(model, "tiny", MANIFEST["sha256"], train.images[:300], CalibrationSettings(first_fragment=16))
    return NairPipeline(model, MANIFEST, artifact)


def _config(broker: PrivateMosquitto, root: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)


class Listener:
    """Collects results and stats from the bus."""

    def __init__(self, broker: PrivateMosquitto, topics: TopicTree) -> None:
        self.comm = Communicator(BrokerSettings(host=broker.host, port=broker.port),
                                 f"test-listener-{uuid.uuid4().hex[:8]}", f"{topics.prefix}/observers/test/status",
                                 lambda state: b"{}")
        self.comm.subscribe(topics.all_results(), qos=0)
        self.comm.subscribe(topics.all_fusion("stats"), qos=0)
        self.topics = topics
        self.results: dict[tuple[str, int], Result] = {}
        self.stats: Stats | None = None

    def collect(self, want: set[tuple[str, int]], timeout: float) -> None:
        """Read the bus until every wanted (stream, frame) result arrived or ``timeout`` passed."""
        end = time.monotonic() + timeout
        while not want <= self.results.keys() and time.monotonic() < end:
            msg = self.comm.get(timeout=0.1)
            if msg is None:
                continue
            parsed = self.topics.parse(msg.topic)
            if parsed and parsed.kind == "result":
                result = wire_decode(msg.payload, Result)
                self.results[(result.stream_id, result.frame_id)] = result
            elif parsed and parsed.kind == "fusion_stats":
                self.stats = wire_decode(msg.payload, Stats)


@pytest.fixture
def running_fusion(broker: PrivateMosquitto, topic_root: str, pipeline: NairPipeline) -> Iterator[FusionAgent]:
    cfg = _config(broker, topic_root, fusion=FusionSettings(deadline_ms=400, stats_interval_s=0.2, max_frames=64))
    agent = FusionAgent(cfg, pipeline)
    agent.start()
    worker = threading.Thread(target=agent.run, daemon=True)
    worker.start()
    yield agent
    agent.stop()
    worker.join(timeout=10)
    agent.close()
    assert not worker.is_alive()


def _sensor(broker: PrivateMosquitto, root: str, pipeline: NairPipeline, **kw: Any) -> SensorAgent:
    settings = SensorSettings(**{"count": 40, "fps": 400.0, "deadline_ms": 10000, **kw})
    agent = SensorAgent(_config(broker, root, sensor=settings), pipeline)
    agent.start()
    return agent


def _offline(pipeline: NairPipeline, ids: np.ndarray, budget: int | None, loss: LossModel) -> np.ndarray:
    images = load_split("test").images[ids]
    return pipeline.offline_probs(pipeline.encode_all(images), ids, budget, loss)[0].argmax(1)


def test_live_bus_reproduces_the_offline_evaluator(broker: PrivateMosquitto, topic_root: str,
                                                   pipeline: NairPipeline, running_fusion: FusionAgent) -> None:
    listener = Listener(broker, TopicTree(topic_root, "lab"))
    listener.comm.start()
    budget = pipeline.artifact.total_bytes() // 4
    sensors = [
        _sensor(broker, topic_root, pipeline, sensor_id="cam-a", shard=(0, 2), budget_bytes=budget),
        _sensor(broker, topic_root, pipeline, sensor_id="cam-b", shard=(1, 2), budget_bytes=budget,
                loss=LossSettings(kind="random", rate=0.3, seed=3)),
    ]
    threads = [threading.Thread(target=s.run_replay) for s in sensors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    listener.collect({("cam-a", i) for i in range(0, 40, 2)} | {("cam-b", i) for i in range(1, 40, 2)}, timeout=20)
    for s in sensors:
        s.stop()
    listener.comm.stop()
    a_ids, b_ids = np.arange(0, 40, 2), np.arange(1, 40, 2)
    live_a = np.array([listener.results[("cam-a", int(i))].class_index for i in a_ids])
    assert np.array_equal(live_a, _offline(pipeline, a_ids, budget, LossModel()))
    got_b = [int(i) for i in b_ids if ("cam-b", int(i)) in listener.results]
    assert len(got_b) >= 15  # a frame is missing only if injected loss took every fragment
    live_b = np.array([listener.results[("cam-b", i)].class_index for i in got_b])
    offline_b = _offline(pipeline, np.array(got_b), budget, LossModel("random", p=0.3, seed=3))
    assert np.array_equal(live_b, offline_b)
    first = listener.results[("cam-a", 0)]
    assert first.complete
    assert first.bytes_received <= budget
    assert 0.2 < first.fraction_received <= 0.25
    assert listener.results[("cam-b", got_b[0])].sensors != ()


def test_fusion_survives_garbage_while_good_frames_flow(broker: PrivateMosquitto, topic_root: str,
                                                        pipeline: NairPipeline,
                                                        running_fusion: FusionAgent) -> None:
    topics = TopicTree(topic_root, "lab")
    listener = Listener(broker, topics)
    listener.comm.start()
    good = _sensor(broker, topic_root, pipeline, sensor_id="good", count=30)
    attacker = Communicator(BrokerSettings(host=broker.host, port=broker.port), "attacker",
                            f"{topics.prefix}/observers/attacker/status", lambda state: b"{}")
    attacker.start()
    session = good.comm.session
    valid = {"v": 1, "kind": "frag", "sensor_id": "good", "session": session, "seq": 1, "frame_id": 9999,
             "capture_ts": time.time(), "expires_ts": time.time() + 60, "index": 0, "start": 0, "end": 16, "bits": 8,
             "frame_fragments": 1, "data": b"\x00" * 16}
    frag_topic = topics.sensor_frag("good")
    garbage: list[tuple[str, bytes, str]] = [
        (frag_topic, b"\xc1\xc1 not msgpack", CONTENT_TYPE_MSGPACK),
        (frag_topic, msgpack.packb({**valid, "v": 2}), CONTENT_TYPE_MSGPACK),
        (frag_topic, msgpack.packb({**valid, "end": 17, "data": b"\x00" * 17}), CONTENT_TYPE_MSGPACK),
        (frag_topic, msgpack.packb({**valid, "capture_ts": float("nan")}), CONTENT_TYPE_MSGPACK),
        (frag_topic, b"\x00" * 20000, CONTENT_TYPE_MSGPACK),
        (frag_topic, msgpack.packb({**valid, "session": "old-session"}), CONTENT_TYPE_MSGPACK),
        (topics.sensor_frag("stranger"), msgpack.packb({**valid, "sensor_id": "stranger"}), CONTENT_TYPE_MSGPACK),
        (topics.sensor_birth("evil"), b'{"v": 1, "kind": "birth"}', CONTENT_TYPE_JSON),
    ]
    dup = encode(Fragment(**{**valid, "frame_id": 5000, "frame_fragments": 2}))
    worker = threading.Thread(target=good.run_replay)
    worker.start()
    for _ in range(3):
        for topic, payload, ctype in garbage:
            attacker.publish(topic, payload, qos=1, content_type=ctype)
        attacker.publish(frag_topic, dup, qos=1, content_type=CONTENT_TYPE_MSGPACK)
        time.sleep(0.05)
    attacker.wait_published()
    worker.join(timeout=60)
    listener.collect({("good", i) for i in range(30)}, timeout=15)
    good.stop()
    attacker.stop()
    listener.comm.stop()
    ids = np.arange(30)
    live = np.array([listener.results[("good", int(i))].class_index for i in ids])
    assert np.array_equal(live, _offline(pipeline, ids, None, LossModel()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rejected = running_fusion.stats().rejected
        if rejected.get("duplicate", 0) >= 2:
            break
        time.sleep(0.1)
    rejected = running_fusion.stats().rejected
    for reason in ("malformed", "version", "invalid", "oversize", "stale_session", "unknown_sensor",
                   "birth_invalid", "duplicate"):
        assert rejected.get(reason, 0) >= 1, (reason, rejected)
    assert rejected["shape"] >= 3 or rejected["invalid"] >= 6  # wrong data length for its span
