"""Offline NAIR calibration: fit the transform, fill statistics, quantiser and fragment plan on training images.

The mature model's weights are frozen (it only runs forward). Calibration never sees the test split. The same
function builds the baselines the evaluator compares against, by switching the transform off piece by piece.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from models.nair import NairArtifact, NairTransform, bits_schedule, geometric_plan
from models.quantiser import CLIP_QUANTILES, fit_quantiser
from models.resnet import ResNet

Method = Literal["nair", "pca", "naive", "prune", "variance", "klt"]
"""``nair``: channel KLT + 2-D DCT, components by variance. Baselines: ``naive`` (original order), ``prune``
(channels by activation magnitude), ``pca`` (channel KLT, whole channel maps). Ablation steps: ``variance``
(no transform, elements by variance) and ``klt`` (channel KLT without the DCT, elements by variance)."""
Fill = Literal["mean", "zero"]
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """What to fit (the artifact's ``meta`` records all of it)."""

    split: str = "stage2"
    method: Method = "nair"
    fill: Fill = "mean"
    bit_bands: BitBands = ((1.0, 8),)
    clip_quantiles: tuple[float, ...] = CLIP_QUANTILES
    first_fragment: int = 64
    growth: float = 2.0
    max_fragment: int = 4096
    batch_size: int = 500


BitBands = tuple[tuple[float, int], ...]
"""``((fraction_end, bits), ...)``: bits per component by importance rank, the last band ending at 1.0."""
BIT_ALLOCATIONS: dict[str, BitBands] = {
    "8 bit": ((1.0, 8),),
    "4 bit": ((1.0, 4),),
    "3 bit": ((1.0, 3),),
    "2 bit": ((1.0, 2),),
    "4/2 bit by importance": ((0.01, 4), (1.0, 2)),
    "3/2/1 bit by importance": ((0.02, 3), (0.06, 2), (1.0, 1)),
    "2/1 bit by importance": ((0.04, 2), (1.0, 1)),
}
"""The named bit allocations the rate–accuracy curve measures and ``nairbus calibrate --wire-bytes`` chooses from."""
MAX_BITS = 16


def parse_bit_bands(text: str) -> BitBands:
    """``"8"`` (every component at 8 bits) or ``"0.02:3,0.06:2,1:1"`` (the first 2 % of the components by importance
    at 3 bits, up to 6 % at 2, the rest at 1); a clear ``ValueError`` for anything else."""
    text = text.strip()
    if text.isdigit():
        text = f"1:{text}"
    bands: list[tuple[float, int]] = []
    for part in text.split(","):
        fraction, sep, bits = part.strip().partition(":")
        try:
            band = (float(fraction), int(bits))
        except ValueError:
            raise ValueError(f"bit band {part.strip()!r} is not FRACTION:BITS (e.g. 0.02:3)") from None
        if not sep or not 0.0 < band[0] <= 1.0 or not 1 <= band[1] <= MAX_BITS:
            raise ValueError(f"bit band {part.strip()!r}: the fraction must lie in (0, 1] and the bits in "
                             f"1..{MAX_BITS}")
        if bands and band[0] <= bands[-1][0]:
            raise ValueError(f"bit bands must have rising fractions ({bands[-1][0]:g} then {band[0]:g})")
        bands.append(band)
    if bands[-1][0] != 1.0:
        raise ValueError(f"the last bit band must end at 1 (all components), not {bands[-1][0]:g}")
    return tuple(bands)


def format_bit_bands(bands: BitBands) -> str:
    """The ``--bit-bands`` spelling of ``bands`` (inverse of :func:`parse_bit_bands`)."""
    return ",".join(f"{fraction:g}:{bits}" for fraction, bits in bands)


def head_outputs(model: ResNet, images: np.ndarray, split: str, batch_size: int = 500) -> np.ndarray:
    """IR of every image at ``split``, float32 ``(N, C, H, W)``."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = model.input_spec.prepare(images[start : start + batch_size])
            outs.append(model.head(x, split).numpy())
    return np.concatenate(outs)


def _channel_klt(ir: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Eigenvectors of the channel covariance (pooled over positions), strongest first."""
    c = ir.shape[1]
    centred = (ir - mean).transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    cov = centred.T @ centred / len(centred)
    eigval, eigvec = np.linalg.eigh(cov)
    return eigvec[:, np.argsort(eigval)[::-1]]


def _channel_major_order(channel_rank: np.ndarray, h: int, w: int) -> np.ndarray:
    """Flattened order that sends whole channel maps in the given channel order."""
    return (channel_rank[:, None] * (h * w) + np.arange(h * w)[None, :]).ravel()


def prune_scores(model: ResNet, split: str, ir: np.ndarray) -> np.ndarray:
    """Pruning criterion per channel at the split: mean absolute activation (the classic activation-magnitude rule)."""
    del model, split
    return np.asarray(np.abs(ir).mean(axis=(0, 2, 3)))


def calibrate(
    model: ResNet,
    model_name: str,
    model_sha256: str,
    images: np.ndarray,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    ir: np.ndarray | None = None,
) -> NairArtifact:
    """Fit an artifact for ``model`` at ``settings.split`` from calibration ``images`` (uint8, training data).

    ``ir``, when given, is ``head_outputs(model, images, settings.split)`` computed before (the evaluator builds
    many artifacts from the same calibration images).
    """
    started = time.perf_counter()
    if ir is None:
        ir = head_outputs(model, images, settings.split, settings.batch_size)
    elif len(ir) != len(images):
        raise ValueError(f"{len(ir)} IRs given for {len(images)} calibration images")
    if progress:
        progress("head", len(images), len(images))
    n, c, h, w = ir.shape
    k = c * h * w
    mean = ir.mean(axis=0)
    basis = _channel_klt(ir, mean) if settings.method in ("nair", "pca", "klt") else np.eye(c)
    spatial = settings.method == "nair"
    base = NairArtifact(
        model_name=model_name,
        model_sha256=model_sha256,
        split=settings.split,
        ir_shape=(c, h, w),
        spatial_dct=spatial,
        mean=mean.astype(np.float32),
        channel_basis=basis.astype(np.float32),
        order=np.arange(k, dtype=np.int64),
        fill=np.zeros(k, dtype=np.float32),
        lo=np.zeros(k, dtype=np.float32),
        step=np.ones(k, dtype=np.float32),
        bits=np.full(k, 8, dtype=np.uint8),
        plan=np.array([[0, k]], dtype=np.int64),
    )
    with torch.no_grad():
        natural = NairTransform(base).forward(torch.from_numpy(ir)).numpy()
    if progress:
        progress("transform", 1, 1)
    if settings.method in ("nair", "klt", "variance"):
        order = np.argsort(-natural.var(axis=0), kind="stable")
    elif settings.method == "pca":
        order = _channel_major_order(np.arange(c), h, w)
    elif settings.method == "prune":
        order = _channel_major_order(np.argsort(-prune_scores(model, settings.split, ir), kind="stable"), h, w)
    else:
        order = np.arange(k)
    components = natural[:, order]
    if settings.fill == "mean":
        fill = components.mean(axis=0)
    else:  # zero activation at the split, expressed in component space
        fill = NairTransform(base).forward(torch.zeros(1, c, h, w)).numpy()[0][order]
    bits = bits_schedule(k, list(settings.bit_bands))
    lo, step = fit_quantiser(components, bits, settings.clip_quantiles)
    plan = geometric_plan(k, bits, settings.first_fragment, settings.growth, settings.max_fragment)
    meta: dict[str, Any] = {
        "method": settings.method,
        "settings": asdict(settings),
        "calibration_images": int(n),
        "provenance": {"calibration_seconds": round(time.perf_counter() - started, 2)},
    }
    return NairArtifact(
        model_name=model_name,
        model_sha256=model_sha256,
        split=settings.split,
        ir_shape=(c, h, w),
        spatial_dct=spatial,
        mean=mean.astype(np.float32),
        channel_basis=basis.astype(np.float32),
        order=order.astype(np.int64),
        fill=fill.astype(np.float32),
        lo=lo.astype(np.float32),
        step=step.astype(np.float32),
        bits=bits,
        plan=plan,
        meta=meta,
    )
