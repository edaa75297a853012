"""What every split model offers, whoever wrote it: an input spec and a head/tail pair at named split points.

:class:`InputSpec` replaces the constants a model used to hard-code (channels, size, normalisation, labels): it
turns decoded images into the model's input (colour conversion and resizing at the edge, :meth:`InputSpec.convert`)
and that into a normalised tensor (:meth:`InputSpec.preprocess`). :class:`SplitModel` is the interface NAIR
calibration, the pipeline, the sensor and the fusion agent use: the shipped ResNet family implements it natively, and
a user's classifier imported with ``nairbus import-model`` is wrapped into it
(:mod:`nairbus.models.architectures.imported`). :class:`InputSpec` is defined, torch-free, in
:mod:`nairbus.models.architectures.spec` (what a sensor without torch needs) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from nairbus.models.architectures.spec import MAX_SIDE, InputSpec

__all__ = ["MAX_SIDE", "InputSpec", "SplitModel", "check_split"]


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
