"""The ``nairbus`` command as a user runs it: help, clear errors, and a short demo over a private broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
NAIRBUS = Path(sys.executable).with_name("nairbus")


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "160", "TERM": "dumb", **(env or {})}
    return subprocess.run([str(NAIRBUS), *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          check=False)


def test_help_lists_every_command() -> None:
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    for command in ("train", "calibrate", "sensor", "fusion", "demo"):
        assert command in out.stdout


def test_missing_data_set_is_a_clear_error(tmp_path: Path) -> None:
    out = _run("demo", "--frames", "10", "--data-dir", str(tmp_path), "--report", str(tmp_path / "r.json"))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "dataset-fashion-mnist" in text
    assert "Traceback" not in text
    assert not (tmp_path / "r.json").exists()


def test_bad_budget_is_rejected_before_anything_starts(tmp_path: Path) -> None:
    out = _run("demo", "--budgets", "1,2", "--report", str(tmp_path / "r.json"))
    assert out.returncode != 0
    assert "budgets" in out.stdout + out.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("args", "says"), [
    (("train", "taildrop", "--model", "no-such-model"), "no-such-model"),
    (("evaluate", "images", "--validation-frames", "0", "--table", "t.json"), "--validation-frames"),
    (("evaluate", "images", "--model", "no-such-model", "--frames", "5"), "no-such-model"),
    (("evaluate", "light", "--model", "no-such-model", "--frames", "5"), "no-such-model"),
    (("evaluate", "light", "--frames", "0"), "--frames"),
])
def test_baseline_commands_refuse_what_they_cannot_do(args: tuple[str, ...], says: str) -> None:
    out = _run(*args)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert says in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_evaluate_light_compares_the_two_runtimes_and_writes_its_report(tmp_path: Path) -> None:
    from nairbus.models.evaluation.reports import LightReport

    out = _run("evaluate", "light", "--frames", "20", "--model", "base", "--report", str(tmp_path / "light.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "decisions differ on 0 of 100" in " ".join((out.stdout + out.stderr).split())
    report = LightReport.model_validate_json((tmp_path / "light.json").read_text())
    assert report.command == f"nairbus evaluate light --frames 20 --model base --report {tmp_path / 'light.json'}"
    assert [(p.model, p.split) for p in report.parts] == [("base", s) for s in ("stem", "stage1", "stage2", "stage3",
                                                                                 None)]
    assert report.left_out == ""  # a model asked for by name: nothing left out


@pytest.mark.slow
def test_demo_runs_end_to_end_and_matches_the_offline_evaluator(tmp_path: Path) -> None:
    report = tmp_path / "demo.json"
    out = _run("demo", "--frames", "90", "--budgets", "1,0.1", "--report", str(report))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "live acc" in out.stdout
    data = json.loads(report.read_text())
    rows = {row["budget"]: row for row in data["budgets"]}
    assert set(rows) == {1.0, 0.1}
    for row in rows.values():
        for key in ("budget", "fraction_received", "bytes_per_frame", "live_accuracy", "offline_accuracy",
                    "p50_ms", "p99_ms", "fps"):
            assert isinstance(row[key], float), key
        assert row["results"] == 90
        assert abs(row["live_accuracy"] - row["offline_accuracy"]) <= 0.005
        assert row["live_accuracy"] > 0.5  # the shipped weights, not an untrained stand-in
    assert rows[1.0]["fraction_received"] == 1.0
    assert rows[0.1]["bytes_per_frame"] <= 0.1 * data["artifact"]["ir_bytes"]
    assert rows[0.1]["fraction_received"] < 0.11


@pytest.mark.slow
def test_demo_with_a_range_coded_artifact_meets_wire_budgets_and_matches_the_offline_evaluator(tmp_path: Path) -> None:
    report = tmp_path / "demo-coded.json"
    from nairbus.models.store import WEIGHTS_DIR

    out = _run("demo", "--frames", "60", "--artifact", str(WEIGHTS_DIR / "base.coded.nair.npz"), "--wire-budgets",
               "200,300", "--no-vp", "--report", str(report))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["artifact"]["coding"] == "range"
    assert data["vp"] is None  # --no-vp
    assert data["command"].endswith(f"--wire-budgets 200,300 --no-vp --report {report}")
    for row, budget in zip(data["budgets"], (200, 300), strict=True):
        assert row["wire_budget"] == budget
        assert row["budget"] is None
        assert row["results"] == 60
        assert row["agreement"] == 1.0  # each live class is the evaluator's on the prefix that arrived
        assert budget - 40 < row["wire_bytes_per_frame"]
        assert row["wire_bytes_max"] <= budget
    out = _run("demo", "--artifact", str(tmp_path / "none.npz"))
    assert out.returncode != 0
    assert "no NAIR artifact" in out.stdout + out.stderr


def test_a_sensor_without_a_mode_runs_the_one_its_model_chose_from_its_map() -> None:
    from nairbus.agents.cli.run import _model_default_mode
    from nairbus.agents.runtime.config import SensorSettings

    assert _model_default_mode(SensorSettings()) == "auto"  # base's manifest: sensor_defaults from reports/map.json
    assert _model_default_mode(SensorSettings(mode="nair")) is None  # asked for: kept
    assert _model_default_mode(SensorSettings(model="mobilenet")) is None  # no defaults chosen: nair


def test_choose_defaults_says_why_and_refuses_a_mode_the_model_cannot_run() -> None:
    done = subprocess.run([str(NAIRBUS), "choose-defaults", "--dry-run"], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    assert "sensors run --mode auto by default" in done.stderr
    assert "reports/map.json" in done.stderr
    refused = subprocess.run([str(NAIRBUS), "choose-defaults", "--model", "mobilenet", "--dry-run"],
                             capture_output=True, text=True, timeout=300, check=False,
                             env={**os.environ, "COLUMNS": "300"})
    assert refused.returncode == 2
    assert "sends grey images" in refused.stderr
    assert "nothing written" in refused.stderr
