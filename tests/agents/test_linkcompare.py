"""Paired comparisons of link-bench modes: per-frame correctness kept in each row, McNemar per cell."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nairbus.agents.tools.linkcompare import compare_modes, correct_bitmap, correct_vector


def _row(mode: str, correct: np.ndarray, rate: int | None = 50_000, fps: float = 30.0, **extra: Any) -> dict[str, Any]:
    results = {i: {"class_index": 1} for i in np.flatnonzero(correct).tolist()}
    return {"mode": mode, "rate_bps": rate, "rate": str(rate), "fps": fps, "frames_requested": len(correct),
            "correct_frames": correct_bitmap(results, np.ones(len(correct), dtype=int), 0, len(correct)), **extra}


def test_a_bitmap_round_trips_and_counts_undecided_and_wrong_frames_as_wrong() -> None:
    labels = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    results = {0: {"class_index": 1}, 1: {"class_index": 0}, 8: {"class_index": 9}, 20: {"class_index": 0}}
    vector = correct_vector({"correct_frames": correct_bitmap(results, labels, 0, 9), "frames_requested": 9})
    assert vector is not None
    assert vector.tolist() == [True, False, False, False, False, False, False, False, True]
    assert correct_vector({"skipped": "no"}) is None


def test_the_subject_is_set_against_the_best_other_mode_of_each_cell() -> None:
    rng = np.random.default_rng(0)
    good = rng.random(400) < 0.9
    worse = good & (rng.random(400) < 0.7)
    rows = [_row("image", worse), _row("nair", good & (rng.random(400) < 0.95)), _row("auto", good),
            _row("auto", worse, rate=20_000), _row("image", good, rate=20_000), _row("nair", good, rate=20_000,
                                                                                       skipped="rejected")]
    by_rate = {c["rate_bps"]: c for c in compare_modes(rows, "auto")}
    assert by_rate[50_000]["best_other"] == "nair"
    assert by_rate[50_000]["verdict"] == "better, outside the noise"
    assert by_rate[20_000]["best_other"] == "image"
    assert set(by_rate[20_000]["others"]) == {"image"}
    assert by_rate[20_000]["verdict"] == "worse, outside the noise"
    assert by_rate[20_000]["difference"] == pytest.approx(worse.mean() - good.mean())


def test_a_tie_is_within_the_noise() -> None:
    same = np.arange(100) % 3 > 0
    (cell,) = compare_modes([_row("auto", same), _row("image", same)], "auto")
    assert cell["verdict"] == "within the noise"
    assert cell["mcnemar_p"] == 1.0
    assert compare_modes([_row("image", same)], "auto") == []
