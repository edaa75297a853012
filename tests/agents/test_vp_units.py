"""VP pieces that need no broker: the vote buffer, the lean top-k wire and hostile votes at fusion, settings, wire
sizes, and a variant sensor that falls behind skipping stale frames instead of queueing them."""

from __future__ import annotations

import itertools
import math
import queue
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]
import numpy as np
import pytest
from pydantic import ValidationError

from nairbus.agents.home.discovery import DiscoverySettings
from nairbus.agents.nair.outgoing import alias_wire_bytes
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.settings import TopicSettings
from nairbus.agents.sources import FrameSource
from nairbus.agents.sources.frame_stream import FrameStreamSource
from nairbus.agents.vp.common import SENSOR_COUNTERS, ClassifyCost, choose_young, topk_message_bytes
from nairbus.agents.vp.fusion import VoteBuffer, VpFusionAgent
from nairbus.agents.vp.sensor import VpSensorAgent
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import LABELS
from nairbus.models.vp.family import LoadedVariant
from nairbus.models.vp.fusion import Vote
from nairbus.models.vp.manifest import FamilyManifest
from nairbus.schemas import (
    CONTENT_TYPE_JSON,
    Birth,
    Frame,
    ModelRef,
    Result,
    Status,
    TopK,
    VpBirth,
    WireError,
    decode,
    encode,
)
from nairbus.schemas.lean import LeanContext, decode_lean, encode_lean
from nairbus.schemas.topics import ParsedTopic, TopicTree
from tests.manifests import in_memory_manifest

SHA = "a" * 64


def _vote(name: str) -> Vote:
    return Vote(name, (1, 2), (0.6, 0.3), 1.0)


# ----- vote buffer --------------------------------------------------------------------------------------------------
def test_frame_waits_for_every_online_sensor_then_decides() -> None:
    buf = VoteBuffer(deadline_s=0.5)
    online = {"a", "b", "c"}
    assert buf.add("cam", 7, "a", _vote("a"), 20, 1.0, online, now=10.0, wire_bytes=28) == "added"
    assert buf.add("cam", 7, "b", _vote("b"), 20, 1.0, online, now=10.1, wire_bytes=28) == "added"
    assert buf.pop_ready(10.2) == []
    assert buf.add("cam", 7, "c", _vote("c"), 20, 1.0, online, now=10.2, wire_bytes=28) == "added"
    (frame,) = buf.pop_ready(10.2)
    assert sorted(frame.votes) == ["a", "b", "c"]
    assert frame.nbytes == 60
    assert frame.wire_bytes == 84
    assert frame.expected == 3
    assert buf.add("cam", 7, "c", _vote("c"), 20, 1.0, online, now=10.3) == "late"


def test_silent_sensor_costs_at_most_the_deadline() -> None:
    buf = VoteBuffer(deadline_s=0.5)
    buf.add("cam", 1, "a", _vote("a"), 20, 1.0, {"a", "b"}, now=10.0)
    assert buf.next_deadline() == pytest.approx(10.5)
    assert buf.pop_ready(10.49) == []
    (frame,) = buf.pop_ready(10.5)
    assert list(frame.votes) == ["a"]


def test_offline_sensor_is_no_longer_waited_for() -> None:
    buf = VoteBuffer(deadline_s=5.0)
    buf.add("cam", 1, "a", _vote("a"), 20, 1.0, {"a", "b"}, now=10.0)
    buf.sensor_gone("b")
    (frame,) = buf.pop_ready(10.0)
    assert list(frame.votes) == ["a"]
    assert frame.expected == 2


def test_duplicates_and_memory_bound() -> None:
    buf = VoteBuffer(deadline_s=5.0, max_frames=2)
    online = {"a", "b"}
    buf.add("cam", 1, "a", _vote("a"), 20, 1.0, online, now=0.0)
    assert buf.add("cam", 1, "a", _vote("a"), 20, 1.0, online, now=0.0) == "duplicate"
    buf.add("cam", 2, "a", _vote("a"), 20, 1.0, online, now=0.0)
    buf.add("cam", 3, "a", _vote("a"), 20, 1.0, online, now=0.0)  # forces frame 1 out
    assert len(buf) == 2
    (forced,) = buf.pop_ready(0.0)
    assert forced.frame_id == 1
    assert forced.evicted
    assert buf.add("cam", 1, "b", _vote("b"), 20, 1.0, online, now=0.0) == "late"
    assert {f.frame_id for f in buf.flush()} == {2, 3}


