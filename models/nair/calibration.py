"""Offline NAIR calibration: fit the transform, fill statistics, quantiser and fragment plan on training images.

The mature model's weights are frozen (it only runs forward). Calibration never sees the test split. The same
function builds the baselines the evaluator compares against, by switching the transform off piece by piece.

Calibration computes in float64 — the head's forward pass on the calibration images (:func:`calibration_ir`)
and every statistic — and rounds to float32 once, when it writes the artifact. Another CPU sums a float32
convolution or a covariance in another order and moves the last float32 bits; in float64 those differences sit
about 10⁻¹⁶ relative, far below float32's rounding step, so the same command on the same images writes the same
artifact, bit for bit, on another machine too.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.nair.codec import dequantise, quantise
from nairbus.models.nair.entropy import fit_tables
from nairbus.models.nair.importance import TASK_IMAGES, task_scores
from nairbus.models.nair.prediction import PREDICT_LENGTHS, fit_predictor
from nairbus.models.nair.quantiser import CLIP_QUANTILES, fit_quantiser
from nairbus.models.nair.transform import NO_MIX, NO_TABLES, NairArtifact, NairTransform, bits_schedule, geometric_plan

Method = Literal["nair", "pca", "naive", "prune", "variance", "klt"]
"""``nair``: channel KLT + 2-D DCT, components by variance. Baselines: ``naive`` (original order), ``prune``
(channels by activation magnitude), ``pca`` (channel KLT, whole channel maps). Ablation steps: ``variance``
(no transform, elements by variance) and ``klt`` (channel KLT without the DCT, elements by variance)."""
Fill = Literal["mean", "zero"]
Importance = Literal["variance", "task"]
"""How components are ranked (methods ``nair``, ``klt``, ``variance``): by calibration variance, or by how far the
mature model's own output moves without each (:mod:`nairbus.models.nair.importance`, label-free)."""
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
    joint_klt: int = 0
    """``L``: decorrelate the leading ``L`` components by a joint KLT after the separable transform (``nair``
    only; 0: off). Costs ``L²`` multiply-adds per frame on the device and ``4 L²`` artifact bytes."""
    importance: Importance = "variance"
    """The order components are sent (and given bits) in: ``variance`` or ``task`` (label-free; see
    :data:`Importance`)."""
    predict_fill: bool = False
    """Estimate the components that did not arrive from the leading ones that did
    (:mod:`nairbus.models.nair.prediction`, fitted on the calibration images; mean fill only) instead of the fill."""
    entropy_coding: bool = False
    """Range-code each run with per-component code probabilities fitted on the calibration images
    (:mod:`nairbus.models.nair.entropy`; bits of at most 4 per component) instead of bit-packing it."""

    def recorded(self) -> dict[str, Any]:
        """The settings as the artifact's ``meta`` records them (``joint_klt``, ``entropy_coding``, ``predict_fill`` and
        ``importance``
        only when not at their defaults, so the artifacts made before they existed keep their sha256)."""
        out = asdict(self)
        for name in ("joint_klt", "entropy_coding", "predict_fill"):
            if not out[name]:
                del out[name]
        if out["importance"] == "variance":
            del out["importance"]
        return out


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


def calibrated_bit_bands(meta: dict[str, Any]) -> str | None:
    """The ``--bit-bands`` spelling of the allocation an artifact's ``meta`` says it was calibrated with (None for
    an artifact that does not record it)."""
    bands = meta.get("settings", {}).get("bit_bands")
    return format_bit_bands(tuple((float(f), int(b)) for f, b in bands)) if bands else None


