"""The systemd units: they verify, they are hardened, and the agents speak the notify protocol they declare."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from nairbus.agents.nair.service import run_fusion, run_sensor
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto, free_port
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.notify import ServiceNotifier, progress, watchdog_interval
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas import Status
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.topics import TopicTree

UNIT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def _analyze_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nairbus_units_analyze", UNIT_DIR / "analyze.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyze = _analyze_module()


def _directives(unit_file: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    for line in (UNIT_DIR / unit_file).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analyze.make_root(tmp_path_factory.mktemp("units") / "root")


def test_units_pass_systemd_analyze_verify(unit_root: Path) -> None:
    result = analyze.verify(unit_root)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_verify_catches_a_unit_whose_binary_is_missing(tmp_path: Path) -> None:
    root = analyze.make_root(tmp_path / "root")
    (root / analyze.EXEC.lstrip("/")).unlink()
    result = analyze.verify(root, ["nairbus-fusion.service"])
    assert result.returncode != 0
    assert "is not executable" in result.stderr


@pytest.mark.parametrize("unit_file", ["nairbus-sensor@.service", "nairbus-fusion.service"])
def test_unit_is_notify_watchdog_restart_and_keeps_secrets_out(unit_file: str) -> None:
    d = _directives(unit_file)
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["Restart"] == ["on-failure"]
    assert d["DynamicUser"] == ["yes"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["PrivateTmp"] == ["yes"]
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in d["SystemCallFilter"]
    credentials = dict(entry.split(":", 1) for entry in d["LoadCredential"])
    assert set(credentials) == {"broker-password", "broker-key"}
    env = dict(item.split("=", 1) for value in d["Environment"] for item in value.split())
    assert env["NAIRBUS_BROKER__PASSWORD_FILE"] == "%d/broker-password"  # the credential, not the secret
    assert env["NAIRBUS_BROKER__TLS_KEY"] == "%d/broker-key"
    assert not any("PASSWORD=" in value for value in d["Environment"])
    assert "password" not in d["ExecStart"][0].lower()  # nothing secret on the command line (process list)


def _effective(unit_file: str, *drop_ins: str) -> dict[str, list[str]]:
    """The unit's directives as systemd merges its drop-ins: a later value adds to a list setting, an empty one
    resets it (``ExecStart=``), and a single-valued setting keeps the last."""
    merged: dict[str, list[str]] = {}
    for name in (unit_file, *drop_ins):
        for key, values in _directives(name).items():
            for value in values:
                merged[key] = [] if value == "" else [*merged.get(key, []), value]
    return merged


def test_the_camera_drop_in_grants_one_device_and_the_pip_drop_in_only_the_program() -> None:
    camera = _effective("nairbus-sensor@.service", "camera.conf")
    assert camera["DevicePolicy"] == ["strict"]
    assert camera["DeviceAllow"] == ["/dev/video0 r"]  # that camera, read-only, and no other device
    assert camera["PrivateDevices"][-1] == "no"
    assert camera["SupplementaryGroups"] == ["video"]
    plain = _effective("nairbus-sensor@.service")
    assert "DeviceAllow" not in plain
    assert plain["PrivateDevices"] == ["yes"]
    pip = _effective("nairbus-sensor@.service", "pip.conf")
    assert pip["ExecStart"] == ["/usr/local/bin/nairbus sensor --config /etc/nairbus/nairbus.toml --sensor-id %i"]
    assert {k: v for k, v in pip.items() if k != "ExecStart"} == {k: v for k, v in plain.items() if k != "ExecStart"}
    env = dict(item.split("=", 1) for value in plain["Environment"] for item in value.split())
    assert env["NAIRBUS_MODEL_DIR"] == "/etc/nairbus/models"  # own models: readable under ProtectSystem=strict


@pytest.mark.slow
@pytest.mark.broker
def test_the_units_command_runs_an_imported_model_on_a_folder(broker: PrivateMosquitto, topic_root: str,
                                                                tmp_path: Path) -> None:
    """What the sensor unit runs — its ExecStart arguments, a config file and the unit's model directory — with a
    user's imported model (no calibration: it sends the device's decisions) on a folder of files."""
    import subprocess
    import sys

    from PIL import Image

    from nairbus.models.data.fashion_mnist import load_split

    nairbus = Path(sys.executable).with_name("nairbus")
    models, folder = tmp_path / "models", tmp_path / "srv-camera"
    folder.mkdir()
    for step in (["export-model", "base", "--out", str(tmp_path / "mine.pt2")],
                 ["import-model", str(tmp_path / "mine.pt2"), "--name", "mine", "--spec", str(tmp_path / "mine.toml"),
                  "--out-dir", str(models)]):
        done = subprocess.run([str(nairbus), *step], capture_output=True, text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stderr
    for i, image in enumerate(load_split("test").images[:12]):
        Image.fromarray(image).save(folder / f"snap-{i:02d}.png")
    config = tmp_path / "nairbus.toml"
    config.write_text(f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n\n[topics]\nroot = "{topic_root}"\n\n'
                      f'[sensor]\nmodel = "mine"\nmode = "decision"\nsource = "folder"\n\n'
                      f'[sensor.source_options]\nfolder = "{folder}"\n')
    exec_start = _directives("nairbus-sensor@.service")["ExecStart"][0].split()
    args = [a.replace("/etc/nairbus/nairbus.toml", str(config)).replace("%i", "cam-01") for a in exec_start[1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAIRBUS_")}
    done = subprocess.run([str(nairbus), *args], capture_output=True, text=True, timeout=240, check=False,
                          env={**env, "NAIRBUS_MODEL_DIR": str(models)})
    assert done.returncode == 0, done.stderr[-3000:]
    counters = json.loads(done.stdout.strip().splitlines()[-1])
    assert counters["items_read"] == counters["frames_sent"] == 12


def test_exposure_is_ok_and_the_report_is_current() -> None:
    report = analyze.analyze()
    assert {"nairbus-sensor@camera.service", "nairbus-sensor@pip.service"} <= set(report["units"])
    for unit, data in report["units"].items():
        assert data["exposure"] <= 2.0, (unit, data)
    committed = json.loads(analyze.REPORT.read_text())
    assert committed == report, "reports/systemd.json is stale: run .venv/bin/python deploy/systemd/analyze.py"


class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``; collects what agents send."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.path = path
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def wait_for(self, line: str, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(line in m.splitlines() for m in self.messages):
                return True
            time.sleep(0.02)
        return False

    def count(self, line: str) -> int:
        return sum(line in m.splitlines() for m in self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield sock
    sock.close()


def test_watchdog_interval_follows_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_watchdog_pings_only_while_alive(notify_socket: NotifySocket) -> None:
    healthy = threading.Event()
    healthy.set()
    notifier = ServiceNotifier()
    notifier.ready("testing")
    notifier.start_watchdog(healthy.is_set)
    assert notify_socket.wait_for("WATCHDOG=1", 2)
    healthy.clear()
    time.sleep(0.15)
    withheld_from = notify_socket.count("WATCHDOG=1")
    time.sleep(0.5)
    assert notify_socket.count("WATCHDOG=1") == withheld_from  # a hung agent gets restarted by systemd
    notifier.stopping()
    assert notify_socket.wait_for("STOPPING=1", 2)
    assert notify_socket.messages[0].splitlines() == ["READY=1", "STATUS=testing"]


def test_progress_check_fails_when_the_counter_stalls() -> None:
    value = [0]
    alive = progress(lambda: value[0], stall_s=0.2)
    assert alive()
    time.sleep(0.25)
    assert not alive()
    value[0] += 1
    assert alive()


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.broker
@pytest.mark.usefixtures("restore_signals")
def test_fusion_is_ready_only_once_connected_and_subscribed(broker: PrivateMosquitto, topic_root: str,
                                                            tiny_pipeline: NairPipeline,
                                                            notify_socket: NotifySocket) -> None:
    topics = TopicTree(topic_root, "lab")
    config = AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                         topics=TopicSettings(root=topic_root, site="lab"),
                         fusion=FusionSettings(fusion_id="fusion-ready", stats_interval_s=0.2))
    watcher = Communicator(BrokerSettings(host=broker.host, port=broker.port), "t-ready-watcher", None, lambda s: b"")
    watcher.subscribe(topics.fusion_status("fusion-ready"), qos=1)
    watcher.start()
    seen_at_ready: list[bool] = []

    def stop_when_ready() -> None:
        if notify_socket.wait_for("READY=1"):
            # At READY the broker has already accepted the fusion agent: its retained "online" status is there.
            msg = watcher.get(timeout=5)
            seen_at_ready.append(msg is not None and wire_decode(msg.payload, Status).state == "online")
            notify_socket.wait_for("WATCHDOG=1", 5)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_when_ready, daemon=True)
    killer.start()
    run_fusion(config, tiny_pipeline)
    killer.join(10)
    watcher.stop()
    assert seen_at_ready == [True]
    assert notify_socket.count("WATCHDOG=1") >= 1
    assert notify_socket.wait_for("STOPPING=1", 2)
    lines = [line for m in notify_socket.messages for line in m.splitlines()]
    assert lines.index("READY=1") < lines.index("STOPPING=1")


@pytest.mark.usefixtures("restore_signals")
def test_fusion_never_reports_ready_when_the_broker_refuses(tiny_pipeline: NairPipeline,
                                                            notify_socket: NotifySocket) -> None:
    config = AgentConfig(broker=BrokerSettings(host="127.0.0.1", port=free_port()),
                         fusion=FusionSettings(fusion_id="fusion-refused"))
    with pytest.raises(ConnectionError, match="unreachable"):
        run_fusion(config, tiny_pipeline)
    time.sleep(0.1)
    assert notify_socket.count("READY=1") == 0


@pytest.mark.broker
@pytest.mark.usefixtures("restore_signals")
def test_sensor_is_ready_after_its_birth_is_acknowledged(broker: PrivateMosquitto, topic_root: str,
                                                         tiny_pipeline: NairPipeline,
                                                         notify_socket: NotifySocket) -> None:
    topics = TopicTree(topic_root, "lab")
    config = AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                         topics=TopicSettings(root=topic_root, site="lab"),
                         sensor=SensorSettings(sensor_id="cam-ready", count=20, fps=40.0, deadline_ms=10000))
    watcher = Communicator(BrokerSettings(host=broker.host, port=broker.port), "t-sensor-watcher", None,
                           lambda s: b"")
    watcher.subscribe(topics.sensor_birth("cam-ready"), qos=1)
    watcher.start()
    birth_at_ready: list[bool] = []

    def check_at_ready() -> None:
        if notify_socket.wait_for("READY=1"):
            birth_at_ready.append(watcher.get(timeout=5) is not None)

    checker = threading.Thread(target=check_at_ready, daemon=True)
    checker.start()
    counters = run_sensor(config, tiny_pipeline)
    checker.join(10)
    watcher.stop()
    assert counters["frames"] == 20
    assert birth_at_ready == [True]  # the retained birth was on the broker when systemd heard READY=1
    assert notify_socket.count("WATCHDOG=1") >= 1  # pinged while frames flowed (0.5 s of replay, pings every 0.1 s)
    lines = [line for m in notify_socket.messages for line in m.splitlines()]
    assert lines.index("READY=1") < lines.index("STOPPING=1")
