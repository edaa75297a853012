"""A sensor with ``runtime = "onnx"`` (``nairbus sensor --runtime onnx``) gives the torch sensor's answers, live.

The base model is copied and its device parts exported (``nairbus export-onnx``) into a temporary directory; a sensor
of that copy runs on ONNX Runtime (head and whole model) and numpy (the NAIR transform), replays test frames to the
NAIR fusion agent of the shipped base model (torch) over a private Mosquitto, and every result is compared with the
torch sensor's offline answer on the same frames: in decision mode every class, in nair mode (the whole IR sent) at
least 99.9 % of them — measured: 200 of 200 —, and in image mode each frame decided as the hub's model decides the
same codec's decoding offline: all 10 000 test frames at the demo's smallest budget, 10 % of the IR, where every frame
fits the ladder's top rung, as it then does at each larger demo budget (``nairbus demo`` budgets 100/50/25/10 %), and
the first 2 000 at a binding 400-byte cap (each frame the best rung of the ladder that fits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.catalog import default_artifact_path
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.export.parts import read_parts
from nairbus.models.image.codec import get_image_codec
from nairbus.models.nair.artifact import NairArtifact
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas import DeviceRef
from nairbus.schemas.topics import TopicTree
from tests.agents.running import running
from tests.agents.test_bus import Listener
from tests.models.test_device_pipeline import export_base_copy

pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]

FRAMES = 200


@pytest.fixture(scope="module")
def onnx_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of base with its sensor artifact (stage3) and the parts exported beside it: the manifest's path."""
    return export_base_copy(tmp_path_factory.mktemp("onnx-sensor") / "models", artifacts=("base.stage3.nair.npz",))


@pytest.fixture(scope="module")
def base() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


def _config(broker: PrivateMosquitto, root: str, inbox_per_key: int = 4096, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port, inbox_per_key=inbox_per_key),
                       topics=TopicSettings(root=root, site="lab"), **sections)


@pytest.fixture
def fusion(broker: PrivateMosquitto, topic_root: str, base: NairPipeline) -> Iterator[FusionAgent]:
    # The sensors replay unpaced, 10 000 frames in a few seconds: fusion's flood guards (frames per second per
    # sensor, messages queued per sensor) are opened for them, so the tests measure answers, not the guards.
    settings = FusionSettings(deadline_ms=2000, stats_interval_s=0.5, max_fps_per_sensor=100_000, max_frames=20_000)
    cfg = _config(broker, topic_root, inbox_per_key=20_000, fusion=settings)
    with running(FusionAgent(cfg, base)) as agent:
        yield agent


def _live_classes(broker: PrivateMosquitto, root: str, model: Path, mode: str) -> tuple[np.ndarray, SensorAgent]:
    listener = Listener(broker, TopicTree(root, "lab"))
    listener.comm.start()
    settings = SensorSettings(sensor_id="onnx-1", model=str(model), mode=mode, count=FRAMES, link_fit=False,
                              deadline_ms=10_000, method_options={"runtime": "onnx"})  # unpaced, whole frames
    sensor = SensorAgent(_config(broker, root, sensor=settings))
    assert sensor.pipeline.runtime == "onnx"
    sensor.start()
    try:
        counters = sensor.run_replay()
        listener.collect({("onnx-1", i) for i in range(FRAMES)}, timeout=60)
    finally:
        sensor.stop()
        listener.comm.stop()
    assert counters["frames_sent"] == FRAMES
    results = [listener.results[("onnx-1", i)] for i in range(FRAMES)]
    assert all(r.complete for r in results)
    return np.array([r.class_index for r in results]), sensor


