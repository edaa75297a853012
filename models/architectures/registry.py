"""The registry of native architectures: how a manifest's ``architecture_id`` and ``config`` become a module.

A new native architecture is one module (the ``nn.Module`` with ``head``/``tail`` at named split points, see
:class:`nairbus.models.architectures.split.SplitModel`) plus one :func:`register` line here. Models that are not native
— a user's TorchScript file, ``torch.export`` program or Python factory — come in through
:mod:`nairbus.models.architectures.imported` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from nairbus.models.architectures.mobilenet import MobileNetConfig, MobileNetV2
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.architectures.split import InputSpec
from nairbus.models.data.registry import fashion_mnist_spec

__all__ = ["ARCHITECTURES", "Architecture", "build", "fashion_mnist_spec", "register"]


@dataclass(frozen=True, slots=True)
class Architecture:
    """A native architecture: its manifest id, a one-line description, and how to build it from its config."""

    id: str
    description: str
    build: Callable[[Mapping[str, Any], InputSpec], nn.Module]


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Make ``architecture`` loadable by its id (one line per architecture, below)."""
    if architecture.id in ARCHITECTURES:
        raise ValueError(f"architecture {architecture.id!r} is registered twice")
    ARCHITECTURES[architecture.id] = architecture
    return architecture


def build(architecture_id: str, config: Mapping[str, Any], spec: InputSpec) -> nn.Module:
    """A fresh module of a registered architecture; a clear error for an unknown id."""
    try:
        architecture = ARCHITECTURES[architecture_id]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture_id!r}; registered: {', '.join(ARCHITECTURES)}") from None
    return architecture.build(config, spec)


def _resnet(config: Mapping[str, Any], spec: InputSpec) -> nn.Module:
    return ResNet(ResNetConfig.from_dict(config), spec)


def _mobilenet(config: Mapping[str, Any], spec: InputSpec) -> nn.Module:
    return MobileNetV2(MobileNetConfig.from_dict(config), spec)


register(Architecture("resnet", "resnet-basic (He et al. 2016, CIFAR-style), adapted to 28x28 grey", _resnet))
register(Architecture("mobilenetv2", "MobileNetV2-style (Sandler et al. 2018): inverted residuals, linear "
                                     "bottlenecks, ReLU6", _mobilenet))
