"""``nairbus evaluate wire``: accuracy against bytes **on the wire**, NAIR beside the image codecs a user would pick.

Every figure counts the whole MQTT PUBLISH a frame costs as the sensor sends it (QoS 0, topic alias, lean envelope,
data: :func:`nairbus.agents.nair.outgoing.alias_wire_bytes`), with the same per-frame counters the image evaluation uses
(frame ``i`` is sequence number and frame id ``i + 1``, captured ``33 i`` ms into the session). Under a per-frame cap
the NAIR sensor sends the longest importance-ordered prefix whose message fits — exactly what
:meth:`nairbus.agents.nair.outgoing.NairFrameEncoder.prefix_for` does live. The image families come from
``reports/images.json`` (``nairbus evaluate images``): per frame the best rung of a family's ladder that fits.

Which NAIR artifact a cap is served with is chosen on the validation split of the training images
(:func:`fashion_mnist.validation_split`); accuracies are reported on the test split, with 95 %
Wilson intervals.
Each artifact's device cost (MACs of the head that runs on the sensor) stands beside it: the deep split sends
fewer bytes because the device runs more of the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nairbus.agents.nair.curve import WIRE_EVAL_CAPS, nair_curve, nair_wire_bytes
from nairbus.agents.nair.outgoing import alias_wire_bytes
from nairbus.models.architectures.resnet import count_macs
from nairbus.models.data.fashion_mnist import Dataset, validation_split
from nairbus.models.data.registry import load_data
from nairbus.models.nair.calibration import calibrated_bit_bands
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import default_artifact_path
from nairbus.models.zoo import model_option, trainable_mature
from nairbus.schemas.wire import lean_fragment_payload_len

__all__ = ["WIRE_EVAL_CAPS", "evaluate_wire", "nair_wire_bytes"]

ProgressFn = Callable[[str], None]


def _row_at(rows: Sequence[dict[str, Any]], cap: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["cap_bytes"] == cap), None)


def fewest_wire_within(rows: Sequence[dict[str, Any]], mature: float, tolerance: float = 0.01) -> dict[str, Any] | None:
    """The smallest cap whose accuracy is at most ``tolerance`` below the mature model's."""
    return min((r for r in rows if r["accuracy"] >= mature - tolerance), key=lambda r: r["cap_bytes"], default=None)


