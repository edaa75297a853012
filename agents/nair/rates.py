"""``nairbus calibrate-auto``: the rate-accuracy tables ``--mode auto`` chooses with, from validation images only.

For the validation split of the *training* images (``fashion_mnist.validation_split``, disjoint
from the images
``nairbus calibrate`` fits on; the test split is never read),
the table holds NAIR's accuracy against the payload bytes of the prefix sent, the whole model's accuracy on
images passed through each codec of the sensor's ladder, and the whole model's top-1 accuracy (the decision mode).
:class:`nairbus.agents.nair.auto.AutoChooser` reads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.image.codec import get_image_codec
from nairbus.models.nair.pipeline import NairPipeline

__all__ = ["NAIR_TABLE_BUDGETS", "auto_table", "write_auto_table"]

NAIR_TABLE_BUDGETS: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640,
                                       768, 1024, 1280, 1536, 2048, 3072, 4096, 6144, 8192, 12544)
"""Payload budgets (bytes) of the NAIR table: dense where the choice between NAIR and an image is close."""


def auto_table(pipeline: NairPipeline, validation: Dataset, codecs: Sequence[str],
               budgets: Sequence[int] = NAIR_TABLE_BUDGETS,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """NAIR accuracy by prefix bytes, whole-model accuracy by image codec and of the decision, on ``validation``."""
    say = progress or (lambda _msg: None)
    labels = validation.labels
    say(f"NAIR head on {len(labels)} validation images")
    codes = pipeline.encode_all(validation.images)
    nair = []
    full = pipeline.artifact.total_bytes()
    nair_codec = pipeline.codec
    for budget in sorted({min(b, full) for b in budgets}):
        ends = np.array([nair_codec.fit(row, budget) for row in codes])  # per frame: a range-coded prefix varies
        if (ends <= 0).all():
            continue
        probs = pipeline.prefix_probs(codes, ends)
        acc = float(((probs.argmax(1) == labels) & (ends > 0)).mean())
        used = max(nair_codec.data_bytes(row, int(end)) for row, end in zip(codes, ends, strict=True))
        nair.append({"payload_bytes": used, "components": int(np.median(ends)), "accuracy": acc})
        say(f"NAIR {budget} B: {acc:.4f}")
    image: dict[str, Any] = {}
    for spec in codecs:
        codec = get_image_codec(spec)
        sizes, decoded = [], []
        for img in validation.images:
            data = codec.encode(img)
            sizes.append(len(data))
            decoded.append(codec.decode(data, img.shape))
        probs = pipeline.full_model_probs(np.stack(decoded))
        acc = float((probs.argmax(1) == labels).mean())
        image[spec] = {"accuracy": acc, "mean_payload_bytes": float(np.mean(sizes)),
                       "p90_payload_bytes": float(np.percentile(sizes, 90))}
        say(f"image {spec}: {acc:.4f} at {np.mean(sizes):.0f} B")
    decided = pipeline.full_model_probs(validation.images).argmax(1)
    decision = {"accuracy": float((decided == labels).mean()), "k": 1}
    say(f"decision: {decision['accuracy']:.4f}")
    return {"nair": nair, "image": image, "decision": decision}


def write_auto_table(pipeline: NairPipeline, validation: Dataset, codecs: Sequence[str], command: str,
                     path: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Compute :func:`auto_table` and write it with its provenance (default next to the model's weights)."""
    started = time.perf_counter()
    table = auto_table(pipeline, validation, codecs, progress=progress)
    table.update({
        "command": command,
        "split": "validation: fashion_mnist.validation_split (training images, disjoint from calibration)",
        "frames": len(validation.labels),
        "model": pipeline.manifest.name,
        "model_sha256": pipeline.manifest.sha256,
        "artifact_sha256": pipeline.artifact.sha256,
        "seconds": round(time.perf_counter() - started, 1),
    })
    path.write_text(json.dumps(table, indent=2) + "\n")
    return path