def test_a_flooding_sensor_evicts_only_the_frames_it_opened() -> None:
    buf = VoteBuffer(deadline_s=5.0, max_frames=50, max_frames_per_sensor=10)
    online = {"honest", "flood"}
    for frame_id in range(5):
        assert buf.add("cam", frame_id, "honest", _vote("honest"), 20, 1.0, online, now=0.0) == "added"
    for frame_id in range(1000, 3000):  # frame ids nobody else will vote on
        buf.add("cam", frame_id, "flood", _vote("flood"), 20, 1.0, online, now=0.0)
    assert buf.pending_of("flood") == 10
    assert buf.pending_of("honest") == 5
    forced = buf.pop_ready(0.0)
    assert forced
    assert all(f.opened_by == "flood" and f.evicted for f in forced)
    # The honest sensor's frames are all still open and decide normally once the other vote arrives.
    for frame_id in range(5):
        assert buf.add("cam", frame_id, "flood", _vote("flood"), 20, 1.0, online, now=0.0) == "added"
    decided = buf.pop_ready(0.0)
    assert {f.frame_id for f in decided} == set(range(5))
    assert all(not f.evicted and set(f.votes) == {"honest", "flood"} for f in decided)


def test_the_global_bound_evicts_from_the_sensor_with_most_open_frames() -> None:
    buf = VoteBuffer(deadline_s=5.0, max_frames=8, max_frames_per_sensor=100)
    online = {"a", "b"}
    for frame_id in range(2):
        buf.add("cam", frame_id, "a", _vote("a"), 20, 1.0, online, now=0.0)
    for frame_id in range(100, 120):
        buf.add("cam", frame_id, "b", _vote("b"), 20, 1.0, online, now=0.0)
    assert len(buf) == 8
    assert buf.pending_of("a") == 2
    assert all(f.opened_by == "b" for f in buf.pop_ready(0.0))
    assert buf.flush()
    assert buf.pending_of("b") == 0


def test_streams_do_not_mix() -> None:
    buf = VoteBuffer(deadline_s=5.0)
    buf.add("cam1", 1, "a", _vote("a"), 20, 1.0, {"a"}, now=0.0)
    buf.add("cam2", 1, "x", _vote("x"), 20, 1.0, {"x", "y"}, now=0.0)
    ready = buf.pop_ready(0.0)
    assert [(f.stream_id, f.frame_id) for f in ready] == [("cam1", 1)]


# ----- messages, settings, sizes ------------------------------------------------------------------------------------
def test_frame_message_round_trip_and_validation() -> None:
    frame = Frame(stream_id="cam", session="s1", seq=1, frame_id=3, capture_ts=1.0, expires_ts=2.0, height=28,
                  width=28, pixels=bytes(784))
    assert decode(encode(frame), Frame) == frame
    with pytest.raises(ValidationError, match="784"):
        Frame(stream_id="cam", session="s1", seq=1, frame_id=3, capture_ts=1.0, expires_ts=2.0, height=28,
              width=28, pixels=bytes(700))
    with pytest.raises(WireError) as err:  # a frame (a msgpack map) offered as a lean top-k
        decode_lean(encode(frame), TopK, LeanContext("vp-a", "s1", 0.0, 10.0))
    assert err.value.reason == "malformed"
    tree = TopicTree("root", "site")
    assert tree.frames("cam") == "root/v1/site/frames/cam"
    assert tree.parse(tree.frames("cam")) == ParsedTopic(kind="frame", ident="cam")
    assert tree.all_frames() == "root/v1/site/frames/+"


def test_vp_sensor_settings_need_a_variant() -> None:
    from nairbus.agents.methods import METHODS

    with pytest.raises(ValueError, match="variant"):
        METHODS.for_sensor(SensorSettings(mode="vp"))
    assert METHODS.for_sensor(SensorSettings(mode="vp", variant="w44r28", k=2)).name == "vp"
    assert SensorSettings(mode="vp", variant="w44r28", k=2).method_options == {"variant": "w44r28", "k": 2}