def test_an_onnx_decision_sensor_gives_the_torch_models_decisions(broker: PrivateMosquitto, topic_root: str,
                                                                 onnx_base: Path, base: NairPipeline,
                                                                 fusion: FusionAgent) -> None:
    live, sensor = _live_classes(broker, topic_root, onnx_base, "decision")
    assert sensor.birth().model.sha256 == base.manifest.sha256
    record = read_parts(onnx_base.with_name("base.onnx.json"))  # what export-onnx wrote: the birth names its files
    head = record.head("stage3")
    assert head is not None
    assert sensor.birth().device == DeviceRef(runtime="onnx", parts=(record.parts["whole"].sha256, head.sha256))
    offline = base.full_model_probs(load_split("test").images[:FRAMES]).argmax(1)
    assert np.array_equal(live, offline)


def test_an_onnx_nair_sensor_gives_the_torch_sensors_answers(broker: PrivateMosquitto, topic_root: str,
                                                            onnx_base: Path, base: NairPipeline,
                                                            fusion: FusionAgent) -> None:
    live, sensor = _live_classes(broker, topic_root, onnx_base, "nair")
    birth = sensor.birth()
    assert birth.nair is not None
    assert birth.nair.artifact_sha256 == base.artifact.sha256  # the same artifact, so the hub decodes it
    codes = base.encode_all(load_split("test").images[:FRAMES])  # the torch sensor, offline, whole IR
    offline = base.offline_probs(codes, np.arange(FRAMES), None)[0].argmax(1)
    assert (live == offline).mean() >= 0.999, int((live == offline).sum())



@pytest.mark.timeout(480)
@pytest.mark.parametrize(("budget", "frames"), [("400", 2000), ("demo-10%", 10_000)])
def test_an_onnx_image_sensor_is_decided_as_the_hub_decodes_it_on_every_test_frame(
        broker: PrivateMosquitto, topic_root: str, onnx_base: Path, base: NairPipeline, fusion: FusionAgent,
        budget: str, frames: int) -> None:
    # The sensor replays at full speed and withdraws its birth at the end: its last frames, still pending in fusion
    # then, are decided too (they were once refused as ``sensor_gone``; tests/agents/test_fusion_units.py).
    images = load_split("test").images[:frames]  # all 10 000 at the demo budget; the binding cap's ladder on 2 000
    cap = 400 if budget == "400" else round(0.1 * NairArtifact.load(default_artifact_path("base")).total_bytes())
    listener = Listener(broker, TopicTree(topic_root, "lab"))
    listener.comm.subscribe(TopicTree(topic_root, "lab").all_results(), qos=1)  # fusion publishes them at QoS 1
    listener.comm.start()
    # Frames live long enough to wait out fusion's backlog of the burst on a loaded machine (10 s, the default, did
    # not beside two busy processes: 2 762 were refused as expired, as they should be, which is not this test's point).
    settings = SensorSettings(sensor_id="onnx-img", model=str(onnx_base), mode="image", count=frames,
                              link_fit=False, budget_bytes=cap, deadline_ms=30_000, expiry_s=600.0,
                              method_options={"runtime": "onnx"})
    sensor = SensorAgent(_config(broker, topic_root, sensor=settings))
    sensor.start()
    try:
        counters = sensor.run_replay()
        listener.collect({("onnx-img", i) for i in range(frames)}, timeout=300)
    finally:
        sensor.stop()
        listener.comm.stop()
    assert counters["frames_sent"] == counters["image_frames"] == frames
    assert len(listener.results) == frames, fusion.stats().rejected
    results = [listener.results[("onnx-img", i)] for i in range(frames)]
    assert all(r.representation == "image" and r.complete and r.wire_bytes <= cap for r in results)
    ladder = sensor.birth().image
    assert ladder is not None
    if budget != "400":
        assert {r.codec for r in results} == {ladder.codecs[0]}  # the top rung, whatever the demo budget
    live = np.array([r.class_index for r in results])
    offline = np.empty(frames, dtype=np.int64)
    for name in {r.codec for r in results}:
        assert name is not None
        codec = get_image_codec(name)
        ids = np.array([i for i, r in enumerate(results) if r.codec == name])
        decoded = np.stack([codec.decode(codec.encode(images[i]), (28, 28)) for i in ids])
        offline[ids] = base.full_model_probs(decoded).argmax(1)
    assert np.array_equal(live, offline)