def head_outputs(model: ResNet, images: np.ndarray, split: str, batch_size: int = 500,
                 dtype: torch.dtype = torch.float32) -> np.ndarray:
    """IR of every image at ``split``, ``(N, C, H, W)`` (float64 for a model copied to float64 and ``dtype``
    float64)."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = model.input_spec.prepare(images[start : start + batch_size]).to(dtype)
            outs.append(model.head(x, split).numpy())
    return np.concatenate(outs)


FLOAT64_NUMERICS = "float64 head and statistics, rounded to float32 once"


def float64_twin(model: Any, probe: np.ndarray, split: str) -> tuple[Any | None, str]:
    """A float64 copy of ``model`` (its weights untouched) whose head agrees with the model's on ``probe``, or None
    and why not (a TorchScript file whose code fixes float32, say)."""
    try:
        double = copy.deepcopy(model).double().eval()
    except Exception:
        return None, "the model cannot be copied to float64"
    with torch.no_grad():
        x = model.input_spec.prepare(probe)
        single = model.head(x, split)
        try:
            twin = double.head(x.double(), split)
        except Exception as exc:
            return None, f"it cannot run in float64: {type(exc).__name__}"
    if (twin.dtype != torch.float64 or twin.shape != single.shape
            or not torch.allclose(twin.float(), single, rtol=1e-3, atol=1e-3)):
        return None, "its float64 output differs from its float32 output"
    return double, ""


def calibration_ir(model: Any, images: np.ndarray, split: str, batch_size: int = 500) -> tuple[np.ndarray, str]:
    """IR of every calibration image at ``split`` as float64 ``(N, C, H, W)``, and how it was computed.

    The head runs in float64 (:func:`float64_twin`) when the model can, so the statistics fitted on it do not depend
    on the CPU's float32 summation order; a model that cannot runs in float32 and the note says so.
    """
    double, why = float64_twin(model, images[:batch_size], split)
    if double is None:
        return (head_outputs(model, images, split, batch_size).astype(np.float64),
                f"float32 head ({why}), float64 statistics")
    return head_outputs(double, images, split, batch_size, torch.float64), FLOAT64_NUMERICS


BASIS_GRID = 2.0**-20
"""The KLT eigenvectors are rounded to multiples of this before use (see :func:`_channel_klt`)."""


def _channel_klt(ir: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Eigenvectors of the channel covariance (pooled over positions), strongest first (:func:`klt_basis`)."""
    c = ir.shape[1]
    centred = (ir - mean).transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
    return klt_basis(centred.T @ centred / len(centred))


