"""``nairbus watch``: the live view renders what arrives, ``--json`` prints results for scripts, and a read-only
account on the production broker is enough — with its password in a file, never on the command line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from nairbus.agents.home.watch import watch
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.tools.secure_broker import SecureBroker
from nairbus.schemas import CONTENT_TYPE_JSON, ClassScore, Result, Status, encode
from nairbus.schemas.topics import TopicTree

pytestmark = pytest.mark.broker
NAIRBUS = Path(sys.executable).with_name("nairbus")


def _result(stream: str, frame: int, label: str = "Sneaker") -> Result:
    now = time.time()
    return Result(stream_id=stream, fusion_id="fusion-1", frame_id=frame, label=label, class_index=7, confidence=0.91,
                  topk=(ClassScore(class_index=7, label=label, score=0.91),
                        ClassScore(class_index=5, label="Sandal", score=0.06)),
                  fraction_received=0.25, bytes_received=120, fragments_received=2, sensors=("cam-a",),
                  capture_ts=now - 0.05, decided_ts=now, latency_ms=50.0, complete=True)


def _publish_until(publisher: Communicator, topics: TopicTree, done: threading.Event | subprocess.Popen[str],
                   timeout: float = 20.0) -> None:
    """Keep publishing results until the watcher has seen enough (it subscribes at a moment we cannot see)."""
    frame = 0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        finished = done.is_set() if isinstance(done, threading.Event) else done.poll() is not None
        if finished:
            return
        publisher.publish(topics.result("kitchen"), encode(_result("kitchen", frame)), qos=0,
                          content_type=CONTENT_TYPE_JSON)
        frame += 1
        time.sleep(0.05)


def test_live_view_shows_streams_and_fusion_status(broker: PrivateMosquitto, topic_root: str) -> None:
    topics = TopicTree(topic_root, "lab")
    settings = BrokerSettings(host=broker.host, port=broker.port)
    publisher = Communicator(settings, "t-watch-pub", topics.fusion_status("fusion-1"),
                             lambda state: encode(Status(agent_id="fusion-1", role="fusion", state=state,  # type: ignore[arg-type]
                                                         session="s1", ts=time.time())))
    publisher.start()
    publisher.publish(topics.result("porch"), b"{not json", qos=0, content_type=CONTENT_TYPE_JSON)
    console = Console(record=True, width=160, file=io.StringIO(), force_terminal=False)
    done = threading.Event()
    config = AgentConfig(broker=settings, topics=TopicSettings(root=topic_root, site="lab"))
    states = []
    viewer = threading.Thread(target=lambda: (states.append(watch(config, console=console, count=5)), done.set()))
    viewer.start()
    _publish_until(publisher, topics, done)
    viewer.join(10)
    publisher.stop()
    assert done.is_set()
    state = states[0]
    assert state.streams["kitchen"].frames >= 5
    assert state.fusion == {"fusion-1": "online"}
    text = console.export_text()
    assert "kitchen" in text
    assert "Sneaker" in text
    assert "0.91" in text
    assert "Sandal 0.06" in text
    assert "25%" in text
    assert "fusion-1 online" in text


def test_cli_json_lines_on_the_production_broker_with_a_password_file(secure: SecureBroker) -> None:
    topics = TopicTree("nairbus", "watchsite")
    env = {**os.environ, "NAIRBUS_BROKER__HOST": secure.host, "NAIRBUS_BROKER__PORT": str(secure.port),
           "NAIRBUS_BROKER__USERNAME": "watch.results",
           "NAIRBUS_BROKER__PASSWORD_FILE": str(secure.password_file("watch.results")),
           "NAIRBUS_TOPICS__ROOT": "nairbus", "NAIRBUS_TOPICS__SITE": "watchsite"}
    env.pop("NAIRBUS_CONFIG", None)
    proc = subprocess.Popen([str(NAIRBUS), "watch", "--json", "--count", "3"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        password = secure.password_file("watch.results").read_text()
        assert password not in cmdline  # the process list shows a file path at most, never the secret
        fusion = Communicator(secure.settings("fusion.fusion-1"), "t-watch-fusion",
                              topics.fusion_status("fusion-1"), lambda s: b'{"state": "x"}')
        fusion.start()
        _publish_until(fusion, topics, proc)
        fusion.stop()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert all(Result.model_validate_json(line).stream_id == "kitchen" for line in lines)
    assert password not in out + err


def test_cli_says_why_when_the_account_is_refused(secure: SecureBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("wrong-password")
    env = {**os.environ, "NAIRBUS_BROKER__HOST": secure.host, "NAIRBUS_BROKER__PORT": str(secure.port),
           "NAIRBUS_BROKER__USERNAME": "watch.results", "NAIRBUS_BROKER__PASSWORD_FILE": str(wrong)}
    env.pop("NAIRBUS_CONFIG", None)
    proc = subprocess.run([str(NAIRBUS), "watch", "--count", "1"], env=env, text=True, capture_output=True, check=False,
                          timeout=60)
    assert proc.returncode == 2
    assert "refused by the broker" in proc.stderr
    assert "check the username, password and ACL" in proc.stderr
