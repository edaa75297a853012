"""What every split model offers, whoever wrote it: an input spec and a head/tail pair at named split points.

:class:`InputSpec` replaces the constants a model used to hard-code (channels, size, normalisation, labels): it
turns decoded images into the model's input (colour conversion and resizing at the edge, :meth:`InputSpec.convert`)
and that into a normalised tensor (:meth:`InputSpec.preprocess`). :class:`SplitModel` is the interface NAIR
calibration, the pipeline, the sensor and the fusion agent use: the shipped ResNet family implements it natively, and
a user's classifier imported with ``nairbus import-model`` is wrapped into it
(:mod:`nairbus.models.architectures.imported`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["InputSpec", "SplitModel", "check_split"]

MAX_SIDE = 4096


class InputSpec(BaseModel):
    """The input a classifier expects: ``channels`` (1 grey, 3 RGB) × ``height`` × ``width`` uint8 pixels scaled to
    [0, 1] and normalised per channel by ``mean`` and ``std``; ``labels`` name its outputs in class order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: int = Field(ge=1, le=3)
    height: int = Field(ge=1, le=MAX_SIDE)
    width: int = Field(ge=1, le=MAX_SIDE)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: tuple[str, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.channels == 2:
            raise ValueError("channels must be 1 (grey) or 3 (RGB)")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values (one per channel), got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """Shape of one converted image: ``(H, W)`` for grey, ``(H, W, 3)`` for RGB."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)

    def describe(self) -> str:
        """``3x32x32 RGB, 10 labels`` — for errors and logs."""
        kind = "grey" if self.channels == 1 else "RGB"
        return f"{self.channels}x{self.height}x{self.width} {kind}, {self.num_classes} labels"

    def convert_image(self, image: Any) -> np.ndarray:
        """A decoded Pillow image as this model's uint8 input (:attr:`pixel_shape`): grey (ITU-R 601 luma) or RGB,
        resized bilinearly (with antialiasing when shrinking) — the same conversion everywhere frames enter."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        converted = image.convert("L" if self.channels == 1 else "RGB")
        if converted.size != (self.width, self.height):
            converted = converted.resize((self.width, self.height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.array(converted, dtype=np.uint8)  # a writable copy (torch refuses read-only arrays)

    def convert(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixel arrays ``(N, H', W')`` (grey) or ``(N, H', W', 3)`` (RGB) of any size as this model's input
        ``(N, *pixel_shape)``; images already in that shape are returned as they are."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 pixels, not {images.dtype}")
        if images.shape[1:] == self.pixel_shape:
            return images
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise ValueError(f"images of shape {images.shape[1:]} are neither grey (H, W) nor RGB (H, W, 3)")
        from PIL import Image

        out = np.empty((len(images), *self.pixel_shape), dtype=np.uint8)
        for i, pixels in enumerate(images):
            out[i] = self.convert_image(Image.fromarray(pixels))
        return out

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images of any size, grey or RGB, as the model's normalised input: :meth:`convert` then
        :meth:`preprocess`."""
        return self.preprocess(self.convert(images))

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Converted uint8 images ``(N, *pixel_shape)`` (or already ``(N, C, H, W)``) as the normalised float
        tensor ``(N, C, H, W)`` the model takes; a clear error when the shape does not fit."""
        x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        if x.dim() == 3 and self.channels == 1:
            x = x.unsqueeze(1)
        elif x.dim() == 4 and x.shape[-1] == self.channels and x.shape[1] != self.channels:
            x = x.permute(0, 3, 1, 2)
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, self.height, self.width):
            raise ValueError(f"images of shape {tuple(x.shape[1:])} do not fit the input spec ({self.describe()})")
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x.float() / 255.0 - mean) / std).contiguous()


@runtime_checkable
class SplitModel(Protocol):
    """A classifier cut at named points: ``head`` runs the normalised input up to a split point (what a sensor
    computes), ``tail`` the rest to logits (what fusion computes); ``tail(head(x, s), s)`` is the whole model."""

    input_spec: InputSpec
    split_points: tuple[str, ...]

    def head(self, x: torch.Tensor, split: str) -> torch.Tensor: ...

    def tail(self, ir: torch.Tensor, split: str) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def check_split(split: str, points: Sequence[str]) -> None:
    """A clear error when ``split`` is not one of the model's split points."""
    if split not in points:
        raise ValueError(f"unknown split point {split!r}; this model splits at {', '.join(points)}")
