"""``nairbus evaluate map``: every representation a sensor can send, measured on the same frames at every wire cap
from 40 B to the whole IR, with the device's cost beside it, and the Pareto front per device budget.

What is measured, per representation (:mod:`nairbus.models.evaluation.map` holds the pure core):

image families
    every family of ``models/experiments/images.toml`` (``FAMILY_LADDERS``): each rung measured with
    :func:`nairbus.models.evaluation.image.measure_spec` (decoded through the strict decoder, whole mature model at
    the hub); per frame the highest rung whose whole PUBLISH fits the cap;
NAIR at every split point
    the model's artifact for the split (the shipped ones, then ``--artifacts-dir``); a split with none is calibrated
    here with the committed calibration (:func:`nairbus.models.nair.calibration.calibrate`, the settings of
    ``nairbus calibrate --split S``) into ``--artifacts-dir`` and the report says so. Per frame the longest
    importance-ordered prefix whose message fits the cap (:meth:`NairFrameEncoder.prefix_for`, the live sensor's
    rule); unlimited: the whole IR, in as many fragments as the sensor cuts it into;
decision
    the whole model on the device, its top-1 as the lean ``TopK`` (:class:`DecisionEncoder`, k = 1);
VP
    each variant of the shipped family alone sending its top-1, and the family's ensemble (top-k with the family's
    k from each of its devices, :func:`nairbus.models.vp.fusion.fuse_batch`), whose wire bytes are the sum of its
    variants' messages (sent when the sum fits the cap).

Bytes are whole MQTT 5 PUBLISH packets under a topic alias with the evaluation's counters (frame ``i`` from 0:
``seq = frame_id = i + 1``, captured ``33 i`` ms after the epoch), as ``nairbus evaluate images`` and ``wire`` count
them. Device cost: the MAC shares of :func:`nairbus.models.evaluation.cost.representations`, and Pi-class CPU ms per
frame and peak RSS from the cost report (``nairbus evaluate cost``) when it measured this very model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.agents.nair.outgoing import DecisionEncoder
from nairbus.agents.tools.devicecost import find_artifacts
from nairbus.agents.tools.map_nair import coded_entry, nair_arrays
from nairbus.models.data.fashion_mnist import Dataset, validation_split
from nairbus.models.data.registry import load_data
from nairbus.models.evaluation.cost import DECISION_K, model_macs, model_probs, representations, transform_macs
from nairbus.models.evaluation.image import (
    FAMILY_LADDERS,
    FRAME_INTERVAL_MS,
    frame_counters,
    mature_predictor,
    measure_families,
    wire_settings,
)
from nairbus.models.evaluation.map import (
    DEFAULT_CAPS,
    DEFAULT_MS_BUDGETS,
    DEFAULT_SHARE_BUDGETS,
    Cap,
    DeviceCost,
    MapEntry,
    budgets,
    cap_label,
    entry_json,
    fixed_arrays,
    ladder_arrays,
    memo_predictor,
    pareto_front,
    versus_best_image,
)
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import load_model
from nairbus.models.vp.family import LoadedVariant, load_family, softmax_outputs
from nairbus.models.vp.fusion import fuse_batch
from nairbus.models.vp.manifest import FamilyManifest
from nairbus.models.zoo import REPORTS_DIR, model_option, report_path
from nairbus.schemas.lean import LeanContext

__all__ = ["MapSettings", "evaluate_map", "nair_arrays", "topk_wire"]

ProgressFn = Callable[[str], None]
DEFAULT_ARTIFACTS_DIR = Path("build/map-artifacts")
"""Where the map keeps the NAIR artifacts it calibrates for splits that ship none (git-ignored)."""


@dataclass(frozen=True, slots=True)
class MapSettings:
    """One ``nairbus evaluate map`` run."""

    model: str = "base"
    frames: int | None = None
    """Test frames (the first N; None: all 10 000)."""
    validation_frames: int = 5000
    """Frames of ``fashion_mnist.validation_split`` every choice is made on."""
    caps: tuple[Cap, ...] = DEFAULT_CAPS
    share_budgets: tuple[float, ...] = DEFAULT_SHARE_BUDGETS
    ms_budgets: tuple[float, ...] = DEFAULT_MS_BUDGETS
    artifacts_dir: Path = DEFAULT_ARTIFACTS_DIR
    calibration_images: int = 10000
    """Training images a missing split is calibrated on (the first of the seed-0 permutation, as ``nairbus
    calibrate``: disjoint from the validation split)."""
    cost_dir: Path = REPORTS_DIR
    """Where the cost reports (``cost.json``, ``cost-<model>.json``) are read from."""
    families: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(FAMILY_LADDERS))
    data_dir: Path | None = None
    batch_size: int = 1000
    coded_splits: tuple[str, ...] = ()
    """Splits where range-coded NAIR is mapped too, its allocation chosen per cap (:mod:`.map_nair`)."""

    def command(self) -> str:
        """The command line that reproduces the report (options left at their defaults are not repeated)."""
        default = MapSettings()
        parts = ["nairbus evaluate map" + model_option(self.model)]
        if self.frames is not None:
            parts.append(f"--frames {self.frames}")
        for name in ("validation_frames", "artifacts_dir", "calibration_images"):
            if getattr(self, name) != getattr(default, name):
                parts.append(f"--{name.replace('_', '-')} {getattr(self, name)}")
        parts += [f"--coded-split {split}" for split in self.coded_splits]
        return " ".join(parts)


@dataclass
class _Run:
    """What every measurement of one run shares."""

    settings: MapSettings
    net: Any
    manifest: ModelManifest
    validation: Dataset
    test: Dataset
    say: ProgressFn
    macs_model: int = 0
    shares: dict[str, DeviceCost] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# --- bytes on the wire ----------------------------------------------------------------------------------------------


def topk_wire(probs: np.ndarray, k: int) -> np.ndarray:
    """Wire bytes of each frame's lean ``TopK`` (the decision's and a VP variant's message) with the evaluation's
    counters, built by the sensor's own encoder."""
    encoder = DecisionEncoder(k, LeanContext("s", "s", 0.0, 10.0), "t")
    seq, frame_id, capture_ms = frame_counters(len(probs))
    out = np.zeros(len(probs), dtype=np.int64)
    for i in range(len(probs)):
        message = encoder.message(probs[i], int(frame_id[i]), int(seq[i]), capture_ms[i] / 1000.0, None)
        assert message is not None  # no budget: always built
        out[i] = message.wire_bytes
    return out


