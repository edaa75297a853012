"""The model manifest as a typed record: what every model (native or imported) says about itself.

:func:`nairbus.models.store.read_manifest` validates every manifest it reads against :class:`ModelManifest`, so a
hand-edited or truncated manifest is a clear error naming the field, not a ``KeyError`` deep in an agent. Fields a
kind of model adds (training record, selection evidence, the tail-drop baseline's fill, ...) are kept as they are.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nairbus.models.architectures.spec import InputSpec

__all__ = ["ModelManifest", "SensorDefaults"]


class SensorDefaults(BaseModel):
    """What a sensor of the model runs when nothing else is asked for, read off the model's map
    (``nairbus choose-defaults``, :func:`nairbus.models.evaluation.defaults.derive_sensor_defaults`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["nair", "image", "auto", "decision"]
    reason: str = Field(min_length=1)
    """Why, with the map's figures."""
    evidence: str = Field(min_length=1)
    """The report it was read from and the command that made it."""
    represented: tuple[Literal["nair", "image", "decision"], ...] = ()
    """The sensor's own representations that win somewhere on the map."""


class ModelManifest(BaseModel):
    """A model's manifest: identity and integrity, where it splits, what it takes, how it was made."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of ``weights_file``: sensors and fusion pair by it."""
    weights_file: str = Field(min_length=1)
    kind: Literal["native", "imported"] = "native"
    architecture: str = ""
    architecture_id: str = "resnet"
    """Native models: the registered architecture (:mod:`nairbus.models.architectures.registry`)."""
    format: Literal["torch.export", "torchscript"] | None = None
    """Imported models: how ``weights_file`` is stored."""
    config: dict[str, Any] = Field(default_factory=dict)
    split_points: tuple[str, ...] = Field(min_length=1)
    default_split: str | None = None
    input_spec: InputSpec | None = None
    labels: tuple[str, ...] | None = None
    params: int | None = Field(default=None, ge=0)
    macs: int | None = Field(default=None, ge=0)
    test_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    command: str | None = None
    sensor_artifact: str | None = None
    sensor_artifact_chosen: str | None = None
    """How ``sensor_artifact`` was chosen (on the validation split)."""
    sensor_defaults: SensorDefaults | None = None
    """The mode a sensor of this model runs when none is asked for, and why (None: ``nair``)."""
    settings: dict[str, Any] | None = None
    """Trained models: every training setting."""
    selection: dict[str, Any] | None = None
    """Trained models: what was chosen on which split (epoch, fill), with the history compared."""
    train_wall_seconds: float | None = Field(default=None, ge=0.0)
    trained_on: str | None = None
    torch_version: str | None = None
    exported_from: dict[str, Any] | None = None
    """Imported models exported from a native one: that model's own manifest (training, selection)."""
    source: dict[str, Any] | None = None
    """Imported models: the file they were imported from (name, sha256, and the factory of a Python model)."""
    ir_shapes: dict[str, Any] | None = None
    """Imported models: the IR shape at each split point, as measured on import."""

    def extra(self, key: str, default: Any = None) -> Any:
        """A field this kind of model adds beyond the common ones (a VP variant's family, resolution, ...)."""
        return (self.model_extra or {}).get(key, default)

    def as_json(self) -> dict[str, Any]:
        """The manifest as the JSON object it was read from (fields left unset are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)

    @field_validator("weights_file", "sensor_artifact")
    @classmethod
    def _plain_file_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\\" in value or value in (".", "..")):
            raise ValueError(f"{value!r} must be a file name beside the manifest")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if self.default_split is not None and self.default_split not in self.split_points:
            raise ValueError(f"default_split {self.default_split!r} is not one of {', '.join(self.split_points)}")
        if self.kind == "imported" and (self.format is None or self.input_spec is None):
            raise ValueError("an imported model's manifest needs its format and input_spec")
        labels = self.labels or (self.input_spec.labels if self.input_spec else None)
        if self.input_spec is not None and labels != self.input_spec.labels:
            raise ValueError("labels differ from the input spec's labels")
        return self
