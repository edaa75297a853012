"""``nairbus evaluate split``: NAIR at a real split against the strongest image a user could send instead, paired on
every test frame.

For each wire cap, the image family is the one most accurate on the **validation** split in ``reports/images.json``
(``nairbus evaluate images``); its ladder is then measured frame by frame on the test split, as the sensor sends it
(per frame the best rung whose whole MQTT PUBLISH fits the cap), and so is each NAIR artifact (per frame the longest
prefix whose message fits: :func:`nairbus.agents.tools.map_nair.nair_arrays`). Each NAIR row carries its accuracy
with a 95 % interval, McNemar's exact paired test against the image on the same frames, the split, the device's
share of the model's MACs, and whether it is within one point of the mature model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.agents.tools.map_nair import nair_arrays
from nairbus.models.data.registry import load_data
from nairbus.models.evaluation import stats
from nairbus.models.evaluation.image import FAMILY_LADDERS, mature_predictor, measure_families
from nairbus.models.evaluation.map import CapArrays, ladder_arrays, memo_predictor
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import WEIGHTS_DIR

__all__ = ["SplitSettings", "evaluate_split"]

ProgressFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SplitSettings:
    """One ``nairbus evaluate split`` run."""

    artifacts: tuple[Path, ...] = field(default_factory=lambda: (WEIGHTS_DIR / "base.nair.npz",
                                                                 WEIGHTS_DIR / "base.coded.nair.npz",
                                                                 WEIGHTS_DIR / "base.coded500.nair.npz"))
    caps: tuple[int, ...] = (100, 150, 200, 300, 500)
    frames: int | None = None
    """Test frames (the first N; None: all 10 000)."""
    images_report: Path | None = None
    """The image report of the artifacts' model (default: ``reports/images.json`` for ``base``,
    ``reports/images-<model>.json`` for any other)."""
    data_dir: Path | None = None

    def command(self) -> str:
        """The command line that reproduces the report (defaults left out)."""
        default = SplitSettings()
        parts = ["nairbus evaluate split"]
        if self.artifacts != default.artifacts:
            parts += [f"--artifact {path}" for path in self.artifacts]
        if self.caps != default.caps:
            parts.append("--caps " + ",".join(str(c) for c in self.caps))
        if self.frames is not None:
            parts.append(f"--frames {self.frames}")
        if self.images_report is not None:
            parts.append(f"--images-report {self.images_report}")
        return " ".join(parts)


def _images_report(settings: SplitSettings, model: str) -> Path:
    if settings.images_report is not None:
        return settings.images_report
    return Path("reports/images.json" if model == "base" else f"reports/images-{model}.json")


def image_families_on_validation(images: dict[str, Any], caps: Sequence[int]) -> dict[int, str]:
    """Per cap, the image family most accurate on the validation table of an images report (ties: fewer mean wire
    bytes, then the name)."""
    families = images["validation"]["families"]
    chosen = {}
    for cap in caps:
        rows = {name: next((r for r in table["caps"] if r["cap_bytes"] == cap), None)
                for name, table in families.items()}
        ranked = [(r["accuracy"], -(r["mean_wire_bytes"] or float("inf")), name)
                  for name, r in rows.items() if r is not None]
        if not ranked:
            raise ValueError(f"the images report has no validation row at {cap} B")
        chosen[cap] = max(ranked)[2]
    return chosen


def _image_arrays(images: np.ndarray, labels: np.ndarray, net: Any, families: set[str], caps: Sequence[int],
                  say: ProgressFn) -> dict[str, CapArrays]:
    predict = memo_predictor(mature_predictor(net))
    _ref, measured = measure_families(images, labels, predict, {f: FAMILY_LADDERS[f] for f in sorted(families)},
                                      lambda spec: say(f"image {spec}"))
    return {family: ladder_arrays(np.stack([r.wire for r in rows]), np.stack([r.correct for r in rows]), caps)
            for family, rows in measured.items()}


def _nair_rows(pipeline: NairPipeline, arrays: CapArrays, images: dict[str, CapArrays], chosen: dict[int, str],
               caps: Sequence[int], mature: float) -> list[dict[str, Any]]:
    rows = []
    for index, cap in enumerate(caps):
        image = images[chosen[cap]]
        test = stats.mcnemar(arrays.correct[index], image.correct[index], "nair", "image")
        nair_row, image_row = arrays.row(index), image.row(index)
        verdict = ("inside the noise" if test["within_noise"] else
                   "NAIR better" if nair_row["accuracy"] > image_row["accuracy"] else "image better")
        rows.append({"cap_bytes": cap, "nair": nair_row, "image_family": chosen[cap], "image": image_row,
                     "margin": nair_row["accuracy"] - image_row["accuracy"], "mcnemar_p": test["p_value"],
                     "discordant": [test["only_nair_correct"], test["only_image_correct"]], "verdict": verdict,
                     "at_least_as_accurate": verdict != "image better",
                     "within_1pt_of_mature": nair_row["accuracy"] >= mature - 0.01})
    return rows


def evaluate_split(settings: SplitSettings, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Measure every artifact and the validation-chosen image families on the same test frames; the report."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    models = {NairArtifact.load(path).model_name for path in settings.artifacts}
    if len(models) != 1:
        raise ValueError(f"the artifacts are of several models ({', '.join(sorted(models))}): measure one at a time")
    model = models.pop()
    report_path = _images_report(settings, model)
    images_report = json.loads(report_path.read_text())
    pipelines = [NairPipeline.load(model, path) for path in settings.artifacts]
    base = pipelines[0]
    if images_report.get("mature_model", {}).get("sha256") not in (None, base.manifest.sha256):
        raise ValueError(f"{report_path} measured another model than {base.manifest.name}'s "
                         f"{base.manifest.sha256[:12]}: re-run nairbus evaluate images")
    test = load_data("test", data_dir=settings.data_dir)
    n = len(test.labels) if settings.frames is None else min(settings.frames, len(test.labels))
    images, labels = test.images[:n], test.labels[:n]
    chosen = image_families_on_validation(images_report, settings.caps)
    say("the mature model")
    mature_correct = base.full_model_probs(images).argmax(1) == labels
    mature = stats.accuracy(mature_correct)
    image_arrays = _image_arrays(images, labels, base.model, set(chosen.values()), settings.caps, say)
    shares = base.head_shares()
    artifacts = []
    for path, pipeline in zip(settings.artifacts, pipelines, strict=True):
        say(f"NAIR {path.name}")
        codes = pipeline.encode_all(images)
        arrays = nair_arrays(pipeline, codes.astype(np.uint8) if int(pipeline.artifact.bits.max()) <= 8 else codes,
                             labels, settings.caps)
        artifact: NairArtifact = pipeline.artifact
        artifacts.append({
            "artifact": path.name, "artifact_sha256": artifact.sha256, "split": artifact.split,
            "device_mac_share": round(shares[artifact.split], 6), "coding": artifact.coding,
            "command": artifact.meta.get("provenance", {}).get("command"),
            "caps": _nair_rows(pipeline, arrays, image_arrays, chosen, settings.caps, mature["accuracy"])})
    return {
        "command": settings.command(),
        "model": {"name": base.manifest.name, "sha256": base.manifest.sha256},
        "frames": n, "test_source": f"the first {n} frames of the Fashion-MNIST test split",
        "mature": mature,
        "image_choice": {"chosen_on": "validation: the family most accurate at each cap in the validation table of "
                                      f"{report_path} ({images_report.get('command')})",
                         "families": {str(cap): family for cap, family in chosen.items()}},
        "wire_counting": "whole MQTT 5 PUBLISH, QoS 0, topic alias; a frame with nothing that fits counts as wrong",
        "test": "McNemar's exact paired test on the test frames (p >= 0.05: inside the noise)",
        "artifacts": artifacts,
        "seconds": round(time.perf_counter() - started, 1),
    }
