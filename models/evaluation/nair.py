"""``nairbus evaluate nair``: NAIR against every baseline on the same test frames, as data.

Every method is a (model, calibration settings) pair pushed through the same :class:`NairPipeline` the live bus
uses, so a figure here is what the bus would deliver. Calibration sees training images only; accuracy is measured
on the test split. The heavy part (the head) runs once per model; each condition then costs one pass of the tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.evaluation import stats
from nairbus.models.evaluation.matrices import load_matrix
from nairbus.models.loss import LossModel
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.calibration import (
    BIT_ALLOCATIONS,
    BitBands,
    CalibrationSettings,
    Fill,
    calibrate,
    calibration_ir,
    format_bit_bands,
)
from nairbus.models.nair.pipeline import NairPipeline

ProgressFn = Callable[[str], None]

MATRIX = load_matrix("nair")
"""The experiment matrix (methods, ablation steps, rate bands, conditions) as data: models/experiments/nair.toml."""
PREFIXES: tuple[float, ...] = tuple(MATRIX["prefixes"])
RATE_BANDS: tuple[tuple[str, BitBands], ...] = tuple((name, BIT_ALLOCATIONS[name]) for name in MATRIX["rate_bands"])
"""Bit allocations of the rate–accuracy curve: ``(label, [(fraction_end, bits), ...])``, bits falling with rank."""
LOSS_RATES: tuple[float, ...] = tuple(MATRIX["loss_rates"])


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One way of sending the IR: which model, which calibration, and what it is."""

    model: str
    calibration: CalibrationSettings
    description: str


JOINT_KLT_CANDIDATES: tuple[int, ...] = tuple(MATRIX["joint_klt_candidates"])


def method_specs(split: str, taildrop_fill: Fill = "zero", model: str = "base",
                 joint_klt: int = 0) -> dict[str, MethodSpec]:
    """NAIR and the baselines the evaluator always reports beside it, for ``model``, from the experiment matrix
    (``taildrop_fill``: the fill the tail-drop model's manifest chose on validation; the evaluator skips a method
    whose model it was not given, e.g. ``taildrop`` for a model without a retrained tail-drop baseline;
    ``joint_klt``: NAIR's joint-KLT length, ``calibrate --joint-klt``)."""
    cal = CalibrationSettings(split=split)
    specs = {}
    for name, row in MATRIX["methods"].items():
        fill = taildrop_fill if row["fill"] == "manifest" else row["fill"]
        settings = replace(cal, method=row["method"], fill=fill)
        description = row["description"].replace("{fill}", fill)
        if joint_klt and row["method"] == "nair":
            settings = replace(settings, joint_klt=joint_klt)
            description = description.replace(", components", f", joint KLT of the leading {joint_klt}, components")
        specs[name] = MethodSpec(row["model"].replace("{model}", model), settings, description)
    return specs


def ablation_specs(split: str, model: str = "base", joint_klt: int = 0) -> dict[str, MethodSpec]:
    """NAIR built up one step at a time (plus the fill and bit-allocation choices), from the experiment matrix;
    every NAIR step after the joint KLT's has the evaluation's ``joint_klt``."""
    cal = CalibrationSettings(split=split)
    specs = {}
    for key, row in MATRIX["ablation"].items():
        if row.get("joint") and not joint_klt:
            continue
        name = (row["without_joint"] if joint_klt and "without_joint" in row else key).replace("{joint}",
                                                                                                str(joint_klt))
        lead = int(row.get("joint_klt", joint_klt)) if row["method"] == "nair" else 0
        step = replace(cal, method=row["method"], fill=row.get("fill", "mean"), joint_klt=lead)
        if "bits" in row:
            step = replace(step, bit_bands=((1.0, int(row["bits"])),))
        if "clip_quantiles" in row:
            step = replace(step, clip_quantiles=tuple(row["clip_quantiles"]))
        if "importance" in row:
            step = replace(step, importance=row["importance"])
        if row.get("predict_fill"):
            step = replace(step, predict_fill=True)
        specs[name] = MethodSpec(model, step, "")
    return specs


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """What ``nairbus evaluate nair`` measures."""

    frames: int = 10000
    calibration_images: int = 10000
    prefixes: tuple[float, ...] = PREFIXES
    ablation_prefixes: tuple[float, ...] = tuple(MATRIX["ablation_prefixes"])
    loss_rates: tuple[float, ...] = LOSS_RATES
    mean_burst: float = 3.0
    loss_seed: int = 7
    rate_bands: tuple[tuple[str, tuple[tuple[float, int], ...]], ...] = RATE_BANDS
    rate_budgets: tuple[int, ...] = tuple(MATRIX["rate_budgets"])
    batch_size: int = 1000
    methods: tuple[str, ...] = field(default=())
    joint_klt: int = 0


