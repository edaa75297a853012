"""Your own frames, end to end: a folder of PNG files through `nairbus sensor --folder` and fusion over Mosquitto.

The folder holds 300 test images written as PNG files (plus one corrupt file, which is counted and skipped); the
sensor runs as a user runs it, from the command line, with the shipped model; fusion decides over a private broker.
Its predictions must equal those of the replay source on the same images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas.topics import TopicTree
from tests.agents.results import collect_results

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]
FRAMES = 300


def test_a_folder_of_png_files_gets_the_replay_sources_predictions(broker: PrivateMosquitto, topic_root: str,
                                                                    tmp_path: Path) -> None:
    test = load_split("test")
    folder = tmp_path / "camera"
    folder.mkdir()
    for i in range(FRAMES):
        Image.fromarray(test.images[i]).save(folder / f"snap-{i:05d}.png")
    (folder / "snap-00150-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # sorts among the good ones

    topics = TopicTree(topic_root, "lab")
    base = BrokerSettings(host=broker.host, port=broker.port)
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(deadline_ms=2000))
    pipeline = NairPipeline.load("base", sensor_artifact_path("base"))
    listener = Communicator(base, "test-folder-listener", None, lambda s: b"{}")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    fusion = FusionAgent(cfg, pipeline)
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    try:
        env = {**os.environ, "NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
               "NAIRBUS_TOPICS__ROOT": topic_root, "NAIRBUS_TOPICS__SITE": "lab", "COLUMNS": "200"}
        run = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "sensor", "--sensor-id", "cam-folder",
                              "--folder", str(folder), "--no-link-fit", "--fps", "100",
                              "--deadline-ms", "30000"],
                             check=False, env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-2000:]
        # The sensor's last word is its counters, one JSON line on stdout (the logs go to stderr).
        counters = next(json.loads(line) for line in reversed(run.stdout.splitlines())
                        if line.startswith("{") and '"event"' not in line)
        assert counters["frames_sent"] == FRAMES
        assert counters["files_refused"] == 1
        assert counters["decided"] == FRAMES  # fusion's tally, once the one-shot run withdrew
        replay = SensorAgent(cfg.model_copy(update={"sensor": SensorSettings(
            sensor_id="cam-replay", count=FRAMES, fps=100.0, link_fit=False, deadline_ms=30000)}), pipeline)
        # Paced as the folder's (unpaced, a burst of 300 frames on a loaded machine lost one on the way); both with a
        # long deadline: what is compared is the predictions, and a busy machine's slow first frames would otherwise
        # pass their second and be skipped (as they should be, live).
        replay.start()
        replay.run_replay()
        replay.stop()
        got = collect_results(listener, topics, 2 * FRAMES, timeout=30)
    finally:
        fusion.stop()
        worker.join(timeout=10)
        fusion.close()
        listener.stop()
    folder_labels = [got[("cam-folder", i)].class_index for i in range(FRAMES)]
    replay_labels = [got[("cam-replay", i)].class_index for i in range(FRAMES)]
    assert folder_labels == replay_labels
    assert all(got[("cam-folder", i)].complete for i in range(FRAMES))
    assert [got[("cam-folder", i)].item for i in range(FRAMES)] == [f"snap-{i:05d}.png" for i in range(FRAMES)]
    assert {got[("cam-replay", i)].item for i in range(FRAMES)} == {None}  # a live source names no items
    accuracy = sum(int(p == y) for p, y in zip(folder_labels, test.labels[:FRAMES], strict=True)) / FRAMES
    assert accuracy > 0.85  # the shipped model on its own test images


def test_jpeg_snapshots_on_an_mqtt_topic_get_results(broker: PrivateMosquitto, topic_root: str) -> None:
    import io

    test = load_split("test")
    topics = TopicTree(topic_root, "lab")
    base = BrokerSettings(host=broker.host, port=broker.port)
    camera_topic = f"{topic_root}/frigate/front/snapshot"  # where a camera (Frigate) publishes its JPEG snapshots
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(deadline_ms=1000),
                      sensor=SensorSettings(sensor_id="cam-topic", source="image-topic", image_topic=camera_topic,
                                            count=40))
    pipeline = NairPipeline.load("base", sensor_artifact_path("base"))
    listener = Communicator(base, "test-topic-listener", None, lambda s: b"{}")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    fusion = FusionAgent(cfg, pipeline)
    fusion.start()
    fusion_worker = threading.Thread(target=fusion.run, daemon=True)
    fusion_worker.start()
    sensor = SensorAgent(cfg, pipeline)
    sensor.start()
    sensor_worker = threading.Thread(target=sensor.run_replay, daemon=True)
    sensor_worker.start()
    camera = Communicator(base, "test-camera", None, lambda s: b"{}")
    camera.start()
    try:
        camera.publish(camera_topic, b"this is not a JPEG", content_type=None)
        huge = io.BytesIO()  # 12 Mpx of black, a few kB as PNG: beyond what a 28x28 model calls for (4K at most)
        Image.new("L", (4000, 3000)).save(huge, "PNG")
        camera.publish(camera_topic, huge.getvalue(), content_type=None)
        time.sleep(0.3)
        for i in range(40):
            buf = io.BytesIO()
            Image.fromarray(test.images[i]).convert("RGB").resize((224, 224)).save(buf, "JPEG", quality=90)
            assert camera.publish(camera_topic, buf.getvalue(), content_type=None)
            time.sleep(0.05)
        sensor_worker.join(timeout=30)
        got = collect_results(listener, topics, 40, timeout=15)
    finally:
        sensor.stop()
        camera.stop()
        fusion.stop()
        fusion_worker.join(timeout=10)
        fusion.close()
        listener.stop()
    assert not sensor_worker.is_alive()
    assert sensor.counters["files_refused"] == 2
    decided = sorted(frame for stream, frame in got if stream == "cam-topic")
    sent = sensor.counters["frames_sent"]
    assert sent + sensor.counters["skipped_stale"] + sensor.counters["frames_skipped"] >= 40
    assert len(decided) == sent >= 30
    correct = sum(int(got[("cam-topic", f)].class_index == test.labels[f]) for f in decided
                  if sensor.counters["skipped_stale"] == 0)
    if sensor.counters["skipped_stale"] == 0:  # frame ids are arrival order: frame f is test image f
        assert correct / len(decided) > 0.75


BUSY_FILES = 120
HOGS = 4
"""Busy-looping processes beside the sensor: load about 6 on two cores, a device doing other work."""


@pytest.mark.slow
def test_a_busy_device_decides_every_file_with_the_default_settings(broker: PrivateMosquitto, topic_root: str,
                                                                   tmp_path: Path) -> None:
    """`nairbus sensor --folder` as a user runs it (link fitting, the 1 s deadline, the shipped defaults) while four
    other processes keep both cores busy: every file is sent and decided, none skipped, and the live decisions are
    the whole model's on the same files (a busy CPU is not a slow link; a file waits for its turn)."""
    test = load_split("test")
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for i in range(BUSY_FILES):
        Image.fromarray(test.images[i]).save(folder / f"snap-{i:05d}.png")
    old = time.time() - 60  # files that were there before the run: complete
    for path in folder.iterdir():
        os.utime(path, (old, old))
    topics = TopicTree(topic_root, "lab")
    base = BrokerSettings(host=broker.host, port=broker.port)
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"))
    pipeline = NairPipeline.load("base", sensor_artifact_path("base"))
    offline = pipeline.full_model_probs(test.images[:BUSY_FILES]).argmax(axis=1).tolist()
    listener = Communicator(base, "test-busy-listener", None, lambda s: b"{}")
    listener.subscribe(topics.all_results(), qos=1)
    listener.start()
    fusion = FusionAgent(cfg, pipeline)
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    hog = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(HOGS)]
    try:
        env = {**os.environ, "NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
               "NAIRBUS_TOPICS__ROOT": topic_root, "NAIRBUS_TOPICS__SITE": "lab", "COLUMNS": "200"}
        run = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "sensor", "--sensor-id", "cam-busy",
                              "--folder", str(folder)],
                             check=False, env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-2000:]
        counters = next(json.loads(line) for line in reversed(run.stdout.splitlines())
                        if line.startswith("{") and '"event"' not in line)
        got = collect_results(listener, topics, BUSY_FILES, timeout=30)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        fusion.stop()
        worker.join(timeout=10)
        fusion.close()
        listener.stop()
    assert counters["frames"] == BUSY_FILES, counters
    assert counters["frames_sent"] == BUSY_FILES, counters
    assert counters["frames_skipped"] == 0, counters
    assert counters["decided"] == BUSY_FILES, counters
    assert len(got) == BUSY_FILES
    assert [got[("cam-busy", i)].item for i in range(BUSY_FILES)] == [f"snap-{i:05d}.png" for i in range(BUSY_FILES)]
    live = [got[("cam-busy", i)].class_index for i in range(BUSY_FILES)]
    agree = sum(int(a == b) for a, b in zip(live, offline, strict=True))
    assert agree >= BUSY_FILES - 3, (agree, counters)  # the link's first probe frames may carry less than the whole IR
