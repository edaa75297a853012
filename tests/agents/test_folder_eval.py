"""``nairbus evaluate folder``: a model scored on a user's labelled folder from the command line, with progress, a
typed report whose whole-model accuracy is the model's own on those files, NAIR and image rows per cap, and clear
errors for a missing folder or bad caps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nairbus.agents.cli import app
from nairbus.agents.tools.reports import FolderReport, load_typed
from nairbus.models.data.registry import load_data
from nairbus.models.nair.pipeline import NairPipeline

FRAMES = 60


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The first test frames as PNG files, one sub-folder per class index; the frames and labels in read order."""
    root = tmp_path_factory.mktemp("sorted")
    test = load_data("test")
    images, labels = test.images[:FRAMES], test.labels[:FRAMES]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"f{i:03d}.png")
    order = np.lexsort((np.arange(FRAMES), labels))  # classes in index order, files in name order
    return root, images[order], labels[order]


def test_the_command_scores_the_model_on_the_folder(folder: tuple[Path, np.ndarray, np.ndarray],
                                                    tmp_path: Path) -> None:
    root, images, labels = folder
    report = tmp_path / "folder-base.json"
    run = CliRunner().invoke(app, ["evaluate", "folder", str(root), "--model", "base", "--caps", "100,300,4000",
                                   "--report", str(report)])
    assert run.exit_code == 0, run.output
    assert "read 60/60 files" in run.output
    result = load_typed(report, FolderReport)
    assert result.folder.images == FRAMES
    expected = NairPipeline.load("base").full_model_probs(images).argmax(1) == labels
    assert result.whole_model_accuracy == pytest.approx(float(expected.mean()))
    assert result.whole_model_ci95[0] <= result.whole_model_accuracy <= result.whole_model_ci95[1]
    assert isinstance(result.nair, list)
    assert isinstance(result.image, list)
    assert [r.cap_bytes for r in result.nair] == [100, 300, 4000]
    assert result.nair[-1].share_sent == 1.0
    assert result.nair[0].accuracy <= result.nair[-1].accuracy
    assert all(r.mean_wire_bytes is None or r.mean_wire_bytes <= r.cap_bytes for r in [*result.nair, *result.image])
    assert 20 <= result.decision_wire_bytes <= 40
    assert json.loads(report.read_text())["command"].startswith("nairbus evaluate folder")


def test_a_missing_folder_or_bad_caps_get_a_clear_error(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["evaluate", "folder", str(tmp_path / "nope"), "--model", "base",
                                   "--report", str(tmp_path / "r.json")])
    assert run.exit_code != 0
    assert "nope does not exist or is not a directory" in " ".join(run.output.split())
    run = CliRunner().invoke(app, ["evaluate", "folder", str(tmp_path), "--model", "base", "--caps", "10,x"])
    assert run.exit_code != 0
    assert "--caps" in run.output
    assert not (tmp_path / "r.json").exists()