# --- device cost ----------------------------------------------------------------------------------------------------


def _cost_rows(path: Path, sha256: str) -> tuple[dict[str, dict[str, Any]], str]:
    """The measured rows of a cost report by representation name, if it measured the model of ``sha256``; else no
    rows and why."""
    import json

    if not path.is_file():
        return {}, f"not measured: {path} is missing (nairbus evaluate cost)"
    report = json.loads(path.read_text())
    if report.get("model_sha256") != sha256:
        return {}, (f"not measured: {path} measured another build of {report.get('model')} "
                    f"({str(report.get('model_sha256'))[:12]}); rerun its command")
    rows = {row["name"]: row for row in report.get("representations", []) if "error" not in row}
    return rows, f"{path} ({report.get('command')}): median CPU ms per frame, peak RSS"


def _with_cpu(cost: DeviceCost, rows: Mapping[str, dict[str, Any]], name: str, source: str) -> DeviceCost:
    """``cost`` with the CPU ms and RSS measured for ``name``, or the reason they are missing."""
    row = rows.get(name)
    if row is None:
        where = source.split(" ", maxsplit=1)[0]
        why = source if source.startswith("not measured") else f"not measured: {name} is not in {where}"
        return DeviceCost(cost.macs_device, cost.macs_model, source=why)
    if str(row.get("artifact", "")).startswith("no artifact"):
        source += " (this split measured with an uncalibrated transform of the same operations)"
    return DeviceCost(cost.macs_device, cost.macs_model, float(row["cpu_ms_per_frame"]["median"]),
                      float(row["rss_mb_peak"]), source=source)


