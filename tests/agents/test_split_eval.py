"""``nairbus evaluate split``: the image family is chosen on validation, every row is paired on the same test frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.agents.tools.reports import SplitReport, load_typed
from nairbus.agents.tools.split_eval import SplitSettings, image_families_on_validation

REPO = Path(__file__).resolve().parents[2]


def _table(rows: dict[str, tuple[float, float]]) -> dict:
    return {"validation": {"families": {name: {"caps": [{"cap_bytes": 200, "accuracy": acc, "mean_wire_bytes": wire}]}
                                        for name, (acc, wire) in rows.items()}}}


@pytest.mark.unit
def test_the_image_family_is_the_most_accurate_on_validation_then_the_lighter() -> None:
    assert image_families_on_validation(_table({"a": (0.90, 180.0), "b": (0.91, 190.0)}), [200]) == {200: "b"}
    assert image_families_on_validation(_table({"a": (0.91, 180.0), "b": (0.91, 190.0)}), [200]) == {200: "a"}
    with pytest.raises(ValueError, match="no validation row at 300"):
        image_families_on_validation(_table({"a": (0.9, 1.0)}), [300])


@pytest.mark.unit
def test_the_command_repeats_only_what_differs_from_the_defaults() -> None:
    assert SplitSettings().command() == "nairbus evaluate split"
    assert SplitSettings(caps=(200,), frames=50).command() == "nairbus evaluate split --caps 200 --frames 50"


@pytest.mark.slow
def test_a_short_run_pairs_nair_and_the_image_on_the_same_frames(tmp_path: Path) -> None:
    report = tmp_path / "split.json"
    done = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "evaluate", "split", "--frames", "120",
                           "--caps", "200,300", "--artifact", str(REPO / "models/weights/base.nair.npz"),
                           "--images-report", str(REPO / "reports/images.json"), "--report", str(report)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = load_typed(report, SplitReport)
    assert data.frames == 120
    [entry] = data.artifacts
    assert entry.split == "stage2"
    assert 0.5 < entry.device_mac_share < 0.7
    images = json.loads((REPO / "reports/images.json").read_text())
    chosen = image_families_on_validation(images, [200, 300])
    for row in entry.caps:
        assert row.image_family == chosen[row.cap_bytes]
        assert sum(row.discordant) <= 120
        assert 0.0 <= row.mcnemar_p <= 1.0
        assert row.nair.mean_wire_bytes is None or row.nair.mean_wire_bytes <= row.cap_bytes
    bad = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "evaluate", "split", "--caps", "x"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0
    assert "--caps takes whole bytes" in bad.stdout + bad.stderr
