"""Bring your own model and frames, as a user runs it: export, import, write a folder, calibrate without labels.

The shipped base model plays the user's classifier (exported as a torch.export program, imported under another
name); the folder holds unlabeled PNG files of training images. The folder calibration must equal calibrating on
the same images from the data set (same artifact sha256); a folder that is too small, a missing spec and a split
inside a residual block are refused with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.calibration import CalibrationSettings, calibrate
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import load_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NAIRBUS = Path(sys.executable).with_name("nairbus")


def _nairbus(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NAIRBUS), *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}, timeout=240)


def test_import_then_calibrate_from_an_unlabeled_folder(tmp_path: Path) -> None:
    done = _nairbus("export-model", "base", "--out", "exp/base.pt2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exp/base.toml").read_text().count("labels") == 1

    refused = _nairbus("import-model", "exp/base.pt2", "--name", "mine", "--split-at", "stage2", cwd=tmp_path)
    assert refused.returncode == 2
    assert "input spec lacks" in refused.stderr
    inside = _nairbus("import-model", "exp/base.pt2", "--name", "mine", "--spec", "exp/base.toml",
                      "--split-at", "stage2.0.conv1", cwd=tmp_path)
    assert inside.returncode == 2
    assert "crossing the cut" in inside.stderr
    done = _nairbus("import-model", "exp/base.pt2", "--name", "mine", "--spec", "exp/base.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "nairbus-models/mine.json").read_text())
    assert manifest["split_points"] == ["stage2"]
    assert manifest["kind"] == "imported"
    assert manifest["exported_from"]["name"] == "base"
    parts = json.loads((tmp_path / "nairbus-models/mine.onnx.json").read_text())  # a light sensor's whole model
    assert sorted(parts["parts"]) == ["whole"]
    assert "device parts for light sensors" in done.stderr

    done = _nairbus("export-images", "--out", "frames", "--count", "300", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "frames/img-99999.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))  # corrupt: counted, skipped
    env = {"NAIRBUS_MODEL_DIR": str(tmp_path / "nairbus-models")}
    done = _nairbus("calibrate", "--model", "mine", "--images-dir", "frames", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr
    assert "1 not_an_image" in done.stderr
    artifact = NairArtifact.load(tmp_path / "nairbus-models/mine.nair.npz")
    assert artifact.meta["provenance"]["calibration_source"]["files"] == 300
    assert artifact.meta["provenance"]["calibration_source"]["labels_used"] is False
    parts = json.loads((tmp_path / "nairbus-models/mine.onnx.json").read_text())  # and now the head at its split
    assert {p["split"] for p in parts["parts"].values()} == {None, "stage2"}

    # The same images from the data set calibrate to the very same artifact: the folder path loses nothing.
    train = load_split("train")
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:300])
    model, mine = load_model("mine", tmp_path / "nairbus-models")
    again = calibrate(model, mine.name, mine.sha256, train.images[pick], CalibrationSettings(split="stage2"))
    assert again.sha256 == artifact.sha256

    small = tmp_path / "few"
    small.mkdir()
    for i in range(20):
        Image.fromarray(train.images[i]).save(small / f"{i}.png")
    done = _nairbus("calibrate", "--model", "mine", "--images-dir", "few", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "needs at least 200" in done.stderr
    done = _nairbus("calibrate", "--model", "mine", "--images-dir", "frames", "--wire-bytes", "300", cwd=tmp_path,
                    env=env)
    assert done.returncode == 2
    assert "--bit-bands instead" in done.stderr