def model_artifacts(model: str) -> dict[str, Path]:
    """The shipped NAIR artifacts of ``model`` (:func:`artifacts_beside` its default one). For the base model these
    are ``stage2`` (base.nair.npz) and ``stage3`` (base.stage3.nair.npz)."""
    path = default_artifact_path(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: calibrate {model!r} first (nairbus calibrate --model {model})")
    return artifacts_beside(path)


def artifacts_beside(path: Path) -> dict[str, Path]:
    """A model's default artifact ``<model>.nair.npz`` under its split point's name, and every
    ``<model>.<tag>.nair.npz`` beside it (another split point, or another bit allocation of the same one) under
    ``<tag>``: the files the fusion agent finds beside the model's manifest too."""
    name = path.name.removesuffix(".nair.npz")
    found = {NairArtifact.load(path).split: path}
    for extra in sorted(path.parent.glob(f"{name}.*.nair.npz")):
        tag = extra.name.removeprefix(f"{name}.").removesuffix(".nair.npz")
        if tag in found:
            raise ValueError(f"{extra} and {found[tag]} would both be reported as {tag!r}: rename one")
        found[tag] = extra
    return found


def _native_model(model: str) -> Any | None:
    """``model`` as its registered architecture's modules, to count MACs on (None for an imported model of no
    registered architecture: its graph has no modules to count)."""
    try:
        return trainable_mature(model)[0]
    except ValueError:
        return None


def _device_macs(native: Any | None, split: str) -> tuple[int | None, int | None]:
    """MACs of the whole model and of the head up to ``split`` (None, None without the native modules)."""
    if native is None:
        return None, None
    return count_macs(native), count_macs(native, split)


@dataclass(frozen=True, slots=True)
class _WireInputs:
    """What the wire report is measured on: the image report, the test and validation frames, the NAIR artifacts."""

    images: dict[str, Any]
    test: Dataset
    n: int
    validation: Dataset
    artifacts: dict[str, Path]
    base: NairPipeline


def _load_inputs(images_report: Path, frames: int | None, validation_frames: int, data_dir: Path | None,
                 model: str) -> _WireInputs:
    """Read the image report, the frames and ``model``'s artifacts; refuse an image report of other frames or model."""
    if not images_report.is_file():
        raise FileNotFoundError(f"{images_report} is missing; run 'nairbus evaluate images' first")
    images = json.loads(images_report.read_text())
    test = load_data("test", data_dir=data_dir)
    n = len(test.labels) if frames is None else min(frames, len(test.labels))
    if images.get("frames") != n:
        raise ValueError(f"{images_report} has {images.get('frames')} test frames, this run {n}: rerun one of them")
    validation = validation_split(load_data("train", data_dir=data_dir), validation_frames)
    image_model = (images.get("mature_model") or {}).get("sha256")
    artifacts = model_artifacts(model)
    base = NairPipeline.load(model, next(iter(artifacts.values())))
    if image_model is not None and image_model != base.manifest.sha256:
        raise ValueError(f"{images_report} measured the image codecs with another model "
                         f"({(images.get('mature_model') or {}).get('name')}): run 'nairbus evaluate images"
                         + model_option(model) + "'")
    return _WireInputs(images, test, n, validation, artifacts, base)


def _nair_curves(inputs: _WireInputs, model: str, say: ProgressFn) -> dict[str, Any]:
    """Per artifact: its NAIR curves on validation and test, its bit bands and its device cost."""
    base, validation, test, n = inputs.base, inputs.validation, inputs.test, inputs.n
    nair: dict[str, Any] = {}
    native = _native_model(model)  # built once: a program load and a probe for an imported model
    for key, path in inputs.artifacts.items():
        name = path.name
        pipeline = NairPipeline(base.model, base.manifest, NairArtifact.load(path))
        say(f"NAIR {key}: validation")
        val_rows = nair_curve(pipeline, pipeline.encode_all(validation.images), validation.labels)
        say(f"NAIR {key}: test")
        test_rows = nair_curve(pipeline, pipeline.encode_all(test.images[:n]), test.labels[:n])
        total_macs, macs = _device_macs(native, pipeline.artifact.split)
        nair[key] = {"artifact": name, "artifact_sha256": pipeline.artifact.sha256,
                     "split": pipeline.artifact.split,
                     "bit_bands": calibrated_bit_bands(pipeline.artifact.meta),
                     "n_components": pipeline.artifact.n_components, "full_data_bytes":
                     pipeline.artifact.total_bytes(), "device_macs": macs,
                     "device_macs_share": macs / total_macs if macs is not None and total_macs else None,
                     "validation": val_rows, "test": test_rows}
    return nair


def _chosen_on_validation(nair: dict[str, Any]) -> list[dict[str, Any]]:
    """Per cap, the test row of the artifact that serves it: the better on validation (ties: the lighter device)."""
    chosen = []
    for cap in WIRE_EVAL_CAPS:
        best = max(nair, key=lambda sp: (_row_at(nair[sp]["validation"], cap)["accuracy"],  # type: ignore[index]
                                         -(nair[sp]["device_macs"] or 0)))
        row = _row_at(nair[best]["test"], cap)
        chosen.append({"artifact": best, **(row or {})})
    return chosen


def _bars(images: dict[str, Any], nair: dict[str, Any], chosen: list[dict[str, Any]]) -> dict[str, Any]:
    """NAIR against the best image family at 200 and 300 bytes on the wire."""
    tables = images["families"] if "families" in images else images["test"]["families"]
    bars: dict[str, Any] = {}
    for cap in (200, 300):
        image_rows = {fam: next((r for r in t["caps"] if r["cap_bytes"] == cap), None) for fam, t in tables.items()}
        best_family = max((f for f, r in image_rows.items() if r), key=lambda f: image_rows[f]["accuracy"])  # type: ignore[index]
        nair_row = _row_at(chosen, cap)
        bars[f"at_{cap}_wire_bytes"] = {
            "nair": nair_row, "nair_per_artifact": {sp: _row_at(nair[sp]["test"], cap) for sp in nair},
            "best_image_family": best_family, "best_image": image_rows[best_family],
            "images": image_rows,
            "nair_minus_best_image": (nair_row["accuracy"] - image_rows[best_family]["accuracy"])  # type: ignore[index]
            if nair_row else None,
            "difference_outside_noise": _outside_noise(nair_row, image_rows[best_family]),
        }
    return bars


def _fewest_within_mature(nair: dict[str, Any], mature_validation: float) -> dict[str, Any]:
    """Per artifact, the fewest-bytes cap within 1 point of the mature model on validation, reported on test."""
    fewest = {}
    for sp in nair:
        pick = fewest_wire_within(nair[sp]["validation"], mature_validation)
        fewest[sp] = None if pick is None else {**(_row_at(nair[sp]["test"], pick["cap_bytes"]) or {}),
                                                "validation_accuracy": pick["accuracy"], "chosen_on": "validation"}
    return fewest


def _report_path(images_report: Path) -> str:
    """``images_report`` relative to the working directory where it lies under it, else as given."""
    return (str(images_report.resolve().relative_to(Path.cwd().resolve()))
            if images_report.resolve().is_relative_to(Path.cwd().resolve()) else str(images_report))


def evaluate_wire(images_report: Path = Path("reports/images.json"), frames: int | None = None,
                  validation_frames: int = 5000, progress: ProgressFn | None = None,
                  data_dir: Path | None = None, model: str = "base") -> dict[str, Any]:
    """The wire report of ``model``: NAIR per artifact on validation and test, the image families (the image report
    must have been made with the same model), and the bars."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    inputs = _load_inputs(images_report, frames, validation_frames, data_dir, model)
    base, test, n, validation, images = inputs.base, inputs.test, inputs.n, inputs.validation, inputs.images
    mature = float((base.full_model_probs(test.images[:n]).argmax(1) == test.labels[:n]).mean())
    nair = _nair_curves(inputs, model, say)
    chosen = _chosen_on_validation(nair)
    bars = _bars(images, nair, chosen)
    # The fewest-bytes point is chosen on validation (against the mature model's validation accuracy) and reported on
    # the test frames at the same cap.
    mature_validation = float((base.full_model_probs(validation.images).argmax(1) == validation.labels).mean())
    fewest = _fewest_within_mature(nair, mature_validation)
    overhead = alias_wire_bytes(lean_fragment_payload_len(0, 1001, 1001, 33000, 0, 100, 100))
    return {
        "command": "nairbus evaluate wire" + model_option(model)
                   + ("" if frames is None else f" --frames {n}"),
        "model": {"name": base.manifest.name, "sha256": base.manifest.sha256},
        "frames": n, "validation_frames": len(validation.labels), "mature_accuracy": mature,
        "mature_validation_accuracy": mature_validation,
        "selection": "every choice on the validation split (fashion_mnist.validation_split): the artifact serving a "
                     "cap, and the cap of the fewest-wire-bytes point (validation accuracy within 1 point of the "
                     "mature model's validation accuracy); accuracies reported on the test frames",
        "wire_counting": "whole MQTT 5 PUBLISH, QoS 0, topic alias (3-byte property), lean positional msgpack "
                         "envelope [2, tag, seq, frame_id, capture_ms, start, end, frame_end, data]",
        "nair_message_overhead_bytes": overhead,
        "image_report": {"path": _report_path(images_report), "command": images.get("command")},
        "nair": nair, "nair_chosen_on_validation": chosen, "fewest_wire_bytes_within_1pt_of_mature": fewest,
        "bars": bars, "seconds": round(time.perf_counter() - started, 1),
    }


def wire_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The wire bars of a wire report, for ``reports/nair.json``: per-message overhead, the fewest wire bytes within
    1 point of the mature model per artifact, and the accuracy at <= 200 and <= 300 B on the wire of NAIR (the
    artifact chosen on validation, and each artifact) and of every image codec family, with 95 % intervals."""
    keep = ("cap_bytes", "accuracy", "ci95", "mean_wire_bytes", "share_sent", "validation_accuracy", "chosen_on")

    def row(r: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if r is None else {k: r[k] for k in (*keep, "artifact", "codec") if k in r}

    bars = {}
    for key, bar in report["bars"].items():
        bars[key] = {"nair": row(bar["nair"]),
                     "nair_per_artifact": {a: row(r) for a, r in bar["nair_per_artifact"].items()},
                     "images": {f: row(r) for f, r in bar["images"].items()},
                     "best_image_family": bar["best_image_family"],
                     "nair_minus_best_image": bar["nair_minus_best_image"],
                     "difference_outside_noise": bar["difference_outside_noise"]}
    return {"command": report["command"], "frames": report["frames"], "wire_counting": report["wire_counting"],
            "nair_message_overhead_bytes": report["nair_message_overhead_bytes"],
            "artifacts": {a: {k: v[k] for k in ("artifact", "artifact_sha256", "split", "bit_bands", "full_data_bytes",
                                                 "device_macs_share") if k in v} for a, v in report["nair"].items()},
            "fewest_wire_bytes_within_1pt_of_mature": {a: row(r) for a, r in
                                                       report["fewest_wire_bytes_within_1pt_of_mature"].items()},
            "bars": bars, "selection": report.get("selection", "the artifact serving a cap is the more accurate on "
                                                               "the validation split")}


def _outside_noise(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether two accuracies' 95 % intervals do not overlap (a coarse, conservative test)."""
    if not a or not b:
        return None
    return bool(a["ci95"][0] > b["ci95"][1] or b["ci95"][0] > a["ci95"][1])


def plot_wire(report: dict[str, Any], images: dict[str, Any], path: Path) -> Path:
    """Accuracy against wire bytes per frame: NAIR per split point and every image family, with 95 % bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for split, style in zip(report["nair"], (("tab:blue", "o"), ("tab:red", "s"), ("tab:purple", "D")), strict=False):
        rows = [r for r in report["nair"][split]["test"] if r["mean_wire_bytes"]]
        x = [r["mean_wire_bytes"] for r in rows]
        y = [100 * r["accuracy"] for r in rows]
        share = report["nair"][split]["device_macs_share"]
        ax.plot(x, y, marker=style[1], color=style[0], lw=2,
                label=f"NAIR at {split}" + ("" if share is None else f" (device runs {share:.0%} of the MACs)"))
        ax.fill_between(x, [100 * r["ci95"][0] for r in rows], [100 * r["ci95"][1] for r in rows], color=style[0],
                        alpha=0.15)
    tables = images["families"] if "families" in images else images["test"]["families"]
    for family, table in tables.items():
        rows = [r for r in table["caps"] if r["mean_wire_bytes"]]
        if not rows:
            continue
        ax.plot([r["mean_wire_bytes"] for r in rows], [100 * r["accuracy"] for r in rows], ls="--", marker=".",
                alpha=0.8, label=f"image: {family} (whole model at the hub)")
    ax.axhline(100 * report["mature_accuracy"], color="grey", ls=":", label="mature model, uncompressed")
    for cap in (200, 300):
        ax.axvline(cap, color="black", lw=0.6, alpha=0.4)
    ax.set_xscale("log")
    ax.set_ylim(50, 96)
    ax.set_xlabel("bytes on the wire per frame (whole MQTT PUBLISH, mean under a per-frame cap)")
    ax.set_ylabel("test accuracy (%)")
    model = (report.get("model") or {}).get("name", "base")
    ax.set_title(f"Accuracy against wire bytes ({model}): NAIR vs sending a compressed image")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ci_text(row: dict[str, Any]) -> str:
    """``93.12 % (92.6–93.6)`` for a row with accuracy and ci95."""
    lo, hi = row["ci95"]
    return f"{100 * row['accuracy']:.2f} % ({100 * lo:.1f}–{100 * hi:.1f})"
