"""The camera source (the optional OpenCV extra): a video file stands in for the camera, as OpenCV opens both the
same way. Frames come out converted to the model's input spec, a sensor on it gets results from fusion over a
private Mosquitto, and without OpenCV the source refuses with the command that installs it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.sources import SourceContext, open_source
from nairbus.agents.sources.camera import CameraUnavailableError, open_capture
from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas.topics import TopicTree
from tests.agents.results import collect_results

cv2 = pytest.importorskip("cv2", reason="the camera extra (OpenCV) is not installed")
FRAMES = 40


def _video(path: Path, n: int) -> Path:
    """The first ``n`` test images, upscaled to 112x112 colour frames, as an MJPEG video file."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (112, 112))
    for image in load_split("test").images[:n]:
        big = cv2.resize(image, (112, 112), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_a_video_file_reads_as_a_camera_in_the_models_spec(tmp_path: Path) -> None:
    video = _video(tmp_path / "cam.avi", 12)
    settings = SensorSettings(source="camera", camera=str(video))
    for spec in (fashion_mnist_spec(), fashion_mnist_spec(channels=3, size=32)):
        source = open_source(settings, SourceContext(spec, threading.Event()))
        batches = list(source.batches(8))
        assert [int(b.frame_ids[0]) for b in batches] == list(range(12))
        assert all(b.images.shape == (1, *spec.pixel_shape) for b in batches)
        assert source.skip_late
        assert source.counters["frames"] == 12


def test_an_unopenable_camera_and_a_missing_opencv_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CameraUnavailableError, match="cannot be opened"):
        open_capture("/nonexistent/video.avi")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(CameraUnavailableError, match=r"pip install 'nairbus\[camera\]'"):
        open_capture("0")


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_a_sensor_on_a_camera_gets_results(broker: PrivateMosquitto, topic_root: str, tmp_path: Path) -> None:
    video = _video(tmp_path / "cam.avi", FRAMES)
    topics = TopicTree(topic_root, "lab")
    base = BrokerSettings(host=broker.host, port=broker.port)
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(deadline_ms=2000),
                      sensor=SensorSettings(sensor_id="cam-usb", source="camera", camera=str(video), fps=50.0,
                                            link_fit=False))
    pipeline = NairPipeline.load("base", sensor_artifact_path("base"))
    listener = Communicator(base, "test-camera-listener", None, lambda s: b"{}")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    fusion = FusionAgent(cfg, pipeline)
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    sensor = SensorAgent(cfg, pipeline)
    try:
        sensor.start()
        counters = sensor.run_replay()
        got = {frame: r for (_stream, frame), r in
               collect_results(listener, topics, counters["frames_sent"], timeout=15).items()}
    finally:
        sensor.stop()
        fusion.stop()
        worker.join(timeout=10)
        fusion.close()
        listener.stop()
    assert counters["frames_sent"] + counters["frames_skipped"] == FRAMES
    assert counters["frames_sent"] >= FRAMES // 2
    assert len(got) == counters["frames_sent"]
    labels = load_split("test").labels[:FRAMES]
    accuracy = np.mean([got[f].class_index == labels[f] for f in got])
    assert accuracy > 0.7  # JPEG-compressed, upscaled and converted back: still the shipped model's frames
