"""A VP sensor opens its frames like every sensor (``open_source``): the capture stream is the registered ``mqtt``
source (its own settings, its subscription, frames of any size converted to the variant's input, each keeping its
capture time), the variant's manifest gives the frame size, and any registered source serves a VP sensor — here a
folder of two PNG files classified against a private broker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from nairbus.agents.methods import METHODS
from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.frames import FrameBatch, SourceContext
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator, InboundMessage
from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.sources import SOURCES, open_source, source_settings, source_subscriptions
from nairbus.agents.sources.frame_stream import FrameStreamSettings, FrameStreamSource
from nairbus.agents.vp.sensor import VpSensorAgent
from nairbus.agents.vp.settings import VpSettings, with_frame_stream
from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.vp.family import LoadedVariant, softmax_outputs
from nairbus.models.vp.fusion import topk
from nairbus.schemas import Birth, Frame, TopK, decode, encode
from nairbus.schemas.lean import LeanContext, decode_lean
from nairbus.schemas.topics import TopicTree
from tests.agents.test_vp_units import FakeComm
from tests.manifests import in_memory_manifest

SHA = "b" * 64
SPEC32 = fashion_mnist_spec(size=32)


def _variant(spec_side: int = 28) -> LoadedVariant:
    spec = fashion_mnist_spec(size=spec_side)
    model = ResNet(ResNetConfig(widths=(4, 4, 4), blocks=(1, 1, 1), resolution=spec_side), spec)
    manifest = in_memory_manifest(f"variants-r{spec_side}", SHA, input_spec=spec)
    return LoadedVariant(name=f"r{spec_side}", model=model, weight=1.0, manifest=manifest)


def _frame(frame_id: int, capture_ts: float, stream: str = "cam", **fields: Any) -> Frame:
    pixels = fields.pop("pixels", bytes(range(256)) * 3 + bytes(16))
    return Frame(stream_id=stream, session="cap", seq=frame_id + 1, frame_id=frame_id, capture_ts=capture_ts,
                 expires_ts=capture_ts + 10.0, height=fields.pop("height", 28), width=fields.pop("width", 28),
                 pixels=pixels, **fields)


def _message(payload: bytes) -> InboundMessage:
    return InboundMessage("t/v1/lab/frames/cam", payload, None, False, time.time())


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return fashion_mnist_spec().convert_image(image)


# ----- the source on its own ----------------------------------------------------------------------------------------
def test_the_capture_stream_is_a_registered_source_with_its_own_settings() -> None:
    assert SOURCES["mqtt"].settings is FrameStreamSettings
    topics = TopicTree("t", "lab")
    settings = SensorSettings(source="mqtt", deadline_ms=250, count=3, source_options={"frame_stream": "cam"})
    assert source_settings(settings) == FrameStreamSettings(frame_stream="cam", count=3, deadline_ms=250)
    assert source_subscriptions(settings, topics) == ((topics.frames("cam"), 1),)
    image_topic = SensorSettings(source="image-topic", image_topic="frigate/door/snapshot")
    assert source_subscriptions(image_topic, topics) == (("frigate/door/snapshot", 0),)
    assert source_subscriptions(SensorSettings(), topics) == ()
    with pytest.raises(ValueError, match=r"source 'mqtt' needs a capture stream \(--frame-stream STREAM\)"):
        source_settings(SensorSettings(source="mqtt"))
    with pytest.raises(ValueError, match="source 'mqtt' needs the agent's bus"):
        open_source(settings, SourceContext(fashion_mnist_spec(), threading.Event()))


def test_a_vp_sensors_frame_stream_option_of_before_reaches_the_source() -> None:
    options = VpSettings(variant="w44r28", frame_stream="door")
    old = SensorSettings(mode="vp", source="mqtt", sensor_id="vp-a", variant="w44r28", frame_stream="door")
    assert source_settings(with_frame_stream(old, options)).frame_stream == "door"  # type: ignore[attr-defined]
    plain = SensorSettings(mode="vp", source="mqtt", sensor_id="vp-a", stream_id="cam", variant="w44r28")
    moved = with_frame_stream(plain, VpSettings(variant="w44r28"))
    assert moved.source_options == {"frame_stream": "cam"}  # the sensor's stream id by default
    named = plain.model_copy(update={"source_options": {"frame_stream": "yard"}})
    assert with_frame_stream(named, options).source_options == {"frame_stream": "yard"}  # the source's own wins
    assert with_frame_stream(SensorSettings(mode="vp", variant="w44r28"), options).source_options == {}


def test_the_stream_converts_any_frame_keeps_capture_times_and_counts_what_it_refuses() -> None:
    comm = FakeComm("s")
    now = time.time()
    rgb = np.zeros((56, 56, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    frames = [_frame(0, now - 0.03), _frame(1, now - 0.02, height=56, width=56, channels=3, pixels=rgb.tobytes())]
    refused = [b"\xc1garbage", encode(_frame(2, now - 0.01, stream="other")),
               encode(_frame(3, now, encoding="png", pixels=b"not a png"))]
    payloads = [*refused, *(encode(f) for f in frames)]
    for payload in payloads:
        comm.inbox.put(_message(payload))
    source = FrameStreamSource(comm, SourceContext(SPEC32, threading.Event(), comm), "cam", deadline_s=1.0, count=2)
    (batch,) = list(source.batches(8))
    assert batch.frame_ids.tolist() == [0, 1]
    assert batch.images.shape == (2, 32, 32)  # the model's input, whatever came
    assert batch.capture_ts is not None
    assert batch.capture_ts.tolist() == [frames[0].capture_ts, frames[1].capture_ts]
    assert source.counters["frames"] == 2
    assert source.counters["bad_malformed"] == 1
    assert source.counters["bad_topic_mismatch"] == 1
    assert source.counters["bad_not_an_image"] == 1


# ----- the sensor ---------------------------------------------------------------------------------------------------
def _fake_sensor(variant: LoadedVariant, **settings: Any) -> tuple[VpSensorAgent, FakeComm]:
    cfg = AgentConfig(sensor=SensorSettings(**{"mode": "vp", "variant": variant.name, "sensor_id": "vp-x",
                                               "stream_id": "cam", "k": 3, **settings}),
                      topics=TopicSettings(root="t", site="lab"))
    agent = VpSensorAgent(cfg, variant)
    fake = FakeComm(agent.comm.session)
    agent.comm = fake  # type: ignore[assignment]
    return agent, fake


def test_the_variants_manifest_gives_the_frame_size() -> None:
    variant = _variant(32)
    agent, fake = _fake_sensor(variant, count=6)
    assert agent.spec == SPEC32
    counters = agent.run()
    assert counters["frames"] == counters["published"] == 6
    images = load_split("test").images[:6]  # replayed at 28x28, classified at the variant's 32x32
    want_classes, _ = topk(softmax_outputs(variant.model, SPEC32.convert(images)), 3)
    got = sorted((m.frame_id, m.classes) for m in (decode_lean(p, TopK, agent.ctx) for _, p, _, _ in fake.published))
    assert got == [(i, tuple(int(c) for c in want_classes[i])) for i in range(6)]
    assert np.array_equal(softmax_outputs(variant.model, images), softmax_outputs(variant.model,
                                                                                  SPEC32.convert(images)))


def test_frames_from_the_stream_are_reported_with_their_capture_time() -> None:
    agent, fake = _fake_sensor(_variant(), source="mqtt", count=3, deadline_ms=600_000)
    now = time.time()
    frames = [_frame(i, now - 0.1 + 0.01 * i) for i in range(2)]
    for payload in [encode(f) for f in frames] + [b"\xc1", encode(_frame(9, now - 0.05, stream="other"))]:
        fake.inbox.put(_message(payload))
    ancient = _frame(5, agent.epoch_ts - 5.0)  # before the session's epoch: no time on the lean wire
    ancient = ancient.model_copy(update={"expires_ts": now + 60})
    fake.inbox.put(_message(encode(ancient)))
    counters = agent.run()
    sent = {m.frame_id: m for m in (decode_lean(p, TopK, agent.ctx) for _, p, _, _ in fake.published)}
    assert sorted(sent) == [0, 1]
    for f in frames:
        assert sent[f.frame_id].capture_ts == pytest.approx(f.capture_ts, abs=1e-3)
    assert counters["frames"] == 3
    assert counters["frames_skipped"] == 1
    assert counters["frames_rejected"] == 2
    assert counters["published"] == 2


def test_a_vp_sensor_takes_any_registered_source(tmp_path: Path) -> None:
    for settings in (SensorSettings(mode="vp", variant="w44r28", source="folder", folder=tmp_path),
                     SensorSettings(mode="vp", variant="w44r28", source="image-topic", image_topic="cam/snap"),
                     SensorSettings(mode="vp", variant="w44r28", source="mqtt"),
                     SensorSettings(mode="vp", variant="w44r28", source="replay")):
        assert METHODS.for_sensor(settings).name == "vp"
    with pytest.raises(ValueError, match=r"source 'folder' needs a folder"):
        METHODS.for_sensor(SensorSettings(mode="vp", variant="w44r28", source="folder"))
    with pytest.raises(ValueError, match="unknown frame source 'nope'"):
        METHODS.for_sensor(SensorSettings(mode="vp", variant="w44r28", source="nope"))


@pytest.mark.timeout(120)
def test_a_vp_sensor_classifies_a_folder_of_png_files(broker: PrivateMosquitto, topic_root: str,
                                                      tmp_path: Path) -> None:
    images = load_split("test").images[:2]
    for i, image in enumerate(images):  # colour and twice the size: converted to the variant's input at the edge
        Image.fromarray(image).convert("RGB").resize((56, 56)).save(tmp_path / f"{i:02d}.png")
    variant = _variant()
    base = BrokerSettings(host=broker.host, port=broker.port)
    topics = TopicTree(topic_root, "lab")
    listener = Communicator(base, "test-vp-folder-listener", None, lambda s: b"{}")
    listener.subscribe(topics.sensor_topk("vp-folder"), qos=0)
    listener.subscribe(topics.sensor_birth("vp-folder"), qos=1)
    listener.start()
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"),
                      sensor=SensorSettings(mode="vp", variant=variant.name, sensor_id="vp-folder", k=3,
                                            source="folder", folder=tmp_path))
    sensor = VpSensorAgent(cfg, variant)
    try:
        sensor.start()
        counters = sensor.run()
        payloads: list[bytes] = []
        birth: Birth | None = None
        end = time.monotonic() + 10
        while (len(payloads) < 2 or birth is None) and time.monotonic() < end:
            msg = listener.get(timeout=0.2)
            if msg is not None and msg.topic == topics.sensor_birth("vp-folder"):
                birth = decode(msg.payload, Birth)
            elif msg is not None:
                payloads.append(msg.payload)
    finally:
        sensor.stop()
        listener.stop()
    assert counters["frames"] == counters["published"] == 2
    assert counters["frames_skipped"] == counters["frames_rejected"] == 0
    assert birth is not None
    assert birth.mode == "vp"
    ctx = LeanContext.from_birth(birth)
    votes = {vote.frame_id: vote for vote in (decode_lean(p, TopK, ctx) for p in payloads)}
    converted = np.stack([_read(tmp_path / f"{i:02d}.png") for i in range(2)])
    want, _ = topk(softmax_outputs(variant.model, converted), 3)
    assert sorted(votes) == [0, 1]
    assert [votes[i].classes for i in range(2)] == [tuple(int(c) for c in row) for row in want]


@pytest.mark.parametrize("fps", [None, 500.0])
def test_the_paced_loop_hands_on_a_sources_own_capture_times(fps: float | None) -> None:
    times = np.array([1000.5, 1000.25, 999.0])
    batch = FrameBatch(np.array([7, 8, 9]), np.zeros((3, 4, 4), dtype=np.uint8), times)
    emitted: list[tuple[int, float]] = []
    run_paced([batch], Pacing(fps, source_paced=True, skip_late=False), threading.Event(), lambda _b: None,
              lambda frame_id, _image, _result, ts: emitted.append((frame_id, ts)), lambda _f: None)
    assert emitted == [(7, 1000.5), (8, 1000.25), (9, 999.0)]
