"""Injected fragment loss — test and evaluation tooling, not a feature of a real link.

Loss decisions are a pure function of ``(seed, frame_id, fragment index)``, so the live bus and the offline
evaluator drop exactly the same fragments. Two models: independent (Bernoulli) loss, and bursty Gilbert–Elliott
loss (a good and a bad state with their own loss rates, a Markov chain over the fragments of a frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True, slots=True)
class LossModel:
    """``kind="none"``, ``"random"`` (rate ``p``) or ``"bursty"`` (Gilbert–Elliott)."""

    kind: Literal["none", "random", "bursty"] = "none"
    p: float = 0.0
    p_good_to_bad: float = 0.1
    p_bad_to_good: float = 0.3
    loss_good: float = 0.0
    loss_bad: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("p", "p_good_to_bad", "p_bad_to_good", "loss_good", "loss_bad"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"loss {name} must be in [0, 1], got {value}")

    @classmethod
    def bursty_with_rate(cls, rate: float, mean_burst: float = 3.0, seed: int = 0) -> LossModel:
        """Gilbert (loss only in the bad state) with average loss ``rate`` and mean burst length ``mean_burst``."""
        if not 0.0 < rate < 1.0:
            raise ValueError("bursty loss rate must be in (0, 1)")
        p_bg = 1.0 / mean_burst
        p_gb = rate * p_bg / (1.0 - rate)
        return cls(kind="bursty", p_good_to_bad=min(1.0, p_gb), p_bad_to_good=p_bg, seed=seed)

    def lost(self, frame_id: int, n_fragments: int) -> np.ndarray:
        """Boolean ``(n_fragments,)``: True where fragment ``i`` of frame ``frame_id`` is dropped."""
        if self.kind == "none" or n_fragments == 0:
            return np.zeros(n_fragments, dtype=bool)
        rng = np.random.default_rng([self.seed, frame_id])
        u = rng.random(n_fragments)
        if self.kind == "random":
            return u < self.p
        state_u = rng.random(n_fragments)
        stationary_bad = self.p_good_to_bad / max(self.p_good_to_bad + self.p_bad_to_good, 1e-12)
        bad = state_u[0] < stationary_bad
        out = np.empty(n_fragments, dtype=bool)
        for i in range(n_fragments):
            if i:
                bad = state_u[i] >= self.p_bad_to_good if bad else state_u[i] < self.p_good_to_bad
            out[i] = u[i] < (self.loss_bad if bad else self.loss_good)
        return out
