"""Predicted fill: the components that did not arrive, estimated from the prefix that did (a linear estimator fitted
on calibration images; labels are never used).

The transform decorrelates the IR one axis at a time (channels, then positions), not jointly: the activations after a
ReLU rise and fall together, so a frame's leading components still say much about the rest (on ``base`` at stage2 the
first 32 explain about 40 % of the rest's variance). Mean fill ignores that; the predictor uses it.

For each prefix length ``L`` of :data:`PREDICT_LENGTHS`, ridge regression of every component on the first ``L`` —
fitted on the prefix as the hub receives it (quantised, then dequantised) — gives ``W_L`` (``L × K``). Stored whole,
those would outweigh the model, so they share one output basis: the ``R`` directions (``V``, ``R × K``) that carry
most of the fitted values' variance summed over all lengths (right singular vectors of the stacked
``chol(C_L) W_L``, ``C_L`` the prefix's covariance), and each length keeps only ``A_L = W_L Vᵀ`` (``L × R``). A frame
whose leading ``e`` components arrived is filled from the longest ``L ≤ e``: ``ŝ = s[:L] A_L V``; a frame with fewer
than the shortest ``L`` gets the mean fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PREDICT_LENGTHS", "PREDICT_RANK", "Predictor", "fit_predictor", "leading_run"]

PREDICT_LENGTHS = (16, 32, 64, 128, 256, 512, 1024)
"""Prefix lengths with an estimator of their own (those longer than the IR are left out)."""
PREDICT_RANK = 64
"""``R``: directions of the shared output basis (``4 R K`` artifact bytes: 3.2 MB for ``base`` at stage2)."""
RIDGE = 1e-3
"""Ridge penalty, relative to the prefix's mean variance."""
GRID = 2.0**-24
"""The fitted arrays are rounded to multiples of this (relative to their largest entry) before they are stored, so
that another CPU's last-bit differences all but never change the artifact."""


@dataclass(frozen=True, slots=True)
class Predictor:
    """The estimator as the artifact stores it."""

    lengths: np.ndarray
    """``(P,)`` int64, rising: the prefix lengths with an estimator."""
    weights: np.ndarray
    """``(P, L_max, R)`` float32: ``A_L`` of each length, zero below its ``L`` rows."""
    basis: np.ndarray
    """``(R, K)`` float32: the shared output directions ``V``."""


def _rounded(array: np.ndarray) -> np.ndarray:
    top = float(np.abs(array).max(initial=0.0))
    if top == 0.0:
        return array.astype(np.float32)
    unit = top * GRID
    return (np.round(array / unit) * unit).astype(np.float32)


def fit_predictor(received: np.ndarray, values: np.ndarray, rank: int = PREDICT_RANK,
                  lengths: tuple[int, ...] = PREDICT_LENGTHS) -> Predictor:
    """Fit from calibration frames: ``received`` ``(N, ≥ L_max)`` the leading components as the hub gets them
    (dequantised), ``values`` ``(N, K)`` every component as the device computed it (centred: the mean fill is 0)."""
    n, k = values.shape
    use = tuple(length for length in lengths if length < k)
    if not use:
        raise ValueError(f"no prefix length of {lengths} is shorter than the IR's {k} components")
    longest = use[-1]
    prefix = np.asarray(received[:, :longest], dtype=np.float64)
    cov = prefix.T @ prefix / n
    cross = prefix.T @ np.asarray(values, dtype=np.float64) / n  # (L_max, K): every length's rows are a slice
    solved, whitened = [], []
    for length in use:
        c = cov[:length, :length]
        c = c + RIDGE * float(np.trace(c)) / length * np.eye(length)
        w = np.linalg.solve(c, cross[:length])
        solved.append(w)
        whitened.append(np.linalg.cholesky(c).T @ w)  # fitted values' covariance = (chol^T W)^T (chol^T W)
    stacked = np.concatenate(whitened)
    gram = stacked @ stacked.T
    eigval, eigvec = np.linalg.eigh(gram)
    top = np.argsort(eigval, kind="stable")[::-1][: min(rank, len(eigval))]
    basis = (eigvec[:, top].T @ stacked) / np.sqrt(np.maximum(eigval[top], 1e-300))[:, None]
    signs = np.sign(basis[np.arange(len(top)), np.argmax(np.abs(basis), axis=1)])
    basis *= np.where(signs == 0, 1.0, signs)[:, None]
    weights = np.zeros((len(use), longest, len(top)), dtype=np.float64)
    for index, (length, w) in enumerate(zip(use, solved, strict=True)):
        weights[index, :length] = w @ basis.T
    return Predictor(np.array(use, dtype=np.int64), _rounded(weights), _rounded(basis))


def leading_run(received: np.ndarray) -> np.ndarray:
    """Per frame, how many leading components arrived (``received`` ``(N, K)`` bool)."""
    missing = ~np.asarray(received, dtype=bool)
    return np.asarray(np.where(missing.any(axis=1), missing.argmax(axis=1), missing.shape[1]))