def klt_basis(cov: np.ndarray) -> np.ndarray:
    """Eigenvectors of a covariance matrix as columns, strongest first, each signed so that its largest-magnitude
    entry is positive (LAPACK may return either sign).

    Eigenvectors of close eigenvalues are ill-conditioned: another CPU's BLAS kernels move them by about 1e-12, enough
    to flip an entry's float32 rounding now and then. So they are rounded to :data:`BASIS_GRID` (about 1e-6, far
    coarser than that noise, so the rounded values agree across CPUs all but never) and made orthonormal again by
    two Newton–Schulz steps, a well-conditioned product whose own noise stays near 1e-16.
    """
    c = cov.shape[0]
    eigval, eigvec = np.linalg.eigh(cov)
    eigvec = eigvec[:, np.argsort(eigval, kind="stable")[::-1]]
    signs = np.sign(eigvec[np.argmax(np.abs(eigvec), axis=0), np.arange(c)])
    basis = np.round(eigvec * np.where(signs == 0, 1.0, signs) / BASIS_GRID) * BASIS_GRID
    eye = np.eye(c)
    for _ in range(2):
        basis = basis @ (1.5 * eye - 0.5 * (basis.T @ basis))
    return np.asarray(basis)


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
    ir: tuple[np.ndarray, str] | None = None,
) -> NairArtifact:
    """Fit an artifact for ``model`` at ``settings.split`` from calibration ``images`` (uint8, training data).

    ``ir``, when given, is ``calibration_ir(model, images, settings.split)`` computed before (the evaluator builds
    many artifacts from the same calibration images), with its note.
    """
    started = time.perf_counter()
    given, numerics = ir if ir is not None else calibration_ir(model, images, settings.split, settings.batch_size)
    if len(given) != len(images):
        raise ValueError(f"{len(given)} IRs given for {len(images)} calibration images")
    features = np.asarray(given, dtype=np.float64)
    if progress:
        progress("head", len(images), len(images))
    n, c, h, w = features.shape
    k = c * h * w
    mean = features.mean(axis=0)
    basis = _channel_klt(features, mean) if settings.method in ("nair", "pca", "klt") else np.eye(c)
    base = _separable_artifact(model_name, model_sha256, settings, mean, basis)
    task_model = _task_model(model, images, settings) if settings.importance == "task" else None
    comp = _components(model, features, settings, base, progress, task_model)
    fill = _component_fill(comp, mean, settings.fill, settings.joint_klt)
    bits = bits_schedule(k, list(settings.bit_bands))
    lo, step = fit_quantiser(comp.values, bits, settings.clip_quantiles)
    # The codes as the sensor makes them, from the stored float32 ranges.
    tables = (fit_tables(quantise(comp.values, lo.astype(np.float32), step.astype(np.float32), bits), bits)
              if settings.entropy_coding else NO_TABLES)
    plan = geometric_plan(k, bits, settings.first_fragment, settings.growth, settings.max_fragment)
    predictor = _fill_predictor(comp.values, lo, step, bits, settings) if settings.predict_fill else {}
    meta: dict[str, Any] = {"method": settings.method, "settings": settings.recorded(), "calibration_images": int(n),
                            "provenance": {"calibration_seconds": round(time.perf_counter() - started, 2),
                                           "numerics": numerics}}
    return NairArtifact(
        model_name=model_name,
        model_sha256=model_sha256,
        split=settings.split,
        ir_shape=(c, h, w),
        spatial_dct=base.spatial_dct,
        mean=mean.astype(np.float32),
        channel_basis=basis.astype(np.float32),
        order=comp.order.astype(np.int64),
        fill=fill.astype(np.float32),
        lo=lo.astype(np.float32),
        step=step.astype(np.float32),
        bits=bits,
        plan=plan,
        meta=meta,
        mix=comp.mix.astype(np.float32),
        tables=tables,
        **predictor,
    )


def _fill_predictor(values: np.ndarray, lo: np.ndarray, step: np.ndarray, bits: np.ndarray,
                    settings: CalibrationSettings) -> dict[str, np.ndarray]:
    """The fill estimator's artifact arrays, fitted on the prefix as the hub dequantises it (float32 ranges, as the
    artifact stores them) against the components the device computed."""
    if settings.fill != "mean":
        raise ValueError("a predicted fill estimates the components around the calibration mean: fill must be mean")
    longest = max((length for length in PREDICT_LENGTHS if length < values.shape[1]), default=0)
    lo32, step32 = lo[:longest].astype(np.float32), step[:longest].astype(np.float32)
    received = dequantise(quantise(values[:, :longest], lo32, step32, bits[:longest]), lo32, step32)
    predictor = fit_predictor(received, values)
    return {"predict_lengths": predictor.lengths, "predict_weights": predictor.weights,
            "predict_basis": predictor.basis}


def _separable_artifact(model_name: str, model_sha256: str, settings: CalibrationSettings, mean: np.ndarray,
                        basis: np.ndarray) -> NairArtifact:
    """A float64 artifact holding only the separable transform (``mean``, channel ``basis``, the DCT for ``nair``):
    what turns the calibration IR into components in natural order."""
    c, h, w = mean.shape
    k = c * h * w
    return NairArtifact(
        model_name=model_name,
        model_sha256=model_sha256,
        split=settings.split,
        ir_shape=(c, h, w),
        spatial_dct=settings.method == "nair",
        mean=mean,
        channel_basis=basis,
        order=np.arange(k, dtype=np.int64),
        fill=np.zeros(k, dtype=np.float32),
        lo=np.zeros(k, dtype=np.float32),
        step=np.ones(k, dtype=np.float32),
        bits=np.full(k, 8, dtype=np.uint8),
        plan=np.array([[0, k]], dtype=np.int64),
    )


