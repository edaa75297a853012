"""``--mode auto``: per frame, send the compressed image, NAIR features or the device's decision, whichever is
expected to be most accurate at the bytes the frame may spend, among those the device budget allows
(:mod:`nairbus.agents.nair.budget`).

The expectation comes from calibrated tables (:mod:`nairbus.agents.nair.rates`, written by ``nairbus calibrate-auto``
from validation images of the training split — never the test split): the accuracy of NAIR against the payload bytes of
the prefix sent, the accuracy of the whole model on images decoded from each codec of the sensor's ladder, and the
accuracy of the whole model's top-1 (the decision). For a frame, the sensor knows how many NAIR bytes its budget buys,
which codec of the ladder fits and whether the decision fits; it sends the one whose table says most.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.models.catalog import WEIGHTS_DIR

__all__ = ["DECISION_MARGIN", "NAIR_MARGIN", "AutoChooser", "auto_table_path"]

DECISION_MARGIN = 0.005
"""How far above the decision's validation accuracy another representation's must be to be sent instead (about two
standard errors on 5 000 validation frames)."""
NAIR_MARGIN = 0.005
"""How far above the image's validation accuracy NAIR's must be to be sent instead: the image takes the ladder's
first codec that fits, usually well under the budget, while NAIR fills it — a tie within the noise goes to the
smaller message, which leaves the link room for the next frames."""


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
    decision_accuracy: float | None = None
    """Validation accuracy of the whole model's top-1 (None: a table made before the decision mode)."""

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> AutoChooser:
        """Build from the JSON table (see :func:`nairbus.agents.nair.rates.auto_table`)."""
        points = sorted((int(p["payload_bytes"]), float(p["accuracy"])) for p in table["nair"])
        if not points:
            raise ValueError("auto table has no NAIR points")
        decision = table.get("decision")
        return cls(np.array([b for b, _ in points]), np.array([a for _, a in points]),
                   {str(k): float(v["accuracy"]) for k, v in table["image"].items()},
                   {k: table[k] for k in ("command", "split", "frames", "model_sha256") if k in table},
                   None if decision is None else float(decision["accuracy"]))

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
        """Whether the image (``codec``, the ladder's first that fits) is to be sent rather than the NAIR prefix the
        budget buys: unless NAIR is more than :data:`NAIR_MARGIN` more accurate."""
        return codec is not None and self.nair_expected(nair_payload_bytes) <= self.image_expected(codec) + NAIR_MARGIN

    def choose(self, *, nair_payload_bytes: int | None, codec: str | None, decision_fits: bool) -> str | None:
        """The representation expected to be most accurate for one frame: ``decision`` (when the device may run
        the whole model and its message fits), ``nair`` (``nair_payload_bytes``: the prefix the budget buys; None
        when the device may not run the head), or ``image`` (``codec``: the ladder's first that fits); None when
        nothing fits. The decision is the whole model's own answer, the others approximate it: it wins unless the
        table puts one of them more than :data:`DECISION_MARGIN` above it (validation noise); between NAIR and the
        image, NAIR only when it is more than :data:`NAIR_MARGIN` above the image (:meth:`prefer_image`)."""
        expected: dict[str, float] = {}
        if codec is not None:
            expected["image"] = self.image_expected(codec)
        if nair_payload_bytes:
            expected["nair"] = self.nair_expected(nair_payload_bytes)
        best = max(expected.values(), default=0.0)
        if decision_fits and self.decision_accuracy is not None and self.decision_accuracy + DECISION_MARGIN >= best:
            return "decision"
        if not expected:
            return None
        if "nair" in expected and (codec is None or not self.prefer_image(nair_payload_bytes or 0, codec)):
            return "nair"
        return "image"
