"""Variant Parallelism's fusion rule and availability figures: pure numpy, no torch, no MQTT.

Fusion (Asadi & Goudarzi 2023): every variant that reported sends its top-k class ids and scores. The fusion node
scatters each top-k into a class vector (zeros elsewhere), multiplies it by the variant's weight, sums the vectors
of whichever variants reported, and decides by the arg-max. The fused score vector is normalised to sum to one so
that it reads as a confidence. Ties go to the lowest class index (``numpy.argmax``).

>>> import numpy as np
>>> votes = [Vote("a", (3, 1), (0.6, 0.3), 1.0), Vote("b", (1, 3), (0.7, 0.2), 0.5)]
>>> scores = fuse(votes, n_classes=5)
>>> int(scores.argmax()), [round(float(s), 3) for s in scores]
(3, [0.0, 0.481, 0.0, 0.519, 0.0])

Availability: with N devices failing independently with probability p, variant parallelism answers whenever at
least one variant is up (``1 - p**N``), while model (or class) parallelism needs every part (``(1 - p)**N``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass(frozen=True, slots=True)
class Vote:
    """One variant's top-k for one frame."""

    variant: str
    classes: tuple[int, ...]
    scores: tuple[float, ...]
    weight: float


def check_k(k: int, n_classes: int) -> int:
    """``k`` if ``1 <= k <= n_classes // 2`` (the wire contract of VP), else ``ValueError``."""
    if not 1 <= k <= max(1, n_classes // 2):
        raise ValueError(f"k={k} must be between 1 and {max(1, n_classes // 2)} (half of {n_classes} classes)")
    return k


def topk(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k class ids and scores of each row of ``probs`` ``(B, C)``, highest first (stable: lower id wins ties)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)


def scatter(classes: np.ndarray, scores: np.ndarray, n_classes: int) -> np.ndarray:
    """Top-k ids ``(B, k)`` and scores ``(B, k)`` to dense class vectors ``(B, C)``, zero where not reported."""
    out = np.zeros((classes.shape[0], n_classes), dtype=np.float64)
    np.put_along_axis(out, classes.astype(np.int64), scores.astype(np.float64), axis=1)
    return out


def fuse(votes: Sequence[Vote], n_classes: int) -> np.ndarray:
    """Fused, normalised class scores ``(C,)`` of one frame from the votes that arrived (at least one)."""
    if not votes:
        raise ValueError("fusion needs at least one vote")
    total = np.zeros(n_classes, dtype=np.float64)
    for vote in votes:
        if len(vote.classes) != len(vote.scores):
            raise ValueError(f"variant {vote.variant}: {len(vote.classes)} classes but {len(vote.scores)} scores")
        idx = np.asarray(vote.classes, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_classes):
            raise ValueError(f"variant {vote.variant}: class id out of range for {n_classes} classes")
        total[idx] += vote.weight * np.asarray(vote.scores, dtype=np.float64)
    return normalise(total)


def normalise(scores: np.ndarray) -> np.ndarray:
    """Scale the last axis to sum to one (rows that sum to zero stay zero)."""
    s = scores.sum(axis=-1, keepdims=True)
    return np.asarray(np.divide(scores, s, out=np.zeros_like(scores, dtype=np.float64), where=s > 0))


def fuse_batch(probs: Mapping[str, np.ndarray], weights: Mapping[str, float], k: int,
               subset: Sequence[str] | None = None) -> np.ndarray:
    """The same rule on whole arrays: fused scores ``(B, C)`` of ``subset`` (default: all) from softmax outputs.

    This is what the evaluator uses; :func:`fuse` is what the live fusion agent uses, frame by frame. They agree.
    """
    names = list(subset if subset is not None else probs)
    if not names:
        raise ValueError("fusion needs at least one variant")
    n_classes = next(iter(probs.values())).shape[1]
    total = np.zeros_like(probs[names[0]], dtype=np.float64)
    for name in names:
        classes, scores = topk(probs[name], k)
        total += weights[name] * scatter(classes, scores, n_classes)
    return normalise(total)


def subset_key(names: Sequence[str]) -> str:
    """The report key of a subset: sorted names joined by commas."""
    return ",".join(sorted(names))


def all_subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``names``, smallest first."""
    return [combo for r in range(1, len(names) + 1) for combo in combinations(sorted(names), r)]


# -- availability ----------------------------------------------------------------------------------------------------
def availability_vp(p: float | np.ndarray, n: int) -> float | np.ndarray:
    """Probability that at least one of ``n`` independently failing devices (failure prob ``p``) is up."""
    return 1.0 - np.power(p, n)


def availability_mp(p: float | np.ndarray, n: int) -> float | np.ndarray:
    """Probability that all ``n`` parts of a model-parallel (or class-parallel) pipeline are up."""
    return np.power(1.0 - np.asarray(p, dtype=np.float64), n)


def simulate_failures(p: float, n: int, trials: int, seed: int = 0) -> np.ndarray:
    """Up/down state ``(trials, n)`` of ``n`` devices, each down independently with probability ``p``."""
    return np.random.default_rng(seed).random((trials, n)) >= p


def expected_accuracy(p: float, names: Sequence[str], subset_accuracy: Mapping[str, float]) -> float:
    """Accuracy over time when each device is down with probability ``p``; no answer counts as wrong.

    Sums, over every subset S of devices that is up, ``P(S up) * accuracy(S)``.
    """
    n = len(names)
    total = 0.0
    for combo in all_subsets(names):
        prob = (1.0 - p) ** len(combo) * p ** (n - len(combo))
        total += prob * subset_accuracy[subset_key(combo)]
    return total
