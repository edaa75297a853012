"""NAIR importance aggregation: an exactly invertible transform of the IR into components ordered by importance.

The transform (nairbus's retraining-free interpretation of Xiao et al., 2024) is, for one IR ``x`` of shape
``(C, H, W)``::

    y[:, h, w] = Uᵀ (x[:, h, w] − μ[:, h, w])        channel KLT: U orthogonal (C×C), μ the calibration mean
    z[d]       = D_H y[d] D_Wᵀ                      2-D orthonormal DCT of every channel component map
    s          = vec(z)[order]                      components sorted from most to least important
    s[:L]      = s[:L] M                            optional joint KLT of the leading L components (M orthogonal)

Each step is orthogonal or a permutation, so ``T⁻¹`` is exact: ``x = U (D_Hᵀ z D_W) + μ``. The separable channel
KLT and DCT decorrelate channels and positions one axis at a time; the joint KLT (``mix``, ``L × L``, off when
``L = 0``) removes what correlation is left among the leading components, so a short prefix carries more of the
IR — at ``L²`` multiply-adds per frame on the device and ``4 L²`` bytes of artifact. The baselines are the
same object with other settings: the naive split uses ``U = I``, no DCT and the original channel-major order;
plain PCA uses the KLT without the DCT; a pruning ordering permutes whole channels by a score.

:class:`NairArtifact` holds the transform, per-component fill values, quantisation (per-component range and bits)
and the fragment plan, and is saved as a small ``.npz`` whose content hash pairs it with its model; it lives, with
the numpy helpers it needs, in the torch-free :mod:`nairbus.models.nair.artifact` and is re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from nairbus.models.nair.artifact import (
    ARTIFACT_VERSION,
    NO_MIX,
    NO_TABLES,
    PROVENANCE_KEYS,
    ArtifactMismatchError,
    NairArtifact,
    bits_schedule,
    dct_matrix,
    geometric_plan,
)
from nairbus.models.nair.prediction import leading_run

__all__ = ["ARTIFACT_VERSION", "NO_MIX", "NO_TABLES", "PROVENANCE_KEYS", "ArtifactMismatchError", "NairArtifact",
           "NairTransform", "bits_schedule", "dct_matrix", "geometric_plan"]


class NairTransform:
    """Batched torch implementation of ``T`` and ``T⁻¹`` for an artifact."""

    def __init__(self, artifact: NairArtifact, dtype: torch.dtype = torch.float32) -> None:
        """``dtype`` float64 is for calibration, which fits its statistics in double precision."""
        c, h, w = artifact.ir_shape
        self.shape = (c, h, w)
        self.dtype = dtype
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self.mean = torch.from_numpy(artifact.mean.astype(np_dtype))
        self.basis = torch.from_numpy(artifact.channel_basis.astype(np_dtype))
        eye_h, eye_w = np.eye(h), np.eye(w)
        self.dct_h = torch.from_numpy((dct_matrix(h) if artifact.spatial_dct else eye_h).astype(np_dtype))
        self.dct_w = torch.from_numpy((dct_matrix(w) if artifact.spatial_dct else eye_w).astype(np_dtype))
        self.order = torch.from_numpy(artifact.order.astype(np.int64))
        self.fill = torch.from_numpy(artifact.fill.astype(np_dtype))
        self.mix = torch.from_numpy(artifact.mix.astype(np_dtype)) if artifact.joint_components else None
        self.predictor = None
        if artifact.predicts_fill:
            self.predictor = (artifact.predict_lengths.astype(np.int64),
                              torch.from_numpy(artifact.predict_weights.astype(np_dtype)),
                              torch.from_numpy(artifact.predict_basis.astype(np_dtype)))

    def forward(self, ir: torch.Tensor) -> torch.Tensor:
        """IR ``(N, C, H, W)`` to components ``(N, K)`` in importance order."""
        c, h, w = self.shape
        centred = (ir.to(self.dtype) - self.mean).permute(0, 2, 3, 1).reshape(-1, c)
        y = (centred @ self.basis).reshape(ir.shape[0], h, w, c).permute(0, 3, 1, 2)
        z = self.dct_h @ y @ self.dct_w.T
        components = z.reshape(ir.shape[0], -1)[:, self.order]
        if self.mix is not None:
            lead = self.mix.shape[0]
            components = torch.cat([components[:, :lead] @ self.mix, components[:, lead:]], dim=1)
        return components

    def inverse(self, components: torch.Tensor) -> torch.Tensor:
        """Components ``(N, K)`` in importance order back to the IR ``(N, C, H, W)``."""
        n = components.shape[0]
        if self.mix is not None:
            lead = self.mix.shape[0]
            components = torch.cat([components[:, :lead] @ self.mix.T, components[:, lead:]], dim=1)
        flat = torch.empty_like(components)
        flat[:, self.order] = components
        z = flat.reshape(n, *self.shape)
        c, h, w = self.shape
        y = self.dct_h.T @ z @ self.dct_w
        x = (y.permute(0, 2, 3, 1).reshape(-1, c) @ self.basis.T).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x.contiguous() + self.mean

    def reconstruct(self, components: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
        """Fill the components that did not arrive (``received`` False) — predicted from the leading run that did,
        where the artifact has an estimator — and invert the transform."""
        fill = self.fill.expand_as(components)
        if self.predictor is not None:
            fill = self._predicted(components, received, fill)
        filled = torch.where(received, components, fill)
        return self.inverse(filled)

    def _predicted(self, components: torch.Tensor, received: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """The fill of each frame: from the longest estimator whose prefix arrived whole (mean fill without one)."""
        assert self.predictor is not None
        lengths, weights, basis = self.predictor
        run = leading_run(received.numpy())
        which = np.searchsorted(lengths, run, side="right") - 1
        which[run >= components.shape[1]] = -1  # nothing missing: nothing to predict
        out = fill.clone()
        for index in np.unique(which[which >= 0]).tolist():
            rows = torch.from_numpy(np.nonzero(which == index)[0])
            length = int(lengths[index])
            latent = components[rows, :length].to(weights.dtype) @ weights[index, :length]
            out[rows] = (latent @ basis).to(out.dtype) + self.fill
        return out