@dataclass
class Evaluated:
    """A calibrated method with its test-set codes, ready to be measured under any channel condition."""

    pipeline: NairPipeline
    codes: np.ndarray
    calibration_seconds: float


def _budget(pipeline: NairPipeline, fraction: float) -> int:
    return max(1, round(fraction * pipeline.artifact.total_bytes()))


def measure_frames(codes: np.ndarray, pipeline: NairPipeline, labels: np.ndarray, budget: int | None,
                   loss: LossModel, batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-frame correctness and the summary (accuracy with its 95 % interval, mean payload bytes, mean fraction
    received) of one method under one condition."""
    probs, fractions, payloads = pipeline.offline_probs(codes, np.arange(len(labels)), budget, loss, batch)
    correct = probs.argmax(1) == labels
    return correct, {"accuracy": float(correct.mean()), "ci95": stats.accuracy(correct)["ci95"],
                     "bytes": float(payloads.mean()), "fraction_received": float(fractions.mean())}


def measure(ev: Evaluated, labels: np.ndarray, budget: int | None, loss: LossModel, batch: int) -> dict[str, Any]:
    """:func:`measure_frames` of a built method on the test frames, summary only."""
    return measure_frames(ev.codes, ev.pipeline, labels, budget, loss, batch)[1]


def predictions(ev: Evaluated, budget: int | None, batch: int) -> np.ndarray:
    """Class predictions of a method at a budget, no loss."""
    return np.asarray(ev.pipeline.offline_probs(ev.codes, np.arange(len(ev.codes)), budget, LossModel(), batch)[0]
                      .argmax(1))


class Evaluator:
    """Holds the models, their test-set IRs and the calibration images; builds and measures methods."""

    def __init__(self, models: dict[str, tuple[ResNet, ModelManifest]], calibration: np.ndarray, test: Dataset,
                 settings: EvalSettings, progress: ProgressFn | None = None, validation: Dataset | None = None,
                 validation_source: str = "") -> None:
        self.models = models
        self.calibration = calibration
        self.validation = validation
        self.validation_source = validation_source
        self._validation_ir: dict[tuple[str, str], np.ndarray] = {}
        self.images = test.images[: settings.frames]
        self.labels = test.labels[: settings.frames]
        self.settings = settings
        self.progress = progress or (lambda _msg: None)
        self._ir: dict[tuple[str, str], np.ndarray] = {}
        self._calibration_ir: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
        self._head_seconds: dict[tuple[str, str], float] = {}

    def test_ir(self, model_name: str, split: str, pipeline: NairPipeline) -> np.ndarray:
        """The test-set IR of a model at a split (computed once)."""
        key = (model_name, split)
        if key not in self._ir:
            b = self.settings.batch_size
            self._ir[key] = np.concatenate([pipeline.head(self.images[s : s + b])
                                            for s in range(0, len(self.images), b)])
        return self._ir[key]

    def validation_codes(self, model_name: str, ev: Evaluated) -> np.ndarray:
        """The validation frames encoded by a built method (the head runs once per model and split)."""
        if self.validation is None:
            raise ValueError("this evaluator has no validation split")
        key = (model_name, ev.pipeline.artifact.split)
        b = self.settings.batch_size
        if key not in self._validation_ir:
            images = self.validation.images
            self._validation_ir[key] = np.concatenate([ev.pipeline.head(images[s : s + b])
                                                       for s in range(0, len(images), b)])
        ir = self._validation_ir[key]
        return np.concatenate([ev.pipeline.encode_ir(ir[s : s + b]) for s in range(0, len(ir), b)])

    def build(self, spec: MethodSpec) -> Evaluated:
        """Calibrate ``spec`` on the calibration images and encode the test frames."""
        model, manifest = self.models[spec.model]
        key = (spec.model, spec.calibration.split)
        if key not in self._calibration_ir:
            started = time.perf_counter()
            self._calibration_ir[key] = calibration_ir(model, self.calibration, spec.calibration.split,
                                                       spec.calibration.batch_size)
            self._head_seconds[key] = time.perf_counter() - started
        started = time.perf_counter()
        artifact = calibrate(model, manifest.name, manifest.sha256, self.calibration, spec.calibration,
                             ir=self._calibration_ir[key])
        # The wall time of a stand-alone calibration: the (shared, cached) head pass plus the fit.
        seconds = self._head_seconds[key] + time.perf_counter() - started
        pipeline = NairPipeline(model, manifest, artifact)
        ir = self.test_ir(spec.model, spec.calibration.split, pipeline)
        b = self.settings.batch_size
        codes = np.concatenate([pipeline.encode_ir(ir[s : s + b]) for s in range(0, len(ir), b)])
        return Evaluated(pipeline, codes, seconds)

    def prefix_curve(self, ev: Evaluated, prefixes: tuple[float, ...] | None = None) -> dict[str, dict[str, Any]]:
        """Accuracy (with its interval, and bytes) when only the first fraction of the IR's bytes arrives; each entry
        also holds the per-frame ``correct`` vector for paired tests (drop it before writing JSON)."""
        out = {}
        for f in prefixes or self.settings.prefixes:
            correct, row = measure_frames(ev.codes, ev.pipeline, self.labels, _budget(ev.pipeline, f), LossModel(),
                                          self.settings.batch_size)
            out[f"{f:g}"] = {**row, "correct": correct}
        return out

    def loss_curves(self, ev: Evaluated) -> tuple[dict[str, float], dict[str, float]]:
        """Accuracy with every fragment sent and a share of them lost: independently, and in bursts."""
        s = self.settings
        random_loss = {f"{p:g}": measure(ev, self.labels, None, LossModel("random", p=p, seed=s.loss_seed),
                                         s.batch_size)["accuracy"] for p in s.loss_rates}
        bursty = {f"{p:g}": measure(ev, self.labels, None,
                                    LossModel.bursty_with_rate(p, s.mean_burst, seed=s.loss_seed),
                                    s.batch_size)["accuracy"] for p in s.loss_rates}
        return random_loss, bursty


def mature_predictions(model: ResNet, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The mature model's own predictions (no split, no codec); a plain module without an input spec takes the data
    set's 28x28 grey frames."""
    from nairbus.models.architectures.registry import fashion_mnist_spec

    spec = getattr(model, "input_spec", None) or fashion_mnist_spec()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = spec.prepare(images[start : start + batch])
            out.append(model(x).argmax(1).numpy())
    return np.concatenate(out)


def transform_only_predictions(ev: Evaluated, ir: np.ndarray, batch: int) -> np.ndarray:
    """Predictions after ``T`` then ``T⁻¹`` in float32 with no quantisation: shows the transform is invertible."""
    out = []
    with torch.no_grad():
        for start in range(0, len(ir), batch):
            x = torch.from_numpy(ir[start : start + batch])
            back = ev.pipeline.transform.inverse(ev.pipeline.transform.forward(x))
            out.append(ev.pipeline.model.tail(back, ev.pipeline.artifact.split).argmax(1).numpy())
    return np.concatenate(out)


def run_evaluation(evaluator: Evaluator, split: str, model: str = "base",
                   calibrate_command: str = "nairbus calibrate") -> dict[str, Any]:
    """Every measurement of the NAIR report for ``model`` (default the shipped base model), as a JSON-ready dict.

    ``calibrate_command`` is how the rate points' artifacts are made (for a user's model: ``nairbus calibrate
    --model NAME --images-dir DIR``, the folder holding the evaluator's calibration images)."""
    s = evaluator.settings
    started = time.perf_counter()
    mature = _mature_reference(evaluator, model)
    specs = method_specs(split, evaluator.models["taildrop"][1].extra("fill", "zero")
                         if "taildrop" in evaluator.models else "zero", model, s.joint_klt)
    report: dict[str, Any] = {"frames": len(evaluator.labels), "mature_accuracy": mature.accuracy,
                              "mature_ci95": stats.accuracy(mature.correct)["ci95"], "methods": {},
                              "statistics": "95 % Wilson intervals (ci95) on the test frames; paired comparisons by "
                                            "McNemar's exact test on the same frames, within_noise when p >= 0.05"}
    built, correct = _measure_methods(evaluator, specs, report["methods"])
    if "nair" in built:
        _add_nair_sections(evaluator, report, built["nair"], correct, mature, split, model, calibrate_command)
    report["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    report["settings"] = asdict(s)
    report["mature_model"] = {"name": mature.manifest.name, "sha256": mature.manifest.sha256,
                              "test_accuracy": mature.accuracy if mature.manifest.test_accuracy is None
                              else mature.manifest.test_accuracy}
    return report


@dataclass(frozen=True, slots=True)
class _Mature:
    """The mature model and its own predictions on the test frames (what every method is held against)."""

    model: ResNet
    manifest: ModelManifest
    pred: np.ndarray
    correct: np.ndarray
    accuracy: float


def _mature_reference(evaluator: Evaluator, model: str) -> _Mature:
    """Run the mature model ``model`` on the evaluator's test frames."""
    base_model, base_manifest = evaluator.models[model]
    pred = mature_predictions(base_model, evaluator.images, evaluator.settings.batch_size)
    correct = pred == evaluator.labels
    return _Mature(base_model, base_manifest, pred, correct, float(correct.mean()))


def _measure_methods(
    evaluator: Evaluator, specs: dict[str, MethodSpec], rows: dict[str, Any],
) -> tuple[dict[str, Evaluated], dict[str, dict[str, np.ndarray]]]:
    """Build each wanted method of ``specs`` whose model the evaluator has, measure its prefix and loss curves into
    ``rows``; returns the built methods and their per-frame correctness at each prefix."""
    s = evaluator.settings
    say = evaluator.progress
    correct: dict[str, dict[str, np.ndarray]] = {}
    built: dict[str, Evaluated] = {}
    for name in [m for m in specs if not s.methods or m in s.methods]:
        if specs[name].model not in evaluator.models:
            say(f"skipping {name}: model {specs[name].model!r} not available")
            continue
        say(f"{name}: calibrating and encoding")
        ev = built[name] = evaluator.build(specs[name])
        say(f"{name}: prefix curve")
        prefix = evaluator.prefix_curve(ev)
        say(f"{name}: loss curves")
        random_loss, bursty = evaluator.loss_curves(ev)
        model_manifest = evaluator.models[specs[name].model][1]
        correct[name] = {k: v["correct"] for k, v in prefix.items()}
        rows[name] = {
            "description": specs[name].description,
            "model": model_manifest.name,
            "model_full_accuracy": float("nan") if model_manifest.test_accuracy is None
                                   else model_manifest.test_accuracy,
            "prefix": {k: v["accuracy"] for k, v in prefix.items()},
            "prefix_ci95": {k: v["ci95"] for k, v in prefix.items()},
            "prefix_bytes": {k: v["bytes"] for k, v in prefix.items()},
            "random_loss": random_loss,
            "bursty_loss": bursty,
            "calibration_seconds": round(ev.calibration_seconds, 2),
        }
    return built, correct


def _add_nair_sections(evaluator: Evaluator, report: dict[str, Any], nair: Evaluated,
                       correct: dict[str, dict[str, np.ndarray]], mature: _Mature, split: str, model: str,
                       calibrate_command: str) -> None:
    """Add what is measured of NAIR alone to ``report``: the lossless check, the paired tests, the rate–accuracy
    curve and its highlighted point, the ablation, the joint-KLT lengths on validation and the bars."""
    s = evaluator.settings
    say = evaluator.progress
    report["nair_artifact_sha256"] = nair.pipeline.artifact.sha256
    report["nair_full"] = _nair_full(evaluator, nair, split, model, mature.pred)
    report["comparisons"] = comparisons(correct, mature.correct)
    say("rate-accuracy curve")
    report["rate_accuracy"] = rate_accuracy(evaluator, split, model, calibrate_command)
    if evaluator.validation is not None:
        report["validation"] = {
            "source": evaluator.validation_source, "frames": len(evaluator.validation),
            "mature_accuracy": float((mature_predictions(mature.model, evaluator.validation.images, s.batch_size)
                                      == evaluator.validation.labels).mean()),
            "used_for": "choosing the rate-accuracy point the bars highlight (fewest bytes within 1 point of the "
                        "mature model); the tail-drop baseline's checkpoint and fill (its manifest)"}
    report["fewest_bytes_within_1pt"] = fewest_bytes_point(report, mature.correct)
    for point in report["rate_accuracy"]:
        point.pop("correct", None)
    say("ablation")
    report["ablation"] = {}
    for name, spec in ablation_specs(split, model, s.joint_klt).items():
        say(f"ablation: {name}")
        curve = evaluator.prefix_curve(evaluator.build(spec), s.ablation_prefixes)
        report["ablation"][name] = {k: v["accuracy"] for k, v in curve.items()}
    if evaluator.validation is not None:
        say("joint KLT lengths on validation")
        report["joint_klt_validation"] = joint_klt_validation(evaluator, split, model)
    report["bars"] = bars(report)


def _nair_full(evaluator: Evaluator, nair: Evaluated, split: str, model: str,
               mature_pred: np.ndarray) -> dict[str, float]:
    """NAIR with the whole IR received: agreement with the mature model at 8 bits and with no quantisation at all."""
    batch = evaluator.settings.batch_size
    full = predictions(nair, None, batch)
    ir = evaluator.test_ir(model, split, nair.pipeline)
    exact = transform_only_predictions(nair, ir, batch)
    return {
        "agreement_with_mature_8bit": float((full == mature_pred).mean()),
        "agreement_with_mature_transform_only": float((exact == mature_pred).mean()),
        "accuracy_8bit": float((full == evaluator.labels).mean()),
    }


def rate_accuracy(evaluator: Evaluator, split: str, model: str = "base",
                  calibrate_command: str = "nairbus calibrate") -> list[dict[str, Any]]:
    """Payload bytes per frame against accuracy for NAIR over bit allocations and per-frame byte budgets.

    Every allocation is measured at each budget below its full size, and once with the whole IR, on the test frames
    (``accuracy``, ``ci95``) and, when the evaluator has one, on the validation split (``validation_accuracy``: what
    a point is chosen by). Each point names the ``nairbus calibrate`` command that writes its artifact and that
    artifact's sha256. The per-frame test correctness rides along as ``correct`` (dropped from the JSON).
    """
    s = evaluator.settings
    points = []
    for label, bands in s.rate_bands:
        evaluator.progress(f"rate-accuracy: {label}")
        ev = evaluator.build(MethodSpec(model, CalibrationSettings(split=split, bit_bands=bands,
                                                                   joint_klt=s.joint_klt), ""))
        total = ev.pipeline.artifact.total_bytes()
        val_codes = evaluator.validation_codes(model, ev) if evaluator.validation is not None else None
        default_split = evaluator.models[model][1].default_split or "stage2"
        command = calibrate_command + ("" if split == default_split else f" --split {split}") + (
            "" if bands == ((1.0, 8),) else f" --bit-bands {format_bit_bands(bands)}") + (
            "" if s.calibration_images == 10000 else f" --images {s.calibration_images}") + (
            f" --joint-klt {s.joint_klt}" if s.joint_klt else "")
        for budget in [b for b in s.rate_budgets if b < total] + [total]:
            correct, m = measure_frames(ev.codes, ev.pipeline, evaluator.labels, budget, LossModel(), s.batch_size)
            point = {"method": "nair", "quantisation": label, "bit_bands": format_bit_bands(bands),
                     "budget_bytes": budget, "budget_fraction": budget / total, "bytes": m["bytes"],
                     "accuracy": m["accuracy"], "ci95": m["ci95"], "command": command,
                     "artifact_sha256": ev.pipeline.artifact.sha256, "correct": correct}
            if val_codes is not None and evaluator.validation is not None:
                point["validation_accuracy"] = measure_frames(val_codes, ev.pipeline, evaluator.validation.labels,
                                                              budget, LossModel(), s.batch_size)[1]["accuracy"]
            points.append(point)
    return points


def joint_klt_validation(evaluator: Evaluator, split: str, model: str) -> dict[str, Any]:
    """NAIR's validation accuracy at the ablation prefixes for every joint-KLT length of the matrix (those the IR
    can hold), and which length is best by their mean — what ``--joint-klt`` is chosen by, never the test split."""
    s = evaluator.settings
    assert evaluator.validation is not None
    rows: dict[str, dict[str, float]] = {}
    n_components: int | None = None
    for lead in JOINT_KLT_CANDIDATES:
        if n_components is not None and lead > n_components:
            continue
        evaluator.progress(f"joint KLT {lead}: validation")
        ev = evaluator.build(MethodSpec(model, CalibrationSettings(split=split, joint_klt=lead), ""))
        n_components = ev.pipeline.artifact.n_components
        codes = evaluator.validation_codes(model, ev)
        rows[str(lead)] = {f"{f:g}": measure_frames(codes, ev.pipeline, evaluator.validation.labels,
                                                    _budget(ev.pipeline, f), LossModel(), s.batch_size)[1]["accuracy"]
                           for f in s.ablation_prefixes}
    best = max(rows, key=lambda k: (float(np.mean(list(rows[k].values()))), -int(k)))
    return {"split": evaluator.validation_source, "prefixes": list(s.ablation_prefixes),
            "validation_accuracy": rows, "criterion": "highest mean validation accuracy over the prefixes (ties: "
            "the shorter)", "best": int(best), "evaluated": s.joint_klt, "evaluated_is_best": int(best) == s.joint_klt}


def comparisons(correct: dict[str, dict[str, np.ndarray]], mature_correct: np.ndarray) -> dict[str, Any]:
    """The paired tests behind the bars: NAIR against the retrained tail-drop model at 5/10/25/50 % of the IR, and
    NAIR's prefixes against the mature model (McNemar on the same test frames)."""
    out: dict[str, Any] = {}
    nair = correct.get("nair", {})
    if "taildrop" in correct:
        out["nair_vs_taildrop"] = {k: stats.mcnemar(nair[k], correct["taildrop"][k], "nair", "taildrop")
                                   for k in ("0.05", "0.1", "0.25", "0.5") if k in nair and k in correct["taildrop"]}
    out["nair_vs_mature"] = {k: stats.mcnemar(v, mature_correct, "nair", "mature") for k, v in nair.items()}
    return out


def fewest_bytes_within(points: list[dict[str, Any]], mature: float, tolerance: float = 0.01,
                        key: str = "accuracy") -> dict[str, Any] | None:
    """The rate–accuracy point with the fewest bytes whose ``key`` accuracy is at most ``tolerance`` below
    ``mature`` (None: none is)."""
    return min((p for p in points if p.get(key, -1.0) >= mature - tolerance), key=lambda p: p["bytes"], default=None)


def fewest_bytes_point(report: dict[str, Any], mature_correct: np.ndarray) -> dict[str, Any] | None:
    """The highlighted rate point, chosen on validation (fewest bytes with validation accuracy within 1 point of the
    mature model's validation accuracy), reported on test with its interval and a McNemar test against the mature
    model; ``None`` without a validation split."""
    validation = report.get("validation")
    if validation is None:
        return None
    point = fewest_bytes_within(report["rate_accuracy"], validation["mature_accuracy"], key="validation_accuracy")
    if point is None:
        return {"chosen_on": "validation", "point": None}
    return {"chosen_on": "validation",
            "criterion": "fewest payload bytes with validation accuracy at most 1 point below the mature model's "
                         "validation accuracy",
            "point": {k: v for k, v in point.items() if k != "correct"},
            "vs_mature": stats.mcnemar(point["correct"], mature_correct, "nair", "mature")}


def bars(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars, computed from the measured figures (nothing here is typed in)."""
    mature = report["mature_accuracy"]
    methods = report["methods"]
    nair = methods["nair"]["prefix"]
    out: dict[str, Any] = {
        "nair_share_of_mature_at_10pct": nair["0.1"] / mature,
        "nair_share_of_mature_at_25pct": nair["0.25"] / mature,
        "nair_full_agrees_with_mature_transform_only": report["nair_full"]["agreement_with_mature_transform_only"],
        "nair_full_agrees_with_mature_8bit": report["nair_full"]["agreement_with_mature_8bit"],
    }
    if "naive-mean" in methods:
        out["nair_over_naive_mean_at_10pct"] = nair["0.1"] / max(methods["naive-mean"]["prefix"]["0.1"], 1e-9)
    if "taildrop" in methods:
        td = methods["taildrop"]["prefix"]
        out["nair_minus_taildrop"] = {k: nair[k] - td[k] for k in ("0.05", "0.1", "0.25", "0.5") if k in td}
    chosen = report.get("fewest_bytes_within_1pt") or {}
    best = chosen.get("point")
    out["min_bytes_within_1pt_of_mature"] = best["bytes"] if best else None
    if best:
        out["min_bytes_within_1pt_chosen_on"] = chosen["chosen_on"]
        out["min_bytes_within_1pt_accuracy"] = best["accuracy"]
        out["min_bytes_within_1pt_ci95"] = best["ci95"]
        out["min_bytes_within_1pt_quantisation"] = best.get("quantisation")
        out["min_bytes_within_1pt_command"] = best["command"]
    if "nair_vs_taildrop" in report.get("comparisons", {}):
        out["nair_vs_taildrop_p_value"] = {k: v["p_value"]
                                           for k, v in report["comparisons"]["nair_vs_taildrop"].items()}
    return out
