"""The NAIR fusion agent's routing and rejections, with no broker: the agent is given a bus that only records.

The agent is built as in production but handed an in-memory bus (the seam every agent has), so a hostile or
misrouted message can be driven straight into its handler table and its counters read back."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.settings import TopicSettings
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas.topics import TopicTree


class RecordingBus:
    """Stands in for the communicator: subscriptions and publishes are recorded, nothing is sent."""

    session = "unit-session"

    def __init__(self) -> None:
        self.subscriptions: list[str] = []
        self.routes: dict[str, Any] = {}
        self.published: list[tuple[str, bytes]] = []

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self.subscriptions.append(topic)

    def route(self, topic: str, handler: Any, qos: int = 1) -> None:
        self.routes[topic] = handler

    def publish(self, topic: str, payload: bytes, **_: Any) -> bool:
        self.published.append((topic, payload))
        return True

    def announce(self, topic: str, payload: bytes, **_: Any) -> None:
        self.published.append((topic, payload))

    def on_session_lost(self, callback: Any) -> None:
        self.session_lost = callback


@pytest.fixture(scope="module")
def pipeline() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _message(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, content_type=None, retain=False, received_ts=time.time())


def test_messages_are_routed_by_the_handler_table_and_bad_ones_rejected(pipeline: NairPipeline) -> None:
    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab"))
    bus = RecordingBus()
    agent = FusionAgent(cfg, pipeline, bus=bus)  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    assert topics.all_sensors("frag") in bus.subscriptions
    agent.handle(_message("unit/v1/lab/elsewhere", b"x"), time.monotonic())
    agent.handle(_message(topics.sensor_frag("cam-1"), b"\x93\x01\x02\x03"), time.monotonic())
    agent.handle(_message(topics.sensor_birth("cam-1"), b"{not json"), time.monotonic())
    agent.handle(_message(topics.sensor_image("cam-1"), b""), time.monotonic())
    assert agent.rejected["unknown_topic"] == 1
    assert agent.rejected["unknown_sensor"] == 0  # parked: the birth may still come (a restart, a rebirth)
    assert [t for t, _p in bus.published] == [topics.sensor_set("cam-1")]  # asked for it, once
    agent.expire_parked(time.monotonic() + 6.0)  # PARK_S: 5 s
    assert agent.rejected["unknown_sensor"] == 2  # fragment and image of a sensor whose birth never came
    assert sum(v for k, v in agent.rejected.items() if k.startswith("birth_")) == 1
    assert agent.sensors == {}


def test_a_lost_session_asks_every_known_sensor_to_replay_the_outage(pipeline: NairPipeline) -> None:
    from nairbus.agents.nair.outgoing import bit_bands
    from nairbus.schemas import Birth, Command, ModelRef, NairBirth
    from nairbus.schemas import decode as wire_decode
    from nairbus.schemas import encode as wire_encode

    bus = RecordingBus()
    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), pipeline, bus=bus)  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    a = pipeline.artifact
    for sid in ("cam-1", "cam-2"):
        birth = Birth(sensor_id=sid, session="s", ts=time.time(), mode="nair", stream_id=sid, labels=pipeline.labels,
                      model=ModelRef(name="base", sha256=pipeline.manifest.sha256),
                      nair=NairBirth(artifact_sha256=a.sha256, split=a.split, ir_shape=a.ir_shape,
                                     n_components=a.n_components, bit_bands=bit_bands(a.bits)),
                      deadline_ms=500, epoch_ts=time.time() - 60, expiry_ms=10000)
        agent.handle(_message(topics.sensor_birth(sid), wire_encode(birth)), time.monotonic())
    assert set(agent.sensors) == {"cam-1", "cam-2"}
    bus.published.clear()
    bus.session_lost(2.5)  # what the communicator calls once subscribed again after a forgotten session
    asked = {t: wire_decode(p, Command) for t, p in bus.published}
    assert set(asked) == {topics.sensor_set("cam-1"), topics.sensor_set("cam-2")}
    assert all(c.replay_s == pytest.approx(3.5, abs=0.2) for c in asked.values())  # the outage and a second more
    assert agent.counts["replay_requested"] == 2
    # A sensor that came back at the same moment may not have been subscribed yet: its online status (or birth)
    # brings the request once more, once.
    from nairbus.schemas import Status

    online = wire_encode(Status(agent_id="cam-1", role="sensor", state="online", session="s2", ts=time.time()))
    bus.published.clear()
    agent.handle(_message(topics.sensor_status("cam-1"), online), time.monotonic())
    agent.handle(_message(topics.sensor_status("cam-1"), online), time.monotonic())
    assert [t for t, _p in bus.published if t.endswith("/set")] == [topics.sensor_set("cam-1")]
    assert agent.counts["replay_requested"] == 3


def test_unknown_model_hashes_are_looked_up_at_most_every_30_s(pipeline: NairPipeline,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from nairbus.agents.nair import fusion as fusion_module
    from nairbus.agents.nair.outgoing import bit_bands
    from nairbus.schemas import Birth, ModelRef, NairBirth
    from nairbus.schemas import encode as wire_encode

    calls: list[str] = []
    monkeypatch.setattr(fusion_module, "find_model", calls.append)
    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab")).model_copy(
        update={"fusion": AgentConfig().fusion.model_copy(update={"discover_models": True})})
    agent = FusionAgent(cfg, pipeline, bus=RecordingBus())  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    a = pipeline.artifact
    for i in range(5):
        birth = Birth(sensor_id=f"cam-{i}", session="s1", ts=time.time(), mode="nair", stream_id=f"cam-{i}",
                      labels=pipeline.labels, model=ModelRef(name="stranger", sha256="ab" * 32),
                      nair=NairBirth(artifact_sha256="cd" * 32, split=a.split, ir_shape=a.ir_shape,
                                     n_components=a.n_components, bit_bands=bit_bands(a.bits)),
                      deadline_ms=500.0, epoch_ts=float(int(time.time())), expiry_ms=1000)
        agent.handle(_message(topics.sensor_birth(f"cam-{i}"), wire_encode(birth)), time.monotonic())
    assert agent.rejected["artifact_mismatch"] == 0  # the births wait for the lookup (off the worker thread)
    _until(lambda: bool(agent.loader._done.qsize()))
    agent.after_round(time.monotonic())
    assert calls == ["ab" * 32]  # five births, one lookup
    assert agent.rejected["artifact_mismatch"] == 5  # nothing on disk has that hash
    assert agent.sensors == {}
    agent.handle(_message(topics.sensor_birth("cam-4"), wire_encode(birth)), time.monotonic())
    assert agent.rejected["artifact_mismatch"] == 6  # looked up seconds ago: refused at once, no new lookup
    assert calls == ["ab" * 32]


def test_a_birth_whose_ir_differs_from_the_artifact_it_names_is_refused(pipeline: NairPipeline) -> None:
    # Issue 17: a birth that changed the IR shape mid-stream was accepted; its fragments would be decoded with the
    # artifact's layout. The birth must describe the artifact it names by hash.
    from nairbus.agents.nair.outgoing import bit_bands
    from nairbus.schemas import Birth, ModelRef, NairBirth
    from nairbus.schemas import encode as wire_encode

    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), pipeline,
                        bus=RecordingBus())  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    a = pipeline.artifact

    def birth(ir_shape: tuple[int, ...], session: str) -> bytes:
        return wire_encode(Birth(
            sensor_id="cam", session=session, ts=time.time(), mode="nair", stream_id="cam", labels=pipeline.labels,
            model=ModelRef(name=pipeline.manifest.name, sha256=pipeline.manifest.sha256),
            nair=NairBirth(artifact_sha256=a.sha256, split=a.split, ir_shape=ir_shape, n_components=a.n_components,
                           bit_bands=bit_bands(a.bits)),
            deadline_ms=500.0, epoch_ts=float(int(time.time())), expiry_ms=1000))

    agent.handle(_message(topics.sensor_birth("cam"), birth(tuple(a.ir_shape), "s1")), time.monotonic())
    assert "cam" in agent.sensors
    c, h, w = a.ir_shape
    agent.handle(_message(topics.sensor_birth("cam"), birth((c * 2, h, w // 2 or 1), "s1")), time.monotonic())
    assert agent.rejected["birth_inconsistent"] == 1
    assert "cam" not in agent.sensors  # forgotten: its fragments are refused until a consistent birth comes


def test_a_fusion_agent_takes_a_deadline_and_a_rebirth_on_its_set_topic(pipeline: NairPipeline) -> None:
    from nairbus.schemas import CommandResponse
    from nairbus.schemas import decode as wire_decode

    bus = RecordingBus()
    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), pipeline,
                        bus=bus)  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    handler = bus.routes[topics.fusion("fusion-1", "set")]

    def ask(payload: bytes) -> CommandResponse:
        handler(_message(topics.fusion("fusion-1", "set"), payload))
        topic, answer = bus.published[-1]
        assert topic == topics.fusion("fusion-1", "response")
        return wire_decode(answer, CommandResponse)

    ok = ask(b'{"deadline_ms": 250, "transaction": "d"}')
    assert (ok.status, ok.transaction) == ("ok", "d")
    assert agent.buffer.deadline_s == 0.25
    assert ok.controls is not None
    assert ok.controls.deadline_ms == 250
    refused = ask(b'{"budget_bytes": 300, "transaction": "b"}')
    assert (refused.status, refused.transaction) == ("error", "b")
    assert agent.buffer.deadline_s == 0.25
    assert ask(b"garbage").status == "error"


def test_a_birth_fusion_cannot_serve_is_refused_by_reason(pipeline: NairPipeline) -> None:
    from nairbus.schemas import Birth, ImageBirth, ModelRef
    from nairbus.schemas import encode as wire_encode

    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), pipeline,
                        bus=RecordingBus())  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    spec = pipeline.input_spec

    def image_birth(labels: tuple[str, ...], codecs: tuple[str, ...], size: int) -> bytes:
        return wire_encode(Birth(
            sensor_id="cam", session="s1", ts=time.time(), mode="image", stream_id="cam", labels=labels,
            model=ModelRef(name=pipeline.manifest.name, sha256=pipeline.manifest.sha256),
            image=ImageBirth(codecs=codecs, height=size, width=size), deadline_ms=500.0,
            epoch_ts=float(int(time.time())), expiry_ms=1000))

    good = image_birth(pipeline.labels, ("png",), spec.height)
    for payload, reason in ((image_birth(tuple(reversed(pipeline.labels)), ("png",), spec.height), "labels_mismatch"),
                            (image_birth(pipeline.labels, ("no-such-codec",), spec.height), "unknown_codec"),
                            (image_birth(pipeline.labels, ("png",), spec.height + 1), "image_shape")):
        agent.handle(_message(topics.sensor_birth("cam"), good), time.monotonic())
        assert "cam" in agent.sensors
        agent.handle(_message(topics.sensor_birth("cam"), payload), time.monotonic())
        assert agent.rejected[reason] == 1
        assert "cam" not in agent.sensors  # forgotten until a birth it can serve comes


def test_a_result_names_its_item_once_and_item_names_stay_bounded(pipeline: NairPipeline) -> None:
    from nairbus.agents.runtime import fusion_base
    from nairbus.schemas import ClassScore, Item, Result
    from nairbus.schemas import decode as wire_decode
    from nairbus.schemas import encode as wire_encode

    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab"))
    bus = RecordingBus()
    agent = FusionAgent(cfg, pipeline, bus=bus)  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    assert topics.all_sensors("item") in bus.subscriptions

    def item(sensor: str, frame: int, name: str) -> None:
        payload = wire_encode(Item(sensor_id=sensor, session="s1", frame_id=frame, name=name))
        agent.handle(_message(topics.sensor_item(sensor), payload), time.monotonic())

    def decide(sensor: str, frame: int) -> Result:
        agent.publish_decision(Result(
            stream_id=sensor, fusion_id="f", frame_id=frame, label="x", class_index=0, confidence=1.0,
            topk=(ClassScore(class_index=0, label="x", score=1.0),), fraction_received=1.0, bytes_received=1,
            fragments_received=1, sensors=(sensor,), capture_ts=1.0, decided_ts=1.0, latency_ms=0.0, complete=True))
        return wire_decode(next(p for t, p in reversed(bus.published) if t == topics.result(sensor)), Result)

    item("cam-1", 7, "2026/snap-07.jpg")
    item("cam-2", 7, "other.png")
    assert decide("cam-1", 7).item == "2026/snap-07.jpg"
    assert decide("cam-1", 7).item is None  # asked for once: a replayed frame's result is not named twice
    assert decide("cam-2", 7).item == "other.png"
    agent.handle(_message(topics.sensor_item("cam-1"), b'{"v":1,"kind":"item","sensor_id":"cam-9","session":"s",'
                                                       b'"frame_id":1,"name":"x"}'), time.monotonic())
    agent.handle(_message(topics.sensor_item("cam-1"), b'{"v":1,"kind":"item","sensor_id":"cam-1","session":"s",'
                                                       b'"frame_id":1,"name":"a\\u0000b"}'), time.monotonic())
    assert agent.rejected["item_topic_mismatch"] == 1
    assert agent.rejected["item_invalid"] == 1
    for frame in range(fusion_base.ITEMS_PER_SENSOR + 10):  # a sensor that never sends the frames
        item("cam-3", frame, f"{frame}.png")
    assert len(agent._items["cam-3"]) == fusion_base.ITEMS_PER_SENSOR
    assert decide("cam-3", 0).item is None  # the oldest went first
    assert decide("cam-3", fusion_base.ITEMS_PER_SENSOR + 9).item == f"{fusion_base.ITEMS_PER_SENSOR + 9}.png"


def test_a_sensor_that_withdraws_gets_the_tally_of_its_session(pipeline: NairPipeline) -> None:
    """A one-shot sensor withdraws its birth at its end; once the deadline has passed, fusion tells it (a Tally on
    its set topic) how many of that session's frames it decided. A sensor another agent serves gets none."""
    from nairbus.agents.runtime import fusion_base
    from nairbus.schemas import Birth, ClassScore, Command, ImageBirth, ModelRef, Result
    from nairbus.schemas import decode as wire_decode
    from nairbus.schemas import encode as wire_encode

    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab"))
    bus = RecordingBus()
    agent = FusionAgent(cfg, pipeline, bus=bus)  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    spec = pipeline.input_spec

    def birth(sid: str, session: str, mode: str = "image") -> bytes:
        return wire_encode(Birth(
            sensor_id=sid, session=session, ts=time.time(), mode=mode, stream_id=sid,  # type: ignore[arg-type]
            labels=pipeline.labels, model=ModelRef(name="base", sha256=pipeline.manifest.sha256),
            image=ImageBirth(codecs=("grey8+zstd",), height=spec.height, width=spec.width), deadline_ms=500,
            epoch_ts=time.time() - 60, expiry_ms=10_000))

    def decide(sid: str, frame: int) -> None:
        agent.publish_decision(Result(
            stream_id=sid, fusion_id="f", frame_id=frame, label="x", class_index=0, confidence=1.0,
            topk=(ClassScore(class_index=0, label="x", score=1.0),), fraction_received=1.0, bytes_received=1,
            fragments_received=1, sensors=(sid,), capture_ts=1.0, decided_ts=1.0, latency_ms=0.0, complete=True))

    agent.handle(_message(topics.sensor_birth("cam-1"), birth("cam-1", "old")), time.monotonic())
    decide("cam-1", 0)
    agent.handle(_message(topics.sensor_birth("cam-1"), birth("cam-1", "s2")), time.monotonic())  # a new run
    for frame in range(3):
        decide("cam-1", frame)
    agent.handle(_message(topics.sensor_birth("cam-1"), b""), time.monotonic())  # withdrawn: the run ended
    agent.send_tallies(time.monotonic())
    assert not [t for t, _p in bus.published if t == topics.sensor_set("cam-1")]  # its last frames come first
    agent.send_tallies(time.monotonic() + cfg.fusion.deadline_ms / 1000 + fusion_base.TALLY_MARGIN_S + 0.1)
    (payload,) = [p for t, p in bus.published if t == topics.sensor_set("cam-1")]
    tally = wire_decode(payload, Command).tally
    assert tally is not None
    assert (tally.session, tally.decided, tally.fusion_id) == ("s2", 3, cfg.fusion.fusion_id)
    agent.send_tallies(time.monotonic() + 60)
    assert len([t for t, _p in bus.published if t == topics.sensor_set("cam-1")]) == 1  # once
    bus.published.clear()
    vp_birth = wire_encode(Birth.model_validate({**Birth.model_validate_json(birth("vp-1", "s")).model_dump(),
                                                 "mode": "vp", "image": None,
                                                 "vp": {"variant": "w44r28", "weight": 1.0, "k": 2}}))
    agent.handle(_message(topics.sensor_birth("vp-1"), vp_birth), time.monotonic())
    agent.handle(_message(topics.sensor_birth("vp-1"), b""), time.monotonic())
    agent.send_tallies(time.monotonic() + 60)
    assert not [t for t, _p in bus.published if t == topics.sensor_set("vp-1")]  # the VP fusion's to tell


