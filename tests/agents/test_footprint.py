"""``nairbus bench footprint``'s pieces: its settings refuse what cannot be measured, venv sizes are counted as
``du -m`` counts them, and the committed report is the torch sensor against the light one in every mode; the light
sensors' live answers on the whole test split are the offline evaluator's (``reports/demo-light.json``), and the light
sensor's runtime gives the torch sensor's answers on every test frame for every model, split and mode a sensor runs
(``reports/light.json``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nairbus.agents.tools.footprint import MODES, FootprintSettings, directory_mb
from nairbus.agents.tools.reports import DemoReport, DemoVpSection, FootprintReport, load_typed

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


def test_the_committed_report_measures_both_sensors_in_every_mode() -> None:
    report = load_typed(REPO / "reports" / "sensor-footprint.json", FootprintReport)
    assert {(r.sensor, r.mode) for r in report.runs} == {(s, m) for s in ("torch", "light") for m in MODES}
    assert all(r.frames_sent == report.frames for r in report.runs)
    assert not report.installs["light"].torch_importable
    assert report.installs["torch"].torch_importable
    assert not any(p.lower().startswith(("torch==", "matplotlib==")) for p in report.installs["light"].packages)
    assert report.command.startswith("nairbus bench footprint")


def test_light_sensors_live_give_the_offline_answers_on_every_test_frame() -> None:
    """``nairbus demo --runtime onnx``: NAIR at every demo budget and the four VP variants, all light sensors."""
    report = load_typed(REPO / "reports" / "demo-light.json", DemoReport)
    assert report.settings is not None
    assert report.settings.runtime == "onnx"
    assert report.command == "nairbus demo --runtime onnx"
    assert len(report.budgets) == len(report.settings.budgets) >= 4
    for row in report.budgets:
        assert row.frames == row.results == 10_000
        assert row.agreement == 1.0, row  # live = the offline evaluator on the bytes that arrived
        assert row.live_accuracy == row.offline_budget_accuracy
    assert isinstance(report.vp, DemoVpSection)
    assert report.vp.settings is not None
    assert report.vp.settings["runtime"] == "onnx"
    # The capture agent (a thread of the demo) skips a frame it is too late for: every frame it sent was decided.
    assert report.vp.frames_sent + report.vp.capture["skipped"] == 10_000
    assert report.vp.results == report.vp.frames_sent
    assert report.vp.missing == 0
    assert report.vp.passed
    assert all(report.vp.checks.values()), report.vp.checks


def test_a_light_sensor_runs_an_imported_model_on_its_own_folder() -> None:
    """``nairbus bench files --scenario oneshot --runtime onnx``: the user's own model (imported, calibrated, exported
    to ONNX) on a folder of its own images, every file decided and named, live = the hub's offline answers."""
    from nairbus.agents.tools.reports import FilesReport

    report = load_typed(REPO / "reports" / "files-light.json", FilesReport)
    assert report.command == "nairbus bench files --scenario oneshot --runtime onnx --report reports/files-light.json"
    run = report.oneshot
    assert run is not None
    assert run.runtime == "onnx"
    assert run.own_model is not None  # an imported model, not a shipped one
    assert run.decided == run.named_right == run.complete == run.files >= 1000
    assert run.live_equals_offline.share is not None
    assert run.live_equals_offline.share >= 0.99  # the whole model's class: NAIR's 8-bit prefix may differ from it
    assert run.live_equals_sent is not None
    assert run.live_equals_sent.hits == run.files  # what each frame carried, recomputed offline: no difference
    assert run.live_accuracy.share == run.offline_accuracy.share


def test_the_light_runtime_gives_the_torch_answers_on_every_test_frame_of_every_part() -> None:
    """``nairbus evaluate light``: each model a sensor runs, at each split point and whole, and each VP variant, on
    all 10 000 test frames; decisions equal, NAIR codes at most a step apart where a value sits on a rounding
    boundary, the hub's classes at the demo budgets equal, and no accuracy changed anywhere."""
    from nairbus.models.evaluation.light import light_parts
    from nairbus.models.evaluation.reports import LightReport

    report = load_typed(REPO / "reports" / "light.json", LightReport)
    assert report.command == "nairbus evaluate light"
    assert report.frames == 10_000
    assert {(p.model, p.split) for p in report.parts} == set(light_parts())  # every part a sensor runs
    assert all(p.frames == report.frames for p in report.parts)
    shipped = {a.artifact for p in report.parts for a in p.artifacts}
    assert {"base.nair.npz", "base.stage3.nair.npz", "mobilenet.nair.npz"} <= shipped
    s = report.summary
    assert s.decisions_compared == len(report.parts) * report.frames
    assert s.decisions_differ == 0
    assert s.code_max_delta <= 1
    assert s.codes_differ <= 1e-4 * s.codes_compared  # one step off on a rounding boundary (measured: 2.4e-5)
    assert s.budget_classes_compared == len(report.demo_budgets) * report.frames * len(shipped)
    assert s.budget_classes_differ == 0
    assert s.accuracy_changes == 0
