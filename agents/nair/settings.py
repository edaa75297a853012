"""A NAIR, image, decision or auto sensor's own settings: the artifact, the runtime of the device's model work, the
image codec ladder, the decision's k, and the injected-loss test tooling. (``budget_fraction`` stays a sensor
setting: the runtime's sensor controls change it.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nairbus.agents.nair.budget import DeviceBudget, parse_device_budget
from nairbus.agents.runtime.config import SensorSettings
from nairbus.agents.runtime.methods import MethodSettings, method_settings
from nairbus.models.device import Runtime

__all__ = ["DEFAULT_IMAGE_CODECS", "LossSettings", "NairSettings", "nair_settings"]

DEFAULT_IMAGE_CODECS = ("grey8+zstd", "grey7+zstd", "grey6+zstd", "grey5+zstd", "grey4+zstd", "down22:grey5+zstd",
                        "grey3+zstd", "down22:grey4+zstd", "down20:grey4+zstd", "down24:grey3+zstd",
                        "down22:grey3+zstd", "down20:grey3+zstd", "down16:grey4+zstd", "down13:grey5+zstd",
                        "down14:grey4+deflate", "down13:grey4+zstd", "down12:grey4+zstd", "down11:grey4+zstd",
                        "down13:grey3+zstd", "down12:grey3+zstd", "down11:grey3+zstd", "down14:grey2+zstd",
                        "down13:grey2+zstd", "down10:grey3+zstd", "down12:grey2+zstd", "down11:grey2+zstd",
                        "down10:grey2+deflate", "down9:grey2+zstd", "down12:grey1+zstd", "down11:grey1+zstd",
                        "down10:grey1+zstd")
"""The image and auto modes' codec ladder unless ``image_codecs`` names one: the ``grey-front`` family of
``models/experiments/images.toml`` best first (down-sampled and full-size grey levels with zstd, the Pareto front of
bytes and accuracy on the validation split; the strongest ladder of ``reports/images.json``)."""


class LossSettings(BaseModel):
    """Injected fragment loss — test tooling only; a real link loses fragments by itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none", "random", "bursty"] = "none"
    rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    mean_burst: float = Field(default=3.0, ge=1.0)
    seed: int = 0


class NairSettings(MethodSettings):
    """What a ``nair``, ``image``, ``decision`` or ``auto`` sensor reads of its ``method_options``."""

    artifact: Path | None = Field(default=None, description=(
        "The NAIR artifact (default: the model manifest's sensor artifact, chosen on validation)."))
    runtime: Runtime = Field(default="torch", description=(
        "What runs the device's part of the model: 'torch' (its weights) or 'onnx' (the parts 'nairbus "
        "export-onnx' wrote beside its manifest, in ONNX Runtime on one thread, the NAIR transform in numpy: no "
        "torch needed for the model work). Both give the same decisions; NAIR codes may differ by one quantiser "
        "step on a few components in a million."))
    image_codecs: tuple[str, ...] = Field(default=DEFAULT_IMAGE_CODECS, description=(
        "Image and auto modes: the codecs a frame may be sent with, best first; each frame takes the first that "
        "fits its budget (specs of ``nairbus.models.image.codec``)."))
    k: int = Field(default=1, ge=1, le=64, description=(
        "Decision mode: the classes (with their scores) sent per frame, most probable first; 1 sends the decision "
        "alone (about 30 wire bytes)."))
    device_budget: str | None = Field(default=None, description=(
        "Auto mode: what the device may spend per frame — CPU milliseconds ('5ms') or a share of the model's MACs "
        "('62%', '0.62'); it limits auto to the representations that fit (image, NAIR at the artifact's split, the "
        "whole model's decision). Default: what the sensor measures it can afford at its frame rate."))
    link_memory: bool = Field(default=True, description=(
        "Remember the link's rate per broker between runs (a small JSON file in $STATE_DIRECTORY, "
        "$XDG_STATE_HOME/nairbus or ~/.local/state/nairbus) and start the next run at half of it, instead of "
        "probing blind."))
    link_trace: Path | None = Field(default=None, description=(
        "Write every sample of the link and every frame's budget to this file as JSON lines (the kernel's TCP_INFO "
        "included), to see why frames got the bytes they got; nairbus.agents.nair.linktrace reads it back."))
    fragments_by_plan: bool = Field(default=False, description=(
        "Cut each frame's prefix along the artifact's fragment plan instead of sending it as one message (one "
        "message per piece: only for the injected-loss test tooling, which loses pieces)."))
    loss: LossSettings = Field(default=LossSettings(), description="Injected fragment loss (test tooling only).")

    @field_validator("image_codecs", "loss", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        """An environment variable gives these as JSON (``NAIRBUS_SENSOR__IMAGE_CODECS='["png"]'``)."""
        if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
            return json.loads(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.image_codecs:
            raise ValueError("image_codecs needs at least one codec")
        if self.device_budget is not None:
            parse_device_budget(self.device_budget)
        return self

    def budget(self) -> DeviceBudget | None:
        """The device budget, parsed (None: measured at start)."""
        return None if self.device_budget is None else parse_device_budget(self.device_budget)


def nair_settings(settings: SensorSettings) -> NairSettings:
    """A NAIR sensor's ``method_options`` as its checked settings (a ``ValueError`` naming the mode and the option)."""
    return method_settings(NairSettings, settings)
