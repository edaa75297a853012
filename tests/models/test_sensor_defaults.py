"""A model's default sensor mode, read off its map's front (pure, synthetic fronts) and as shipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nairbus.models.evaluation.defaults import derive_sensor_defaults
from nairbus.models.store import read_manifest

REPO = Path(__file__).resolve().parents[2]
BUDGETS = [{"label": "<= 0%", "max_mac_share": 0.0, "max_cpu_ms": None},
           {"label": "<= 60%", "max_mac_share": 0.6, "max_cpu_ms": None},
           {"label": "<= 100%", "max_mac_share": 1.0, "max_cpu_ms": None},
           {"label": "<= 2 ms", "max_mac_share": None, "max_cpu_ms": 2.0}]


def _row(budget: str, cap: int | str, name: str, kind: str, share: float, accuracy: float) -> dict[str, Any]:
    return {"budget": budget, "cap_bytes": cap,
            "winner": {"name": name, "kind": kind, "mac_share": share, "test_accuracy": accuracy}}


def _report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"front": rows, "budgets": BUDGETS, "command": "nairbus evaluate map",
            "frames": {"test": 10, "validation": 5}, "model": {"validation_held_out_of_training": True}}


def test_several_winning_representations_make_auto_and_the_reason_names_them() -> None:
    report = _report([_row("<= 0%", 40, "image grey-front", "image", 0.0, 0.5),
                      _row("<= 0%", "unlimited", "image raw", "image", 0.0, 0.93),
                      _row("<= 60%", 100, "nair-stage2", "nair", 0.62, 0.9),
                      _row("<= 60%", 40, "vp-w36", "vp", 0.2, 0.93),
                      _row("<= 100%", 40, "decision", "decision", 1.0, 0.936),
                      _row("<= 2 ms", 40, "nair-stage3", "nair", 0.99996, 0.94)])  # a CPU budget: not read
    defaults = derive_sensor_defaults(report, "reports/map-x.json")
    assert defaults.mode == "auto"
    assert defaults.represented == ("image", "nair", "decision")
    assert "nair-stage2 (62 % of the MACs on the device) at 100 B" in defaults.reason
    assert "no real split" not in defaults.reason
    assert "nair-stage3" not in defaults.reason
    assert "--model variants-w36 --mode decision" in defaults.reason
    assert "40 B and unlimited" not in defaults.reason
    assert "image raw at unlimited (93.0 %)" in defaults.reason
    assert defaults.evidence.startswith("reports/map-x.json (`nairbus evaluate map`, 10 test frames")


def test_one_winner_everywhere_is_that_mode_and_a_deep_split_is_not_a_real_one() -> None:
    only_image = _report([_row("<= 0%", 40, "image grey-front", "image", 0.0, 0.5),
                          _row("<= 100%", 40, "image grey-front", "image", 0.0, 0.5)])
    assert derive_sensor_defaults(only_image, "m.json").mode == "image"
    deep = derive_sensor_defaults(_report([_row("<= 0%", 40, "image", "image", 0.0, 0.5),
                                           _row("<= 100%", 40, "nair-stage3", "nair", 0.99996, 0.93)]), "m.json")
    assert "no real split" in deep.reason


@pytest.mark.parametrize("rows", [[], [_row("<= 60%", 40, "vp-w36", "vp", 0.2, 0.93)]])
def test_a_front_that_says_nothing_about_the_sensor_is_an_error(rows: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match=r"m\.json"):
        derive_sensor_defaults(_report(rows), "m.json")


def test_the_shipped_default_mode_is_what_the_shipped_map_says() -> None:
    shipped = read_manifest("base").sensor_defaults
    assert shipped is not None
    report = json.loads((REPO / "reports" / "map.json").read_text())
    assert shipped == derive_sensor_defaults(report, "reports/map.json")
