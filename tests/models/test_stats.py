"""Intervals and paired tests (models/evaluation/stats.py) against values worked out by hand or by a direct sum."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nairbus.models.evaluation.stats import accuracy, binomial_two_sided_half, mcnemar, wilson_interval


def test_wilson_interval_matches_a_textbook_value() -> None:
    lo, hi = wilson_interval(9300, 10000)
    assert lo == pytest.approx(0.92485, abs=1e-4)
    assert hi == pytest.approx(0.93487, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0


def test_binomial_p_value_matches_a_direct_sum() -> None:
    for k, n in [(0, 5), (2, 10), (5, 10), (30, 100), (480, 1000)]:
        direct = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
        assert binomial_two_sided_half(k, n) == pytest.approx(min(1.0, 2 * direct), rel=1e-9)
    assert binomial_two_sided_half(0, 0) == 1.0


@given(st.integers(0, 3000), st.integers(0, 3000))
def test_binomial_p_value_is_a_probability_and_symmetric(k: int, extra: int) -> None:
    n = k + extra
    p = binomial_two_sided_half(k, n)
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(binomial_two_sided_half(n - k, n))


def test_mcnemar_counts_discordant_frames_and_flags_noise() -> None:
    a = np.array([1] * 60 + [0] * 40 + [1] * 900, dtype=bool)
    b = np.array([0] * 60 + [1] * 40 + [1] * 900, dtype=bool)
    out = mcnemar(a, b, "nair", "taildrop")
    assert out["only_nair_correct"] == 60
    assert out["only_taildrop_correct"] == 40
    assert out["difference"] == pytest.approx(0.02)
    assert out["p_value"] == pytest.approx(0.0569, abs=2e-3)
    assert out["within_noise"] is True
    strong = mcnemar(np.r_[a, np.ones(200, bool)], np.r_[b, np.zeros(200, bool)])
    assert strong["p_value"] < 1e-10
    assert strong["within_noise"] is False
    same = mcnemar(a, a)
    assert same["p_value"] == 1.0
    assert same["difference"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        mcnemar(a, b[:10])


def test_accuracy_carries_its_interval() -> None:
    out = accuracy(np.array([True] * 93 + [False] * 7))
    assert out["accuracy"] == 0.93
    assert out["n"] == 100
    assert out["ci95"][0] < 0.93 < out["ci95"][1]
