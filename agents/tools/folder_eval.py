"""``nairbus evaluate folder``: any model — an imported one included — scored on the user's own labelled folder of
image files, at the bytes its sensor would send.

The folder holds one sub-folder per class (named by the label or the class index, as ``calibrate --validation-dir``
takes it; :mod:`nairbus.agents.sources.labelled`). Every file is read as a sensor reads it (converted to the model's
input), then: the whole model (what fusion decides from an image or the device's decision; the decision's lean top-1
message in wire bytes), NAIR with the model's artifact under each per-frame wire cap (the sensor's own prefix rule,
:func:`nairbus.agents.nair.curve.nair_curve`), and for a grey model the image mode's codec ladder under the same caps.
Each accuracy carries its 95 % interval. Progress goes to ``say`` as each stage starts; the report is typed
(:class:`nairbus.agents.tools.reports.FolderReport`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nairbus.agents.nair.curve import nair_curve
from nairbus.agents.nair.settings import DEFAULT_IMAGE_CODECS
from nairbus.agents.sources.labelled import LabelledFolderError, LabelledImages, read_labelled_folder
from nairbus.agents.tools.map_eval import topk_wire
from nairbus.agents.tools.reports import FolderArtifact, FolderCapRow, FolderModel, FolderRead, FolderReport
from nairbus.models.evaluation.image import cap_outcome, measure_spec
from nairbus.models.evaluation.reports import Missing
from nairbus.models.evaluation.stats import wilson_interval
from nairbus.models.image.codec import get_image_codec
from nairbus.models.nair.pipeline import NairPipeline

__all__ = ["FOLDER_CAPS", "FolderEvalSettings", "evaluate_folder"]

FOLDER_CAPS: tuple[int, ...] = (60, 100, 150, 200, 300, 500, 1000, 2000, 4000)
"""Per-frame wire caps (whole MQTT PUBLISH bytes) the report scores NAIR and the image ladder at."""


@dataclass(frozen=True)
class FolderEvalSettings:
    """What ``nairbus evaluate folder`` scores."""

    model: str
    folder: Path
    artifact: Path | None = None
    """The NAIR artifact (default: the model's own, ``<model>.nair.npz`` beside its manifest; none: no NAIR rows)."""
    caps: tuple[int, ...] = FOLDER_CAPS
    image_codecs: tuple[str, ...] = DEFAULT_IMAGE_CODECS
    """The image mode's ladder, best first (the sensor's default)."""


def _accuracy(correct: np.ndarray) -> tuple[float, tuple[float, float]]:
    lo, hi = wilson_interval(int(correct.sum()), len(correct))
    return float(correct.mean()) if len(correct) else 0.0, (lo, hi)


def _read(settings: FolderEvalSettings, pipeline: NairPipeline, say: Callable[[str], None]) -> LabelledImages:
    """The folder's usable files in the model's input, with a progress line every tenth of them."""
    total = sum(1 for p in settings.folder.rglob("*") if p.is_file())
    seen = [0]

    def advance() -> None:
        seen[0] += 1
        if total and seen[0] * 10 // total != (seen[0] - 1) * 10 // total:
            say(f"read {seen[0]}/{total} files")

    say(f"reading {settings.folder} ({total} files) as {pipeline.input_spec.describe()}")
    return read_labelled_folder(settings.folder, pipeline.input_spec, pipeline.input_spec.labels, advance=advance)


def _nair_rows(pipeline: NairPipeline, read: LabelledImages, caps: Sequence[int],
               say: Callable[[str], None]) -> list[FolderCapRow]:
    say(f"NAIR: encoding {len(read)} frames at split {pipeline.artifact.split}")
    codes = pipeline.encode_all(read.images)
    rows = []
    for row in nair_curve(pipeline, codes, read.labels, caps):
        say(f"NAIR at <= {row['cap_bytes']} B: {100 * row['accuracy']:.2f} %")
        rows.append(FolderCapRow(cap_bytes=row["cap_bytes"], accuracy=row["accuracy"], ci95=tuple(row["ci95"]),
                                 share_sent=row["share_sent"], mean_wire_bytes=row["mean_wire_bytes"]))
    return rows


def _image_rows(pipeline: NairPipeline, read: LabelledImages, settings: FolderEvalSettings,
                reference: np.ndarray, say: Callable[[str], None]) -> list[FolderCapRow]:
    def predict(images: np.ndarray) -> np.ndarray:
        classes: np.ndarray = pipeline.full_model_probs(images).argmax(1)
        return classes

    results = []
    for i, spec in enumerate(reversed(settings.image_codecs)):  # lowest quality first: the cap rule's order
        say(f"image ladder: {spec} ({i + 1}/{len(settings.image_codecs)})")
        results.append(measure_spec(get_image_codec(spec), read.images, read.labels, predict, reference))
    rows = []
    for cap in settings.caps:
        out = cap_outcome(results, cap)
        rows.append(FolderCapRow(cap_bytes=cap, accuracy=out["accuracy"], ci95=tuple(out["ci95"]),
                                 share_sent=out["share_sent"], mean_wire_bytes=out["mean_wire_bytes"]))
    return rows


def evaluate_folder(settings: FolderEvalSettings, command: str,
                    say: Callable[[str], None] = print) -> FolderReport:
    """Score ``settings.model`` on the labelled folder (see the module's docstring)."""
    started = time.monotonic()
    if not settings.folder.is_dir():
        raise LabelledFolderError(f"labelled folder {settings.folder} does not exist or is not a directory")
    pipeline = NairPipeline.load(settings.model, settings.artifact, optional=settings.artifact is None)
    read = _read(settings, pipeline, say)
    say(f"whole model on {len(read)} frames")
    probs = pipeline.full_model_probs(read.images)
    reference = probs.argmax(1)
    accuracy, ci95 = _accuracy(reference == read.labels)
    spec = pipeline.input_spec
    artifact = None if not pipeline.has_artifact else FolderArtifact(
        sha256=pipeline.artifact.sha256, split=pipeline.artifact.split, ir_shape=pipeline.artifact.ir_shape,
        components=pipeline.artifact.n_components)
    images: list[FolderCapRow] | Missing = Missing(missing="the image mode sends grey frames; this model takes RGB")
    if spec.channels == 1:
        images = _image_rows(pipeline, read, settings, reference, say)
    return FolderReport(
        command=command,
        model=FolderModel(name=pipeline.manifest.name, sha256=pipeline.manifest.sha256, input=spec.describe(),
                          labels=list(spec.labels)),
        folder=FolderRead(path=str(settings.folder), images=len(read), names_sha256=read.names_sha256,
                          per_class=np.bincount(read.labels, minlength=len(spec.labels)).tolist(),
                          skipped=dict(read.counters)),
        whole_model_accuracy=accuracy, whole_model_ci95=ci95,
        decision_wire_bytes=float(topk_wire(probs, 1).mean()) if len(probs) else 0.0,
        artifact=artifact,
        nair=_nair_rows(pipeline, read, settings.caps, say) if artifact is not None else
        Missing(missing=f"no NAIR artifact for {settings.model}: run 'nairbus calibrate --model {settings.model}'"),
        image=images, seconds=round(time.monotonic() - started, 1))