@dataclass(frozen=True, slots=True)
class _Components:
    """The calibration IR as components: the order chosen, the joint KLT and the values, ``(N, K)`` in that order."""

    base: NairArtifact
    """The separable transform; with a joint KLT, also the order and the KLT (applied by its transform)."""
    order: np.ndarray
    mix: np.ndarray
    values: np.ndarray


def _task_model(model: ResNet, images: np.ndarray, settings: CalibrationSettings) -> tuple[Any, torch.dtype]:
    """The model whose tail scores task importance, and its dtype: the float64 twin where the model has one."""
    if settings.method not in ("nair", "klt", "variance"):
        raise ValueError(f"task importance orders the components of nair, klt or variance, not {settings.method!r}")
    double, _why = float64_twin(model, images[: settings.batch_size], settings.split)
    return (double, torch.float64) if double is not None else (model, torch.float32)


def _components(model: ResNet, features: np.ndarray, settings: CalibrationSettings, base: NairArtifact,
                progress: ProgressFn | None, task_model: tuple[Any, torch.dtype] | None = None) -> _Components:
    """Transform the calibration IR, order its components for ``settings.method`` and apply the joint KLT if any."""
    n, c, h, w = features.shape
    k = c * h * w
    with torch.no_grad():
        natural = NairTransform(base, torch.float64).forward(torch.from_numpy(features)).numpy()
    if progress:
        progress("transform", 1, 1)
    if task_model is not None:
        scorer, dtype = task_model
        scores = task_scores(scorer, settings.split, NairTransform(base, dtype), natural[:TASK_IMAGES])
        order = np.argsort(-scores, kind="stable")
        if progress:
            progress("task importance", 1, 1)
    elif settings.method in ("nair", "klt", "variance"):
        order = np.argsort(-natural.var(axis=0), kind="stable")
    elif settings.method == "pca":
        order = _channel_major_order(np.arange(c), h, w)
    elif settings.method == "prune":
        order = _channel_major_order(np.argsort(-prune_scores(model, settings.split, features), kind="stable"), h, w)
    else:
        order = np.arange(k)
    components = natural[:, order]
    del natural
    lead = settings.joint_klt
    if lead and settings.method != "nair":
        raise ValueError(f"a joint KLT (joint_klt={lead}) is part of the nair method, not {settings.method!r}")
    if not 0 <= lead <= k:
        raise ValueError(f"joint_klt={lead}: the IR has {k} components (0 turns the joint KLT off)")
    mix = NO_MIX
    if lead:
        head = components[:, :lead]
        mix = klt_basis(head.T @ head / n)  # components are centred: the calibration mean is their zero
        components[:, :lead] = head @ mix
        base = replace(base, order=order.astype(np.int64), mix=mix)
    return _Components(base, order, mix, components)


def _component_fill(comp: _Components, mean: np.ndarray, fill: Fill, lead: int) -> np.ndarray:
    """What stands in for a component that did not arrive, in component space: the calibration mean or a zero
    activation at the split."""
    if fill == "mean":
        # The calibration mean in component space: T(mean) = transform of (mean - mean), exactly zero. (Averaging
        # the components instead gives that zero plus rounding noise about 1e-16 which float32 keeps in full and
        # another CPU changes.)
        return _in_component_space(comp.base, torch.from_numpy(mean)[None], comp.order, lead)
    # zero activation at the split, expressed in component space
    c, h, w = mean.shape
    return _in_component_space(comp.base, torch.zeros(1, c, h, w, dtype=torch.float64), comp.order, lead)


def _in_component_space(base: NairArtifact, ir: torch.Tensor, order: np.ndarray, lead: int) -> np.ndarray:
    """One IR as components in ``order`` (``base`` holds the separable transform; with ``lead`` > 0 it holds the
    order and joint KLT too, and applies both itself)."""
    values = NairTransform(base, torch.float64).forward(ir).numpy()[0]
    return np.asarray(values if lead else values[order])
