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

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.nair.settings import LossSettings
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.loss import LossModel
from nairbus.models.nair.calibration import CalibrationSettings, calibrate
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas import CONTENT_TYPE_JSON, Fragment, Result, Stats
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.lean import encode_lean
from nairbus.schemas.topics import TopicTree
from tests.agents.running import running
from tests.manifests import in_memory_manifest

pytestmark = pytest.mark.broker
MANIFEST = in_memory_manifest("tiny", "c" * 64, labels=tuple(f"class{i}" for i in range(10)))


@pytest.fixture(scope="module")
def pipeline() -> NairPipeline:
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval()
    train = load_split("train")
    artifact = calibrate(model, "tiny", MANIFEST.sha256, train.images[:300], CalibrationSettings(first_fragment=16))
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
    with running(FusionAgent(cfg, pipeline)) as agent:
        yield agent


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
    budget = 0.25
    sensors = [
        # Link-fitted (the default): each frame's prefix follows the measured link, so compare at what arrived.
        _sensor(broker, topic_root, pipeline, sensor_id="cam-a", shard=(0, 2), budget_fraction=budget),
        # A fixed budget cut along the plan with injected loss (test tooling): the offline evaluator's channel.
        _sensor(broker, topic_root, pipeline, sensor_id="cam-b", shard=(1, 2), budget_fraction=budget,
                link_fit=False, fragments_by_plan=True, loss=LossSettings(kind="random", rate=0.3, seed=3)),
    ]
    threads = [threading.Thread(target=s.run_replay) for s in sensors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    listener.collect({("cam-a", i) for i in range(0, 40, 2)} | {("cam-b", i) for i in range(1, 40, 2)}, timeout=20)
    counters = sensors[0].counters
    for s in sensors:
        s.stop()
    listener.comm.stop()
    a_ids, b_ids = np.arange(0, 40, 2), np.arange(1, 40, 2)
    got_a = [listener.results[("cam-a", int(i))] for i in a_ids]
    ends = np.array([r.components_received for r in got_a])
    codes = pipeline.encode_all(load_split("test").images[a_ids])
    offline_a = pipeline.prefix_probs(codes, ends).argmax(1)
    assert np.array_equal(np.array([r.class_index for r in got_a]), offline_a)
    cap = round(budget * pipeline.artifact.total_bytes())
    assert all(r.bytes_received <= cap and r.complete and r.representation == "nair" for r in got_a)
    assert max(r.bytes_received for r in got_a) > cap * 0.9  # a fast link soon carries the whole capped prefix
    assert all(r.wire_bytes > r.bytes_received for r in got_a)  # the envelope is counted
    assert counters["frames_sent"] == 20
    assert counters["wire_bytes"] >= sum(r.wire_bytes for r in got_a)
    got_b = [int(i) for i in b_ids if ("cam-b", int(i)) in listener.results]
    assert len(got_b) >= 15  # a frame is missing only if injected loss took every fragment
    live_b = np.array([listener.results[("cam-b", i)].class_index for i in got_b])
    offline_b = _offline(pipeline, np.array(got_b), cap, LossModel("random", p=0.3, seed=3))
    assert np.array_equal(live_b, offline_b)
    assert listener.results[("cam-b", got_b[0])].sensors != ()


def test_fusion_survives_garbage_while_good_frames_flow(broker: PrivateMosquitto, topic_root: str,
                                                        pipeline: NairPipeline,
                                                        running_fusion: FusionAgent) -> None:
    topics = TopicTree(topic_root, "lab")
    listener = Listener(broker, topics)
    listener.comm.start()
    # Whole frames, not link-fitted: the flood shares the good sensor's broker, and fitting would (rightly) shrink
    # its frames; what is asserted here is that garbage costs the good frames nothing at the fusion agent.
    good = _sensor(broker, topic_root, pipeline, sensor_id="good", count=30, link_fit=False)
    attacker = Communicator(BrokerSettings(host=broker.host, port=broker.port), "attacker",
                            f"{topics.prefix}/observers/attacker/status", lambda state: b"{}")
    attacker.start()
    ctx = good.ctx
    now = time.time()
    ms = round((now - ctx.epoch_ts) * 1000)
    frag_topic = topics.sensor_frag("good")

    def lean(*body: object, version: int = 2, tag: int | None = None, frame_id: int = 9999) -> bytes:
        return bytes(msgpack.packb([version, ctx.tag if tag is None else tag, 1, frame_id, ms, *body],
                                   use_bin_type=True))

    garbage: list[tuple[str, bytes]] = [
        (frag_topic, b"\xc1\xc1 not msgpack"),
        (frag_topic, lean(0, 16, 16, b"\x00" * 16, version=1)),
        (frag_topic, lean(0, 17, 17, b"\x00" * 16)),  # 17 components at their planned 8 bits are not 16 bytes
        (frag_topic, bytes(msgpack.packb([2, ctx.tag, 1, 9999, float("nan"), 0, 16, 16, b"\x00" * 16]))),
        (frag_topic, b"\x00" * 20000),
        (frag_topic, lean(0, 16, 16, b"\x00" * 16, tag=(ctx.tag + 1) % 128)),  # a straggler of an older session
        (frag_topic, lean(0, 16)),  # wrong arity
        (topics.sensor_frag("stranger"), lean(0, 16, 16, b"\x00" * 16)),
        (topics.sensor_birth("evil"), b'{"v": 1, "kind": "birth"}'),
    ]
    # The first 16 components of a frame that announces more: it stays pending, so the repeat is a duplicate.
    codes = np.zeros(pipeline.artifact.n_components, dtype=np.uint16)
    from nairbus.models.nair.codec import pack_run
    dup_frag = Fragment(sensor_id="good", session=ctx.session, seq=1, frame_id=5000, capture_ts=now,
                        expires_ts=now + 60, start=0, end=16, frame_end=32, data=pack_run(codes, pipeline.artifact,
                                                                                      0, 16))
    dup = encode_lean(dup_frag, ctx)
    worker = threading.Thread(target=good.run_replay)
    worker.start()
    for _ in range(3):
        for topic, payload in garbage:
            attacker.publish(topic, payload, qos=1, content_type=CONTENT_TYPE_JSON if "birth" in topic else None)
        attacker.publish(frag_topic, dup, qos=1, content_type=None)
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
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        rejected = running_fusion.stats().rejected
        if rejected.get("duplicate", 0) >= 2 and rejected.get("unknown_sensor", 0) >= 1:
            break  # (a stranger's frames wait 5 s, PARK_S, for a birth before they count as unknown_sensor)
        time.sleep(0.1)
    rejected = running_fusion.stats().rejected
    for reason in ("malformed", "version", "invalid", "oversize", "session", "unknown_sensor",
                   "birth_invalid", "duplicate", "shape"):
        assert rejected.get(reason, 0) >= 1, (reason, rejected)


def test_after_a_broker_restart_a_new_fusion_learns_the_sensor_again(topic_root: str,
                                                                     pipeline: NairPipeline) -> None:
    # Issue 17: the private broker runs without persistence, so a restart forgets the sensor's retained birth; the
    # sensor must announce it again, or a fusion agent started afterwards rejects every frame as unknown_sensor.
    # Frames captured while the broker is away are counted as such (skipped_offline), not queued.
    with PrivateMosquitto() as broker:
        cfg = AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port, reconnect_min_s=0.05,
                                                reconnect_max_s=0.2),
                          topics=TopicSettings(root=topic_root, site="lab"),
                          sensor=SensorSettings(sensor_id="cam-r", count=400, fps=40.0, deadline_ms=10000,
                                                stay=True))  # fusion still knows it after the run
        sensor = SensorAgent(cfg, pipeline)
        sensor.start()
        replay = threading.Thread(target=sensor.run_replay)
        replay.start()
        time.sleep(1.0)
        broker.stop()
        time.sleep(1.0)
        broker.start()
        assert sensor.comm.connected.wait(10.0)
        fusion = FusionAgent(cfg.model_copy(update={"fusion": FusionSettings(deadline_ms=300)}), pipeline)
        fusion.start()
        worker = threading.Thread(target=fusion.run, daemon=True)
        worker.start()
        try:
            replay.join(timeout=30)
            deadline = time.monotonic() + 10
            while fusion.counts["decided"] < 100 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert fusion.counts["decided"] >= 100  # frames after the restart were decided
            assert "cam-r" in fusion.sensors
            assert fusion.rejected["unknown_sensor"] == 0
            assert sensor.counters["skipped_offline"] >= 10  # about a second of frames at 40 fps
            assert sensor.counters["dropped_outgoing"] <= 2
        finally:
            sensor.stop()
            fusion.stop()
            worker.join(timeout=10)
            fusion.close()


