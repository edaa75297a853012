"""The whole pipeline through the production broker config: sensors and fusion over mutual TLS with passwords from
files, every topic behind the shipped ACL, results read by a read-only account and discovery by Home Assistant's.

It also proves the ACL grants everything the real agents do: no publish of theirs is refused (status, last will,
birth, fragments, results, stats, discovery)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from nairbus.agents.home.discovery import (
    DiscoverySettings,
    config_topic,
    fusion_object_id,
    sensor_object_id,
    stream_object_id,
)
from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import TopicSettings
from nairbus.agents.tools.secure_broker import SecureBroker
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas import Result
from nairbus.schemas.topics import TopicTree

pytestmark = pytest.mark.broker


def test_pipeline_through_tls_passwords_and_acl(secure: SecureBroker, tiny_pipeline: NairPipeline) -> None:
    site = f"s{uuid.uuid4().hex[:8]}"
    topics = TopicTree("nairbus", site)  # the shipped ACL is written for the root "nairbus"
    discovery = DiscoverySettings(settle_s=0.3)

    def config(user: str, **sections: object) -> AgentConfig:
        return AgentConfig(broker=secure.settings(user, tls=True), topics=TopicSettings(root="nairbus", site=site),
                           discovery=discovery, **sections)  # type: ignore[arg-type]

    watcher = Communicator(secure.settings("watch.results", tls=True), "t-watch", None, lambda s: b"")
    watcher.subscribe(topics.all_results(), qos=0)
    watcher.start()
    ha = Communicator(secure.settings("ha.homeassistant", tls=True), "t-ha", None, lambda s: b"")
    ha.subscribe("homeassistant/device/+/+/config", qos=1)
    ha.start()

    fusion = FusionAgent(config("fusion.fusion-1", fusion=FusionSettings(deadline_ms=400, stats_interval_s=0.3)),
                         tiny_pipeline)
    fusion.start()
    worker = threading.Thread(target=fusion.run, daemon=True)
    worker.start()
    # Whole frames (no link fitting, whose slow start would send the first few frames short): this checks the
    # security of the path, not how frames are sized.
    sensors = [SensorAgent(config(sid, sensor=SensorSettings(sensor_id=sid, count=20, fps=200.0, deadline_ms=10000,
                                                             shard=(i, 2), link_fit=False, stay=True)),
                           tiny_pipeline)  # stay: cameras that run on (a finished one-shot run withdraws its stream)
               for i, sid in enumerate(("cam-a", "cam-b"))]
    try:
        for sensor in sensors:
            sensor.start()
        threads = [threading.Thread(target=s.run_replay) for s in sensors]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        want = {("cam-a", i) for i in range(0, 20, 2)} | {("cam-b", i) for i in range(1, 20, 2)}
        results: dict[tuple[str, int], Result] = {}
        configs: dict[str, dict[str, object]] = {}
        end = time.monotonic() + 20
        while (not want <= results.keys() or len(configs) < 5) and time.monotonic() < end:
            for comm in (watcher, ha):
                msg = comm.get(timeout=0.05)
                if msg is None:
                    continue
                if msg.topic.startswith("homeassistant/"):
                    configs[msg.topic] = json.loads(msg.payload)
                else:
                    result = Result.model_validate_json(msg.payload)
                    results[(result.stream_id, result.frame_id)] = result
        assert want <= results.keys(), f"missing results: {sorted(want - results.keys())}"
        assert all(r.complete and r.fraction_received == 1.0 for r in results.values())
        expected = {fusion_object_id(topics, "fusion-1")} | {f(topics, s) for s in ("cam-a", "cam-b")
                                                            for f in (stream_object_id, sensor_object_id)}
        assert set(configs) == {config_topic("homeassistant", "fusion-1", oid) for oid in expected}
    finally:
        for sensor in sensors:
            sensor.stop()
        fusion.stop()
        worker.join(10)
        fusion.close()
        watcher.stop()
        ha.stop()
    for agent_comm in [fusion.comm, *(s.comm for s in sensors)]:
        assert agent_comm.counters["publish_rejected"] == 0, agent_comm.client_id
    assert not fusion.rejected
