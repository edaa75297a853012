"""A sensor with ``runtime = "onnx"`` (``nairbus sensor --runtime onnx``) gives the torch sensor's answers, live.

The base model is copied and its device parts exported (``nairbus export-onnx``) into a temporary directory; a sensor
of that copy runs on ONNX Runtime (head and whole model) and numpy (the NAIR transform), replays test frames to the
NAIR fusion agent of the shipped base model (torch) over a private Mosquitto, and every result is compared with the
torch sensor's offline answer on the same frames: in decision mode every class, in nair mode (the whole IR sent) at
least 99.9 % of them — measured: 200 of 200.
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
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
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


def _config(broker: PrivateMosquitto, root: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)


@pytest.fixture
def fusion(broker: PrivateMosquitto, topic_root: str, base: NairPipeline) -> Iterator[FusionAgent]:
    cfg = _config(broker, topic_root, fusion=FusionSettings(deadline_ms=2000, stats_interval_s=0.5,
                                                            max_fps_per_sensor=100_000, max_frames=20_000))
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