def _device_costs(run: _Run, family: FamilyManifest | None) -> None:
    """MAC shares of every representation (``cost.representations``), with the measured CPU ms and RSS."""
    total, heads, _shapes = model_macs(run.net)
    run.macs_model = total
    variant_macs = {v.name: v.macs for v in family.variants} if family is not None else {}
    reps = representations(total, heads, {}, variant_macs)
    s, manifest = run.settings, run.manifest
    rows, source = _cost_rows(s.cost_dir / report_path("cost", manifest.name).name, manifest.sha256)
    base = family.base if family is not None else None
    vp_rows, vp_source = (rows, source) if base is not None and base.sha256 == manifest.sha256 else _cost_rows(
        s.cost_dir / report_path("cost", str(base.name if base else None)).name, str(base.sha256 if base else None))
    for rep in reps:
        plain = DeviceCost(rep.macs_device, rep.macs_model)
        run.shares[rep.name] = (_with_cpu(plain, vp_rows, rep.name, vp_source) if rep.kind == "vp"
                                else _with_cpu(plain, rows, rep.name, source))


# --- measurements ---------------------------------------------------------------------------------------------------


def _image_entries(run: _Run) -> list[MapEntry]:
    """Every image family, on validation and test: per frame the best rung that fits the cap."""
    s, caps = run.settings, run.settings.caps
    predict = memo_predictor(mature_predictor(run.net, s.batch_size))
    measured = {}
    for name, data in (("validation", run.validation), ("test", run.test)):
        def say(spec: str, where: str = name) -> None:
            run.say(f"image {spec} ({where})")

        _ref, measured[name] = measure_families(data.images, data.labels, predict, s.families, say)
    cost = run.shares["image"]
    note = None
    if run.net.input_spec.channels != 1:
        note = (f"frames go as grey images, converted to the model's input ({run.net.input_spec.describe()}) at the "
                "hub; the sensor's image mode refuses such a model today")
    entries = []
    for family, ladder in s.families.items():
        arrays = {where: ladder_arrays(np.stack([r.wire for r in measured[where][family]]),
                                       np.stack([r.correct for r in measured[where][family]]), caps)
                  for where in ("validation", "test")}
        entries.append(MapEntry(f"image {family}", "image", cost, arrays["validation"], arrays["test"], note=note,
                                detail={"ladder": list(ladder)}))
    return entries


def _artifact_paths(run: _Run) -> tuple[dict[str, Path], set[str]]:
    """Per split point, the artifact the map measures: found (shipped, or cached in ``--artifacts-dir``), else
    calibrated now; and the splits calibrated in this run."""
    s, manifest = run.settings, run.manifest
    splits = tuple(manifest.split_points)
    found = find_artifacts(manifest.name, manifest.sha256, splits, s.artifacts_dir)
    made = set()
    for split in splits:
        if split not in found:
            found[split] = _calibrate(run, split)
            made.add(split)
    return {split: found[split] for split in splits}, made


def _calibration_images(run: _Run) -> np.ndarray:
    """The training images a split is calibrated on: the first ``calibration_images`` of the seed-0 permutation
    (as ``nairbus calibrate``), disjoint from the validation split."""
    train = load_data("train", data_dir=run.settings.data_dir)
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[: run.settings.calibration_images])
    return np.asarray(train.images[pick])