def test_a_sensors_last_frames_are_decided_when_its_withdrawal_overtakes_them(pipeline: NairPipeline) -> None:
    """A one-shot sensor withdraws its birth right after its last frame. Its birth and data share one inbox queue, so
    the withdrawal is read after every frame it sent — but before the worker decides the frames still pending (here
    more than the per-sensor bound, so some were forced out already). Each is decided under the birth it was sent
    with; none is refused as ``sensor_gone``. A new session's birth does the same for the old session's frames."""
    from nairbus.agents.nair.outgoing import ImageFrameEncoder
    from nairbus.models.data.fashion_mnist import load_split
    from nairbus.models.image.codec import get_image_codec
    from nairbus.schemas import Birth, ImageBirth, LeanContext, ModelRef, Result
    from nairbus.schemas import decode as wire_decode
    from nairbus.schemas import encode as wire_encode

    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab"),
                      fusion=FusionSettings(max_fps_per_sensor=100_000))  # a replay at full speed
    bus = RecordingBus()
    agent = FusionAgent(cfg, pipeline, bus=bus)  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    spec = pipeline.input_spec
    images = load_split("test").images[:cfg.fusion.max_frames_per_sensor + 40]

    def born(session: str) -> ImageFrameEncoder:
        birth = Birth(sensor_id="cam-1", session=session, ts=time.time(), mode="image", stream_id="cam-1",
                      labels=pipeline.labels, model=ModelRef(name="base", sha256=pipeline.manifest.sha256),
                      image=ImageBirth(codecs=("grey8+zstd",), height=spec.height, width=spec.width), deadline_ms=500,
                      epoch_ts=time.time() - 60, expiry_ms=60_000)
        agent.handle(_message(topics.sensor_birth("cam-1"), wire_encode(birth)), time.monotonic())
        return ImageFrameEncoder((get_image_codec("grey8+zstd"),), LeanContext.from_birth(birth),
                                 topics.sensor_image("cam-1"))

    def send(encoder: ImageFrameEncoder, frames: range) -> None:
        for i in frames:
            out = encoder.message(images[i], i, i, time.time(), None)
            assert out is not None
            agent.handle(_message(out.topic, out.payload), time.monotonic())

    def results() -> dict[int, int]:
        found = [wire_decode(p, Result) for t, p in bus.published if t == topics.result("cam-1")]
        return {r.frame_id: r.class_index for r in found}

    send(born("run-1"), range(len(images)))
    agent.handle(_message(topics.sensor_birth("cam-1"), b""), time.monotonic())  # the run ended
    expected = pipeline.full_model_probs(images).argmax(1)
    assert results() == {i: int(expected[i]) for i in range(len(images))}
    assert not agent.rejected
    bus.published.clear()
    send(born("run-2"), range(3))
    send(born("run-3"), range(3, 5))  # restarted: run-2's frames are run-2's, decided now
    assert results() == {i: int(expected[i]) for i in range(3)}
    assert not agent.rejected


