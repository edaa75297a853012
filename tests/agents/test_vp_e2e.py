"""The VP commands as a user runs them, on the committed variant family: ``evaluate vp`` and ``demo-vp``.

Small ``--frames`` keep them quick; the figures themselves come from the full runs in ``reports/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.models.store import WEIGHTS_DIR

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not (WEIGHTS_DIR / "variants.json").is_file(),
                       reason="no committed variant family (nairbus train variants)"),
]


def _nairbus(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nairbus.agents.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_evaluate_vp_quick_run_writes_report_and_plots(tmp_path: Path) -> None:
    report = tmp_path / "vp.json"
    done = _nairbus("evaluate", "vp", "--frames", "300", "--trials", "2000", "--report", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["frames"] == 300
    assert data["command"] == "nairbus evaluate vp --frames 300"
    names = data["ensemble"]["variants"]
    assert len(names) >= 3
    assert ",".join(sorted(names)) in data["subsets"]
    for v in data["variants"].values():
        assert v["params"] <= data["base"]["params"] / 5
        assert v["macs"] <= data["base"]["macs"] / 5
    assert all((tmp_path / p).is_file() for p in data["plots"])


def test_demo_vp_keeps_answering_after_a_variant_stops(tmp_path: Path) -> None:
    report = tmp_path / "demo.json"
    report.write_text(json.dumps({"budgets": ["kept"]}))
    # The demo's default capture rate: the one it says four variant processes keep up with on two cores.
    done = _nairbus("demo-vp", "--frames", "300", "--report", str(report), timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["budgets"] == ["kept"]  # the NAIR part of the report is left alone
    vp = data["vp"]
    assert vp["missing"] == 0
    assert vp["results_after_stop"] > 0
    assert vp["before"]["frames"] > 0
    assert vp["after"]["frames"] > 0
    assert vp["before"]["agreement_with_offline"] >= 0.99
    assert vp["after"]["agreement_with_offline"] >= 0.99
    # Frames decided on a partial set are counted, per phase, and the checks hold them to the tolerance.
    sets = vp["variant_sets"]
    assert set(sets) == {"before", "transition", "after"}
    assert sets["before"]["full_share"] >= 1 - vp["partial_tolerance"]
    assert sets["after"]["remaining_share"] >= 1 - vp["partial_tolerance"]
    assert {"before_full_set", "after_remaining_set"} <= set(vp["checks"])
    assert set(vp["frames_skipped_by_sensors"]) == set(vp["family"]["variants"])
    assert all(isinstance(n, int) for n in vp["frames_skipped_by_sensors"].values())
    # Lean votes: a full-set frame costs a few dozen wire bytes per variant.
    assert 0 < vp["before"]["wire_bytes_per_frame"] <= 64 * len(vp["family"]["variants"])
    assert vp["passed"], vp["checks"]


def test_vp_sensor_refuses_an_unknown_variant() -> None:
    done = _nairbus("sensor", "--mode", "vp", "--variant", "nope", "--count", "1")
    assert done.returncode == 2
    assert "unknown variant" in done.stderr
    assert "w44r28" in done.stderr


@pytest.mark.parametrize("args", [("--stop-at", "1.5"), ("--frames", "5"), ("--fps", "0")])
def test_demo_vp_refuses_bad_settings_before_starting_anything(args: tuple[str, str]) -> None:
    done = _nairbus("demo-vp", *args, timeout=30)
    assert done.returncode == 2
    assert "stop-at" in done.stderr
