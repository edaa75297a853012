"""A calibrated NAIR codec as data: :class:`NairArtifact` (transform, fill values, quantisation, fragment plan) and
the numpy helpers it is built from — numpy only, no torch, so a sensor installed without torch loads it.

The transform it describes, and its torch implementation, are in :mod:`nairbus.models.nair.transform` (which
re-exports everything here); its numpy forward half, what a device runs, is :mod:`nairbus.models.nair.forward`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["ARTIFACT_VERSION", "NO_LENGTHS", "NO_MIX", "NO_TABLES", "NO_WEIGHTS", "PROVENANCE_KEYS",
           "ArtifactMismatchError", "NairArtifact", "bits_schedule", "dct_matrix", "geometric_plan"]

ARTIFACT_VERSION = 1
PROVENANCE_KEYS = frozenset({"provenance", "calibration_seconds"})
"""Keys of ``meta`` that record how an artifact came about but not how it behaves: not hashed
(``calibration_seconds`` is the pre-provenance place of the wall time)."""
_ARRAYS = ("mean", "channel_basis", "order", "fill", "lo", "step", "bits", "plan")
_OPTIONAL_ARRAYS = ("mix", "tables", "predict_lengths", "predict_weights", "predict_basis")
"""Arrays an artifact may lack (an artifact without a joint KLT stores an empty ``mix``, one without entropy coding
empty ``tables``, one with the mean fill no predictor, hashed as if absent, so the artifacts made before they existed
keep their sha256)."""
NO_MIX = np.zeros((0, 0), dtype=np.float32)
NO_TABLES = np.zeros((0, 0), dtype=np.float32)
NO_LENGTHS = np.zeros(0, dtype=np.int64)
NO_WEIGHTS = np.zeros((0, 0, 0), dtype=np.float32)


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
    predict_lengths: np.ndarray = field(default_factory=lambda: NO_LENGTHS)
    """(P,) int64: prefix lengths with a fill estimator (:mod:`nairbus.models.nair.prediction`); empty: mean fill."""
    predict_weights: np.ndarray = field(default_factory=lambda: NO_WEIGHTS)
    """(P, L_max, R) float32: each length's map from its prefix to the shared basis."""
    predict_basis: np.ndarray = field(default_factory=lambda: NO_MIX)
    """(R, K) float32: the shared output basis of the fill estimators."""

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
    def predicts_fill(self) -> bool:
        """Whether missing components are estimated from the prefix that arrived (else: :attr:`fill`)."""
        return bool(self.predict_lengths.size)

    @property
    def joint_components(self) -> int:
        """``L``: how many leading components the joint KLT mixes (0: none)."""
        return int(self.mix.shape[0])

    @cached_property
    def sha256(self) -> str:
        """Hash of what determines the artifact's behaviour: its arrays and its header, without the provenance
        (``meta["provenance"]``: wall times, the command, what a selection compared) — so re-running the same
        calibration on the same data reproduces it. Computed once (an artifact is immutable; fusion asks for it for
        every frame)."""
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
        _check_predictor(path, arrays, int(np.prod(header["ir_shape"])))
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


def _check_predictor(path: Path, arrays: dict[str, np.ndarray], k: int) -> None:
    """Refuse a fill estimator whose arrays do not fit together or the IR."""
    lengths = arrays.get("predict_lengths", NO_LENGTHS)
    if not lengths.size:
        return
    weights = arrays.get("predict_weights", NO_WEIGHTS)
    basis = arrays.get("predict_basis", NO_MIX)
    ok = (lengths.ndim == 1 and weights.ndim == 3 and basis.ndim == 2 and weights.shape[0] == lengths.size
          and bool(np.all(np.diff(lengths) > 0)) and int(lengths[0]) > 0 and int(lengths[-1]) == weights.shape[1]
          and int(lengths[-1]) < k and weights.shape[2] == basis.shape[0] and basis.shape[1] == k
          and bool(np.isfinite(weights).all()) and bool(np.isfinite(basis).all()))
    if not ok:
        raise ArtifactMismatchError(f"{path}: its fill estimator (lengths {lengths.shape}, weights "
                                    f"{weights.shape}, basis {basis.shape}) does not fit an IR of {k} components")


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
