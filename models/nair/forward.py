"""The sensor's half of NAIR in numpy: the forward transform ``T`` of an artifact and its quantiser, without torch.

:class:`ForwardTransform` computes what :meth:`nairbus.models.nair.transform.NairTransform.forward` computes —
centre, channel KLT, 2-D DCT of each component map, importance order, joint KLT of the leading components — and
:meth:`ForwardTransform.encode` quantises the result to the artifact's codes, as
:meth:`nairbus.models.nair.pipeline.NairPipeline.encode_ir` does. The arithmetic is float32 in the same order of
operations as the torch implementation; both call a BLAS for the products, whose summation order may differ, so a
component that falls within a rounding error of a quantiser bin's edge can get the neighbouring code (measured on the
shipped artifacts in ``tests/models/test_device_pipeline.py``).
"""

from __future__ import annotations

import numpy as np

from nairbus.models.nair.artifact import NairArtifact, dct_matrix
from nairbus.models.nair.codec import quantise

__all__ = ["ForwardTransform"]


class ForwardTransform:
    """``T`` of ``artifact`` on IR batches ``(N, C, H, W)``, and its quantised codes, in float32 numpy."""

    def __init__(self, artifact: NairArtifact) -> None:
        c, h, w = artifact.ir_shape
        self.artifact = artifact
        self.shape = (c, h, w)
        self.mean = artifact.mean.astype(np.float32)
        self.basis = np.ascontiguousarray(artifact.channel_basis, dtype=np.float32)
        self.dct_h = (dct_matrix(h) if artifact.spatial_dct else np.eye(h)).astype(np.float32)
        self.dct_w_t = np.ascontiguousarray((dct_matrix(w) if artifact.spatial_dct else np.eye(w)).T,
                                            dtype=np.float32)
        self.order = artifact.order.astype(np.int64)
        self.mix = artifact.mix.astype(np.float32) if artifact.joint_components else None

    def forward(self, ir: np.ndarray) -> np.ndarray:
        """IR ``(N, C, H, W)`` to components ``(N, K)`` in importance order (float32)."""
        ir = np.asarray(ir, dtype=np.float32)
        if ir.ndim != 4 or tuple(ir.shape[1:]) != self.shape:
            raise ValueError(f"an IR of shape {tuple(ir.shape[1:])} does not fit the artifact's {self.shape}")
        n = ir.shape[0]
        c, h, w = self.shape
        centred = (ir - self.mean).transpose(0, 2, 3, 1).reshape(-1, c)
        y = (centred @ self.basis).reshape(n, h, w, c).transpose(0, 3, 1, 2)
        z = self.dct_h @ y @ self.dct_w_t
        components = z.reshape(n, -1)[:, self.order]
        if self.mix is not None:
            lead = self.mix.shape[0]
            components = np.concatenate([components[:, :lead] @ self.mix, components[:, lead:]], axis=1)
        return np.asarray(components, dtype=np.float32)

    def encode(self, ir: np.ndarray) -> np.ndarray:
        """IR ``(N, C, H, W)`` to quantiser codes ``(N, K)`` (uint16)."""
        a = self.artifact
        return quantise(self.forward(ir), a.lo, a.step, a.bits)
