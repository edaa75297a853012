"""The decision mode: the device runs the whole model and sends its top-k; fusion publishes it like any result.

Unit tests drive the encoder and the fusion agent's handler table with no broker (the fusion agent is handed a bus
that only records); the broker tests run a decision sensor and the NAIR fusion agent over a private Mosquitto and
check that the live bus gives, frame for frame, the offline model's decision — on all 10 000 test frames with the
shipped model in the slow tier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest

from nairbus.agents.nair.fusion import DecisionPart, FusionAgent
from nairbus.agents.nair.outgoing import DecisionEncoder, top_k
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.device import DevicePipeline, load_device_pipeline
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas import Birth, DecisionBirth, ModelRef, Result, TopK, VpBirth
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.lean import LeanContext, encode_lean
from nairbus.schemas.topics import TopicTree
from nairbus.schemas.wire import ALIAS_PROPERTIES_LEN, alias_wire_bytes, publish_size
from tests.agents.test_bus import Listener
from tests.agents.test_bus import pipeline as tiny_pipeline  # noqa: F401  (a fixture)
from tests.agents.test_fusion_units import RecordingBus

TOPICS = TopicTree("unit", "lab")
EPOCH = float(int(time.time()) - 60)


@pytest.fixture(scope="module")
def base() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


def _message(topic: str, payload: bytes, received_ts: float | None = None) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, content_type=None, retain=False,
                          received_ts=time.time() if received_ts is None else received_ts)


def _birth(pipeline: NairPipeline, sid: str, mode: str = "decision", k: int = 1) -> Birth:
    sections: dict[str, Any] = ({"decision": DecisionBirth(k=k)} if mode == "decision" else
                                {"vp": VpBirth(variant="w44r28", weight=1.0, k=k)})
    return Birth(sensor_id=sid, session="s1", ts=time.time(), mode=mode, stream_id=sid,  # type: ignore[arg-type]
                 labels=pipeline.labels, model=ModelRef(name="base", sha256=pipeline.manifest.sha256),
                 deadline_ms=500.0, epoch_ts=EPOCH, expiry_ms=10_000, **sections)


def _topk(sid: str, frame_id: int, classes: tuple[int, ...], scores: tuple[float, ...], seq: int = 1,
          age_s: float = 0.0) -> bytes:
    now = time.time() - age_s
    msg = TopK(sensor_id=sid, session="s1", seq=seq, frame_id=frame_id, capture_ts=now, expires_ts=now + 10,
               classes=classes, scores=scores)
    return encode_lean(msg, LeanContext(sid, "s1", EPOCH, 10.0))


def _decided(agent: FusionAgent, bus: RecordingBus) -> list[Result]:
    agent.decide(agent.buffer.flush())
    return [wire_decode(p, Result) for t, p in bus.published if t.startswith(f"{TOPICS.prefix}/results/")]


# ----- units ----------------------------------------------------------------------------------------------------------


def test_top_k_is_the_most_probable_classes_in_order() -> None:
    probs = np.array([0.1, 0.5, 0.05, 0.3, 0.05])
    assert top_k(probs, 1) == ((1,), (0.5,))
    assert top_k(probs, 3) == ((1, 3, 0), (0.5, 0.3, 0.1))
    assert top_k(probs, 5)[0][-2:] == (2, 4)  # ties: the lower class id first


@pytest.mark.parametrize(("seq", "frame_id", "capture_ms", "limit"), [
    (1, 0, 0, 32), (10_000, 9_999, 333_300, 32),  # the test split at 30 frames/s
    (2**32 - 1, 2**32 - 1, 86_400_000, 34),  # a day later: 32-bit counters take msgpack's 5-byte form
    (2**32, 2**32, 86_400_000, 42),  # past 32 bits: the 9-byte form
])
def test_a_top_1_decision_takes_about_30_wire_bytes(seq: int, frame_id: int, capture_ms: int, limit: int) -> None:
    ctx = LeanContext("cam-1", "s1", EPOCH, 10.0)
    encoder = DecisionEncoder(1, ctx, TOPICS.sensor_topk("cam-1"))
    probs = np.full(10, 0.05)
    probs[7] = 0.55
    out = encoder.message(probs, frame_id, seq, EPOCH + capture_ms / 1000.0, None)
    assert out is not None
    assert out.representation == "decision"
    assert out.wire_bytes <= limit
    assert encoder.message(probs, frame_id, seq, EPOCH + capture_ms / 1000.0, out.wire_bytes - 1) is None
    with pytest.raises(ValueError, match="k >= 1"):
        DecisionEncoder(0, ctx, "t")


def test_a_decision_stands_for_a_whole_class_vector() -> None:
    part = DecisionPart((3, 1), (0.6, 0.2))
    probs = part.probabilities(10)
    assert probs.sum() == pytest.approx(1.0)
    assert int(probs.argmax()) == 3
    assert probs[0] == pytest.approx(0.2 / 8)


def test_fusion_publishes_a_devices_decision_and_refuses_bad_ones(base: NairPipeline) -> None:
    bus = RecordingBus()
    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), base, bus=bus)  # type: ignore[arg-type]
    assert TOPICS.all_sensors("topk") in bus.subscriptions
    agent.handle(_message(TOPICS.sensor_birth("cam-1"), wire_encode(_birth(base, "cam-1", k=2))), time.monotonic())
    assert agent.sensors["cam-1"].k == 2
    bad = {"k": ((1, 2, 3), (0.3, 0.2, 0.1)), "class": ((10,), (0.5,)), "twice": ((4, 4), (0.4, 0.4)),
           "score": ((1,), (1.5,)), "nan": ((1,), (float("nan"),)), "sum": ((1, 2), (0.7, 0.6))}
    for i, (classes, scores) in enumerate(bad.values()):
        try:
            payload = _topk("cam-1", 100 + i, classes, scores, seq=10 + i)
        except ValueError:  # the encoder refuses it already; a hostile sender writes the bytes itself
            tag = LeanContext("cam-1", "s1", EPOCH, 10.0).tag
            payload = msgpack.packb([2, tag, 10 + i, 100 + i, 1000, list(classes), list(scores)])
        agent.handle(_message(TOPICS.sensor_topk("cam-1"), payload), time.monotonic())
    assert sum(agent.rejected.values()) == len(bad)
    agent.handle(_message(TOPICS.sensor_topk("cam-1"), _topk("cam-1", 7, (8, 0), (0.9, 0.05))), time.monotonic())
    (result,) = _decided(agent, bus)
    assert (result.frame_id, result.class_index, result.label) == (7, 8, base.labels[8])
    assert result.representation == "decision"
    assert result.confidence == pytest.approx(0.9)
    # The sensor's first message on its topic taught the broker the alias: it carried the topic too.
    first = publish_size(len(TOPICS.sensor_topk("cam-1")), result.bytes_received, properties_len=ALIAS_PROPERTIES_LEN)
    assert result.wire_bytes == first
    agent.handle(_message(TOPICS.sensor_topk("cam-1"), _topk("cam-1", 8, (8, 0), (0.9, 0.05), seq=2)), time.monotonic())
    assert _decided(agent, bus)[-1].wire_bytes == alias_wire_bytes(result.bytes_received) <= 32  # later: the alias


@pytest.mark.parametrize("shed", [True, False])
def test_an_overloaded_hub_sheds_what_is_too_late_only_when_asked(base: NairPipeline, shed: bool) -> None:
    """``shed_late``: a frame past 3/4 of the deadline when fusion takes it is shed and counted, not decided late; a
    shed frame is no sequence gap; a frame on time is decided. Off (the default): every frame is decided."""
    bus = RecordingBus()
    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab"),
                      fusion=FusionSettings(deadline_ms=400.0, shed_late=shed))
    agent = FusionAgent(cfg, base, bus=bus)  # type: ignore[arg-type]
    agent.handle(_message(TOPICS.sensor_birth("cam-1"), wire_encode(_birth(base, "cam-1"))), time.monotonic())
    for seq, age in enumerate((0.0, 0.35, 0.25, 0.0), start=1):  # 350 ms > 300 ms (3/4 of 400): too late
        agent.handle(_message(TOPICS.sensor_topk("cam-1"), _topk("cam-1", seq, (seq,), (0.9,), seq=seq, age_s=age)),
                     time.monotonic())
    decided = [r.frame_id for r in _decided(agent, bus)]
    assert decided == ([1, 3, 4] if shed else [1, 2, 3, 4])
    assert agent.rejected["shed_late"] == (1 if shed else 0)
    assert agent.counts["seq_gap"] == 0


def test_a_stalled_fusion_does_not_read_its_own_backlog_as_a_flood(base: NairPipeline) -> None:
    """The frame-rate limit counts frames as they arrived at the hub (the network thread's receive time), not as the
    worker gets to them: 400 frames that came at 150/s and wait while the worker is stalled are all admitted; the
    same 400 arriving within 0.1 s are a flood, cut to the bucket's one second's worth (and 0.1 s of refill)."""
    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab"))
    for sid, spacing, admitted in (("steady", 1 / 150, 400), ("flood", 0.1 / 400, 219)):
        bus = RecordingBus()
        agent = FusionAgent(cfg, base, bus=bus)  # type: ignore[arg-type]
        agent.handle(_message(TOPICS.sensor_birth(sid), wire_encode(_birth(base, sid))), time.monotonic())
        arrived = time.time() - 400 * spacing
        now = time.monotonic()  # the stalled worker takes them all at once
        for i in range(400):
            agent.handle(_message(TOPICS.sensor_topk(sid), _topk(sid, i, (1,), (0.9,), seq=i + 1),
                                  received_ts=arrived + i * spacing), now)
        assert agent.rejected["rate_limited"] == 400 - admitted, sid
        assert len(_decided(agent, bus)) == admitted, sid


def test_fusion_ignores_the_top_k_of_sensors_another_fusion_serves(base: NairPipeline) -> None:
    bus = RecordingBus()
    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), base, bus=bus)  # type: ignore[arg-type]
    agent.handle(_message(TOPICS.sensor_birth("vp-1"), wire_encode(_birth(base, "vp-1", mode="vp", k=3))),
                 time.monotonic())
    bus.published.clear()
    for i in range(5):
        agent.handle(_message(TOPICS.sensor_topk("vp-1"), _topk("vp-1", i, (1, 2, 3), (0.5, 0.2, 0.1), seq=i + 1)),
                     time.monotonic())
    assert agent.counts["foreign_messages"] == 5
    assert bus.published == []  # not parked, no birth asked for
    agent.expire_parked(time.monotonic() + 6.0)
    assert agent.rejected["unknown_sensor"] == 0
    # The same sensor id announcing a mode this agent serves is routed again.
    agent.handle(_message(TOPICS.sensor_birth("vp-1"), wire_encode(_birth(base, "vp-1"))), time.monotonic())
    agent.handle(_message(TOPICS.sensor_topk("vp-1"), _topk("vp-1", 9, (2,), (0.8,), seq=9)), time.monotonic())
    assert [r.frame_id for r in _decided(agent, bus)] == [9]


def test_the_decision_mode_is_a_registered_sensor_mode() -> None:
    from nairbus.agents.methods import METHODS

    settings = SensorSettings(mode="decision", method_options={"k": 3})
    assert METHODS.for_sensor(settings).name == "nair"
    with pytest.raises(ValueError, match="k"):
        METHODS.for_sensor(SensorSettings(mode="decision", method_options={"k": 0}))


def test_the_cli_puts_k_into_the_methods_options() -> None:
    from nairbus.agents.cli.run import sensor_overrides

    flags = dict.fromkeys(("budget", "image_codecs", "shard", "source", "test_loss", "folder", "image_topic", "camera"))
    overrides = sensor_overrides({**flags, "mode": "decision", "k": 5})
    assert overrides["method_options"] == {"k": 5}  # VP's default value, but asked for: kept


# ----- over a real broker -------------------------------------------------------------------------------------------


def _config(broker: PrivateMosquitto, root: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)


@pytest.fixture
def fusion_for(broker: PrivateMosquitto, topic_root: str) -> Iterator[Any]:
    agents: list[tuple[FusionAgent, threading.Thread]] = []

    def start(pipeline: NairPipeline) -> FusionAgent:
        cfg = _config(broker, topic_root, fusion=FusionSettings(deadline_ms=2000, stats_interval_s=0.5,
                                                                max_fps_per_sensor=100_000, max_frames=20_000))
        agent = FusionAgent(cfg, pipeline)
        agent.start()
        worker = threading.Thread(target=agent.run, daemon=True)
        worker.start()
        agents.append((agent, worker))
        return agent

    yield start
    for agent, worker in agents:
        agent.stop()
        worker.join(timeout=10)
        agent.close()


def _run_decisions(broker: PrivateMosquitto, root: str, pipeline: DevicePipeline, count: int,
                   **kw: Any) -> tuple[dict[tuple[str, int], Result], dict[str, int]]:
    listener = Listener(broker, TopicTree(root, "lab"))
    listener.comm.start()
    settings = SensorSettings(sensor_id="dev-1", mode="decision", count=count, deadline_ms=10_000, **kw)
    sensor = SensorAgent(_config(broker, root, sensor=settings), pipeline)
    sensor.start()
    try:
        counters = sensor.run_replay()
        listener.collect({("dev-1", i) for i in range(count)}, timeout=60)
    finally:
        sensor.stop()
        listener.comm.stop()
    return listener.results, counters


@pytest.mark.broker
def test_live_decisions_are_the_offline_models(broker: PrivateMosquitto, topic_root: str,
                                               tiny_pipeline: NairPipeline, fusion_for: Any) -> None:  # noqa: F811
    fusion_for(tiny_pipeline)
    results, counters = _run_decisions(broker, topic_root, tiny_pipeline, 60, fps=300.0, method_options={"k": 3})
    assert counters["decision_frames"] == counters["frames_sent"] == 60
    offline = tiny_pipeline.full_model_probs(load_split("test").images[:60])
    live = [results[("dev-1", i)] for i in range(60)]
    assert [r.class_index for r in live] == offline.argmax(1).tolist()
    assert all(r.representation == "decision" and r.complete for r in live)
    assert [len(r.topk) for r in live[:1]] == [3]
    assert max(r.wire_bytes for r in live[1:]) <= 48  # k = 3: three class ids and three float32 scores
    assert live[0].wire_bytes > 48  # the first one carried the topic as well, teaching the broker the alias
    assert all(r.confidence == pytest.approx(float(p.max()), abs=1e-6) for r, p in zip(live, offline, strict=True))


@pytest.mark.broker
def test_a_model_without_a_nair_artifact_sends_and_gets_decisions(broker: PrivateMosquitto, topic_root: str,
                                                                   fusion_for: Any) -> None:
    """Any manifest model runs the decision mode, calibrated or not: here a VP variant, which has no NAIR artifact,
    loaded by name on both sides as the CLI does."""
    name = "variants-w44r24"
    light = NairPipeline.load(name, optional=True)
    assert not light.has_artifact
    with pytest.raises(FileNotFoundError, match="nairbus calibrate --model variants-w44r24"):
        light.encode(load_split("test").images[:1])
    fusion = FusionAgent(_config(broker, topic_root, fusion=FusionSettings(model=name, deadline_ms=2000)))
    assert fusion.pipelines == {}  # nothing to decode NAIR with, decisions and images only
    fusion.close()
    fusion_for(light)
    listener = Listener(broker, TopicTree(topic_root, "lab"))
    listener.comm.start()
    settings = SensorSettings(sensor_id="dev-1", model=name, mode="decision", count=40, link_fit=False,
                              deadline_ms=10_000)  # unpaced: every frame, as fast as it goes
    sensor = SensorAgent(_config(broker, topic_root, sensor=settings))  # loads the model by name, no artifact
    assert sensor.nair is None
    assert sensor.start_fields()["artifact"] is None
    sensor.start()
    try:
        counters = sensor.run_replay()
        listener.collect({("dev-1", i) for i in range(40)}, timeout=60)
    finally:
        sensor.stop()
        listener.comm.stop()
    assert counters["decision_frames"] == 40
    offline = light.full_model_probs(load_split("test").images[:40]).argmax(1)
    assert [listener.results[("dev-1", i)].class_index for i in range(40)] == offline.tolist()
    with pytest.raises(FileNotFoundError, match="no NAIR artifact"):  # NAIR itself still needs the artifact
        SensorAgent(_config(broker, topic_root, sensor=SensorSettings(sensor_id="dev-2", model=name, mode="nair")))


@pytest.fixture(scope="module")
def light_base(tmp_path_factory: pytest.TempPathFactory) -> DevicePipeline:
    """The shipped base model as a light sensor runs it: its whole model exported to ONNX, in ONNX Runtime."""
    from nairbus.models.export.onnx import export_sensor_parts

    out = tmp_path_factory.mktemp("light-base")
    export_sensor_parts("base", out)
    return load_device_pipeline("onnx", str(out / "base.json"), optional=True, parts=("whole",))


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_live_decisions_match_the_shipped_model_on_every_test_frame(broker: PrivateMosquitto, topic_root: str,
                                                                    base: NairPipeline, fusion_for: Any,
                                                                    runtime: str, request: pytest.FixtureRequest,
                                                                    ) -> None:
    # The torch sensor, and the light sensor (ONNX Runtime): the hub's offline decision on every test frame.
    test = load_split("test")
    fusion_for(base)
    device: DevicePipeline = base if runtime == "torch" else request.getfixturevalue("light_base")
    results, counters = _run_decisions(broker, topic_root, device, len(test), link_fit=False)  # as fast as it can
    assert counters["frames_sent"] == len(test)
    live = np.array([results[("dev-1", i)].class_index for i in range(len(test))])
    offline = base.full_model_probs(test.images).argmax(1)
    assert np.array_equal(live, offline)
    assert max(results[("dev-1", i)].wire_bytes for i in range(1, len(test))) <= 32  # once the alias is set
    accuracy = float((live == test.labels).mean())
    assert accuracy == pytest.approx(base.manifest.test_accuracy, abs=1e-4)


@pytest.mark.broker
def test_the_first_frame_of_a_connection_fits_the_cap_with_its_topic(broker: PrivateMosquitto, topic_root: str,
                                                                     tiny_pipeline: NairPipeline,  # noqa: F811
                                                                     fusion_for: Any) -> None:
    # The first publish on a topic carries the topic as well as its alias (it teaches the broker the alias): a
    # frame that fills a 200 B cap must leave room for it, and fusion must count it.
    fusion_for(tiny_pipeline)
    listener = Listener(broker, TopicTree(topic_root, "lab"))
    listener.comm.start()
    cap = 200
    settings = SensorSettings(sensor_id="dev-2", mode="nair", count=3, fps=20.0, deadline_ms=10_000,
                              budget_bytes=cap, link_fit=False)
    sensor = SensorAgent(_config(broker, topic_root, sensor=settings), tiny_pipeline)
    sensor.start()
    try:
        counters = sensor.run_replay()
        listener.collect({("dev-2", i) for i in range(3)}, timeout=30)
    finally:
        sensor.stop()
        listener.comm.stop()
    got = [listener.results[("dev-2", i)] for i in range(3)]
    topic_len = len(TopicTree(topic_root, "lab").sensor_frag("dev-2"))
    assert counters["frames_sent"] == 3
    assert counters["wire_bytes"] <= 3 * cap  # the sensor's own count of whole PUBLISH packets
    assert all(r.wire_bytes <= cap for r in got)
    assert got[0].bytes_received < got[1].bytes_received - topic_len + 4  # the first frame paid for its topic
    assert got[1].wire_bytes > cap - 8  # later frames fill the cap under the alias


@pytest.mark.parametrize("topic_len", [1, 35, 100, 200])
def test_the_alias_teaching_publish_is_budgeted_exactly_or_over(topic_len: int) -> None:
    from nairbus.agents.runtime.aliases import TopicAliases

    aliases = TopicAliases()
    aliases.reset(alias_max=1)
    topic = "t" * topic_len
    for budget in (10, 120, 127, 200, 16_390):
        extra = aliases.extra_bytes(topic, budget)
        sizes = [publish_size(topic_len, n, properties_len=ALIAS_PROPERTIES_LEN) for n in range(budget + 1)]
        assert all(size <= alias_wire_bytes(n) + extra for n, size in enumerate(sizes))
        assert extra in (topic_len, topic_len + 1)
    aliases.assign(topic)
    assert aliases.extra_bytes(topic, 200) == 0
    other = "o" * topic_len  # no alias left: the topic instead of the alias property
    assert aliases.extra_bytes(other, 50) == publish_size(topic_len, 50) - alias_wire_bytes(50)
