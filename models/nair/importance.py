"""Label-free task importance of NAIR components: how far the mature model's own output moves without each one.

Variance order sends first the components that carry most of the IR's energy; the tail may care little for some of
them and much for quieter ones. Task importance asks the model instead. Replacing component ``k`` of a frame by its
fill (the calibration mean: zero in component space) moves the model's class distribution ``p`` by, to second order,

    KL(p(z) ‖ p(z with z_k = 0)) ≈ ½ F_kk(z) z_k²,      F_kk(z) = Σ_c p_c(z) (∂ log p_c / ∂ z_k)²

where ``F`` is the Fisher information of the model's own output (no labels: the expectation is over the classes the
model itself predicts). A component's score is the mean of ``F_kk(z) z_k²`` over calibration frames; one backward
pass per class and batch gives every component's gradient at once (frames are independent, so the gradient of the
batch's summed log-probability is each frame's own).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nairbus.models.nair.transform import NairTransform

__all__ = ["TASK_IMAGES", "task_scores"]

TASK_IMAGES = 1000
"""Calibration frames the scores average over (the first of the calibration images)."""
_BATCH = 50
_SCORE_DIGITS = 10
"""Scores are rounded to this many significant digits (relative to the largest) before they are sorted, so that
another CPU's last-bit differences cannot swap two components and change the artifact."""


def task_scores(model: Any, split: str, transform: NairTransform, components: np.ndarray) -> np.ndarray:
    """Per component, the mean over ``components`` ``(N, K)`` (natural order, centred: the mean fill is zero) of
    ``F_kk(z) z_k²``; ``model`` runs the tail in ``transform``'s dtype."""
    n, k = components.shape
    scores = np.zeros(k, dtype=np.float64)
    for start in range(0, n, _BATCH):
        z = torch.from_numpy(components[start : start + _BATCH]).to(transform.dtype).requires_grad_(True)
        logp = torch.log_softmax(model.tail(transform.inverse(z), split), dim=1)
        p = logp.detach().exp()
        classes = logp.shape[1]
        for c in range(classes):
            (grad,) = torch.autograd.grad(logp[:, c].sum(), z, retain_graph=c < classes - 1)
            scores += (p[:, c : c + 1] * (grad * z.detach()) ** 2).sum(dim=0).double().numpy()
    scores /= max(1, n)
    top = scores.max(initial=0.0)
    if top > 0:
        scores = np.round(scores / top, _SCORE_DIGITS)
    return scores
