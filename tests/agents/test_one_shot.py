"""A one-shot sensor run leaves nothing behind on the broker, and a run that cannot start leaves nothing at all.

Runs `nairbus sensor` as a user does against a private broker and a fusion agent with Home Assistant discovery, then
reads back every retained message of the run's topic roots: after a finished one-shot run (a folder, a replay of
`--count` frames) the sensor's birth, controls and status are gone, and with them the stream's discovery configs;
`--stay` keeps them; a missing folder or an unknown source fails before connecting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.timeout(240)]


def retained(broker: PrivateMosquitto, pattern: str = "#", settle_s: float = 1.0) -> dict[str, bytes]:
    """Every retained message under ``pattern`` the broker holds now."""
    got: dict[str, bytes] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"retained-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: got.__setitem__(m.topic, m.payload) if m.retain else None
    client.connect(broker.host, broker.port)
    client.subscribe(pattern, qos=1)
    client.loop_start()
    time.sleep(settle_s)
    client.loop_stop()
    client.disconnect()
    return got


def _sensor(broker: PrivateMosquitto, root: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
           "NAIRBUS_TOPICS__ROOT": root, "NAIRBUS_TOPICS__SITE": "lab", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "sensor", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_a_finished_one_shot_run_withdraws_what_it_announced_unless_asked_to_stay(topic_root: str) -> None:
    with PrivateMosquitto() as broker:  # a broker of its own: every retained message on it is this test's
        cfg = AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                          topics=TopicSettings(root=topic_root, site="lab"))
        fusion = FusionAgent(cfg, NairPipeline.load("base", sensor_artifact_path("base")))
        fusion.start()
        worker = threading.Thread(target=fusion.run, daemon=True)
        worker.start()
        try:
            done = _sensor(broker, topic_root, "--sensor-id", "once", "--count", "5", "--fps", "20")
            assert done.returncode == 0, done.stderr[-2000:]
            time.sleep(1.0)  # fusion's round: it forgets the stream and clears its discovery configs
            left = retained(broker)
            assert not [t for t in left if "/sensors/once/" in t], left
            assert not [t for t in left if "nairbus-fusion-1" in t and "once" in t], left
            assert [t for t in left if t.endswith("/fusion/fusion-1/status")]  # fusion's own status stays

            done = _sensor(broker, topic_root, "--sensor-id", "kept", "--count", "5", "--fps", "20", "--stay")
            assert done.returncode == 0, done.stderr[-2000:]
            time.sleep(1.0)
            left = retained(broker)
            assert {f"{topic_root}/v1/lab/sensors/kept/{leaf}" for leaf in ("birth", "status", "controls")} <= set(
                left)
        finally:
            fusion.stop()
            worker.join(timeout=10)
            fusion.close()


@pytest.mark.parametrize(("args", "needle"), [
    (("--folder", "/nonexistent/snapshots"), "does not exist"),
    (("--source", "nowhere"), "unknown frame source"),
    (("--camera", "/nonexistent/video.mp4"), "camera"),
])
def test_a_run_that_cannot_start_leaves_nothing_on_the_broker(topic_root: str, tmp_path: Path,
                                                              args: tuple[str, ...], needle: str) -> None:
    with PrivateMosquitto() as broker:
        done = _sensor(broker, topic_root, "--sensor-id", "broken", *args)
        assert done.returncode != 0
        assert needle in done.stderr + done.stdout
        assert "Traceback" not in done.stderr
        assert retained(broker) == {}