def test_topk_messages_are_lean_on_the_wire_and_grow_with_k() -> None:
    sizes = [topk_message_bytes(k) for k in range(1, 6)]
    assert sizes == sorted(sizes)
    # Each class adds one id byte and a float32 score (5 bytes); the envelope is the lean head plus the PUBLISH
    # with a topic alias: k = 5 is well under a quarter of the old self-describing map (183 B).
    assert [b - a for a, b in itertools.pairwise(sizes)] == [6, 6, 6, 6]
    assert sizes[-1] <= 64
    ctx = LeanContext("vp-a", "s1", epoch_ts=1000.0, expiry_s=10.0)
    msg = TopK(sensor_id="vp-a", session="s1", seq=1, frame_id=2, capture_ts=1001.0, expires_ts=1011.0,
               classes=(3, 1), scores=(0.75, 0.25))
    payload = encode_lean(msg, ctx)
    assert decode_lean(payload, TopK, ctx) == msg
    assert msgpack.unpackb(payload) == [2, ctx.tag, 1, 2, 1000, [3, 1], [0.75, 0.25]]
    with pytest.raises(TypeError):
        encode(msg)


# ----- the sensor: stale frames are skipped, not queued -------------------------------------------------------------
def _frame(frame_id: int, capture_ts: float, expiry_s: float = 10.0) -> Frame:
    return Frame(stream_id="cam", session="cap", seq=frame_id + 1, frame_id=frame_id, capture_ts=capture_ts,
                 expires_ts=capture_ts + expiry_s, height=28, width=28, pixels=bytes(784))


def test_choose_young_skips_stale_frames_and_keeps_the_newest() -> None:
    now = 1000.0
    frames = [_frame(i, now - 5.0 + 0.1 * i) for i in range(10)]  # 4.1 .. 5.0 s old: past a 1 s deadline
    fresh = [_frame(100 + i, now - 0.01 * (5 - i)) for i in range(5)]
    chosen, stale = choose_young([*frames, *fresh], now, deadline_s=1.0, cost=lambda n: 0.0)
    assert [f.frame_id for f in chosen] == [104, 103, 102, 101, 100]  # newest first
    assert sorted(f.frame_id for f in stale) == list(range(10))
    # It must choose: at 0.3 s a frame only three fit by the deadline, and they are the newest three.
    chosen, stale = choose_young(fresh, now, deadline_s=1.0, cost=lambda n: 0.3 * n)
    assert [f.frame_id for f in chosen] == [104, 103, 102]
    assert sorted(f.frame_id for f in stale) == [100, 101]
    # Expired frames and frames from before the session epoch are stale whatever the deadline.
    chosen, stale = choose_young([_frame(1, now - 2.0, expiry_s=1.0), _frame(2, now - 1.5), _frame(3, now - 0.5)],
                                 now, 60.0, lambda n: 0.0, epoch_ts=now - 1.0)
    assert [f.frame_id for f in chosen] == [3]
    assert sorted(f.frame_id for f in stale) == [1, 2]


def test_classify_cost_separates_batch_overhead_from_per_frame_time() -> None:
    cost = ClassifyCost()
    assert cost.seconds(100, 32) == 0.0  # nothing measured yet: optimistic
    cost.note(1, 0.0025)
    assert cost.seconds(10, 32) == pytest.approx(0.025)  # one size seen: all of it per frame
    for n in (1, 2, 8, 32, 3, 16):
        cost.note(n, 0.002 + 0.0005 * n)
    assert cost.per_batch_s == pytest.approx(0.002, rel=0.05)
    assert cost.per_frame_s == pytest.approx(0.0005, rel=0.05)
    assert cost.seconds(64, 32) == pytest.approx(2 * cost.per_batch_s + 64 * cost.per_frame_s)
    cost.note(0, 1.0)
    cost.note(4, math.nan)  # ignored
    assert math.isfinite(cost.seconds(10, 4))