def test_a_model_on_disk_is_loaded_off_the_worker_thread(pipeline: NairPipeline,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 35: a birth naming another model on disk loaded it on fusion's worker thread, stalling the other
    streams 8.7 s. The birth waits while the loader thread loads; the worker goes on at once."""
    from nairbus.agents.nair import fusion as fusion_module
    from nairbus.agents.nair.outgoing import bit_bands
    from nairbus.models.nair.transform import NairArtifact
    from nairbus.models.store import WEIGHTS_DIR
    from nairbus.schemas import Birth, ModelRef, NairBirth
    from nairbus.schemas import encode as wire_encode

    original = fusion_module.NairPipeline.load

    def slow_load(*args: Any, **kwargs: Any) -> NairPipeline:
        time.sleep(1.5)  # a big model from a slow disk
        return original(*args, **kwargs)

    monkeypatch.setattr(fusion_module.NairPipeline, "load", staticmethod(slow_load))
    cfg = AgentConfig(topics=TopicSettings(root="unit", site="lab")).model_copy(
        update={"fusion": AgentConfig().fusion.model_copy(update={"discover_models": True})})
    agent = FusionAgent(cfg, pipeline, bus=RecordingBus())  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    manifest = json.loads((WEIGHTS_DIR / "mobilenet.json").read_text())
    a = NairArtifact.load(WEIGHTS_DIR / "mobilenet.nair.npz")
    birth = Birth(sensor_id="cam-m", session="s1", ts=time.time(), mode="nair", stream_id="cam-m",
                  labels=tuple(manifest["labels"]), model=ModelRef(name="mobilenet", sha256=manifest["sha256"]),
                  nair=NairBirth(artifact_sha256=a.sha256, split=a.split, ir_shape=a.ir_shape,
                                 n_components=a.n_components, bit_bands=bit_bands(a.bits), coding=a.coding),
                  deadline_ms=500.0, epoch_ts=float(int(time.time())), expiry_ms=1000)
    started = time.monotonic()
    agent.handle(_message(topics.sensor_birth("cam-m"), wire_encode(birth)), time.monotonic())
    assert time.monotonic() - started < 0.5  # the worker did not wait for the load
    assert "cam-m" not in agent.sensors
    _until(lambda: bool(agent.loader._done.qsize()))
    agent.after_round(time.monotonic())
    assert "cam-m" in agent.sensors  # served once loaded
    assert agent.sensors["cam-m"].decider.manifest.name == "mobilenet"  # type: ignore[union-attr]
    assert sum(agent.rejected.values()) == 0


def test_the_observers_upkeep_runs_on_a_change_or_a_timer_not_every_round(pipeline: NairPipeline) -> None:
    """Issue 35: Home Assistant upkeep walked every stream on every worker round (a round per frame when frames
    arrive one by one), so fusion's cost per frame grew as streams²."""
    from nairbus.agents.runtime.fusion_base import UPKEEP_INTERVAL_S

    class Counting:
        rounds = 0

        def attach(self) -> None: ...

        def handle(self, message: InboundMessage, now: float) -> bool:
            return False

        def note_sensor_status(self, sensor_id: str, online: bool, *, role: str) -> None: ...

        def forget_agent(self, agent_id: str) -> None: ...

        def note_result(self, result: Any) -> None: ...

        def note_deadline(self, deadline_s: float) -> None: ...

        def after_round(self, sensors: Any, labels: Any, now: float) -> None:
            self.rounds += 1

    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), pipeline,
                        bus=RecordingBus())  # type: ignore[arg-type]
    observer = Counting()
    agent.add_observer(observer)  # type: ignore[arg-type]
    now = 1000.0
    for i in range(200):  # 200 rounds within the interval, nothing changed
        agent.after_round(now + i * UPKEEP_INTERVAL_S / 400)
    assert observer.rounds == 1
    agent.sensors.clear()  # the known sensors changed (a sensor left)
    agent.after_round(now + 0.01)
    assert observer.rounds == 2
    agent.after_round(now + 0.02)
    assert observer.rounds == 2
    agent.after_round(now + 0.01 + UPKEEP_INTERVAL_S)  # the timer
    assert observer.rounds == 3