def test_a_range_coded_artifact_runs_live_as_offline(broker: PrivateMosquitto, topic_root: str) -> None:
    # Entropy-coded fragments over a real broker: the birth says how they are coded, fusion decodes each frame's
    # coded prefix, and its decisions are the offline evaluator's for the components that arrived.
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval()
    artifact = calibrate(model, "tiny", MANIFEST.sha256, load_split("train").images[:300],
                         CalibrationSettings(first_fragment=16, bit_bands=((0.05, 2), (1.0, 1)), entropy_coding=True))
    coded = NairPipeline(model, MANIFEST, artifact)
    cfg = _config(broker, topic_root, fusion=FusionSettings(deadline_ms=400, stats_interval_s=0.2, max_frames=64))
    fusion = FusionAgent(cfg, coded)
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    listener = Listener(broker, TopicTree(topic_root, "lab"))
    listener.comm.start()
    sensor = _sensor(broker, topic_root, coded, sensor_id="cam-r", count=20, budget_bytes=120)
    assert sensor.birth().nair is not None
    assert sensor.birth().nair.coding == "range"
    sensor.run_replay()
    listener.collect({("cam-r", i) for i in range(20)}, timeout=20)
    sensor.stop()
    listener.comm.stop()
    fusion.stop()
    worker.join(timeout=10)
    fusion.close()
    got = [listener.results[("cam-r", i)] for i in range(20)]
    ends = np.array([r.components_received for r in got])
    codes = coded.encode_all(load_split("test").images[:20])
    assert np.array_equal(np.array([r.class_index for r in got]), coded.prefix_probs(codes, ends).argmax(1))
    assert all(0 < r.bytes_received <= 120 for r in got)
    assert ends.max() > 100
