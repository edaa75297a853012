"""``nairbus evaluate wire``'s NAIR side on a few real test frames: every frame fits its cap, and accuracy only
grows with the cap (the prefix is importance-ordered and the envelope is counted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nairbus.agents.nair.curve import nair_curve, nair_wire_bytes
from nairbus.agents.tools.wire_eval import artifacts_beside
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.codec import prefix_end
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import WEIGHTS_DIR


@pytest.fixture(scope="module")
def stage3() -> NairPipeline:
    base = NairPipeline.load("base")
    return NairPipeline(base.model, base.manifest, NairArtifact.load(WEIGHTS_DIR / "base.stage3.nair.npz"))


def test_every_frame_fits_its_cap_and_more_bytes_never_hurt_much(stage3: NairPipeline) -> None:
    test = load_split("test")
    codes = stage3.encode_all(test.images[:60])
    rows = nair_curve(stage3, codes, test.labels[:60], caps=(30, 40, 80, 300))
    assert [r["cap_bytes"] for r in rows] == [30, 40, 80, 300]
    for row in rows:
        if row["mean_wire_bytes"] is not None:
            assert row["mean_wire_bytes"] <= row["cap_bytes"]
    assert rows[-1]["share_sent"] == 1.0
    assert rows[-1]["accuracy"] >= rows[0]["accuracy"]
    assert rows[-1]["accuracy"] > 0.8  # the shipped weights, not a stand-in


def test_wire_bytes_count_the_envelope(stage3: NairPipeline) -> None:
    ends = np.array([0, 1, prefix_end(stage3.artifact, 100)])
    wire = nair_wire_bytes(stage3.artifact, ends)
    assert wire[0] == 0
    assert 15 < wire[1] < 40  # one data byte, the rest is envelope
    assert wire[2] > 100


def test_every_artifact_beside_the_default_one_is_a_candidate_under_its_tag(tmp_path: Path) -> None:
    shipped = WEIGHTS_DIR / "mobilenet.nair.npz"
    for name in ("mobilenet.nair.npz", "mobilenet.block6-4bit.nair.npz", "mobilenet-taildrop.nair.npz",
                 "mobilenetx.a.nair.npz"):
        shutil.copy(shipped, tmp_path / name)
    found = artifacts_beside(tmp_path / "mobilenet.nair.npz")
    assert found == {"block6": tmp_path / "mobilenet.nair.npz",
                     "block6-4bit": tmp_path / "mobilenet.block6-4bit.nair.npz"}


def test_a_tag_that_repeats_a_split_name_is_refused(tmp_path: Path) -> None:
    shutil.copy(WEIGHTS_DIR / "mobilenet.nair.npz", tmp_path / "mobilenet.nair.npz")
    shutil.copy(WEIGHTS_DIR / "mobilenet.nair.npz", tmp_path / "mobilenet.block6.nair.npz")
    with pytest.raises(ValueError, match="rename one"):
        artifacts_beside(tmp_path / "mobilenet.nair.npz")
