"""``nairbus bench footprint``'s pieces: its settings refuse what cannot be measured, venv sizes are counted as
``du -m`` counts them, and the committed report is the torch sensor against the light one in both modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nairbus.agents.tools.footprint import MODES, FootprintSettings, directory_mb
from nairbus.agents.tools.reports import FootprintReport, load_typed

REPO = Path(__file__).resolve().parents[2]


def test_the_settings_refuse_too_few_frames_and_a_source_that_is_not_the_project(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames"):
        FootprintSettings(frames=5)
    with pytest.raises(ValueError, match="pyproject"):
        FootprintSettings(source=tmp_path)
    assert FootprintSettings().source == REPO


def test_a_directory_is_measured_in_allocated_mib_with_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(os.urandom(3 << 20))
    os.link(tmp_path / "a", tmp_path / "b")
    assert 3.0 <= directory_mb(tmp_path) < 3.1


def test_the_committed_report_measures_both_sensors_in_both_modes() -> None:
    report = load_typed(REPO / "reports" / "sensor-footprint.json", FootprintReport)
    assert {(r.sensor, r.mode) for r in report.runs} == {(s, m) for s in ("torch", "light") for m in MODES}
    assert all(r.frames_sent == report.frames for r in report.runs)
    assert not report.installs["light"].torch_importable
    assert report.installs["torch"].torch_importable
    assert not any(p.lower().startswith(("torch==", "matplotlib==")) for p in report.installs["light"].packages)
    assert report.command.startswith("nairbus bench footprint")
