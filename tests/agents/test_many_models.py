"""One fusion agent, many models: a sensor of the shipped ResNet and one of the second architecture (imported
through the generic path, calibrated from an unlabeled folder) decided by the same fusion agent at once.

Each result names the model that decided it, and the labels equal the offline pipeline of that model on the same
frames; a sensor whose model the fusion agent does not serve is rejected without disturbing the others.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.loss import LossModel
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import WEIGHTS_DIR, sensor_artifact_path
from nairbus.schemas import Result
from nairbus.schemas.topics import TopicTree
from tests.agents.results import collect_results

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240),
              pytest.mark.skipif(not (WEIGHTS_DIR / "mobilenet.json").is_file(), reason="second model not shipped")]
FRAMES = 120


def test_one_fusion_agent_decides_two_architectures_at_once(broker: PrivateMosquitto, topic_root: str) -> None:
    topics = TopicTree(topic_root, "lab")
    base = BrokerSettings(host=broker.host, port=broker.port)
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(deadline_ms=2000, models=("mobilenet",)))
    listener = Communicator(base, "test-many-listener", None, lambda s: b"{}")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    fusion = FusionAgent(cfg)
    assert {p.manifest.name for p in fusion.by_model.values()} == {"base", "mobilenet"}
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    pipelines = {name: NairPipeline.load(name, sensor_artifact_path(name)) for name in ("base", "mobilenet")}
    # Unpaced replay (whole batches, nothing skipped as late): paced at 60 fps, a sensor on a machine the other test
    # worker keeps busy skipped a CPU-late frame, which this test (two architectures at once) is not about.
    sensors = [SensorAgent(cfg.model_copy(update={"sensor": SensorSettings(
        sensor_id=f"cam-{name}", model=name, count=FRAMES, link_fit=False)}), pipelines[name])
        for name in pipelines]
    try:
        for sensor in sensors:
            sensor.start()
        runs = [threading.Thread(target=s.run_replay, daemon=True) for s in sensors]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=120)
        got = collect_results(listener, topics, 2 * FRAMES, timeout=30)
    finally:
        for sensor in sensors:
            sensor.stop()
        fusion.stop()
        worker.join(timeout=10)
        fusion.close()
        listener.stop()
    images = load_split("test").images[:FRAMES]
    for name, pipeline in pipelines.items():
        results = [got[(f"cam-{name}", i)] for i in range(FRAMES)]
        assert {r.model.name for r in results if r.model} == {name}
        assert all(r.model is not None and r.model.sha256 == pipeline.manifest.sha256 for r in results)
        offline = pipeline.offline_probs(pipeline.encode_all(images), np.arange(FRAMES), None, LossModel())[0]
        assert [r.class_index for r in results] == offline.argmax(1).tolist()


def test_a_fusion_agent_discovers_a_model_by_the_hash_a_birth_names(broker: PrivateMosquitto, topic_root: str) -> None:
    topics = TopicTree(topic_root, "lab")
    base = BrokerSettings(host=broker.host, port=broker.port)
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(deadline_ms=2000, discover_models=True))
    listener = Communicator(base, "test-discover-listener", None, lambda s: b"{}")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    fusion = FusionAgent(cfg)  # configured with the base model only
    assert {p.manifest.name for p in fusion.by_model.values()} == {"base"}
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    pipeline = NairPipeline.load("mobilenet", sensor_artifact_path("mobilenet"))
    sensor = SensorAgent(cfg.model_copy(update={"sensor": SensorSettings(
        sensor_id="cam-new", model="mobilenet", count=20, fps=10.0, link_fit=False, deadline_ms=30000)}), pipeline)
    # A long deadline: a replay at a frame rate is a live source, which skips frames its CPU gets to too late; on a
    # busy machine (the tests assert behaviour, not speed) that cost 8 of the 20 frames.
    got: dict[tuple[str, int], Result] = {}
    try:
        sensor.start()
        deadline = time.monotonic() + 30.0  # fusion loads the model the birth names (seconds on a busy machine)
        while pipeline.manifest.sha256 not in fusion.by_model and time.monotonic() < deadline:
            time.sleep(0.1)
        sensor.run_replay()
        got = collect_results(listener, topics, 20, timeout=20)
    finally:
        sensor.stop()
        fusion.stop()
        worker.join(timeout=10)
        fusion.close()
        listener.stop()
    assert len(got) == 20
    assert {r.model.name for r in got.values() if r.model} == {"mobilenet"}
    assert pipeline.manifest.sha256 in fusion.by_model
