"""The variant family's manifest (``models/weights/variants.json``) as a typed model: what a VP sensor, a VP fusion
agent, the evaluators and a resumed training run read of it.

Torch-free (pydantic and json only), so an agent that needs the family's hashes, labels and k — the fusion agent, a
light sensor — reads it without loading a network. ``nairbus train variants`` writes it
(:func:`nairbus.models.vp.training.train_family`) and validates it here before it does; a manifest that drifts from
this model is refused with the fields that differ.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, JsonValue

from nairbus.models.catalog import WEIGHTS_DIR

__all__ = ["FAMILY_NAME", "FamilyManifest", "ModelSummary", "Selection", "SelectionStep", "VariantEntry",
           "family_manifest_path"]

FAMILY_NAME = "variants"
"""Name of the family manifest (``models/weights/variants.json``); each variant is ``variants-<name>``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantEntry(_Frozen):
    """One variant of the family: its architecture, fusion weight, cost against the base model, test accuracy and
    its weights (file and sha256)."""

    name: str
    weights_name: str
    width_multiplier: float
    resolution: int
    blocks: list[int]
    widths: list[int]
    fusion_weight: float
    params: int
    macs: int
    params_ratio: float
    macs_ratio: float
    base_params: int
    base_macs: int
    budget_ratio: float
    fits_budget: bool
    test_accuracy: float
    sha256: str
    weights_file: str


class ModelSummary(_Frozen):
    """A model the family refers to (the base it was derived from, the teacher it was distilled from)."""

    name: str
    sha256: str
    params: int | None = None
    macs: int | None = None
    test_accuracy: float | None = None


class SelectionStep(_Frozen):
    """The family after one epoch: its ensemble's and each variant's validation accuracy."""

    cycles: int
    epochs: int
    validation_ensemble_accuracy: float
    validation_variant_accuracy: dict[str, float]


class Selection(_Frozen):
    """Which epoch's weights the family kept, chosen on the validation split, with the history it chose from."""

    split: str
    criterion: str
    kept_cycles: int
    kept_epochs: int
    cycles_run: int
    history: list[SelectionStep]

    def kept(self) -> SelectionStep | None:
        """The history entry of the kept epoch."""
        return next((h for h in self.history if h.epochs == self.kept_epochs), None)


class FamilyManifest(_Frozen):
    """The family: its variants in order, the fusion's k and labels, the ensemble's test figures and provenance."""

    name: str
    method: str
    command: str
    labels: tuple[str, ...]
    k: int
    variants: tuple[VariantEntry, ...]
    ensemble_accuracy: float
    leave_one_out_accuracy: dict[str, float]
    max_drop_one_lost: float
    subsets: dict[str, float]
    base: ModelSummary | None
    settings: dict[str, JsonValue]
    teacher: ModelSummary | None
    train_wall_seconds: float
    resumed_from: dict[str, JsonValue] | None
    trained_on: str
    torch_version: str
    selection: Selection | None = None
    first_cycle_from: dict[str, JsonValue] | None = None
    """Older manifests' name for ``resumed_from`` (read, never written)."""

    @classmethod
    def load(cls, directory: Path = WEIGHTS_DIR) -> FamilyManifest:
        """The manifest in ``directory``; a missing one says how to make it."""
        path = family_manifest_path(directory)
        if not path.is_file():
            raise FileNotFoundError(f"no variant family manifest {path}; train it with 'nairbus train variants'")
        return cls.model_validate_json(path.read_text())

    def variant(self, name: str) -> VariantEntry:
        """The variant ``name``; an unknown one names those the family has."""
        for entry in self.variants:
            if entry.name == name:
                return entry
        raise KeyError(f"unknown variant {name!r}; the family has {', '.join(self.names())}")

    def names(self) -> tuple[str, ...]:
        """The variants' names, in family order."""
        return tuple(v.name for v in self.variants)


def family_manifest_path(directory: Path = WEIGHTS_DIR) -> Path:
    """Where the family's manifest lives in ``directory``."""
    return directory / f"{FAMILY_NAME}.json"