class FakeComm:
    """Stands in for the Communicator: an inbox to fill, and every publish recorded with its time."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.inbox: queue.Queue[InboundMessage] = queue.Queue()
        self.published: list[tuple[str, bytes, int, float]] = []
        self.last_wire_bytes = 0
        self.counters: dict[str, int] = {"wire_bytes": 0}

    def route(self, topic: str, handler: Any, qos: int = 1) -> None:
        """Commands are not looked at here."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                content_type: str | None = None, expiry_s: float | None = None, alias: bool = False,
                replay: bool = False) -> bool:
        assert content_type is None
        assert alias
        assert expiry_s is None
        assert qos == 0
        self.last_wire_bytes = alias_wire_bytes(len(payload))
        self.counters["wire_bytes"] += self.last_wire_bytes
        self.published.append((topic, payload, qos, time.time()))
        return True

    def get(self, timeout: float | None = None) -> InboundMessage | None:
        try:
            return self.inbox.get(timeout=timeout) if timeout else self.inbox.get_nowait()
        except queue.Empty:
            return None

    def wait_published(self, timeout: float = 5.0) -> bool:
        return True

    def stop(self) -> None:
        pass


def _tiny_variant() -> LoadedVariant:
    model = ResNet(ResNetConfig(widths=(4, 4, 4), blocks=(1, 1, 1)))
    return LoadedVariant(name="tiny", model=model, weight=1.0, manifest=in_memory_manifest("variants-tiny", SHA))


def _slow_sensor(seconds_per_call: float, **settings: Any) -> tuple[VpSensorAgent, FakeComm]:
    cfg = AgentConfig(sensor=SensorSettings(mode="vp", variant="tiny", sensor_id="vp-tiny", stream_id="cam", k=3,
                                            **settings),
                      topics=TopicSettings(root="t", site="lab"))
    agent = VpSensorAgent(cfg, _tiny_variant())
    fake = FakeComm(agent.comm.session)
    agent.comm = fake  # type: ignore[assignment]

    def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(seconds_per_call)  # a variant slower than the frame rate
        n = len(images)
        return np.tile(np.array([[3, 1, 0]]), (n, 1)), np.tile(np.array([[0.5, 0.3, 0.1]], np.float32), (n, 1))

    agent.classify = classify  # type: ignore[method-assign]
    return agent, fake


def test_slow_variant_skips_stale_replay_frames_instead_of_queueing_them() -> None:
    period, frames = 0.01, 40
    agent, fake = _slow_sensor(0.03, fps=1 / period, count=frames)
    started = time.monotonic()
    counters = agent.run_replay()
    wall = time.monotonic() - started
    assert set(SENSOR_COUNTERS) <= set(counters)
    assert counters["frames"] == frames
    assert counters["published"] + counters["frames_skipped"] == frames
    assert counters["frames_skipped"] >= frames // 4  # it can do about a third of the frames
    assert counters["published"] == len(fake.published) > 0
    assert counters["wire_bytes"] == sum(alias_wire_bytes(len(p)) for _, p, _, _ in fake.published)
    # What it publishes is fresh: capture (the frame's replay slot) to publish stays about one classification,
    # where a queueing sensor's lag would grow to the whole backlog (~0.8 s here) by the end.
    ctx = agent.ctx
    lags = [at - decode_lean(p, TopK, ctx).capture_ts for _, p, _, at in fake.published]
    assert max(lags) < 0.2, lags
    assert wall < frames * period + 0.3  # it does not run on to catch up


def test_slow_variant_drains_its_inbox_and_classifies_only_frames_still_in_time() -> None:
    agent, fake = _slow_sensor(0.005, source="mqtt", count=35, deadline_ms=1000)
    now = time.time()
    stale = [_frame(i, now - 5.0 + 0.01 * i) for i in range(30)]  # queued behind while the variant was busy
    fresh = [_frame(100 + i, now - 0.01 * (5 - i)) for i in range(5)]
    for f in [*stale, *fresh]:
        fake.inbox.put(InboundMessage("t/v1/lab/frames/cam", encode(f), None, False, now))
    counters = agent.run_mqtt()
    published = sorted(decode_lean(p, TopK, agent.ctx).frame_id for _, p, _, _ in fake.published)
    assert published == [100, 101, 102, 103, 104]
    assert counters["frames"] == 35
    assert counters["frames_skipped"] == 30
    assert counters["published"] == 5


