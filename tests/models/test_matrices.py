"""The experiment matrices are data (models/experiments/*.toml), and the committed reports and manifests were made
with the matrices committed beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nairbus.models.evaluation.image import BAR_CAPS, FAMILY_LADDERS, WIRE_CAPS
from nairbus.models.evaluation.matrices import EXPERIMENTS_DIR, load_matrix
from nairbus.models.image.codec import get_image_codec
from nairbus.models.vp.variants import VARIANTS, cost, derive_config

ROOT = Path(__file__).resolve().parents[2]


def test_every_matrix_file_loads_and_a_missing_one_is_named() -> None:
    assert {p.stem for p in EXPERIMENTS_DIR.glob("*.toml")} >= {"nair", "images", "vp"}
    with pytest.raises(FileNotFoundError, match="there are: images, nair, vp"):
        load_matrix("nope")


def test_the_image_report_was_made_with_the_committed_ladders() -> None:
    report = json.loads((ROOT / "reports" / "images.json").read_text())
    assert report["settings"]["families"] == {f: list(ladder) for f, ladder in FAMILY_LADDERS.items()}
    assert report["settings"]["caps"] == sorted(set(WIRE_CAPS) | set(BAR_CAPS))
    for ladder in FAMILY_LADDERS.values():
        for rung in ladder:
            get_image_codec(rung)  # every rung names a real codec


def test_the_shipped_vp_family_is_the_committed_one_and_fits_its_budget() -> None:
    manifest = json.loads((ROOT / "models" / "weights" / "variants.json").read_text())
    shipped = [(v["name"], v["width_multiplier"], v["resolution"], tuple(v["blocks"])) for v in manifest["variants"]]
    assert shipped == [(v.name, v.width, v.resolution, derive_config(v).blocks) for v in VARIANTS]
    assert all(cost(v).fits for v in VARIANTS)