def _calibrate(run: _Run, split: str) -> Path:
    """Calibrate NAIR at ``split`` as ``nairbus calibrate --split S`` does, into ``--artifacts-dir``."""
    from nairbus.models.nair.calibration import CalibrationSettings, calibrate

    s, manifest = run.settings, run.manifest
    images = _calibration_images(run)
    path = s.artifacts_dir / f"{manifest.name}.{split}.nair.npz"
    run.say(f"calibrating NAIR at {split} on {len(images)} training images -> {path}")
    started = time.perf_counter()
    artifact = calibrate(run.net, manifest.name, manifest.sha256, images, CalibrationSettings(split=split))
    images_option = "" if s.calibration_images == 10000 else f" --images {s.calibration_images}"
    artifact.meta["provenance"] = {**artifact.meta.get("provenance", {}),
                                   "command": f"nairbus calibrate{model_option(manifest.name)} --split {split}"
                                              f"{images_option} --out {path}",
                                   "made_by": "nairbus evaluate map (no artifact shipped for this split)",
                                   "calibration_seconds": round(time.perf_counter() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return artifact.save(path)


def _artifact_detail(path: Path, artifact: NairArtifact, made_now: bool) -> dict[str, Any]:
    """What the report says of a NAIR artifact: file, hash, how it was made, its size, the transform's MACs."""
    provenance = artifact.meta.get("provenance", {})
    made_by_map = made_now or "made_by" in provenance
    return {"artifact": str(path), "artifact_sha256": artifact.sha256,
            "artifact_made_by": ("calibrated by nairbus evaluate map" + (" in this run" if made_now else
                                                                          " (cached)")) if made_by_map else "shipped",
            "calibration": {"command": provenance.get("command"), "settings": artifact.meta.get("settings"),
                            "calibration_images": artifact.meta.get("calibration_images")},
            "full_ir_data_bytes": artifact.total_bytes(), "n_components": artifact.n_components,
            "macs_transform": transform_macs(artifact)}


def _nair_entries(run: _Run) -> list[MapEntry]:
    """NAIR at every split point of the model, on validation and test."""
    paths, made = _artifact_paths(run)
    entries = []
    for split, path in paths.items():
        artifact = NairArtifact.load(path)
        pipeline = NairPipeline(run.net, run.manifest, artifact)
        arrays = {}
        for where, data in (("validation", run.validation), ("test", run.test)):
            run.say(f"NAIR {split} ({where})")
            codes = pipeline.encode_all(data.images)
            if int(artifact.bits.max()) <= 8:
                codes = codes.astype(np.uint8)  # halves the memory of a shallow split's codes
            arrays[where] = nair_arrays(pipeline, codes, data.labels, run.settings.caps)
        entries.append(MapEntry(f"nair-{split}", "nair", run.shares[f"nair-{split}"], arrays["validation"],
                                arrays["test"], split=split, detail=_artifact_detail(path, artifact, split in made)))
    for split in run.settings.coded_splits:
        if split not in paths:
            raise ValueError(f"--coded-split {split}: model {run.manifest.name} has no such split point "
                             f"({', '.join(paths)})")
        entries.append(coded_entry(run.net, run.manifest, split, run.shares[f"nair-{split}"], run.validation,
                                   run.test, run.settings.caps, _calibration_images(run), run.settings.artifacts_dir,
                                   run.say))
    return entries


def _decision_entry(run: _Run) -> MapEntry:
    """The whole model on the device, its top-1 in the lean TopK."""
    probs_of = model_probs(run.net)
    arrays = {}
    for where, data in (("validation", run.validation), ("test", run.test)):
        run.say(f"decision ({where})")
        probs = np.concatenate([probs_of(data.images[i: i + run.settings.batch_size])
                                for i in range(0, len(data.images), run.settings.batch_size)])
        arrays[where] = fixed_arrays(topk_wire(probs, DECISION_K), probs.argmax(1) == data.labels,
                                     run.settings.caps)
    return MapEntry("decision", "decision", run.shares["decision"], arrays["validation"], arrays["test"],
                    detail={"k": DECISION_K, "message": "lean TopK (agents.nair.outgoing.DecisionEncoder)"})


def _family() -> tuple[FamilyManifest | None, dict[str, LoadedVariant]]:
    """The shipped VP family (manifest and loaded variants), or none when it is not there."""
    try:
        return load_family()
    except FileNotFoundError:
        return None, {}


def _ensemble_cost(run: _Run, names: Sequence[str]) -> DeviceCost:
    """The VP ensemble's cost per device: its heaviest variant (each device runs one), on ``len(names)`` devices."""
    costs = [run.shares[f"vp-{name}"] for name in names]
    cpu = [c.cpu_ms for c in costs]
    rss = [c.rss_mb for c in costs]
    measured = all(v is not None for v in cpu)
    return DeviceCost(max(c.macs_device for c in costs), run.macs_model,
                      max(v for v in cpu if v is not None) if measured else None,
                      max(v for v in rss if v is not None) if measured else None, devices=len(costs),
                      source=("the heaviest variant's " + str(costs[0].source)) if measured else costs[0].source)


def _vp_entries(run: _Run, family: FamilyManifest | None, variants: Mapping[str, LoadedVariant]) -> list[MapEntry]:
    """Each VP variant alone (top-1), and the whole ensemble (top-k of every variant, fused)."""
    if not variants or family is None:
        return []
    s, k = run.settings, family.k
    base = family.base
    note = None if base is not None and base.sha256 == run.manifest.sha256 else (
        f"a variant of the shipped VP family, which was trained for {base.name if base else None!r} (its MAC share "
        f"is of "
        f"{run.manifest.name!r}'s MACs)")
    probs: dict[str, dict[str, np.ndarray]] = {}
    for where, data in (("validation", run.validation), ("test", run.test)):
        run.say(f"VP variants ({where})")
        probs[where] = {name: softmax_outputs(v.model, data.images, s.batch_size) for name, v in variants.items()}
    labels = {"validation": run.validation.labels, "test": run.test.labels}
    entries = []
    for name, variant in variants.items():
        arrays = {w: fixed_arrays(topk_wire(probs[w][name], 1), probs[w][name].argmax(1) == labels[w], s.caps)
                  for w in labels}
        entries.append(MapEntry(f"vp-{name}", "vp", run.shares[f"vp-{name}"], arrays["validation"], arrays["test"],
                                variant=name, note=note, detail={"k": 1, "fusion_weight": variant.weight}))
    weights = {name: v.weight for name, v in variants.items()}
    arrays = {w: fixed_arrays(np.stack([topk_wire(probs[w][name], k) for name in variants]).sum(axis=0),
                              fuse_batch(probs[w], weights, k).argmax(1) == labels[w], s.caps) for w in labels}
    entries.append(MapEntry("vp-ensemble", "vp", _ensemble_cost(run, list(variants)), arrays["validation"],
                            arrays["test"], note=(note or "") + (" " if note else "") + (
                                f"{len(variants)} devices, one variant each; wire bytes: the sum of their top-{k} "
                                "messages, sent when the sum fits the cap"),
                            detail={"k": k, "variants": list(variants), "fusion_weights": weights}))
    return entries


# --- the run --------------------------------------------------------------------------------------------------------


def _load(settings: MapSettings, say: ProgressFn) -> _Run:
    """The model and the frames: the first N test frames and the validation split of the training images."""
    net, manifest = load_model(settings.model)
    test = load_data("test", data_dir=settings.data_dir)
    n = len(test.labels) if settings.frames is None else min(settings.frames, len(test.labels))
    validation = validation_split(load_data("train", data_dir=settings.data_dir), settings.validation_frames)
    return _Run(settings, net, manifest, validation, Dataset(test.images[:n], test.labels[:n]), say)


def _model_record(run: _Run) -> dict[str, Any]:
    """The model the map measured, and whether its validation frames were held out of its training."""
    m = run.manifest
    selection = m.selection or (m.exported_from or {}).get("selection") or {}
    split = str(selection.get("split", ""))
    held_out = split.startswith("validation")
    return {"name": m.name, "sha256": m.sha256, "test_accuracy": m.test_accuracy, "macs": run.macs_model,
            "split_points": list(m.split_points), "validation_held_out_of_training": held_out,
            "selection": split if held_out else (
                "the manifest does not say the validation split was held out of training: the model may have "
                "learnt these frames, so validation accuracies may read high (the choices stay off the test split)")}


def _rules() -> dict[str, str]:
    """How each kind of representation is sent under a cap and how the front chooses (recorded in the report)."""
    return {
        "image": "per frame the highest rung of the family's ladder whose whole PUBLISH fits the cap "
                 "(models.evaluation.image.cap_choice); whole mature model at the hub on the decoded frame",
        "nair": "per frame the longest importance-ordered prefix whose one-message PUBLISH fits the cap "
                "(NairFrameEncoder.prefix_for); unlimited: the whole IR in the sensor's fragments",
        "decision": f"whole model on the device, top-{DECISION_K} as a lean TopK (DecisionEncoder)",
        "vp": "a variant alone: its top-1 as a lean TopK; the ensemble: every variant's top-k (the family's k), "
              "fused by the family's weights (fuse_batch), wire = the sum of its messages",
        "unsent": "a frame that cannot be sent within the cap counts as wrong; mean wire bytes are over frames sent",
        "front": "per budget and cap, among the representations the budget allows (MAC share of one device, or "
                 "median Pi-class CPU ms per frame where measured), the best on VALIDATION (ties: lighter device, "
                 "then fewer wire bytes); test accuracy with a 95 % Wilson interval; runner-up = second on "
                 "validation; McNemar's exact paired test on the test frames; p >= 0.05: inside the noise",
        "front_devices": "'front' is for one device (the VP ensemble needs several); 'ensemble_wins' lists the "
                         "budget x cap cells where the ensemble, one variant per device, would win on validation",
        "nair_vs_image": "each NAIR representation against the image family best on VALIDATION at the same cap; "
                         "McNemar's exact paired test on the test frames (p >= 0.05: inside the noise)",
    }


def _report(run: _Run, entries: Sequence[MapEntry]) -> dict[str, Any]:
    """The map's JSON: the run, every representation per cap, the front (one device) and the ensemble's cells."""
    s, caps = run.settings, run.settings.caps
    budget_list = budgets(s.share_budgets, s.ms_budgets)
    single = [e for e in entries if e.cost.devices == 1]
    with_ensemble = pareto_front(entries, budget_list, caps)
    ensemble_wins = [{k: row[k] for k in ("budget", "cap_bytes", "winner", "runner_up", "mcnemar_p", "verdict")
                      if k in row}
                     for row in with_ensemble if row["winner"] and row["winner"]["devices"] > 1]
    return {
        "kind": "nairbus.map", "version": 1, "command": s.command(), "model": _model_record(run),
        "frames": {"test": len(run.test.labels), "validation": len(run.validation.labels),
                   "test_source": f"the first {len(run.test.labels)} frames of the Fashion-MNIST test split",
                   "validation_source": f"fashion_mnist.validation_split ({len(run.validation.labels)} training "
                                        "images, the last of the seed-0 permutation; every choice is made here)"},
        "caps": [cap_label(cap) for cap in caps],
        "wire": {**wire_settings(), "counters": f"frame i (from 0): seq = frame_id = i + 1, capture_ms = "
                                                f"{FRAME_INTERVAL_MS} * i (test and validation alike)"},
        "rules": _rules(), "budgets": [b.as_json() for b in budget_list],
        "representations": [entry_json(e, caps) for e in entries],
        "front": pareto_front(single, budget_list, caps), "ensemble_wins": ensemble_wins,
        "nair_vs_image": versus_best_image(entries, caps),
        "seconds": run.seconds,
    }


def evaluate_map(settings: MapSettings, progress: ProgressFn | None = None) -> tuple[dict[str, Any], list[MapEntry]]:
    """Measure every representation of ``settings.model`` on the same validation and test frames; the report and
    the measured entries (per-frame arrays, for tests and further analysis)."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    run = _load(settings, say)
    family, variants = _family()
    _device_costs(run, family)
    entries: list[MapEntry] = []
    sections: tuple[tuple[str, Callable[[], list[MapEntry]]], ...] = (
        ("image", lambda: _image_entries(run)), ("nair", lambda: _nair_entries(run)),
        ("decision", lambda: [_decision_entry(run)]), ("vp", lambda: _vp_entries(run, family, variants)))
    for name, measure in sections:
        begun = time.perf_counter()
        entries += measure()
        run.seconds[name] = round(time.perf_counter() - begun, 1)
    run.seconds["total"] = round(time.perf_counter() - started, 1)
    return _report(run, entries), entries