def test_mqtt_source_newest_first_when_the_deadline_cannot_take_all() -> None:
    agent, fake = _slow_sensor(0.0, source="mqtt", count=5, deadline_ms=1000)
    opened = agent.open_frames

    def measured() -> FrameSource:
        source = opened()
        assert isinstance(source, FrameStreamSource)
        source.cost = ClassifyCost(per_frame_s=0.3, forget=1.0)  # as if measured: three of five fit by the deadline
        source.cost.note = lambda frames, seconds: None  # type: ignore[method-assign]  # and it stays so
        return source

    agent.open_frames = measured  # type: ignore[method-assign]
    now = time.time()
    for i in range(5):
        fake.inbox.put(InboundMessage("t/v1/lab/frames/cam", encode(_frame(i, now - 0.001 * (5 - i))), None, False,
                                      now))
    counters = agent.run_mqtt()
    assert sorted(decode_lean(p, TopK, agent.ctx).frame_id for _, p, _, _ in fake.published) == [2, 3, 4]
    assert counters["frames_skipped"] == 2


# ----- fusion: hostile lean votes -----------------------------------------------------------------------------------
def _family(names: list[str]) -> FamilyManifest:
    """The committed family manifest with variants ``names`` (weights ``variants-<name>``, sha256 ``SHA``)."""
    family = FamilyManifest.load()
    first = family.variants[0]
    variants = tuple(first.model_copy(update={"name": n, "weights_name": f"variants-{n}", "sha256": SHA,
                                              "fusion_weight": 1.0}) for n in names)
    return family.model_copy(update={"labels": tuple(LABELS), "variants": variants})


def _fusion() -> tuple[VpFusionAgent, list[Result]]:
    family = _family(["a", "b"])
    cfg = AgentConfig(fusion=FusionSettings(mode="vp", deadline_ms=500), topics=TopicSettings(root="t", site="lab"))
    agent = VpFusionAgent(cfg, family)
    results: list[Result] = []

    def publish(topic: str, payload: bytes, **_kw: Any) -> bool:
        if agent.topics.parse(topic) is not None and agent.topics.parse(topic).kind == "result":  # type: ignore[union-attr]
            results.append(decode(payload, Result))
        return True  # the stream's home-automation state goes the same way; only the results are looked at

    agent.comm.publish = publish  # type: ignore[method-assign]
    return agent, results


def _birth(name: str, session: str, epoch_ts: float) -> Birth:
    return Birth(sensor_id=f"vp-{name}", session=session, ts=epoch_ts + 60, mode="vp", stream_id="cam",
                 labels=LABELS, model=ModelRef(name=f"variants-{name}", sha256=SHA),
                 vp=VpBirth(variant=name, weight=1.0, k=3), deadline_ms=500, epoch_ts=epoch_ts, expiry_ms=10_000)


def _msg(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic, payload, None, False, time.time())


def test_fusion_decodes_lean_votes_with_the_birth_context_and_counts_wire_bytes() -> None:
    fusion, results = _fusion()
    topics = fusion.topics
    epoch = float(int(time.time() - 60))
    ctxs = {}
    for name in ("a", "b"):
        birth = _birth(name, f"s-{name}", epoch)
        fusion.on_birth(birth.sensor_id, InboundMessage(topics.sensor_birth(birth.sensor_id), encode(birth),
                                                        CONTENT_TYPE_JSON, True, time.time()))
        ctxs[name] = LeanContext.from_birth(birth)
    now = time.time()
    sizes = 0
    for name, classes in (("a", (3, 1, 0)), ("b", (1, 3, 2))):
        ctx = ctxs[name]
        payload = encode_lean(TopK(sensor_id=ctx.sensor_id, session=ctx.session, seq=1, frame_id=7,
                                   capture_ts=now, expires_ts=now + 10, classes=classes, scores=(0.6, 0.3, 0.1)),
                              ctx)
        # each sensor's first vote taught the broker its topic alias: it carried the topic as well
        sizes += alias_wire_bytes(len(payload)) + len(topics.sensor_topk(ctx.sensor_id))
        fusion.on_topk(ctx.sensor_id, _msg(topics.sensor_topk(ctx.sensor_id), payload), time.monotonic())
    assert fusion.counts["votes"] == 2
    assert not fusion.rejected
    fusion.decide(fusion.buffer.pop_ready(time.monotonic()))
    (result,) = results
    assert result.representation == "vp"
    assert result.variants == ("a", "b")
    assert result.complete
    assert result.wire_bytes == sizes == fusion.counts["wire_bytes"]
    assert result.capture_ts == pytest.approx(now, abs=1e-3)  # milliseconds after the birth's epoch


