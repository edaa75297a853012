"""Fitting the per-component uniform quantiser: the clip range that minimises the squared error at its bits.

A uniform quantiser with ``2**b`` levels spread over the 0.05 %–99.95 % range wastes most of its levels on rare
tails when ``b`` is small: for a Gaussian component at 3 bits the step is about one standard deviation, while the
MSE-optimal uniform step is about 0.59 σ (Max, 1960). So each component gets, from a few candidate symmetric
quantile ranges, the one whose quantise–dequantise round trip has the least squared error on calibration data.
At 8 bits the widest range wins almost everywhere, so full-rate fidelity is unchanged.
"""

from __future__ import annotations

import numpy as np

from nairbus.models.nair.codec import dequantise, quantise

CLIP_QUANTILES: tuple[float, ...] = (0.9995, 0.999, 0.998, 0.995, 0.99, 0.98, 0.97, 0.95, 0.92, 0.9)
"""Candidate upper quantiles (the lower one is ``1 - q``), widest first."""


def _step(lo: np.ndarray, hi: np.ndarray, bits: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum((hi - lo) / ((1 << bits.astype(np.int64)) - 1), 1e-8))


def fit_quantiser(components: np.ndarray, bits: np.ndarray, candidates: tuple[float, ...] = CLIP_QUANTILES,
                  sample: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Per-component ``(lo, step)`` minimising the round-trip squared error on ``components``.

    The error is measured on at most ``sample`` evenly spaced calibration rows; the ranges come from all rows.
    A single candidate gives the plain fixed-quantile quantiser.
    """
    if not candidates:
        raise ValueError("at least one clip quantile is needed")
    rows = components[:: max(1, len(components) // sample)].astype(np.float32)
    qs = sorted({float(q) for q in candidates} | {1.0 - float(q) for q in candidates})
    table = dict(zip(qs, np.quantile(components, qs, axis=0), strict=True))
    best_err = np.full(components.shape[1], np.inf)
    lo_best = np.zeros(components.shape[1], dtype=np.float32)
    step_best = np.ones(components.shape[1], dtype=np.float32)
    for q in candidates:
        lo, hi = table[1.0 - float(q)], table[float(q)]
        step = _step(lo, hi, bits).astype(np.float32)
        lo = lo.astype(np.float32)
        err = ((dequantise(quantise(rows, lo, step, bits), lo, step) - rows) ** 2).mean(axis=0)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        lo_best = np.where(better, lo, lo_best)
        step_best = np.where(better, step, step_best)
    return lo_best, step_best
