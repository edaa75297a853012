"""Choose a NAIR bit allocation for a per-frame wire budget, on the validation split (``calibrate --wire-bytes``).

Every candidate allocation (:data:`nairbus.models.nair.calibration.BIT_ALLOCATIONS`, or the ones given) is calibrated on
the same calibration images; each validation frame then sends the longest one-message prefix whose whole MQTT PUBLISH
fits the budget (:func:`nairbus.agents.nair.curve.nair_curve`, the sensor's own rule), and the allocation with the best
validation accuracy wins (ties: fewer mean wire bytes, then the earlier candidate). What was compared, on which images,
is returned as a record the artifact keeps in its provenance. The test split is never read here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from nairbus.agents.nair.curve import nair_curve
from nairbus.models.architectures.resnet import ResNet
from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.calibration import (
    BIT_ALLOCATIONS,
    BitBands,
    CalibrationSettings,
    calibrate,
    calibrated_bit_bands,
    calibration_ir,
    format_bit_bands,
    head_outputs,
)
from nairbus.models.nair.entropy import MAX_ENTROPY_BITS
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact

__all__ = ["choose_allocation"]


def choose_allocation(
    model: ResNet, manifest: ModelManifest, calibration_images: np.ndarray, validation: Dataset,
    settings: CalibrationSettings, wire_bytes: int, *, validation_source: str,
    candidates: Mapping[str, BitBands] = BIT_ALLOCATIONS, progress: Callable[[str], None] | None = None,
) -> tuple[NairArtifact, dict[str, Any]]:
    """The artifact of the allocation most accurate on ``validation`` within ``wire_bytes`` per frame, and the record
    of the comparison (``settings.bit_bands`` is replaced by each candidate's)."""
    if wire_bytes <= 0:
        raise ValueError(f"--wire-bytes must be positive, not {wire_bytes}")
    say = progress or (lambda _m: None)
    say(f"head outputs of {len(calibration_images)} calibration images")
    ir = calibration_ir(model, calibration_images, settings.split, settings.batch_size)
    validation_ir = head_outputs(model, validation.images, settings.split, settings.batch_size)
    compared: list[dict[str, Any]] = []
    best: tuple[tuple[float, float, int], NairArtifact] | None = None
    if settings.entropy_coding:  # range coding takes narrow codes only
        candidates = {label: bands for label, bands in candidates.items()
                      if max(b for _, b in bands) <= MAX_ENTROPY_BITS}
    for index, (label, bands) in enumerate(candidates.items()):
        say(f"{label}: calibrating and measuring on {len(validation)} validation images")
        artifact = calibrate(model, manifest.name, manifest.sha256, calibration_images,
                             replace(settings, bit_bands=bands), ir=ir)
        pipeline = NairPipeline(model, manifest, artifact)
        codes = np.concatenate([pipeline.encode_ir(validation_ir[s : s + 500])
                                for s in range(0, len(validation_ir), 500)])
        row = nair_curve(pipeline, codes, validation.labels, caps=(wire_bytes,))[0]
        compared.append({"label": label, "bit_bands": format_bit_bands(bands), "accuracy": row["accuracy"],
                         "ci95": row["ci95"], "share_sent": row["share_sent"],
                         "mean_wire_bytes": row["mean_wire_bytes"], "artifact_sha256": artifact.sha256})
        key = (row["accuracy"], -(row["mean_wire_bytes"] or float("inf")), -index)
        if best is None or key > best[0]:
            best = (key, artifact)
    assert best is not None, "no candidate allocation"
    chosen = best[1]
    record = {
        "wire_bytes": wire_bytes,
        "split": validation_source,
        "criterion": "best validation accuracy with every frame cut to the longest one-message prefix whose whole "
                     "MQTT PUBLISH fits the wire budget (ties: fewer mean wire bytes, then the earlier candidate)",
        "compared": compared,
        "chosen": calibrated_bit_bands(chosen.meta),
    }
    return chosen, record