def test_hostile_votes_are_rejected_with_a_reason_never_a_crash() -> None:
    fusion, results = _fusion()
    topics = fusion.topics
    epoch = float(int(time.time() - 60))
    birth = _birth("a", "s-a", epoch)
    sid = birth.sensor_id
    fusion.on_birth(sid, InboundMessage(topics.sensor_birth(sid), encode(birth), CONTENT_TYPE_JSON, True,
                                        time.time()))
    tag = LeanContext.from_birth(birth).tag
    ms = round((time.time() - epoch) * 1000)

    def lean(*items: Any) -> bytes:
        return bytes(msgpack.packb(list(items), use_bin_type=True))

    good = (1, 5, ms, [3, 1], [0.6, 0.3])
    cases: list[tuple[str, bytes]] = [
        ("malformed", b"\xc1garbage"),
        ("malformed", b""),
        ("malformed", bytes(msgpack.packb({"v": 2, "kind": "topk"}))),
        ("malformed", lean(2)),
        ("malformed", lean(2, tag, *good, 9)),  # one element too many
        ("malformed", lean(2, tag, 1, 5, ms, list(range(1001)), [0.1])),
        ("malformed", bytes(msgpack.packb("a string"))),  # no strings at all on the lean wire
        ("malformed", lean("2", tag, *good)),
        ("malformed", lean(2, tag, 1, 5, ms, ["3"], [0.5])),
        ("version", lean(1, tag, *good)),
        ("version", lean(None, tag, *good)),
        ("version", lean(3.0, tag, *good)),
        ("session", lean(2, (tag + 1) % 128, *good)),
        ("session", lean(2, -1, *good)),
        ("invalid", lean(2, tag, 1, 5, ms, [3, 1], [math.nan, 0.3])),
        ("invalid", lean(2, tag, 1, 5, ms, [3, 1], [math.inf, 0.3])),
        ("invalid", lean(2, tag, 1, 5, ms, [3, 3], [0.6, 0.3])),  # duplicate classes
        ("invalid", lean(2, tag, 1, 5, ms, [3, 1], [0.6])),  # ids and scores disagree
        ("invalid", lean(2, tag, 1, 5, ms, [], [])),
        ("invalid", lean(2, tag, 1, 5, ms, [-3], [0.5])),
        ("invalid", lean(2, tag, -1, 5, ms, [3], [0.5])),  # negative sequence number
        ("invalid", lean(2, tag, 1.5, 5, ms, [3], [0.5])),
        ("invalid", lean(2, tag, 1, -5, ms, [3], [0.5])),
        ("invalid", lean(2, tag, 1, 5, -1, [3], [0.5])),  # before the epoch
        ("invalid", lean(2, tag, 1, 5, 2**63, [3], [0.5])),  # centuries after it
        ("invalid", lean(2, tag, 1, 5, float(ms), [3], [0.5])),
        ("invalid", lean(2, tag, 1, 5, ms, [3], [b"\x00"])),
        ("shape", lean(2, tag, 1, 5, ms, [10], [0.5])),  # class id past the labels
        ("shape", lean(2, tag, 1, 5, ms, [2**64 - 1], [0.5])),
        ("shape", lean(2, tag, 1, 5, ms, [0, 1, 2, 3], [0.4, 0.3, 0.2, 0.1])),  # more than k
        ("shape", lean(2, tag, 1, 5, ms, [3], [1.5])),
        ("shape", lean(2, tag, 1, 5, ms, [3], [-0.1])),
        ("expired", lean(2, tag, 1, 5, 1000, [3], [0.5])),  # captured a second after the epoch, 10 s expiry
        ("oversize", b"\x92" + bytes(20000)),
    ]
    for reason, payload in cases:
        before = fusion.rejected[reason]
        fusion.on_topk(sid, _msg(topics.sensor_topk(sid), payload), time.monotonic())
        assert fusion.rejected[reason] == before + 1, (reason, payload[:40], dict(fusion.rejected))
    assert fusion.counts["votes"] == 0
    # Unknown sensors, and a sensor whose birth was cleared, are refused before anything is decoded.
    fusion.on_topk("vp-ghost", _msg(topics.sensor_topk("vp-ghost"), lean(2, tag, *good)), time.monotonic())
    fusion.on_birth(sid, InboundMessage(topics.sensor_birth(sid), b"", None, True, time.time()))
    fusion.on_topk(sid, _msg(topics.sensor_topk(sid), lean(2, tag, *good)), time.monotonic())
    fusion.expire_parked(time.monotonic() + 6.0)  # no birth came for them in time (PARK_S: 5 s)
    assert fusion.rejected["unknown_sensor"] == 2
    # Extreme but valid counters are taken (and the jump shows as a sequence gap), and nothing was corrupted:
    # the same sensor re-born still decides frames.
    fusion.on_birth(sid, InboundMessage(topics.sensor_birth(sid), encode(birth), CONTENT_TYPE_JSON, True,
                                        time.time()))
    fusion.on_topk(sid, _msg(topics.sensor_topk(sid), lean(2, tag, 1, 2**64 - 1, ms, [3], [0.5])), time.monotonic())
    fusion.on_topk(sid, _msg(topics.sensor_topk(sid), lean(2, tag, 2**64 - 1, 5, ms, [3, 1], [0.6, 0.3])),
                   time.monotonic())
    assert fusion.counts["votes"] == 2
    assert fusion.counts["seq_jump"] == 1
    assert fusion.counts["seq_gap"] == 0
    # The crash issue 17 found: huge gaps used to add up past the stats' 64-bit fields and end the process.
    # Counters saturate and the stats message can always be built.
    fusion.counts["seq_gap"] = 2**70
    fusion.rejected.update({f"reason{i}": 2**65 for i in range(300)})
    stats = fusion.stats()
    assert stats.rejected["seq_gap"] == 2**64 - 1
    assert len(stats.rejected) == 256
    fusion.decide(fusion.buffer.flush())
    assert sorted(r.frame_id for r in results) == [5, 2**64 - 1]
    assert all(r.label == LABELS[3] and r.representation == "vp" for r in results)


