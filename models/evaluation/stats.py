"""The statistics every report uses: 95 % Wilson intervals for accuracies and McNemar's exact test for paired
comparisons on the same frames (pure numpy/math, no torch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Z95 = 1.959963984540054
"""The two-sided 95 % normal quantile."""
ALPHA = 0.05
"""Significance level under which a paired difference counts as outside the noise."""


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if successes <= 0 else max(0.0, centre - half)), (1.0 if successes >= n else min(1.0, centre + half))


def accuracy(correct: np.ndarray) -> dict[str, Any]:
    """``{"accuracy", "ci95", "n"}`` of a boolean per-frame vector."""
    k, n = int(np.count_nonzero(correct)), len(correct)
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n if n else 0.0, "ci95": [lo, hi], "n": n}


def binomial_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips: ``min(1, 2 P(X <= min(k, n-k)))``."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    log_half_n = n * math.log(0.5)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n for i in range(low + 1)]
    top = max(terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return min(1.0, 2.0 * tail)


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray, a: str = "a", b: str = "b") -> dict[str, Any]:
    """McNemar's exact test of two classifiers on the same frames: the frames only ``a`` gets right against those
    only ``b`` does. ``within_noise`` is true when p >= :data:`ALPHA`."""
    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError(f"paired vectors differ in shape: {a_correct.shape} vs {b_correct.shape}")
    only_a = int(np.count_nonzero(a_correct & ~b_correct))
    only_b = int(np.count_nonzero(b_correct & ~a_correct))
    p = binomial_two_sided_half(only_a, only_a + only_b)
    n = len(a_correct)
    return {"a": a, "b": b, "frames": n, f"only_{a}_correct": only_a, f"only_{b}_correct": only_b,
            "difference": (only_a - only_b) / n if n else 0.0, "p_value": p, "within_noise": p >= ALPHA,
            "test": "McNemar, exact binomial, two-sided"}
