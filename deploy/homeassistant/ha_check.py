#!/usr/bin/env python3
"""Check nairbus's Home Assistant MQTT discovery against a real Home Assistant Core.

What it does, in order (every wait is bounded; every process it starts is killed on exit, Ctrl-C included):

1. makes sure Home Assistant Core is installed in its own venv (``--ha-venv``, created with Python >= 3.13), with the
   requirements of every integration the check loads (MQTT's ``paho-mqtt``, the frontend, ...) installed up front;
   Home Assistant then runs with ``--skip-pip``, so nothing is downloaded while the check runs;
2. starts a private Mosquitto on a free loopback port (or uses ``--broker HOST:PORT``);
3. writes a fresh Home Assistant config dir (``configuration.yaml``, the MQTT config entry and a finished onboarding
   in ``.storage``), starts ``hass`` and waits for its ``homeassistant/status`` ``online`` birth message;
4. starts ``nairbus fusion`` and two sensors (``cam-a`` -> stream ``kitchen``, ``cam-b`` -> stream ``door``), while
   its own MQTT client records every result and every retained discovery config;
5. lets ``cam-b`` finish (a clean stop), restarts Home Assistant while fusion and ``cam-a`` run, stops fusion
   (SIGTERM), stops ``cam-a`` and Home Assistant;
6. reads Home Assistant's own files -- ``home-assistant.log``, ``.storage/core.entity_registry``,
   ``.storage/core.device_registry`` and the recorder database ``home-assistant_v2.db`` -- and checks them against
   what the discovery configs seen on the broker promise.

It knows nothing of nairbus's entity list: the components to expect come from the retained discovery configs it
reads off the broker, legacy per-entity configs (``<prefix>/<component>/[<node>/]<object>/config``) and device-based
ones (``<prefix>/device/<object>/config`` with a ``cmps`` map) alike, abbreviations expanded with Home Assistant's own
``abbreviations.py``.

Checks (``checks`` in the JSON report, each with ``passed``):

a. ``log``: no WARNING/ERROR/CRITICAL line of ``home-assistant.log`` mentions mqtt or discovery;
b. ``registry``: every discovered component is in the entity registry (platform ``mqtt``, its ``unique_id``, the
   right domain) and its device in the device registry (by ``identifiers``, ``via_device`` resolved);
c. ``recorder``: every ``event`` component has one event per published result of its stream (>= 99 %, the last
   frames of a stream that stopped cleanly included); label sensors write at most one row per label change plus a
   heartbeat a minute, numeric sensors at most one row a second;
d. ``availability``: after fusion is stopped, every stream entity's last state is ``unavailable``;
e. ``restart``: after a Home Assistant restart the same entities come back, are live again, and the results topic
   carries no duplicate ``(stream_id, frame_id)``;
f. ``stream_removal``: a stream whose sensor is decommissioned (stopped, its retained birth cleared; a clean stop alone
   keeps the stream) has its entities removed from the registry.

Run it with the nairbus venv's Python (stdlib + paho-mqtt 2.x)::

    .venv/bin/python deploy/homeassistant/ha_check.py --report reports/homeassistant.json

Exit status: 0 all checks passed, 1 a check failed, 2 the check could not run (install, start-up, time-out).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import glob
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_HA_VERSION = "2025.4.4"
DEFAULT_HA_VENV = Path("~/.cache/nairbus/ha-venv").expanduser()
UNAVAILABLE = "unavailable"
NO_VALUE = {"unavailable", "unknown", ""}
# Roots of the requirement walk when Home Assistant's bootstrap.py cannot be parsed (2025.4's sets).
FALLBACK_ROOTS = {
    "homeassistant", "persistent_notification", "analytics", "application_credentials", "backup", "frontend",
    "hardware", "logger", "network", "system_health", "automation", "person", "scene", "script", "tag", "zone",
    "counter", "input_boolean", "input_button", "input_datetime", "input_number", "input_select", "input_text",
    "schedule", "timer",
}
# Manifest keys that make Home Assistant process another integration's requirements (requirements.py).
DISCOVERY_KEYS = {"bluetooth": "bluetooth", "dhcp": "dhcp", "ssdp": "ssdp", "usb": "usb", "zeroconf": "zeroconf",
                  "homekit": "zeroconf"}
# Used when the HA venv's abbreviations.py cannot be read: the keys this checker looks at.
FALLBACK_ABBREVIATIONS = {
    "cmps": "components", "p": "platform", "uniq_id": "unique_id", "dev": "device", "o": "origin",
    "stat_t": "state_topic", "avty": "availability", "avty_t": "availability_topic", "t": "topic",
    "dev_cla": "device_class", "unit_of_meas": "unit_of_measurement", "stat_cla": "state_class", "ops": "options",
    "evt_typ": "event_types", "json_attr_t": "json_attributes_topic", "val_tpl": "value_template",
    "avty_mode": "availability_mode", "exp_aft": "expire_after", "frc_upd": "force_update",
}
FALLBACK_DEVICE_ABBREVIATIONS = {"ids": "identifiers", "cns": "connections", "name": "name", "mf": "manufacturer",
                                 "mdl": "model", "sw": "sw_version", "via_device": "via_device"}
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                      r"\(([^)]*)\) \[([^\]]+)\] ?(.*)$")
MQTT_WORDS = re.compile(r"mqtt|discover", re.IGNORECASE)
STREAM_TOPIC = re.compile(r"/(?:results|streams|frames)/([A-Za-z0-9_.-]+)")


class CheckError(RuntimeError):
    """The check could not run (exit status 2)."""


def log(message: str) -> None:
    """Progress, on stdout, with the time since start."""
    print(f"[ha-check {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


_T0 = time.monotonic()


# ---- processes -------------------------------------------------------------------------------------------------


class Processes:
    """Every child process this check starts, each in its own session so its whole group can be signalled."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._lock = threading.Lock()

    def start(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd, start_new_session=True)
        with self._lock:
            self.items.append((name, proc))
        log(f"started {name} (pid {proc.pid}): {' '.join(argv)}")
        return proc

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> int:
        """Signal the process group; SIGKILL after ``timeout`` seconds. Returns the exit status (-9: killed)."""
        if proc.poll() is None:
            self._signal(proc, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(10)
        self._signal(proc, signal.SIGKILL)  # leftovers of the group
        return proc.returncode

    def kill_all(self) -> None:
        with self._lock:
            items = list(self.items)
        for name, proc in reversed(items):
            if proc.poll() is None:
                log(f"killing {name} (pid {proc.pid})")
                self._signal(proc, signal.SIGTERM)
        for _name, proc in reversed(items):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            self._signal(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


class Deadline:
    """The check's overall time bound; every wait also stops at it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def wait_for(predicate: Any, timeout: float, deadline: Deadline, *, alive: list[subprocess.Popen[bytes]] | None = None,
             poll: float = 0.2) -> bool:
    """Poll ``predicate`` until true, ``timeout`` or the overall deadline (False), or a watched process exits."""
    end = min(time.monotonic() + timeout, deadline.end)
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        if alive and any(p.poll() is not None for p in alive):
            return bool(predicate())
        time.sleep(poll)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# ---- Home Assistant venv ---------------------------------------------------------------------------------------


def find_python(explicit: str | None) -> str | None:
    """The newest Python >= 3.13 on this machine (``--python`` wins)."""
    if explicit:
        return explicit
    candidates = [shutil.which(name) for name in ("python3.14", "python3.13")]
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.1[34]*/bin/python3*"), reverse=True)
    candidates += sorted(glob.glob(str(Path("~/.pyenv/versions").expanduser() / "3.1[34]*/bin/python3*")),
                         reverse=True)
    best: tuple[tuple[int, ...], str] | None = None
    for cand in candidates:
        if not cand or not os.access(cand, os.X_OK) or cand.endswith("-config"):
            continue
        try:
            out = subprocess.run([cand, "-c", "import sys; print(*sys.version_info[:3])"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
            version = tuple(int(x) for x in out.split())
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
        if version >= (3, 13) and (best is None or version > best[0]):
            best = (version, cand)
    return best[1] if best else None


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ha_package_dir(venv: Path) -> Path | None:
    found = sorted(venv.glob("lib/python3*/site-packages/homeassistant"))
    return found[-1] if found else None


def installed_ha_version(venv: Path) -> str | None:
    dists = sorted(venv.glob("lib/python3*/site-packages/homeassistant-*.dist-info"))
    if not dists:
        return None
    return dists[-1].name[len("homeassistant-"):-len(".dist-info")]


def _literal_set(source: str, name: str) -> set[str]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            with contextlib.suppress(ValueError, TypeError):
                return set(ast.literal_eval(node.value))
    return set()


def integration_requirements(ha_dir: Path, configured: set[str]) -> dict[str, str]:
    """Requirement -> integration, for every integration Home Assistant sets up (or checks) with this config.

    The roots are Home Assistant's always-loaded integrations (``bootstrap.py``: ``CORE_INTEGRATIONS``,
    ``DEFAULT_INTEGRATIONS``) and the configured domains; dependencies, after-dependencies and discovery
    integrations are followed, as ``requirements.py`` does.
    """
    try:
        source = (ha_dir / "bootstrap.py").read_text(encoding="utf-8")
        roots = _literal_set(source, "CORE_INTEGRATIONS") | _literal_set(source, "DEFAULT_INTEGRATIONS")
    except (OSError, SyntaxError):
        roots = set()
    todo = list((roots or FALLBACK_ROOTS) | configured)
    seen: set[str] = set()
    reqs: dict[str, str] = {}
    while todo:
        domain = todo.pop()
        if domain in seen:
            continue
        manifest = ha_dir / "components" / domain / "manifest.json"
        if not manifest.exists():
            continue
        seen.add(domain)
        data = json.loads(manifest.read_text(encoding="utf-8"))
        for req in data.get("requirements", []):
            reqs.setdefault(req, domain)
        todo += data.get("dependencies", []) + data.get("after_dependencies", [])
        todo += [target for key, target in DISCOVERY_KEYS.items() if key in data]
    return reqs


def missing_requirements(venv: Path, reqs: list[str]) -> list[str]:
    """The requirements not satisfied in the HA venv (Home Assistant's own ``is_installed``)."""
    if not reqs:
        return []
    code = ("import json, sys\nfrom homeassistant.util.package import is_installed\n"
            "print(json.dumps([r for r in json.loads(sys.argv[1]) if not is_installed(r)]))")
    out = subprocess.run([str(venv_python(venv)), "-c", code, json.dumps(reqs)], capture_output=True, text=True,
                         timeout=120, check=False)
    if out.returncode != 0:
        raise CheckError(f"cannot inspect the HA venv {venv}: {out.stderr.strip()[-2000:]}")
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _pip(venv: Path, args: list[str], timeout: float) -> None:
    """``pip install`` into the venv, its progress lines echoed; killed after ``timeout`` seconds."""
    argv = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", *args]
    log(f"$ {' '.join(argv)}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith(("Collecting", "Downloading", "Building wheel", "Installing", "Successfully",
                                "ERROR")):
                log(f"pip: {line.rstrip()[:160]}")
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise CheckError(f"pip install failed or ran past {timeout:g} s (status {proc.returncode}):\n{tail}")


def ha_constraints(venv: Path, version: str, timeout: float) -> Path:
    """Home Assistant's own pins (``homeassistant/package_constraints.txt`` in its wheel), as a pip constraints file
    beside the venv: the release was tested with these versions, and without them pip's resolver backtracks through
    every release of some dependencies (habluetooth, bluetooth-data-tools: an install ran past 55 minutes)."""
    import zipfile

    target = venv / f"homeassistant-{version}-constraints.txt"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        argv = [str(venv_python(venv)), "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
                "--only-binary", ":all:", "-d", tmp, f"homeassistant=={version}"]
        log(f"$ {' '.join(argv)}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        wheels = sorted(Path(tmp).glob("homeassistant-*.whl"))
        if done.returncode != 0 or not wheels:
            raise CheckError(f"cannot download homeassistant=={version}: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            pins = wheel.read("homeassistant/package_constraints.txt").decode()
    target.write_text(pins, encoding="utf-8")
    return target


def ensure_ha_venv(venv: Path, python: str | None, version: str, configured: set[str], timeout: float,
                   allow_install: bool = True) -> dict[str, Any]:
    """Install Home Assistant Core ``version`` and its integrations' requirements into ``venv`` if needed."""
    info: dict[str, Any] = {"venv": str(venv), "installed_now": False}
    have = installed_ha_version(venv) if venv_python(venv).exists() else None
    if have != version:
        if not allow_install:
            raise CheckError(f"Home Assistant {version} is not installed in {venv} (found {have}); "
                             "run without --no-install to install it")
        if not venv_python(venv).exists():
            if python is None:
                raise CheckError("no Python >= 3.13 found (Home Assistant 2025.x needs it); give one with --python")
            log(f"creating the HA venv {venv} with {python}")
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
        log(f"installing homeassistant=={version} into {venv} (takes minutes)")
        _pip(venv, ["-c", str(ha_constraints(venv, version, timeout)), f"homeassistant=={version}"], timeout)
        info["installed_now"] = True
        have = installed_ha_version(venv)
        if have != version:
            raise CheckError(f"installed Home Assistant is {have}, not {version}")
    ha_dir = ha_package_dir(venv)
    if ha_dir is None:
        raise CheckError(f"no homeassistant package in {venv}")
    reqs = integration_requirements(ha_dir, configured)
    mqtt_manifest = json.loads((ha_dir / "components" / "mqtt" / "manifest.json").read_text(encoding="utf-8"))
    info["mqtt_requirements"] = mqtt_manifest.get("requirements", [])
    missing = missing_requirements(venv, sorted(reqs))
    info["integration_requirements"] = sorted(reqs)
    if missing:
        if not allow_install:
            raise CheckError(f"requirements missing from {venv}: {missing}; run without --no-install")
        log(f"installing integration requirements into the HA venv: {', '.join(missing)}")
        # Pinning homeassistant keeps pip from moving Home Assistant's own dependencies.
        _pip(venv, ["-c", str(ha_constraints(venv, version, timeout)), f"homeassistant=={version}", *missing],
             timeout)
        info["installed_now"] = True
        still = missing_requirements(venv, missing)
        if still:
            raise CheckError(f"still missing after pip install: {still}")
    else:
        log(f"HA venv {venv}: homeassistant {have} and all {len(reqs)} integration requirements present")
    out = subprocess.run([str(venv_python(venv)), "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, timeout=60, check=True)
    info["python"] = out.stdout.strip()
    info["ha_version"] = have
    info["hass"] = str(venv / "bin" / "hass")
    return info


def load_abbreviations(ha_dir: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """Home Assistant's discovery abbreviations (component keys; device and origin keys)."""
    if ha_dir is not None:
        path = ha_dir / "components" / "mqtt" / "abbreviations.py"
        with contextlib.suppress(OSError, SyntaxError, ValueError):
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            found: dict[str, dict[str, str]] = {}
            for node in tree.body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    found[node.targets[0].id] = ast.literal_eval(node.value)
            if "ABBREVIATIONS" in found:
                device = {**found.get("DEVICE_ABBREVIATIONS", {}), **found.get("ORIGIN_ABBREVIATIONS", {})}
                return found["ABBREVIATIONS"], device
    return FALLBACK_ABBREVIATIONS, FALLBACK_DEVICE_ABBREVIATIONS


# ---- broker ----------------------------------------------------------------------------------------------------


class OwnMosquitto:
    """A private Mosquitto: nairbus's ``PrivateMosquitto`` (from the repo), or a minimal one of our own."""

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.private: Any = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.config_path: Path | None = None
        self.kind = ""

    def start(self) -> None:
        try:
            sys.path.insert(0, str(REPO))
            from nairbus.agents.runtime.mosquitto import PrivateMosquitto
            private_cls: Any = PrivateMosquitto
        except ImportError:
            private_cls = None
        if private_cls is not None:
            self.private = private_cls().start()
            self.host, self.port = self.private.host, self.private.port
            self.config_path = self.private.config_path
            self.kind = "nairbus.agents.runtime.mosquitto.PrivateMosquitto (broker/mosquitto.dev.conf)"
            return
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_topic_alias 10\nmax_packet_size 65536\nset_tcp_nodelay true\nlog_dest stderr\n",
                        encoding="utf-8")
        self.workdir.chmod(0o755)
        conf.chmod(0o644)
        self.config_path = conf
        self.proc = self.procs.start("mosquitto", [binary, "-c", str(conf)], self.workdir / "mosquitto.log")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                self.kind = "mosquitto (own minimal config)"
                return
            time.sleep(0.05)
        raise CheckError(f"mosquitto did not listen on {self.port} within 10 s")

    def close(self) -> None:
        if self.private is not None:
            self.private.close()
        if self.proc is not None:
            self.procs.stop(self.proc, 5)


@dataclass
class Message:
    ts: float
    topic: str
    payload: bytes
    retain: bool


class BusRecorder:
    """Our own MQTT client: records results, discovery configs, agent status and Home Assistant's status."""

    def __init__(self, host: str, port: int, prefix: str, root: str, site: str, username: str | None,
                 password: str | None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.mqtt = mqtt
        self.prefix = prefix
        self.base = f"{root}/v1/{site}"
        self.messages: list[Message] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"nairbus-ha-check-{os.getpid()}",
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log(f"recorder: connection refused: {reason}")
            return
        client.subscribe([(f"{self.prefix}/#", 1), (f"{self.base}/results/+", 1),
                          (f"{self.base}/fusion/+/status", 1), (f"{self.base}/sensors/+/status", 1),
                          (f"{self.base}/sensors/+/birth", 1)])
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append(Message(time.time(), msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise CheckError(f"cannot subscribe on the broker {self.host}:{self.port}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def snapshot(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def seen(self, predicate: Any) -> Message | None:
        with self.lock:
            for msg in self.messages:
                if predicate(msg):
                    return msg
        return None

    def results(self) -> list[dict[str, Any]]:
        out = []
        head = f"{self.base}/results/"
        for msg in self.snapshot():
            if msg.topic.startswith(head) and msg.payload:
                try:
                    data = json.loads(msg.payload)
                except ValueError:
                    continue
                out.append({"ts": msg.ts, "stream_id": data.get("stream_id", msg.topic[len(head):]),
                            "frame_id": data.get("frame_id"), "label": data.get("label"), "retain": msg.retain})
        return out

    def status_of(self, topic: str, state: str, since: float = 0.0) -> Message | None:
        def match(msg: Message) -> bool:
            if msg.topic != topic or msg.ts < since:
                return False
            try:
                return bool(json.loads(msg.payload).get("state") == state)
            except (ValueError, AttributeError):
                return msg.payload.decode(errors="replace").strip() == state
        return self.seen(match)


# ---- Home Assistant config dir ---------------------------------------------------------------------------------


def _version_const(path: Path, name: str, default: int) -> int:
    with contextlib.suppress(OSError):
        match = re.search(rf"^{name}\s*=\s*(\d+)", path.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            return int(match.group(1))
    return default


def write_ha_config(config_dir: Path, ha_dir: Path | None, host: str, port: int, http_port: int, prefix: str,
                    username: str | None, password: str | None,
                    recorder_options: str = "  commit_interval: 1\n  purge_keep_days: 1\n", extra: str = "") -> None:
    """configuration.yaml, the MQTT config entry and a finished onboarding, as Home Assistant stores them.
    ``recorder_options``: the indented lines under ``recorder:`` (empty: Home Assistant's defaults); ``extra``: more
    top-level YAML (an automation)."""
    storage = config_dir / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        "# Written by deploy/homeassistant/ha_check.py: the least Home Assistant needs for an MQTT discovery check.\n"
        "homeassistant:\n"
        "  name: nairbus check\n"
        "  time_zone: UTC\n"
        "  country: DE\n"
        "  language: en\n"
        "  currency: EUR\n"
        "  unit_system: metric\n"
        "  latitude: 52.52\n"
        "  longitude: 13.40\n"
        "  elevation: 34\n"
        "http:\n"
        "  server_host: 127.0.0.1\n"
        f"  server_port: {http_port}\n"
        "recorder:\n"
        f"{recorder_options}"
        "logger:\n"
        "  default: warning\n"
        f"{extra}",
        encoding="utf-8")
    now = dt.datetime.now(dt.UTC).isoformat()
    ce_version = ce_minor = mqtt_version = mqtt_minor = 0
    if ha_dir is not None:
        ce_version = _version_const(ha_dir / "config_entries.py", "STORAGE_VERSION", 1)
        ce_minor = _version_const(ha_dir / "config_entries.py", "STORAGE_VERSION_MINOR", 5)
        mqtt_version = _version_const(ha_dir / "components/mqtt/const.py", "CONFIG_ENTRY_VERSION", 1)
        mqtt_minor = _version_const(ha_dir / "components/mqtt/const.py", "CONFIG_ENTRY_MINOR_VERSION", 2)
    data: dict[str, Any] = {"broker": host, "port": port}
    if username:
        data["username"] = username
        data["password"] = password or ""
    status = f"{prefix}/status"
    entry: dict[str, Any] = {
        "created_at": now, "modified_at": now,
        "data": data,
        "discovery_keys": {},
        "disabled_by": None,
        "domain": "mqtt",
        "entry_id": uuid.uuid4().hex.upper()[:26],
        "minor_version": mqtt_minor or 2,
        "options": {
            "discovery": True,
            "discovery_prefix": prefix,
            "birth_message": {"topic": status, "payload": "online", "qos": 0, "retain": False},
            "will_message": {"topic": status, "payload": "offline", "qos": 0, "retain": False},
        },
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": host,
        "unique_id": None,
        "version": mqtt_version or 1,
    }
    (storage / "core.config_entries").write_text(json.dumps(
        {"version": ce_version or 1, "minor_version": ce_minor or 5, "key": "core.config_entries",
         "data": {"entries": [entry]}}, indent=2), encoding="utf-8")
    onboarding_version = 4
    if ha_dir is not None:
        onboarding_version = _version_const(ha_dir / "components/onboarding/__init__.py", "STORAGE_VERSION", 4)
    (storage / "onboarding").write_text(json.dumps(
        {"version": onboarding_version, "minor_version": 1, "key": "onboarding",
         "data": {"done": ["user", "core_config", "analytics", "integration"]}}, indent=2), encoding="utf-8")


@dataclass
class HaRun:
    """One Home Assistant process: when it started, came online (its birth message), was stopped and exited."""

    index: int
    start_ts: float
    online_ts: float | None = None
    stop_ts: float | None = None
    exit_ts: float | None = None
    returncode: int | None = None
    startup_s: float | None = None
    log_records: list[dict[str, Any]] = field(default_factory=list)


class HomeAssistant:
    def __init__(self, hass: str, config_dir: Path, procs: Processes, recorder: BusRecorder, prefix: str,
                 workdir: Path) -> None:
        self.hass = hass
        self.config_dir = config_dir
        self.procs = procs
        self.recorder = recorder
        self.prefix = prefix
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[HaRun] = []

    def start(self, timeout: float, deadline: Deadline) -> HaRun:
        run = HaRun(len(self.runs) + 1, time.time())
        self.runs.append(run)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(var, None)
        self.proc = self.procs.start(f"hass (run {run.index})",
                                     [self.hass, "-c", str(self.config_dir), "--skip-pip", "--log-no-color"],
                                     self.workdir / f"hass-run{run.index}.out", env=env)
        status = f"{self.prefix}/status"
        started = time.monotonic()
        ok = wait_for(lambda: self.recorder.seen(
            lambda m: m.topic == status and m.ts >= run.start_ts and m.payload.strip() == b"online") is not None,
            timeout, deadline, alive=[self.proc], poll=0.5)
        if not ok:
            tail = (self.workdir / f"hass-run{run.index}.out").read_text(errors="replace")[-3000:]
            raise CheckError(f"Home Assistant (run {run.index}) sent no 'online' birth on {status} within "
                             f"{timeout:g} s (exit status {self.proc.poll()}):\n{tail}")
        birth = self.recorder.seen(lambda m: m.topic == status and m.ts >= run.start_ts and m.payload.strip() ==
                                   b"online")
        assert birth is not None
        run.online_ts = birth.ts
        run.startup_s = round(time.monotonic() - started, 1)
        log(f"Home Assistant run {run.index} is online after {run.startup_s} s")
        return run

    def stop(self, timeout: float) -> None:
        run = self.runs[-1]
        if self.proc is None:
            return
        run.stop_ts = time.time()
        log(f"stopping Home Assistant run {run.index} (SIGTERM)")
        run.returncode = self.procs.stop(self.proc, timeout)
        run.exit_ts = time.time()
        log(f"Home Assistant run {run.index} exited with {run.returncode} after "
            f"{run.exit_ts - run.stop_ts:.1f} s")
        self.proc = None
        src = self.config_dir / "home-assistant.log"
        if src.exists():
            shutil.copy(src, self.workdir / f"home-assistant-run{run.index}.log")
            run.log_records = parse_log(src.read_text(encoding="utf-8", errors="replace"))


def parse_log(text: str) -> list[dict[str, Any]]:
    """``home-assistant.log`` as records (continuation lines, e.g. tracebacks, belong to the record above)."""
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            records.append({"time": match.group(1), "level": match.group(2), "logger": match.group(4),
                            "message": match.group(5)})
        elif records and line.strip():
            records[-1]["message"] += "\n" + line
    return records


# ---- discovery configs -----------------------------------------------------------------------------------------


@dataclass
class Component:
    key: str  # "<config topic>#<component id>" or the topic for a legacy config
    topic: str
    component_id: str | None
    platform: str
    unique_id: str | None
    config: dict[str, Any]
    device: dict[str, Any]
    present: bool = True  # still in the broker's retained configs at the end
    removed_ts: float | None = None
    stream: str | None = None
    kind: str = ""

    @property
    def identifiers(self) -> list[str]:
        ids = self.device.get("identifiers", [])
        return [ids] if isinstance(ids, str) else [str(i) for i in ids]


def expand(data: Any, abbreviations: dict[str, str], device_abbreviations: dict[str, str]) -> Any:
    """A discovery payload with Home Assistant's abbreviations expanded (``~`` substituted into topics)."""
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, raw in data.items():
        full = str(abbreviations.get(key, key))
        value = raw
        if full in ("device", "origin") and isinstance(raw, dict):
            value = {device_abbreviations.get(k, k): v for k, v in raw.items()}
        elif full == "components" and isinstance(raw, dict):
            value = {cid: expand(cfg, abbreviations, device_abbreviations) for cid, cfg in raw.items()}
        elif full == "availability" and isinstance(raw, list):
            value = [{abbreviations.get(k, k): v for k, v in item.items()} if isinstance(item, dict) else item
                     for item in raw]
        out[full] = value
    base = out.get("~")
    if isinstance(base, str):
        out = _substitute(out, base)
    return out


def _substitute(data: Any, base: str) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, base) if k != "~" else v for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, base) for v in data]
    if isinstance(data, str) and (data.startswith("~") or data.endswith("~")):
        return data.replace("~", base, 1) if data.startswith("~") else data[:-1] + base
    return data


def components_of(topic: str, payload: dict[str, Any], prefix: str) -> list[Component]:
    """The components one (expanded) discovery config defines."""
    parts = topic[len(prefix) + 1:].split("/")
    if parts[0] == "device":
        device = payload.get("device", {})
        out = []
        for cid, cfg in (payload.get("components") or {}).items():
            if not isinstance(cfg, dict):
                continue
            merged = {k: v for k, v in payload.items() if k not in ("components", "device", "origin")}
            merged.update(cfg)
            platform_ = str(cfg.get("platform", ""))
            removed = set(cfg) <= {"platform"}  # only the platform: Home Assistant's way to remove a component
            comp = Component(f"{topic}#{cid}", topic, cid, platform_, cfg.get("unique_id"), merged, device,
                             present=not removed)
            out.append(comp)
        return out
    return [Component(topic, topic, None, parts[0], payload.get("unique_id"), payload,
                      payload.get("device", {}))]


def classify(comp: Component) -> str:
    cfg = comp.config
    if comp.platform != "sensor":
        return comp.platform
    if cfg.get("device_class") == "enum" or cfg.get("options"):
        return "enum sensor"
    if cfg.get("unit_of_measurement") or cfg.get("state_class") or cfg.get("suggested_display_precision") is not None \
            or cfg.get("device_class") not in (None, "enum", "timestamp", "date"):
        return "numeric sensor"
    return "text sensor"


def collect_components(messages: list[Message], prefix: str, marker: str, abbreviations: dict[str, str],
                       device_abbreviations: dict[str, str]) -> tuple[dict[str, Component], dict[str, Any]]:
    """Every component ever announced by a config naming ``marker`` (our topic tree), keyed by unique id or key."""
    history: dict[str, list[Message]] = defaultdict(list)
    ours: set[str] = set()
    for msg in messages:
        if msg.topic.startswith(prefix + "/") and msg.topic.endswith("/config"):
            history[msg.topic].append(msg)
            if marker in msg.payload.decode(errors="replace"):
                ours.add(msg.topic)
    comps: dict[str, Component] = {}
    info: dict[str, Any] = {"topics": {}, "invalid": []}
    for topic in sorted(ours):
        msgs = history[topic]
        info["topics"][topic] = {"messages": len(msgs), "cleared": sum(1 for m in msgs if not m.payload),
                                 "retained_at_end": bool(msgs[-1].payload),
                                 "device_based": topic[len(prefix) + 1:].startswith("device/")}
        for msg in msgs:
            if not msg.payload:
                for comp in comps.values():
                    if comp.topic == topic and comp.present:
                        comp.present, comp.removed_ts = False, msg.ts
                continue
            try:
                payload = expand(json.loads(msg.payload), abbreviations, device_abbreviations)
            except ValueError as exc:
                info["invalid"].append(f"{topic}: {exc}")
                continue
            now_present = set()
            for comp in components_of(topic, payload, prefix):
                key = f"{comp.platform}:{comp.unique_id}" if comp.unique_id else comp.key
                old = comps.get(key)
                if comp.present:
                    now_present.add(key)
                    comps[key] = comp
                elif old is not None and old.present:
                    old.present, old.removed_ts = False, msg.ts
            for key, comp in comps.items():  # a device config without a component it had: removed
                if comp.topic == topic and comp.present and key not in now_present:
                    comp.present, comp.removed_ts = False, msg.ts
    # Stream of each component: a result/stream topic it names, else its device's.
    for comp in comps.values():
        streams = set(STREAM_TOPIC.findall(json.dumps(comp.config)))
        comp.stream = streams.pop() if len(streams) == 1 else None
        comp.kind = classify(comp)
    by_device: dict[str, set[str]] = defaultdict(set)
    for comp in comps.values():
        if comp.stream:
            for ident in comp.identifiers:
                by_device[ident].add(comp.stream)
    for comp in comps.values():
        if comp.stream is None:
            found = set().union(*(by_device.get(i, set()) for i in comp.identifiers)) if comp.identifiers else set()
            if len(found) == 1:
                comp.stream = found.pop()
    return comps, info


# ---- Home Assistant's files ------------------------------------------------------------------------------------


def read_storage(config_dir: Path, key: str) -> dict[str, Any]:
    path = config_dir / ".storage" / key
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")).get("data", {})
    return data


def read_states(db: Path, entity_ids: list[str]) -> dict[str, list[tuple[float, str, dict[str, Any]]]]:
    """entity_id -> [(last_updated_ts, state, attributes)] from the recorder database, oldest first."""
    out: dict[str, list[tuple[float, str, dict[str, Any]]]] = {e: [] for e in entity_ids}
    if not db.exists() or not entity_ids:
        return out
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        marks = ",".join("?" * len(entity_ids))
        rows = con.execute(
            "SELECT m.entity_id, s.state, s.last_updated_ts, a.shared_attrs FROM states s "
            "JOIN states_meta m ON s.metadata_id = m.metadata_id "
            "LEFT JOIN state_attributes a ON s.attributes_id = a.attributes_id "
            f"WHERE m.entity_id IN ({marks}) ORDER BY s.last_updated_ts, s.state_id", entity_ids).fetchall()
    finally:
        con.close()
    for entity_id, state, ts, attrs in rows:
        try:
            parsed = json.loads(attrs) if attrs else {}
        except ValueError:
            parsed = {}
        out[entity_id].append((float(ts or 0.0), state or "", parsed))
    return out


def first_seen(db: Path) -> dict[str, float]:
    """entity_id -> time of its first state row (every entity Home Assistant recorded)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT m.entity_id, MIN(s.last_updated_ts) FROM states s "
                           "JOIN states_meta m ON s.metadata_id = m.metadata_id GROUP BY m.entity_id").fetchall()
    finally:
        con.close()
    return {e: float(t or 0) for e, t in rows}


# ---- the check -------------------------------------------------------------------------------------------------


def nairbus_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    for cand in (Path(sys.executable).with_name("nairbus"), REPO / ".venv" / "bin" / "nairbus"):
        if cand.exists():
            return str(cand)
    found = shutil.which("nairbus")
    if found:
        return found
    raise CheckError("no 'nairbus' command found; give it with --nairbus")


def value_rows(rows: list[tuple[float, str, dict[str, Any]]]) -> list[tuple[float, str, dict[str, Any]]]:
    """Rows carrying a value: no unavailable/unknown, and not the first value after one (availability comes back)."""
    out = []
    prev = None
    for row in rows:
        if row[1] in NO_VALUE:
            prev = row[1]
            continue
        if prev not in NO_VALUE or prev is None:
            out.append(row)
        prev = row[1]
    return out


def match_events(results: list[dict[str, Any]], events: list[tuple[float, str, dict[str, Any]]],
                 max_lag: float) -> tuple[set[int], set[int]]:
    """Pair each result with the first unused event recorded within ``max_lag`` s of it (same label when the event
    names one). Returns ``id()`` of the matched results and the indexes of the used events."""
    matched: set[int] = set()
    used: set[int] = set()
    start = 0
    for res in sorted(results, key=lambda x: x["ts"]):
        while start < len(events) and events[start][0] < res["ts"] - max_lag:
            start += 1
        for i in range(start, len(events)):
            ts, _state, attrs = events[i]
            if ts > res["ts"] + max_lag:
                break
            if i in used or attrs.get("event_type") not in (None, res["label"]):
                continue
            used.add(i)
            matched.add(id(res))
            break
    return matched, used


def run_check(args: argparse.Namespace, procs: Processes, report: dict[str, Any]) -> None:
    deadline = Deadline(args.max_run_s)
    prefix, root, site = args.prefix, args.root, args.site
    configured = {"mqtt", "recorder", "logger", "http", "homeassistant"}
    venv = Path(args.ha_venv).expanduser()
    python = find_python(args.python)
    report["python_for_ha_venv"] = python
    info = ensure_ha_venv(venv, python, args.ha_version, configured, args.install_timeout,
                          allow_install=not args.no_install)
    report["home_assistant"] = {"version": info["ha_version"], "python": info["python"], "venv": str(venv),
                                "installed_now": info["installed_now"], "mqtt_requirements": info["mqtt_requirements"],
                                "integration_requirements": info["integration_requirements"]}
    if args.install_only:
        report["install_only"] = True
        return
    ha_dir = ha_package_dir(venv)
    abbreviations, device_abbreviations = load_abbreviations(ha_dir)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="nairbus-ha-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report["workdir"] = str(workdir)
    config_dir = workdir / "ha-config"
    if config_dir.exists():
        shutil.rmtree(config_dir)
    config_dir.mkdir()

    broker: OwnMosquitto | None = None
    if args.broker:
        host, _, port_s = args.broker.rpartition(":")
        host, port = host or "127.0.0.1", int(port_s)
        report["broker"] = {"host": host, "port": port, "kind": "existing (--broker)"}
    else:
        broker = OwnMosquitto(procs, workdir)
        broker.start()
        host, port = broker.host, broker.port
        report["broker"] = {"host": host, "port": port, "kind": broker.kind, "config": str(broker.config_path)}
    log(f"broker {host}:{port} ({report['broker']['kind']})")
    recorder = BusRecorder(host, port, prefix, root, site, args.username, args.password)
    ha: HomeAssistant | None = None
    try:
        recorder.start()
        write_ha_config(config_dir, ha_dir, host, port, free_port(), prefix, args.username, args.password)
        ha = HomeAssistant(info["hass"], config_dir, procs, recorder, prefix, workdir)
        timeline: dict[str, Any] = {}
        report["timeline"] = timeline
        t0 = time.time()

        def mark(name: str) -> float:
            now = time.time()
            timeline[name] = round(now - t0, 2)
            return now

        log("starting Home Assistant (run 1)")
        ha.start(args.ha_start_timeout, deadline)
        mark("ha1_online")

        nairbus = nairbus_binary(args.nairbus)
        env = {**os.environ, "NAIRBUS_BROKER__HOST": host, "NAIRBUS_BROKER__PORT": str(port),
               "NAIRBUS_TOPICS__SITE": site, "NAIRBUS_TOPICS__ROOT": root, "COLUMNS": "160", "TERM": "dumb",
               # This check matches every result to its event: the per-frame events (the default is one per
               # label change since the recorder-friendly default; matching those is not written yet).
               "NAIRBUS_DISCOVERY__EVENTS": "frame"}
        if args.username:
            env["NAIRBUS_BROKER__USERNAME"] = args.username
            env["NAIRBUS_BROKER__PASSWORD"] = args.password or ""
        fusion = procs.start("nairbus fusion", [nairbus, "fusion", "--fusion-id", args.fusion_id],
                             workdir / "fusion.log", env=env, cwd=workdir)
        fusion_status = f"{recorder.base}/fusion/{args.fusion_id}/status"
        if not wait_for(lambda: recorder.status_of(fusion_status, "online") is not None, args.agent_start_timeout,
                        deadline, alive=[fusion]):
            raise CheckError(f"fusion did not come online within {args.agent_start_timeout:g} s:\n"
                             + (workdir / "fusion.log").read_text(errors="replace")[-3000:])
        mark("fusion_online")
        sensor_args = ["--fps", f"{args.fps:g}"]
        door = procs.start("sensor cam-b (door)", [nairbus, "sensor", "--sensor-id", "cam-b", "--stream-id", "door",
                                                   *sensor_args, "--count", str(args.count)],
                           workdir / "sensor-cam-b.log", env=env, cwd=workdir)
        # cam-a runs until it is stopped: through the Home Assistant restart and the fusion stop.
        kitchen = procs.start("sensor cam-a (kitchen)", [nairbus, "sensor", "--sensor-id", "cam-a", "--stream-id",
                                                         "kitchen", *sensor_args, "--count", "1000000"],
                              workdir / "sensor-cam-a.log", env=env, cwd=workdir)
        sensors_started = mark("sensors_started")
        door_s = args.count / args.fps
        log(f"cam-b sends {args.count} frames at {args.fps:g} fps (~{door_s:.0f} s); waiting for its clean stop")
        if not wait_for(lambda: door.poll() is not None, door_s + args.agent_start_timeout, deadline):
            raise CheckError("sensor cam-b did not finish its frames in time")
        mark("door_sensor_exited")
        report["sensors"] = {"cam-b": {"stream": "door", "exit_status": door.returncode, "frames": args.count}}
        for name, proc in (("fusion", fusion), ("cam-a", kitchen)):
            if proc.poll() is not None:
                raise CheckError(f"{name} exited early with {proc.returncode}")
        door_topics = [t for t in _config_topics(recorder, prefix) if _mentions_stream(recorder, t, "door")]
        log(f"waiting {args.settle_s:g} s for the door stream's removal (discovery configs naming it: "
            f"{len(door_topics)}) and Home Assistant's registry save")
        time.sleep(max(0.0, min(args.settle_s, deadline.left() - 120)))
        # cam-b is a one-shot run (--count): at its end it withdraws its birth and fusion removes the stream, before
        # the process exits, so a clearing counts from the sensors' start (the broker is this check's own).
        removal: dict[str, Any] = {"by_clean_stop": _stream_cleared(recorder, prefix, "door", sensors_started)}
        if not removal["by_clean_stop"] and not args.no_decommission:
            # The clean stop left the stream in place; clear the sensor's retained birth, as a decommissioning does,
            # to show what removing the stream does.
            birth = f"{recorder.base}/sensors/cam-b/birth"
            log(f"door configs still retained after the clean stop; clearing the retained birth {birth}")
            recorder.publish(birth, b"", retain=True)
            removal["birth_cleared_ts"] = mark("door_birth_cleared")
            time.sleep(max(0.0, min(args.settle_s, deadline.left() - 120)))
            removal["by_clearing_birth"] = _stream_cleared(recorder, prefix, "door", removal["birth_cleared_ts"])
        report["_removal"] = removal

        log("restarting Home Assistant while fusion and cam-a run")
        ha.stop(args.ha_stop_timeout)
        mark("ha1_stopped")
        ha.start(args.ha_start_timeout, deadline)
        mark("ha2_online")
        log(f"observing {args.after_restart_s:g} s after the restart")
        time.sleep(max(0.0, min(args.after_restart_s, deadline.left() - 60)))

        log("stopping fusion (SIGTERM)")
        fusion_stop = mark("fusion_stopped")
        report["fusion_exit_status"] = procs.stop(fusion, 30)
        wait_for(lambda: recorder.status_of(fusion_status, "offline", since=fusion_stop) is not None, 15, deadline)
        time.sleep(args.unavailable_wait_s)
        mark("fusion_offline_observed")
        report["_fusion_stop_ts"] = fusion_stop
        log("stopping cam-a (SIGTERM)")
        report["sensors"]["cam-a"] = {"stream": "kitchen", "exit_status": procs.stop(kitchen, 30)}
        time.sleep(2)
        ha.stop(args.ha_stop_timeout)
        mark("ha2_stopped")
        time.sleep(0.5)
    finally:
        messages = recorder.snapshot()
        recorder.stop()
        with (workdir / "bus.jsonl").open("w", encoding="utf-8") as out:  # what the checker saw, for a look later
            for msg in messages:
                out.write(json.dumps({"ts": msg.ts, "topic": msg.topic, "retain": msg.retain,
                                      "payload": msg.payload.decode(errors="replace")}) + "\n")
        if ha is not None and ha.proc is not None:
            ha.stop(args.ha_stop_timeout)
        if broker is not None:
            broker.close()
    analyse(args, report, config_dir, ha, messages, recorder, abbreviations, device_abbreviations)


def _config_topics(recorder: BusRecorder, prefix: str) -> list[str]:
    return sorted({m.topic for m in recorder.snapshot() if m.topic.startswith(prefix + "/")
                   and m.topic.endswith("/config")})


def _mentions_stream(recorder: BusRecorder, topic: str, stream: str) -> bool:
    needle = re.compile(rf"/(?:results|streams)/{re.escape(stream)}\b")
    return any(needle.search(m.payload.decode(errors="replace")) for m in recorder.snapshot() if m.topic == topic)


def _stream_cleared(recorder: BusRecorder, prefix: str, stream: str, since: float) -> bool:
    """Whether, since ``since``, every retained config naming the stream was cleared or stopped naming it."""
    needle = re.compile(rf"/(?:results|streams)/{re.escape(stream)}\b")
    latest: dict[str, Message] = {}
    named = set()
    for msg in recorder.snapshot():
        if msg.topic.startswith(prefix + "/") and msg.topic.endswith("/config"):
            latest[msg.topic] = msg
            if needle.search(msg.payload.decode(errors="replace")):
                named.add(msg.topic)
    if not named:
        return False
    return all(not needle.search(latest[t].payload.decode(errors="replace")) and latest[t].ts >= since
               for t in named)


# ---- analysis --------------------------------------------------------------------------------------------------


def analyse(args: argparse.Namespace, report: dict[str, Any], config_dir: Path, ha: HomeAssistant | None,
            messages: list[Message], recorder: BusRecorder, abbreviations: dict[str, str],
            device_abbreviations: dict[str, str]) -> None:
    checks: dict[str, dict[str, Any]] = {}
    report["checks"] = checks
    runs = ha.runs if ha is not None else []
    report["home_assistant"]["runs"] = [
        {"run": r.index, "startup_s": r.startup_s, "exit_status": r.returncode,
         "stop_s": None if r.exit_ts is None or r.stop_ts is None else round(r.exit_ts - r.stop_ts, 1)}
        for r in runs]
    marker = f"{args.root}/v1/{args.site}"
    comps, disc_info = collect_components(messages, args.prefix, marker, abbreviations, device_abbreviations)
    results = recorder.results()
    by_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for res in results:
        by_stream[str(res["stream_id"])].append(res)
    report["results"] = {s: {"published": len(r), "unique_frames": len({x["frame_id"] for x in r}),
                             "labels": len({x["label"] for x in r})} for s, r in sorted(by_stream.items())}
    report["discovery"] = {
        "config_topics": disc_info["topics"], "invalid_configs": disc_info["invalid"],
        "components": [{"key": c.key, "platform": c.platform, "kind": c.kind, "unique_id": c.unique_id,
                        "stream": c.stream, "present_at_end": c.present, "device_identifiers": c.identifiers,
                        "via_device": c.device.get("via_device")} for c in comps.values()],
        "style": sorted({"device-based" if v["device_based"] else "per-entity" for v in disc_info["topics"].values()}),
    }
    log(f"discovery: {len(disc_info['topics'])} config topic(s), {len(comps)} component(s): "
        + ", ".join(f"{c.platform}[{c.stream or '-'}]" for c in comps.values()))

    # (a) the log
    records = [dict(rec, run=r.index) for r in runs for rec in r.log_records]
    warnings = [r for r in records if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
    mqtt_warnings = [r for r in warnings if MQTT_WORDS.search(r["logger"] + " " + r["message"])]
    other = [r for r in warnings if r not in mqtt_warnings]

    def brief(rec: dict[str, Any]) -> dict[str, Any]:
        return {"run": rec["run"], "level": rec["level"], "logger": rec["logger"], "message": rec["message"][:600]}

    checks["a_log"] = {"passed": bool(runs) and not mqtt_warnings, "mqtt_warnings": len(mqtt_warnings),
                       "problems": [f"run {r['run']} {r['level']} [{r['logger']}] {r['message'].splitlines()[0][:300]}"
                                    for r in mqtt_warnings[:20]],
                       "other_warnings": len(other), "mqtt_lines": [brief(r) for r in mqtt_warnings[:50]],
                       "other_lines": [brief(r) for r in other[:50]]}
    for rec in other:
        log(f"info: HA run {rec['run']} {rec['level']} [{rec['logger']}] {rec['message'].splitlines()[0][:200]}")
    for rec in mqtt_warnings:
        log(f"MQTT {rec['level']} (run {rec['run']}) [{rec['logger']}] {rec['message'].splitlines()[0][:300]}")

    # (b) the registries
    ent_reg = read_storage(config_dir, "core.entity_registry")
    dev_reg = read_storage(config_dir, "core.device_registry")
    entities = {(e.get("platform"), e.get("unique_id")): e for e in ent_reg.get("entities", [])}
    deleted = {(e.get("platform"), e.get("unique_id")): e for e in ent_reg.get("deleted_entities", [])}
    devices = {tuple(i): d for d in dev_reg.get("devices", []) for i in d.get("identifiers", [])}
    deleted_devices = {tuple(i): d for d in dev_reg.get("deleted_devices", []) for i in d.get("identifiers", [])}
    problems: list[str] = []
    entity_of: dict[str, str] = {}
    rows_b = []
    for comp in comps.values():
        row: dict[str, Any] = {"component": comp.key, "platform": comp.platform, "unique_id": comp.unique_id,
                               "present_at_end": comp.present}
        if not comp.unique_id:
            problems.append(f"{comp.key}: no unique_id, so Home Assistant keeps no registry entry for it")
            rows_b.append(row)
            continue
        ent = entities.get(("mqtt", comp.unique_id))
        gone = deleted.get(("mqtt", comp.unique_id))
        row["entity_id"] = (ent or gone or {}).get("entity_id")
        row["in_registry"] = ent is not None
        row["in_deleted_entities"] = gone is not None
        if row["entity_id"]:
            entity_of[comp.key] = row["entity_id"]
            if row["entity_id"].split(".")[0] != comp.platform:
                problems.append(f"{comp.key}: entity {row['entity_id']} is not of domain {comp.platform}")
        if comp.present and ent is None:
            problems.append(f"{comp.key}: unique_id {comp.unique_id} not in the entity registry")
        elif not comp.present and ent is None and gone is None:
            problems.append(f"{comp.key}: unique_id {comp.unique_id} never reached the entity registry")
        dev = None
        for ident in comp.identifiers:
            dev = devices.get(("mqtt", ident)) or dev
        dev_gone = any(("mqtt", i) in deleted_devices for i in comp.identifiers)
        row["device_id"] = dev.get("id") if dev else None
        if comp.identifiers:
            if comp.present and dev is None:
                problems.append(f"{comp.key}: device {comp.identifiers} not in the device registry")
            elif dev is None and not dev_gone:
                problems.append(f"{comp.key}: device {comp.identifiers} never reached the device registry")
            if ent is not None and dev is not None and ent.get("device_id") != dev.get("id"):
                problems.append(f"{comp.key}: entity {ent.get('entity_id')} is not on device {dev.get('name')}")
            via = comp.device.get("via_device")
            if via and dev is not None:
                parent = devices.get(("mqtt", str(via)))
                row["via_device_resolved"] = parent is not None and dev.get("via_device_id") == parent.get("id")
                if not row["via_device_resolved"]:
                    problems.append(f"{comp.key}: via_device {via} not resolved in the device registry")
        elif comp.present:
            problems.append(f"{comp.key}: no device identifiers")
        rows_b.append(row)
    checks["b_registry"] = {"passed": bool(comps) and not problems, "components": len(comps),
                            "entities_registered": sum(1 for r in rows_b if r.get("in_registry")),
                            "entities_deleted": sum(1 for r in rows_b if r.get("in_deleted_entities")),
                            "mqtt_devices": sum(1 for d in dev_reg.get("devices", [])
                                                if any(i[0] == "mqtt" for i in d.get("identifiers", []))),
                            "problems": problems, "rows": rows_b}
    if not comps:
        problems.append(f"no discovery config naming {marker} was seen on the broker")

    # (c) the recorder
    db = config_dir / "home-assistant_v2.db"
    states = read_states(db, sorted(set(entity_of.values())))
    windows = [(r, r.online_ts, r.stop_ts) for r in runs if r.online_ts is not None and r.stop_ts is not None]
    c_rows: list[dict[str, Any]] = []
    c_problems: list[str] = []
    event_count = 0
    for comp in comps.values():
        entity_id = entity_of.get(comp.key)
        if entity_id is None:
            continue
        rows = states.get(entity_id, [])
        entry: dict[str, Any] = {"entity_id": entity_id, "kind": comp.kind, "stream": comp.stream,
                                 "state_rows": len(rows)}
        stream_results = by_stream.get(comp.stream or "", [])
        counted_results = counted_rows = 0
        seconds = 0.0
        label_changes = 0
        heartbeat = 0
        vrows_in = 0
        last_frames_ok = None
        extra_events = mismatched = 0
        unmatched: list[dict[str, Any]] = []
        for run, start, stop in windows:
            # Results reach Home Assistant only once the entity exists and has subscribed: count from 2 s after
            # its first row of this run (or the birth), to 1 s before Home Assistant was stopped.
            run_rows = [x for x in rows if run.start_ts <= x[0] <= stop + 1]
            if not run_rows:
                continue
            ws = max(start, run_rows[0][0]) + args.grace_s
            we = stop - 1.0
            if we <= ws:
                continue
            in_window = [x for x in stream_results if ws <= x["ts"] <= we]
            active = [x["ts"] for x in in_window]
            span = (max(active) - min(active) + 1.0) if active else (we - ws)
            seconds += span
            if comp.platform == "event":
                # A new event is a row whose state (the event's time, to the millisecond) and attributes (its
                # event_type) no earlier row had; one seen before is a state restored after a restart (Home
                # Assistant restores what it last saved, which can be an event or two before the last one).
                evs: list[tuple[float, str, dict[str, Any]]] = []
                seen_states: set[tuple[str, str]] = set()
                for srow in rows:
                    if srow[1] in NO_VALUE:
                        continue
                    row_key = (srow[1], json.dumps(srow[2], sort_keys=True))
                    if row_key not in seen_states and ws - args.max_lag_s <= srow[0] <= we + args.max_lag_s:
                        evs.append(srow)
                    seen_states.add(row_key)
                frames = {x["frame_id"] for x in in_window}
                matched, _used = match_events(in_window, evs, args.max_lag_s)
                counted_results += len(frames)
                counted_rows += len(matched)
                # An event well inside the window that no result of the whole run explains (a duplicate or a
                # spurious event); matched against every result, not only the window's: the pairing is greedy, and
                # a result just outside the window can be the one an event inside it belongs to.
                _matched_any, used_any = match_events(stream_results, evs, args.max_lag_s)
                extra_events += sum(1 for i, ev in enumerate(evs) if i not in used_any
                                    and ws + args.max_lag_s <= ev[0] <= we - args.max_lag_s)
                mismatched += sum(1 for ev in evs if ev[2].get("event_type") is None)
                unmatched += [{"run": run.index, "frame_id": x["frame_id"], "label": x["label"],
                               "s_after_window_start": round(x["ts"] - ws, 2),
                               "s_before_window_end": round(we - x["ts"], 2)}
                              for x in in_window if id(x) not in matched]
                if in_window and stream_results[-1] in in_window:  # the stream ended inside this window
                    tail = stream_results[-5:]
                    got = sum(1 for x in tail if id(x) in matched)
                    last_frames_ok = got >= len(tail)
                    entry["last_frames"] = {"last_results": len(tail), "with_event": got}
            else:
                # Rows from max_lag after the window start to its end: each caused by a result inside the window.
                vrows = [x for x in value_rows(rows) if ws + args.max_lag_s <= x[0] <= we]
                vrows_in += len(vrows)
                counted_rows += len([x for x in rows if ws + args.max_lag_s <= x[0] <= we])
                counted_results += len(in_window)
                labels = [x["label"] for x in in_window]
                label_changes += sum(1 for i, lab in enumerate(labels) if i == 0 or lab != labels[i - 1])
                heartbeat += math.ceil((we - ws) / 60.0)
        entry["window_s"] = round(seconds, 1)
        entry["results_in_window"] = counted_results
        if comp.platform == "event":
            event_count += 1
            ratio = counted_rows / counted_results if counted_results else None
            entry.update(events_matched=counted_rows, ratio=None if ratio is None else round(ratio, 4),
                         extra_events=extra_events, events_without_event_type=mismatched,
                         results_without_event=unmatched[:20])
            ok = ratio is not None and ratio >= args.event_bar and extra_events == 0 and last_frames_ok is not False
            entry["passed"] = ok
            if not ok:
                c_problems.append(f"{entity_id}: {counted_rows} of {counted_results} results have their event "
                                  f"(bar {args.event_bar:.0%}), {extra_events} event(s) without a result"
                                  + (", the stream's last frames missing" if last_frames_ok is False else ""))
        elif comp.platform == "sensor":
            per_min = counted_rows / (seconds / 60) if seconds else None
            entry.update(rows_in_window=counted_rows, value_rows=vrows_in,
                         rows_per_minute=None if per_min is None else round(per_min, 1),
                         rows_per_result=round(counted_rows / counted_results, 3) if counted_results else None)
            if comp.kind == "numeric sensor":
                allowed = int(seconds) + len(windows)
                entry["allowed_rows"] = allowed
                entry["passed"] = vrows_in <= allowed
                if not entry["passed"]:
                    c_problems.append(f"{entity_id}: {vrows_in} value rows in {seconds:.0f} s (numeric: at most "
                                      f"1 row/s)")
            elif comp.stream:
                allowed = label_changes + heartbeat + len(windows)
                entry.update(label_changes=label_changes, allowed_rows=allowed, passed=vrows_in <= allowed)
                if not entry["passed"]:
                    c_problems.append(f"{entity_id} ({comp.kind}): {vrows_in} value rows for {label_changes} label "
                                      f"changes in {seconds:.0f} s (at most one per label change plus a heartbeat "
                                      "a minute)")
        c_rows.append(entry)
    checks["c_recorder"] = {
        "passed": bool(c_rows) and not c_problems, "event_components": event_count,
        "note": None if event_count else "no event component in the discovery configs: one event per frame not "
                                         "checkable",
        "problems": c_problems, "entities": c_rows,
        "counting": f"results counted from {args.grace_s:g} s after an entity's first row in a Home Assistant run "
                    "(or its birth) to 1 s before Home Assistant was stopped",
    }

    # (d) availability after fusion stopped
    fusion_stop = report.get("_fusion_stop_ts")
    d_rows, d_problems = [], []
    final_stop = runs[-1].stop_ts if runs else None
    for comp in comps.values():
        entity_id = entity_of.get(comp.key)
        if not comp.stream or not comp.present or entity_id is None:
            continue
        rows = [x for x in states.get(entity_id, []) if final_stop is None or x[0] <= final_stop]
        last = rows[-1] if rows else None
        entry = {"entity_id": entity_id, "last_state": last[1] if last else None,
                 "last_change_after_fusion_stop_s": None if last is None or fusion_stop is None
                 else round(last[0] - fusion_stop, 2)}
        d_rows.append(entry)
        if entry["last_state"] != UNAVAILABLE:
            d_problems.append(f"{entity_id}: last state {entry['last_state']!r}, not 'unavailable'")
    agents = []
    for comp in comps.values():
        if comp.platform == "binary_sensor" and not comp.stream and comp.present and entity_of.get(comp.key):
            rows = states.get(entity_of[comp.key], [])
            agents.append({"entity_id": entity_of[comp.key], "last_state": rows[-1][1] if rows else None})
    checks["d_availability"] = {"passed": fusion_stop is not None and bool(d_rows) and not d_problems,
                                "stream_entities": d_rows, "agent_binary_sensors": agents, "problems": d_problems}

    # (e) the restart
    e_problems: list[str] = []
    seen_first = first_seen(db)
    mqtt_entities = {e.get("entity_id") for e in ent_reg.get("entities", []) if e.get("platform") == "mqtt"}
    mqtt_entities |= {e.get("entity_id") for e in ent_reg.get("deleted_entities", []) if e.get("platform") == "mqtt"}
    run2 = runs[1] if len(runs) > 1 else None
    new_ids = []
    live, restored = [], []
    dup_after, dup_total = [], 0
    if run2 is None or run2.online_ts is None:
        e_problems.append("Home Assistant did not come back after the restart")
    else:
        new_ids = sorted(e for e, t in seen_first.items() if e in mqtt_entities and t >= run2.start_ts)
        if new_ids:
            e_problems.append(f"entities first seen after the restart (new entity ids): {new_ids}")
        for comp in comps.values():
            entity_id = entity_of.get(comp.key)
            if not comp.present:
                continue
            if entity_id is None or ("mqtt", comp.unique_id) not in entities:
                e_problems.append(f"{comp.key}: not in the registry after the restart")
                continue
            rows2 = [x for x in states.get(entity_id, []) if run2.start_ts <= x[0] <= (run2.stop_ts or 1e18)]
            restored.append({"entity_id": entity_id, "rows_after_restart": len(rows2)})
            if not rows2:
                e_problems.append(f"{entity_id}: no state after the restart")
            stream_live = [x for x in by_stream.get(comp.stream or "", [])
                           if run2.online_ts + args.grace_s <= x["ts"] <= (fusion_stop or 1e18)]
            if comp.stream and stream_live:
                fusion_cut = fusion_stop or 1e18
                # New values: after the row the entity was (re)created with, before fusion was stopped.
                values = [x for x in rows2[1:] if x[1] not in NO_VALUE and x[0] <= fusion_cut]
                if comp.platform == "event":
                    before = [x for x in states.get(entity_id, []) if x[0] < run2.start_ts]
                    old_event = (before[-1][1], before[-1][2]) if before else None
                    values = [x for x in values if (x[1], x[2]) != old_event]
                live.append({"entity_id": entity_id, "value_rows_after_restart": len(values)})
                if not values:
                    e_problems.append(f"{entity_id}: no value after the restart although its stream published "
                                      f"{len(stream_live)} results")
        seen_frames: dict[tuple[str, Any], float] = {}
        for res in results:
            key = (str(res["stream_id"]), res["frame_id"])
            if key in seen_frames:
                dup_total += 1
                if res["ts"] >= run2.online_ts:
                    dup_after.append({"stream_id": key[0], "frame_id": key[1],
                                      "after_birth_s": round(res["ts"] - run2.online_ts, 2),
                                      "first_published_s_before": round(res["ts"] - seen_frames[key], 2)})
            else:
                seen_frames[key] = res["ts"]
        if dup_after:
            e_problems.append(f"{len(dup_after)} duplicate (stream_id, frame_id) result(s) after the restart")
    checks["e_restart"] = {"passed": not e_problems and run2 is not None, "problems": e_problems,
                           "startup_s": run2.startup_s if run2 else None, "new_entity_ids": new_ids,
                           "restored": restored, "live_after_restart": live,
                           "duplicates_after_restart": len(dup_after), "duplicates_total": dup_total,
                           "duplicate_examples": dup_after[:10]}

    # (f) a stream removed
    removal = report.pop("_removal", {})
    door_comps = [c for c in comps.values() if c.stream == "door"]
    in_reg = [entity_of.get(c.key) or c.key for c in door_comps if ("mqtt", c.unique_id) in entities]
    removed_reg = [entity_of.get(c.key) or c.key for c in door_comps if ("mqtt", c.unique_id) in deleted]
    door_devices = {i for c in door_comps for i in c.identifiers}
    stream_devices_left = sorted(i for i in door_devices if ("mqtt", i) in devices
                                 and not any(c.present for c in comps.values() if i in c.identifiers))
    if removal.get("by_clean_stop"):
        how = ("the one-shot sensor's end (its birth withdrawn after its last frame) cleared the stream's discovery "
               "configs")
    elif removal.get("by_clearing_birth"):
        how = ("the sensor's clean stop left the stream's discovery configs retained (it publishes 'offline' "
               "and keeps its birth); clearing the retained birth cleared them")
    elif "birth_cleared_ts" in removal:
        how = "neither the clean stop nor clearing the sensor's retained birth cleared the stream's configs"
    else:
        how = "the sensor's clean stop left the stream's discovery configs retained"
    f_problems = []
    if not door_comps:
        f_problems.append("no discovery component of the door stream was seen")
    # nairbus's contract: a clean stop (a restart, an update) keeps the stream and its history; removing the
    # stream is clearing its sensors' retained births (decommissioning), after which its devices must go.
    if not (removal.get("by_clean_stop") or removal.get("by_clearing_birth")):
        f_problems.append("the door stream's discovery configs stayed retained after its sensor was decommissioned")
    if in_reg:
        f_problems.append(f"still in the entity registry at the end: {in_reg}")
    f_ok = not f_problems
    checks["f_stream_removal"] = {
        "passed": f_ok, "problems": f_problems, "stream": "door",
        "sensor_exit_status": report.get("sensors", {}).get("cam-b", {}).get("exit_status"), "what_happened": how,
        "configs_cleared_by_clean_stop": bool(removal.get("by_clean_stop")),
        "configs_cleared_by_clearing_birth": removal.get("by_clearing_birth"),
        "components": len(door_comps), "still_in_registry": in_reg, "removed_from_registry": removed_reg,
        "devices_left_without_entities": stream_devices_left,
    }
    report.pop("_fusion_stop_ts", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a real Home Assistant Core against a private Mosquitto with nairbus's fusion and two "
                    "sensors, and check discovery from Home Assistant's registries, recorder and log.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ha-venv", default=str(DEFAULT_HA_VENV), help="Home Assistant's own venv (made if missing)")
    parser.add_argument("--python", help="Python >= 3.13 for a new HA venv (default: the newest python3.14/3.13 on "
                                         "PATH or in ~/.pyenv)")
    parser.add_argument("--ha-version", default=DEFAULT_HA_VERSION, help="homeassistant version to install")
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing anything")
    parser.add_argument("--install-only", action="store_true", help="only make sure the HA venv is complete")
    parser.add_argument("--install-timeout", type=float, default=3600, help="seconds for each pip install")
    parser.add_argument("--broker", help="HOST:PORT of an existing broker (default: a private Mosquitto)")
    parser.add_argument("--username", help="MQTT user for Home Assistant, nairbus and the checker (--broker)")
    parser.add_argument("--password", help="its password")
    parser.add_argument("--prefix", default="homeassistant", help="Home Assistant's discovery prefix")
    parser.add_argument("--root", default="nairbus", help="nairbus topic root")
    parser.add_argument("--site", default="home", help="nairbus site (use one of its own on a shared broker)")
    parser.add_argument("--fusion-id", default="fusion-1")
    parser.add_argument("--nairbus", help="the nairbus command (default: beside this Python, or the repo's .venv)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second of each sensor")
    parser.add_argument("--count", type=int, default=150, help="frames of cam-b (door), which then stops cleanly")
    parser.add_argument("--settle-s", type=float, default=15.0,
                        help="wait after cam-b stops (stream removal, registry save)")
    parser.add_argument("--after-restart-s", type=float, default=20.0,
                        help="how long fusion and cam-a run after Home Assistant's restart")
    parser.add_argument("--unavailable-wait-s", type=float, default=5.0,
                        help="wait after fusion's offline status before stopping the rest")
    parser.add_argument("--grace-s", type=float, default=2.0,
                        help="results counted from this long after an entity appears in a Home Assistant run")
    parser.add_argument("--max-lag-s", type=float, default=1.0,
                        help="an event is paired with a result recorded at most this far from it")
    parser.add_argument("--event-bar", type=float, default=0.99, help="events per result an event entity must reach")
    parser.add_argument("--no-decommission", action="store_true",
                        help="do not clear cam-b's retained birth when its clean stop leaves the stream in place")
    parser.add_argument("--ha-start-timeout", type=float, default=300.0, help="seconds for Home Assistant to start")
    parser.add_argument("--ha-stop-timeout", type=float, default=90.0, help="seconds for it to stop, then SIGKILL")
    parser.add_argument("--agent-start-timeout", type=float, default=90.0, help="seconds for fusion to come online")
    parser.add_argument("--max-run-s", type=float, default=1500.0, help="bound on the whole run (after install)")
    parser.add_argument("--workdir", help="keep the HA config dir, logs and database here (default: a new tmp dir)")
    parser.add_argument("--report", default="reports/homeassistant.json", help="JSON report path")
    args = parser.parse_args(argv)

    procs = Processes()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGINT too: a shell's background job inherits SIGINT ignored, and Python then installs no handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    report: dict[str, Any] = {
        "tool": "deploy/homeassistant/ha_check.py",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "checker_python": platform.python_version(),
        "settings": {k: v for k, v in vars(args).items() if k != "password"},
    }
    status = 2
    try:
        run_check(args, procs, report)
        if args.install_only:
            status = 0
        else:
            failed = [name for name, check in report["checks"].items() if not check.get("passed")]
            report["failed"] = failed
            status = 1 if failed else 0
    except CheckError as exc:
        report["error"] = str(exc)
        log(f"ERROR: {exc}")
    except KeyboardInterrupt as exc:
        report["error"] = f"interrupted ({exc or 'SIGINT'})"
        log("interrupted")
    finally:
        procs.kill_all()
    report["passed"] = status == 0
    report["exit_status"] = status
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    path = Path(args.report)
    _write_report(path, report)
    if "checks" in report:
        for name, check in report["checks"].items():
            log(f"{'PASS' if check.get('passed') else 'FAIL'} {name}: " + "; ".join(
                str(p) for p in check.get("problems", [])[:3]))
    log(f"report: {path} (exit {status})")
    return status



def _write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report, validated against its model (nairbus's ``HomeAssistantReport``) first; the scratch
    entries a check that stopped early left behind (``_removal``, ``_fusion_stop_ts``) are not part of it."""
    from nairbus.agents.tools.reports import HomeAssistantReport, write_report

    data = {k: v for k, v in report.items() if not k.startswith("_")}
    write_report(path, HomeAssistantReport.from_data(data, lenient=True))

if __name__ == "__main__":
    sys.exit(main())