# ----- the live demo's checks: overload is not the stopped device -----------------------------------------------------
def _demo_summary(variant_sets: dict[int, tuple[str, ...]], frames: int = 100, stop_frame: int = 50) -> dict[str, Any]:
    from types import SimpleNamespace

    from nairbus.agents.tools.demo_vp import VpDemoSettings, _summarise

    names, victim = ["a", "b", "c"], "c"
    # 10 frames/s; "c" is stopped at frame stop_frame's capture time (1005.0 by default), its process gone later.
    captured = {i: 1000.0 + 0.1 * i for i in range(frames)}
    stop_ts = 1000.0 + 0.1 * stop_frame
    stopped = {"variant": victim, "after_frames_published": stop_frame, "ts": stop_ts, "exited_ts": stop_ts + 3.0}
    results = {}
    for i, variants in variant_sets.items():
        results[i] = Result(stream_id="cam", fusion_id="f", frame_id=i, label=LABELS[0], class_index=0,
                            confidence=1.0, topk=(), fraction_received=1.0, bytes_received=45 * len(variants),
                            fragments_received=len(variants), sensors=variants, capture_ts=captured[i],
                            decided_ts=captured[i] + 0.01, latency_ms=10.0, complete=True, variants=variants,
                            representation="vp", wire_bytes=53 * len(variants))
    watcher = SimpleNamespace(results=results)
    zeros = np.zeros(frames, dtype=np.int64)
    family = _family(names)
    return _summarise(VpDemoSettings(frames=frames), watcher, zeros, zeros, zeros, names, victim, ["a", "b"],  # type: ignore[arg-type]
                      dict.fromkeys(names, 0.9), stopped, family, 1.0, captured, {"sent": frames},
                      {n: {"frames_skipped": 0} for n in names})


def _healthy() -> dict[int, tuple[str, ...]]:
    # before: captured before 1004.5; transition: to 1005.5 (either set); after: the remaining two.
    return {i: ("a", "b", "c") if i < 48 else ("a", "b") for i in range(100)}


def test_demo_checks_pass_when_only_the_stopped_device_is_missing() -> None:
    section = _demo_summary(_healthy())
    assert section["passed"], section["checks"]
    sets = section["variant_sets"]
    assert sets["before"]["full_share"] == 1.0
    assert sets["after"]["remaining_share"] == 1.0
    assert sets["transition"]["frames"] == 11  # frames 45..55 (captured 1004.5 .. 1005.5)
    assert section["before"]["wire_bytes_per_frame"] == 159.0
    assert section["frames_skipped_by_sensors"] == {"a": 0, "b": 0, "c": 0}


