"""A classifier's input, without torch: channels, size, normalisation and labels (:class:`InputSpec`).

Everything a device needs to turn decoded images into a model's input lives here and imports no torch — a sensor
installed without torch (ONNX Runtime runs its part of the model) converts frames with :meth:`InputSpec.convert` and
normalises them with :meth:`InputSpec.normalise` (numpy). :meth:`InputSpec.preprocess` and :meth:`InputSpec.prepare`
give the torch tensor the model takes and import torch when called (:mod:`nairbus.models.architectures.split`
re-exports the class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_SIDE", "InputSpec"]

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

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 images of any size, grey or RGB, as the normalised float32 batch ``(N, C, H, W)`` in numpy:
        :meth:`convert`, then ``(x / 255 - mean) / std`` in float32 — the same numbers as :meth:`prepare`, bit for
        bit, without torch."""
        x = self.convert(images)
        if x.ndim == 3 and self.channels == 1:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] == self.channels and x.shape[1] != self.channels:
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, self.height, self.width):
            raise ValueError(f"images of shape {tuple(x.shape[1:])} do not fit the input spec ({self.describe()})")
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x.astype(np.float32) / np.float32(255.0) - mean) / std, dtype=np.float32)

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images of any size, grey or RGB, as the model's normalised input: :meth:`convert` then
        :meth:`preprocess`."""
        return self.preprocess(self.convert(images))

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Converted uint8 images ``(N, *pixel_shape)`` (or already ``(N, C, H, W)``) as the normalised float
        tensor ``(N, C, H, W)`` the model takes; a clear error when the shape does not fit (imports torch)."""
        import torch

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
