"""The record of a model's exported device parts: ``<model>.onnx.json`` beside its manifest, without torch.

``nairbus export-onnx`` writes each part a sensor of the model needs — the whole model (``<model>.whole.onnx``, the
decision mode) and the head at the split of each NAIR artifact beside the manifest (``<model>.<split>.onnx``) — and
this record: the model's name and sha256, and per part its file, sha256 and split, with the share of the model's MACs
each split's head runs (what a device budget is compared with; counted with torch at export, so that the device need
not). The committed model manifests are not touched. A runner refuses a record, or a part, made from other weights
than the manifest names (:class:`~nairbus.models.export.runtime.PartMismatchError`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nairbus.models.catalog import locate_model

__all__ = ["PARTS_VERSION", "ExportedParts", "PartRecord", "parts_record_path", "read_parts"]

PARTS_VERSION = 1


class PartRecord(BaseModel):
    """One exported part: its file (beside the record), sha256, and split (None: the whole model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(min_length=1, pattern=r"^[^/\\]+\.onnx$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    split: str | None = None


class ExportedParts(BaseModel):
    """``<model>.onnx.json``: the exported device parts of one model's weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = PARTS_VERSION
    model_name: str = Field(min_length=1)
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int
    parts: dict[str, PartRecord]
    """By part name: a split point, or ``whole``."""
    head_shares: dict[str, float] = Field(default_factory=dict)
    """Each split point's share of the model's MACs (empty: the model could not be counted)."""
    command: str | None = None

    def head(self, split: str) -> PartRecord | None:
        """The head part at ``split`` (None: not exported)."""
        part = self.parts.get(split)
        return part if part is not None and part.split == split else None


def parts_record_path(model_name: str, directory: Path | None = None) -> Path:
    """``<model>.onnx.json`` beside the model's manifest (``directory``: where the parts were written instead)."""
    name, found = locate_model(model_name)
    return (directory or found) / f"{name}.onnx.json"


def read_parts(path: Path) -> ExportedParts:
    """The record at ``path``; a clear error when it is missing or not a record."""
    if not path.is_file():
        raise FileNotFoundError(f"no exported ONNX parts at {path}; export them with 'nairbus export-onnx --model "
                                f"{path.name.removesuffix('.onnx.json')}'")
    try:
        return ExportedParts.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise FileNotFoundError(f"{path} is not a record of exported ONNX parts: {exc}") from exc
