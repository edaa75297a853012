"""The light sensor's answers against the torch sensor's on every test frame: each shipped model, split and mode.

For each shipped model (a manifest with weights beside them) the device part of each split point (the head), the
whole model (the decision mode; for a VP variant, what its sensor runs) are exported to ONNX
(:func:`~nairbus.models.export.onnx.export_part`) and run by the torch-free runner
(:class:`~nairbus.models.export.runtime.OnnxRunner`, one thread) on the test split normalised by numpy, beside torch
running the same part on the same frames. Per part: the largest output difference, and how many frames get the same
decision and the same top-k (a head decides through the model's tail on either IR). Where a split has a shipped NAIR
artifact, the codes the sensor sends are compared code by code, and the hub's class from either sensor's codes at the
prefix the demo's budgets buy (100/50/25/10 % of the IR), with both accuracies.

Nothing is chosen here: it is a measurement of two runtimes on the same frames.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nairbus.models.architectures.split import SplitModel
from nairbus.models.data.registry import load_data
from nairbus.models.evaluation.stats import wilson_interval
from nairbus.models.export.onnx import export_part
from nairbus.models.export.runtime import OnnxRunner
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import WEIGHTS_DIR, load_model, read_manifest

__all__ = ["DEMO_BUDGETS", "LEFT_OUT", "TOP_K", "Agreement", "artifacts_for", "code_differences", "compare",
           "evaluate_light", "light_parts", "sensor_models", "shipped_models"]

TOP_K = 5
"""k of the top-k compared (the VP family's k)."""
DEMO_BUDGETS = (1.0, 0.5, 0.25, 0.1)
"""The fractions of the IR ``nairbus demo`` sends per frame."""
BATCH = 1000
"""Frames per batch (the IRs of a batch, not of the whole split, are held at once)."""


def shipped_models(directory: Path = WEIGHTS_DIR) -> list[str]:
    """Every model manifest among the shipped weights (a file with weights and a sha256; not the auto tables or the
    variant family's manifest), the variants last."""
    names = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "weights_file" in data and "sha256" in data:
            names.append(path.stem)
    return sorted(names, key=lambda n: (n.startswith("variants-"), n))


def artifacts_for(name: str, split: str, directory: Path = WEIGHTS_DIR) -> list[Path]:
    """The NAIR artifacts shipped beside model ``name`` calibrated for it at ``split``."""
    sha = read_manifest(name).sha256
    return [path for path in sorted(directory.glob(f"{name}.*nair.npz"))
            if (artifact := NairArtifact.load(path)).model_sha256 == sha and artifact.split == split]


@dataclass(frozen=True)
class Agreement:
    """How an exported part's outputs compare with torch's on the same frames."""

    max_abs: float
    """Largest absolute difference of the part's output (IR or logits)."""
    scale: float
    """Largest absolute value of torch's output (what ``max_abs`` is small against)."""
    argmax_agree: float
    """Fraction of frames whose decision is the same (for a head: the model's tail run on either IR)."""
    topk_agree: float
    """Fraction of frames whose top-k classes are the same, in the same order."""


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def compare(model: SplitModel, runner: OnnxRunner, split: str | None,
            x: torch.Tensor) -> tuple[Agreement, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Torch's and onnxruntime's outputs of the part on the normalised batch ``x``: the agreement, both outputs and
    both logits (for a head, the tail's on either IR)."""
    with torch.no_grad():
        ref = (model(x) if split is None else model.head(x, split)).numpy()
    out = runner.run(x.numpy())
    logits_ref, logits_out = ref, out
    if split is not None:
        with torch.no_grad():
            logits_ref = model.tail(torch.from_numpy(ref), split).numpy()
            logits_out = model.tail(torch.from_numpy(out), split).numpy()
    k = min(TOP_K, logits_ref.shape[1])
    agreement = Agreement(
        max_abs=float(np.abs(out - ref).max()), scale=float(np.abs(ref).max()),
        argmax_agree=float((logits_ref.argmax(1) == logits_out.argmax(1)).mean()),
        topk_agree=float((_topk(logits_ref, k) == _topk(logits_out, k)).all(axis=1).mean()))
    return agreement, (ref, out), (logits_ref, logits_out)


def code_differences(pipeline: NairPipeline, ir_torch: np.ndarray, ir_ort: np.ndarray) -> dict[str, Any]:
    """The NAIR codes the sensor sends (:meth:`NairPipeline.encode_ir`: transform, then quantise) from either IR:
    how many differ, by how much, in how many frames."""
    return _code_counts(pipeline.encode_ir(ir_torch), pipeline.encode_ir(ir_ort))


def _code_counts(codes_torch: np.ndarray, codes_ort: np.ndarray) -> dict[str, Any]:
    """How many of two runtimes' codes differ, by how much, in how many frames."""
    delta = np.abs(codes_torch.astype(np.int64) - codes_ort.astype(np.int64))
    return {"codes": int(delta.size), "differ": int((delta > 0).sum()), "max_delta": int(delta.max()),
            "frames_differ": int((delta > 0).any(axis=1).sum()), "identical": bool((delta == 0).all())}


def _share(hits: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(hits, n)
    return {"hits": hits, "n": n, "share": hits / n, "ci95": [round(low, 5), round(high, 5)]}


class _Tally:
    """Per-part counts summed over batches."""

    def __init__(self) -> None:
        self.max_abs = self.scale = 0.0
        self.frames = self.argmax = self.topk = 0
        self.hits_torch = self.hits_onnx = 0
        self.codes: dict[str, dict[str, int]] = {}
        self.codes_torch: dict[str, list[np.ndarray]] = {}
        self.codes_onnx: dict[str, list[np.ndarray]] = {}

    def add(self, agreement: Agreement, logits: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> None:
        ref, out = logits
        k = min(TOP_K, ref.shape[1])
        self.max_abs = max(self.max_abs, agreement.max_abs)
        self.scale = max(self.scale, agreement.scale)
        self.frames += len(ref)
        self.argmax += int((ref.argmax(1) == out.argmax(1)).sum())
        self.topk += int((_topk(ref, k) == _topk(out, k)).all(axis=1).sum())
        self.hits_torch += int((ref.argmax(1) == labels).sum())
        self.hits_onnx += int((out.argmax(1) == labels).sum())

    def add_codes(self, path: Path, pipeline: NairPipeline, ir: tuple[np.ndarray, np.ndarray]) -> None:
        codes_torch, codes_onnx = pipeline.encode_ir(ir[0]), pipeline.encode_ir(ir[1])  # once: counted and kept
        found = _code_counts(codes_torch, codes_onnx)
        into = self.codes.setdefault(path.name, {"codes": 0, "differ": 0, "max_delta": 0, "frames_differ": 0})
        for key in ("codes", "differ", "frames_differ"):
            into[key] += found[key]
        into["max_delta"] = max(into["max_delta"], found["max_delta"])
        self.codes_torch.setdefault(path.name, []).append(codes_torch)
        self.codes_onnx.setdefault(path.name, []).append(codes_onnx)


def _budget_rows(pipeline: NairPipeline, codes_torch: np.ndarray, codes_onnx: np.ndarray,
                 labels: np.ndarray) -> list[dict[str, Any]]:
    """The hub's class from either sensor's codes at each demo budget: agreement and both accuracies."""
    ids = np.arange(len(labels))
    total = pipeline.artifact.total_bytes()
    rows = []
    for fraction in DEMO_BUDGETS:
        budget = max(1, round(fraction * total))
        torch_class = pipeline.offline_probs(codes_torch, ids, budget)[0].argmax(1)
        onnx_class = pipeline.offline_probs(codes_onnx, ids, budget)[0].argmax(1)
        rows.append({"budget": fraction, "budget_bytes": budget,
                     "agree": _share(int((torch_class == onnx_class).sum()), len(ids)),
                     "accuracy_torch": _share(int((torch_class == labels).sum()), len(ids)),
                     "accuracy_onnx": _share(int((onnx_class == labels).sum()), len(ids))})
    return rows


def _part_row(name: str, split: str | None, images: np.ndarray, labels: np.ndarray,
              say: Callable[[str], None]) -> dict[str, Any]:
    """One part of one model on every frame: export, run both runtimes batch by batch, compare."""
    model, manifest = load_model(name)
    spec = model.input_spec
    started = time.monotonic()
    part = export_part(model, split, model_name=manifest.name, model_sha256=manifest.sha256)
    runner = OnnxRunner(part.data)
    runner.check_model(manifest.sha256)
    artifacts = {path: NairPipeline(model, manifest, NairArtifact.load(path))
                 for path in (artifacts_for(name, split) if split is not None else [])}
    tally = _Tally()
    for start in range(0, len(images), BATCH):
        x = spec.prepare(spec.convert(images[start:start + BATCH]))
        agreement, ir, logits = compare(model, runner, split, x)
        tally.add(agreement, logits, labels[start:start + BATCH])
        for path, pipeline in artifacts.items():
            tally.add_codes(path, pipeline, ir)
    row: dict[str, Any] = {
        "model": name, "part": "head" if split is not None else "whole", "split": split,
        "onnx_sha256": part.sha256, "frames": tally.frames, "max_abs": tally.max_abs, "scale": tally.scale,
        "decision_agree": _share(tally.argmax, tally.frames), "topk_agree": _share(tally.topk, tally.frames),
        "accuracy_torch": _share(tally.hits_torch, tally.frames),
        "accuracy_onnx": _share(tally.hits_onnx, tally.frames), "artifacts": []}
    for path, pipeline in artifacts.items():
        codes_torch = np.concatenate(tally.codes_torch[path.name])
        codes_onnx = np.concatenate(tally.codes_onnx[path.name])
        row["artifacts"].append({"artifact": path.name, "codes": tally.codes[path.name],
                                 "budgets": _budget_rows(pipeline, codes_torch, codes_onnx, labels)})
    row["seconds"] = round(time.monotonic() - started, 1)
    say(f"{name} {split or 'whole'}: decisions equal on {tally.argmax}/{tally.frames}, top-{TOP_K} on {tally.topk}, "
        f"max |diff| {tally.max_abs:.2g} ({row['seconds']} s)")
    return row


LEFT_OUT = ("taildrop models: the retrained baselines the NAIR evaluation compares with; no sensor runs them "
            "('--model NAME' measures one)")
"""What the default set of models leaves out, and why (the report says it)."""


def sensor_models() -> list[str]:
    """The shipped models a sensor runs: every one but the tail-drop baselines."""
    return [name for name in shipped_models() if "taildrop" not in name]


def light_parts(models: list[str] | None = None) -> list[tuple[str, str | None]]:
    """``(model, split)`` for every split point of each model but a variant, and ``(model, None)`` (the whole
    model: the decision mode, and all a variant's sensor runs) for each; by default the models a sensor runs."""
    parts: list[tuple[str, str | None]] = []
    for name in models or sensor_models():
        if not name.startswith("variants-"):
            parts += [(name, split) for split in read_manifest(name).split_points]
        parts.append((name, None))
    return parts


def evaluate_light(frames: int | None = None, models: list[str] | None = None, data_dir: Path | None = None,
                   say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """The report: every part of :func:`light_parts` compared on the first ``frames`` test frames (all by default)."""
    started = time.monotonic()
    test = load_data("test", data_dir=data_dir)
    n = len(test) if frames is None else min(frames, len(test))
    images, labels = test.images[:n], test.labels[:n]
    parts = light_parts(models)
    rows = [_part_row(name, split, images, labels, say) for name, split in parts]
    return {"frames": n, "models": list(dict.fromkeys(name for name, _ in parts)),
            "left_out": "" if models else LEFT_OUT, "top_k": TOP_K, "demo_budgets": list(DEMO_BUDGETS), "threads": 1,
            "onnxruntime": _ort_version(), "torch": torch.__version__, "parts": rows,
            "summary": _summary(rows), "wall_seconds": round(time.monotonic() - started, 1)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over every part: frames whose decision or top-k differs, codes that differ, demo-budget classes that differ."""
    budget_rows = [b for r in rows for a in r["artifacts"] for b in a["budgets"]]
    codes = [a["codes"] for r in rows for a in r["artifacts"]]
    return {
        "parts": len(rows),
        "decisions_differ": sum(r["decision_agree"]["n"] - r["decision_agree"]["hits"] for r in rows),
        "topk_differ": sum(r["topk_agree"]["n"] - r["topk_agree"]["hits"] for r in rows),
        "decisions_compared": sum(r["decision_agree"]["n"] for r in rows),
        "codes_compared": sum(c["codes"] for c in codes), "codes_differ": sum(c["differ"] for c in codes),
        "code_max_delta": max((c["max_delta"] for c in codes), default=0),
        "budget_classes_differ": sum(b["agree"]["n"] - b["agree"]["hits"] for b in budget_rows),
        "budget_classes_compared": sum(b["agree"]["n"] for b in budget_rows),
        "accuracy_changes": sum(int(b["accuracy_torch"]["hits"] != b["accuracy_onnx"]["hits"]) for b in budget_rows)
        + sum(int(r["accuracy_torch"]["hits"] != r["accuracy_onnx"]["hits"]) for r in rows),
    }


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)

