"""nairbus's MQTT discovery against a real Home Assistant Core: ``deploy/homeassistant/ha_check.py`` runs Home
Assistant, a private Mosquitto, the fusion agent and two sensors, and checks Home Assistant's log, registries and
recorder database against the discovery configs it saw on the broker. This test runs a short version of it and
asserts on its JSON report.

Home Assistant lives in its own venv (Python >= 3.13); installing it takes minutes, so the test skips unless the
venv is ready or ``NAIRBUS_HA_INSTALL=1`` allows the install. ``NAIRBUS_HA_VENV``, ``NAIRBUS_HA_VERSION`` and
``NAIRBUS_HA_PYTHON`` override the venv, the version and the Python that builds the venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "homeassistant" / "ha_check.py"
TRUTH = ROOT / "deploy" / "homeassistant" / "ha_truth.py"
CHECKS = {"a_log", "b_registry", "c_recorder", "d_availability", "e_restart", "f_stream_removal"}

pytestmark = [pytest.mark.slow, pytest.mark.homeassistant]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nairbus_ha_check", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _home_assistant() -> tuple[ModuleType, str, Path, str, bool]:
    """The check script, the Python for Home Assistant's venv, the venv, the version and whether installing is
    allowed; the test skips (with the reason) where Home Assistant cannot run."""
    ha_check = _load_script()
    if shutil.which("mosquitto") is None and not os.access("/usr/sbin/mosquitto", os.X_OK):
        pytest.skip("Mosquitto is not installed (sudo apt-get install mosquitto)")
    python = ha_check.find_python(os.environ.get("NAIRBUS_HA_PYTHON"))
    if python is None:
        pytest.skip("no Python >= 3.13 found (python3.14/python3.13 on PATH or in ~/.pyenv): Home Assistant 2025.x "
                    "needs one; install it or point NAIRBUS_HA_PYTHON at it")
    venv = Path(os.environ.get("NAIRBUS_HA_VENV", str(ha_check.DEFAULT_HA_VENV))).expanduser()
    version = os.environ.get("NAIRBUS_HA_VERSION", ha_check.DEFAULT_HA_VERSION)
    install = os.environ.get("NAIRBUS_HA_INSTALL") == "1"
    have = ha_check.installed_ha_version(venv) if (venv / "bin" / "python").exists() else None
    if have != version and not install:
        pytest.skip(f"Home Assistant {version} is not installed in {venv} (found {have}); installing takes minutes: "
                    "set NAIRBUS_HA_INSTALL=1, or run deploy/homeassistant/ha_check.py --install-only")
    return ha_check, python, venv, version, install


@pytest.mark.timeout(3600)
def test_home_assistant_sees_every_discovered_entity(tmp_path: Path) -> None:
    _ha_check, python, venv, version, install = _home_assistant()

    report_path = tmp_path / "homeassistant.json"
    argv = [sys.executable, str(SCRIPT), "--ha-venv", str(venv), "--ha-version", version, "--python", python,
            "--workdir", str(tmp_path / "work"), "--report", str(report_path),
            "--count", "50", "--settle-s", "12", "--after-restart-s", "15", "--max-run-s", "900"]
    if not install:
        argv.append("--no-install")  # the venv is there: nothing may be downloaded
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3300 if install else 1000, check=False,
                          cwd=tmp_path)
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert "error" not in report, f"{report['error']}\n{output}"
    assert report["home_assistant"]["version"] == version
    assert report["home_assistant"]["python"].split(".")[:2] >= ["3", "13"]
    assert "paho-mqtt" in " ".join(report["home_assistant"]["mqtt_requirements"])
    assert [run["exit_status"] for run in report["home_assistant"]["runs"]] == [0, 0], "Home Assistant stopped badly"

    # What the check learnt from the broker: configs for both streams, every component with a unique id.
    components = report["discovery"]["components"]
    assert {c["stream"] for c in components} >= {"door", "kitchen"}, components
    assert all(c["unique_id"] for c in components), components
    assert report["results"]["door"]["published"] > 0
    assert report["results"]["kitchen"]["published"] > 0

    assert set(report["checks"]) == CHECKS
    failed = {name: check.get("problems") or {k: v for k, v in check.items() if k not in ("rows", "entities")}
              for name, check in report["checks"].items() if not check["passed"]}
    assert not failed, json.dumps(failed, indent=2, default=str)[:8000]
    for entity in report["checks"]["c_recorder"]["entities"]:
        if entity["kind"] == "event":
            assert entity["ratio"] >= 0.99, entity
    assert report["checks"]["e_restart"]["duplicates_after_restart"] == 0
    assert report["passed"], output
    assert proc.returncode == 0, output


@pytest.mark.timeout(3600)
def test_home_assistant_commands_states_and_recorder_tell_the_truth(tmp_path: Path) -> None:
    """``deploy/homeassistant/ha_truth.py``, short (its discovery timings shortened, 25 s per recorder scene):
    commands sent by Home Assistant itself, paused/stalled/stopped streams' states in its database, the recorder's
    bytes per frame, the entity ids it gave."""
    _ha_check, python, venv, version, install = _home_assistant()
    report_path = tmp_path / "homeassistant-truth.json"
    argv = [sys.executable, str(TRUTH), "--ha-venv", str(venv), "--ha-version", version, "--python", python,
            "--workdir", str(tmp_path / "work"), "--report", str(report_path), "--recorder-s", "25",
            "--warmup-s", "5", "--quiet-after-s", "6", "--heartbeat-s", "5", "--expire-after-s", "12",
            "--max-run-s", "900"]
    if not install:
        argv.append("--no-install")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3300 if install else 1000, check=False,
                          cwd=tmp_path)
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert "error" not in report, f"{report['error']}\n{output}"
    failed = {name: check for name, check in report["checks"].items() if not check["passed"]}
    assert not failed, json.dumps(failed, indent=2)[:6000]
    commands = report["checks"]["a_commands"]
    assert commands["invalid"]["transaction"] == "check-invalid-1"
    assert commands["restart"]["home_assistant_state"] == "300"
    ids = {e["unique_id"]: e["entity_id"] for e in report["entity_ids"]}
    assert len(ids) >= 20, ids
    assert all(re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", e) for e in ids.values()), ids
    asked = [e["default_entity_id"] for e in report["entity_ids"]]
    assert all(re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", e) for e in asked), asked  # valid ids, as 2025.10 takes them
    assert proc.returncode == 0, output
