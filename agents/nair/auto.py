"""``--mode auto``: per frame, send NAIR features or the compressed image, whichever is expected to be more accurate.

The expectation comes from calibrated tables (:mod:`nairbus.agents.nair.rates`, written by ``nairbus calibrate-auto``
from validation images of the training split — never the test split): the accuracy of NAIR against the payload bytes of
the prefix sent, and the accuracy of the whole model on images decoded from each codec of the sensor's ladder. For a
frame, the sensor knows how many NAIR bytes its budget buys and which codec of the ladder fits; it sends the one whose
table says more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.models.store import WEIGHTS_DIR

__all__ = ["AutoChooser", "auto_table_path"]


def auto_table_path(model: str, artifact: Path | None = None, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Where the auto-mode table of a model and NAIR artifact lives: beside the artifact, ``.auto.json``."""
    path = artifact or weights_dir / f"{model}.nair.npz"
    name = path.name.removesuffix(".npz").removesuffix(".nair")
    return path.with_name(f"{name}.auto.json")


@dataclass(frozen=True)
class AutoChooser:
    """The calibrated tables and the rule that picks a representation per frame. Pure."""

    nair_bytes: np.ndarray
    """Payload bytes of the NAIR prefix at each table point (increasing)."""
    nair_accuracy: np.ndarray
    codec_accuracy: dict[str, float]
    source: dict[str, Any]

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> AutoChooser:
        """Build from the JSON table (see :func:`nairbus.agents.nair.rates.auto_table`)."""
        points = sorted((int(p["payload_bytes"]), float(p["accuracy"])) for p in table["nair"])
        if not points:
            raise ValueError("auto table has no NAIR points")
        return cls(np.array([b for b, _ in points]), np.array([a for _, a in points]),
                   {str(k): float(v["accuracy"]) for k, v in table["image"].items()},
                   {k: table[k] for k in ("command", "split", "frames", "model_sha256") if k in table})

    @classmethod
    def load(cls, model: str, artifact: Path | None = None) -> AutoChooser:
        """Read the table of a model and artifact; a clear error saying how to make it when it is missing."""
        path = auto_table_path(model, artifact)
        if not path.is_file():
            hint = f" --artifact {artifact}" if artifact else ""
            raise FileNotFoundError(f"no auto-mode table at {path}; create it with 'nairbus calibrate-auto{hint}'")
        return cls.from_table(json.loads(path.read_text()))

    def nair_expected(self, payload_bytes: int) -> float:
        """Validation accuracy of NAIR with a prefix of ``payload_bytes`` (the best table point not above it)."""
        i = int(np.searchsorted(self.nair_bytes, payload_bytes, side="right")) - 1
        return float(self.nair_accuracy[i]) if i >= 0 else 0.0

    def image_expected(self, codec: str | None) -> float:
        """Validation accuracy of the whole model on images of ``codec`` (0 when no codec fits)."""
        return 0.0 if codec is None else self.codec_accuracy.get(codec, 0.0)

    def prefer_image(self, nair_payload_bytes: int, codec: str | None) -> bool:
        """Whether the image (``codec``, the ladder's first that fits) beats the NAIR prefix the budget buys."""
        return self.image_expected(codec) > self.nair_expected(nair_payload_bytes)
