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
and the fragment plan, and is saved as a small ``.npz`` whose content hash pairs it with its model.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

ARTIFACT_VERSION = 1
PROVENANCE_KEYS = frozenset({"provenance", "calibration_seconds"})
"""Keys of ``meta`` that record how an artifact came about but not how it behaves: not hashed
(``calibration_seconds`` is the pre-provenance place of the wall time)."""
_ARRAYS = ("mean", "channel_basis", "order", "fill", "lo", "step", "bits", "plan")
_OPTIONAL_ARRAYS = ("mix", "tables")
"""Arrays an artifact may lack (an artifact without a joint KLT stores an empty ``mix``, one without entropy coding
empty ``tables``, hashed as if absent, so the artifacts made before they existed keep their sha256)."""
NO_MIX = np.zeros((0, 0), dtype=np.float32)
NO_TABLES = np.zeros((0, 0), dtype=np.float32)


class ArtifactMismatchError(RuntimeError):
    """An artifact was paired with a model (or a peer) it was not calibrated for."""


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D`` (``D @ D.T == I``)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    return np.asarray(d)


@dataclass(frozen=True, eq=False)
class NairArtifact:
    """A calibrated NAIR codec for one model at one split point."""

    model_name: str
    model_sha256: str
    split: str
    ir_shape: tuple[int, int, int]
    spatial_dct: bool
    mean: np.ndarray  # (C, H, W) float32
    channel_basis: np.ndarray  # (C, C) float32, orthogonal; columns are components
    order: np.ndarray  # (K,) int64: component j is vec(z)[order[j]]
    fill: np.ndarray  # (K,) float32: value used for a component that did not arrive
    lo: np.ndarray  # (K,) float32: quantiser lower bound
    step: np.ndarray  # (K,) float32: quantiser step
    bits: np.ndarray  # (K,) uint8: bits per component, constant inside a fragment
    plan: np.ndarray  # (F, 2) int64: component span [start, end) of each fragment, in sending order
    meta: dict[str, Any] = field(default_factory=dict)
    mix: np.ndarray = field(default_factory=lambda: NO_MIX)  # (L, L) float32, orthogonal: joint KLT of s[:L]
    tables: np.ndarray = field(default_factory=lambda: NO_TABLES)
    """(K, W) float32: each component's code probabilities when its runs are range-coded
    (:mod:`nairbus.models.nair.entropy`); empty: codes are bit-packed."""

    @property
    def n_components(self) -> int:
        return int(np.prod(self.ir_shape))

    @property
    def entropy_coded(self) -> bool:
        """Whether runs are range-coded with :attr:`tables` (else bit-packed at :attr:`bits`)."""
        return bool(self.tables.size)

    @property
    def coding(self) -> Literal["packed", "range"]:
        """How a run's codes are put into bytes, as the birth names it: ``range`` or ``packed``."""
        return "range" if self.entropy_coded else "packed"

    @property
    def joint_components(self) -> int:
        """``L``: how many leading components the joint KLT mixes (0: none)."""
        return int(self.mix.shape[0])

    @property
    def sha256(self) -> str:
        """Hash of what determines the artifact's behaviour: its arrays and its header, without the provenance
        (``meta["provenance"]``: wall times, the command, what a selection compared) — so re-running the same
        calibration on the same data reproduces it."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self._hashed_header(), sort_keys=True).encode())
        for name in _ARRAYS + tuple(n for n in _OPTIONAL_ARRAYS if getattr(self, n).size):
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    def fragment_bits(self) -> np.ndarray:
        """Bits per component of each fragment in the plan."""
        return np.asarray(self.bits[self.plan[:, 0]], dtype=np.int64)

    def fragment_bytes(self) -> np.ndarray:
        """Payload bytes of each complete fragment in the plan."""
        counts = self.plan[:, 1] - self.plan[:, 0]
        return np.asarray((counts * self.fragment_bits() + 7) // 8)

    def total_bytes(self) -> int:
        """Payload bytes of the whole IR (every fragment)."""
        return int(self.fragment_bytes().sum())

    def check_model(self, model_name: str, model_sha256: str) -> None:
        """Refuse to pair this artifact with a model it was not calibrated for."""
        if model_sha256 != self.model_sha256:
            raise ArtifactMismatchError(
                f"NAIR artifact {self.sha256[:12]} was calibrated for model {self.model_name} "
                f"(sha256 {self.model_sha256[:12]}…), not {model_name} (sha256 {model_sha256[:12]}…); "
                "re-run 'nairbus calibrate' for this model"
            )

    def _header(self) -> dict[str, Any]:
        return {
            "artifact_version": ARTIFACT_VERSION,
            "model_name": self.model_name,
            "model_sha256": self.model_sha256,
            "split": self.split,
            "ir_shape": list(self.ir_shape),
            "spatial_dct": self.spatial_dct,
            "meta": self.meta,
        }

    def _hashed_header(self) -> dict[str, Any]:
        header = self._header()
        header["meta"] = {k: v for k, v in self.meta.items() if k not in PROVENANCE_KEYS}
        return header

    def save(self, path: Path) -> Path:
        """Write the artifact as ``.npz`` (arrays plus a JSON header)."""
        buffer = io.BytesIO()
        arrays = {name: getattr(self, name) for name in _ARRAYS + _OPTIONAL_ARRAYS}
        np.savez_compressed(buffer, header=np.array(json.dumps(self._header(), sort_keys=True)), **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: Path) -> NairArtifact:
        """Read an artifact written by :meth:`save`; a clear error when it is missing or of another version."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no NAIR artifact at {path}; create it with 'nairbus calibrate'")
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in _ARRAYS}
            arrays.update({name: data[name] for name in _OPTIONAL_ARRAYS if name in data.files})
        if header.get("artifact_version") != ARTIFACT_VERSION:
            raise ArtifactMismatchError(
                f"{path} is artifact version {header.get('artifact_version')}, this nairbus reads {ARTIFACT_VERSION}"
            )
        mix = arrays.get("mix", NO_MIX)
        if mix.ndim != 2 or mix.shape[0] != mix.shape[1] or mix.shape[0] > int(np.prod(header["ir_shape"])):
            raise ArtifactMismatchError(f"{path}: its joint KLT has shape {mix.shape}, not L x L with L at most "
                                        f"the IR's {int(np.prod(header['ir_shape']))} components")
        tables = arrays.get("tables", NO_TABLES)
        if tables.size and (tables.ndim != 2 or tables.shape[0] != int(np.prod(header["ir_shape"]))
                            or not np.isfinite(tables).all() or (tables < 0).any()):
            raise ArtifactMismatchError(f"{path}: its entropy tables have shape {tables.shape}, not one row of "
                                        "non-negative probabilities per component")
        return cls(
            model_name=header["model_name"],
            model_sha256=header["model_sha256"],
            split=header["split"],
            ir_shape=tuple(header["ir_shape"]),
            spatial_dct=bool(header["spatial_dct"]),
            meta=header["meta"],
            **arrays,
        )

    def with_plan(self, bits: np.ndarray, plan: np.ndarray) -> NairArtifact:
        """A copy with other bits and fragment plan (quantiser ranges are kept)."""
        return replace(self, bits=bits.astype(np.uint8), plan=plan.astype(np.int64))


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
        """Fill the components that did not arrive (``received`` False) and invert the transform."""
        filled = torch.where(received, components, self.fill.expand_as(components))
        return self.inverse(filled)


def geometric_plan(n_components: int, bits: np.ndarray, first: int = 32, growth: float = 1.5,
                   cap: int = 4096) -> np.ndarray:
    """Fragment spans that grow geometrically from ``first`` components and never straddle a change of bits."""
    spans: list[tuple[int, int]] = []
    start, size = 0, float(first)
    while start < n_components:
        end = min(n_components, start + max(1, round(size)))
        changes = np.nonzero(bits[start + 1 : end] != bits[start])[0]
        if changes.size:
            end = start + 1 + int(changes[0])
        spans.append((start, end))
        start, size = end, min(float(cap), size * growth)
    return np.array(spans, dtype=np.int64)


def bits_schedule(n_components: int, bands: list[tuple[float, int]]) -> np.ndarray:
    """Bits per component from ``[(fraction_end, bits), ...]`` bands, e.g. ``[(0.1, 8), (1.0, 6)]``."""
    bits = np.empty(n_components, dtype=np.uint8)
    start = 0
    for fraction, b in bands:
        end = n_components if fraction >= 1.0 else math.ceil(fraction * n_components)
        bits[start:end] = b
        start = end
    if start < n_components:
        raise ValueError("bit bands must end at fraction 1.0")
    return bits