def test_demo_checks_fail_when_overload_leaves_frames_partial() -> None:
    # Two frames before the stop decided without "b" (it skipped them): 2/45 > 1 %.
    sets = _healthy() | {10: ("a", "c"), 11: ("a", "c")}
    section = _demo_summary(sets)
    assert not section["checks"]["before_full_set"]
    assert not section["passed"]
    assert section["variant_sets"]["before"]["other"] == 2
    assert section["unexpected_share"]["before"] == pytest.approx(2 / 45)
    # After the stop, a frame with only one of the remaining two is overload too; so is a frame never decided.
    sets = _healthy() | {80: ("a",)}
    del sets[90]
    section = _demo_summary(sets)
    assert not section["checks"]["after_remaining_set"]
    assert section["variant_sets"]["after"]["other"] == 1
    assert section["variant_sets"]["after"]["missing"] == 1
    # Up to 1 % of the frames before the stop may go partial: 3 of 345 pass, 4 do not.
    many: dict[int, tuple[str, ...]] = dict.fromkeys(range(400), ("a", "b", "c"))
    many.update(dict.fromkeys(range(360, 400), ("a", "b")))
    many.update(dict.fromkeys((3, 30, 300), ("a", "b")))
    assert _demo_summary(many, frames=400, stop_frame=350)["checks"]["before_full_set"]
    many[301] = ("b", "c")
    assert not _demo_summary(many, frames=400, stop_frame=350)["checks"]["before_full_set"]


def test_vp_fusion_publishes_device_based_discovery_for_its_streams() -> None:
    # Issue 18: the VP fusion agent published no discovery. It shares the NAIR agent's
    # (nairbus.agents.runtime.fusion_base).
    import json

    family = _family(["a"])
    cfg = AgentConfig(fusion=FusionSettings(mode="vp", deadline_ms=500), topics=TopicSettings(root="t", site="lab"),
                      discovery=DiscoverySettings(settle_s=0.0))
    agent = VpFusionAgent(cfg, family)
    published: list[tuple[str, bytes]] = []

    def publish(topic: str, payload: bytes, **_kw: Any) -> bool:
        published.append((topic, payload))
        return True

    agent.comm.publish = publish  # type: ignore[method-assign]
    birth = _birth("a", "s-a", float(int(time.time() - 60)))
    agent.on_birth(birth.sensor_id, InboundMessage(agent.topics.sensor_birth(birth.sensor_id), encode(birth),
                                                   CONTENT_TYPE_JSON, True, time.time()))
    agent.after_round(time.monotonic())
    agent.after_round(time.monotonic())
    configs = {t: json.loads(p) for t, p in published if t.startswith("homeassistant/device/nairbus-fusion-1/")}
    stream = configs["homeassistant/device/nairbus-fusion-1/nairbus_t_lab_cam/config"]
    event = stream["cmps"]["nairbus_t_lab_cam_classification"]
    assert event["event_types"] == list(LABELS)
    assert event["state_topic"] == agent.topics.stream("cam", "events")  # one event per label change
    assert "homeassistant/device/nairbus-fusion-1/nairbus_t_lab_sensor_vp-a/config" in configs
    assert "homeassistant/device/nairbus-fusion-1/nairbus_t_lab_fusion_fusion-1/config" in configs
    # A capture agent, known by its status, gets a device with its connectivity; its cleared status removes it.
    capture = Status(agent_id="cap-door", role="capture", state="online", session="c", ts=time.time())
    agent.handle(InboundMessage(agent.topics.sensor_status("cap-door"), encode(capture), CONTENT_TYPE_JSON, True,
                                time.time()), time.monotonic())
    agent.after_round(time.monotonic())
    topic = "homeassistant/device/nairbus-fusion-1/nairbus_t_lab_sensor_cap-door/config"
    cap_config = json.loads(dict(published)[topic])
    assert list(cap_config["cmps"]) == ["nairbus_t_lab_sensor_cap-door_connectivity"]
    agent.handle(InboundMessage(agent.topics.sensor_status("cap-door"), b"", CONTENT_TYPE_JSON, True, time.time()),
                 time.monotonic())
    agent.after_round(time.monotonic())
    assert (topic, b"") in published
