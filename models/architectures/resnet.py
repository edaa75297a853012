"""The ResNet family (He et al., 2016, CIFAR-style basic blocks) adapted to 28x28 grey images.

A model is described by a :class:`ResNetConfig` (widths, blocks per stage, input resolution) so that the mature
model and the light VP variants come from the same family. Layers are named so that a split point is a name
(``stem``, ``stage1``, ``stage2``, ``stage3``): :meth:`ResNet.head` runs the input up to and including that layer,
:meth:`ResNet.tail` runs the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from nairbus.models.data.fashion_mnist import MEAN, STD  # re-exported: the data set's normalisation

SPLIT_POINTS: tuple[str, ...] = ("stem", "stage1", "stage2", "stage3")
ModuleT = TypeVar("ModuleT", bound=nn.Module)

if TYPE_CHECKING:
    from nairbus.models.architectures.split import InputSpec


@dataclass(frozen=True, slots=True)
class ResNetConfig:
    """Shape of one member of the family."""

    widths: tuple[int, int, int] = (32, 64, 128)
    blocks: tuple[int, int, int] = (2, 2, 2)
    resolution: int = 28
    num_classes: int = 10
    stem_width: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["blocks"] = list(self.blocks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResNetConfig:
        return cls(
            widths=tuple(data["widths"]),
            blocks=tuple(data["blocks"]),
            resolution=int(data["resolution"]),
            num_classes=int(data["num_classes"]),
            stem_width=data.get("stem_width"),
            extra=dict(data.get("extra") or {}),
        )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(c_in, c_out, stride)]
    layers += [BasicBlock(c_out, c_out, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """ResNet for 1x28x28 input; takes uint8-range or [0, 1] floats via :func:`preprocess`."""

    split_points: tuple[str, ...] = SPLIT_POINTS

    def __init__(self, config: ResNetConfig, input_spec: InputSpec | None = None) -> None:
        super().__init__()
        self.config = config
        if input_spec is None:
            from nairbus.models.architectures.split import InputSpec
            from nairbus.models.data.fashion_mnist import LABELS

            labels = LABELS if config.num_classes == len(LABELS) else tuple(str(i) for i in range(config.num_classes))
            input_spec = InputSpec(channels=1, height=28, width=28, mean=(MEAN,), std=(STD,), labels=labels)
        self.input_spec = input_spec
        w1, w2, w3 = config.widths
        stem = config.stem_width or w1
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        self.stage1 = _stage(stem, w1, config.blocks[0], 1)
        self.stage2 = _stage(w1, w2, config.blocks[1], 2)
        self.stage3 = _stage(w2, w3, config.blocks[2], 2)
        self.fc = nn.Linear(w3, config.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def _layers(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem), ("stage1", self.stage1), ("stage2", self.stage2), ("stage3", self.stage3)]

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """Resample a normalised batch to this member's input resolution."""
        if x.shape[-1] == self.config.resolution:
            return x
        size = (self.config.resolution, self.config.resolution)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def head(self, x: torch.Tensor, split: str) -> torch.Tensor:
        """Run a normalised batch up to and including layer ``split``; returns the IR."""
        _check_split(split)
        x = self.resize(x)
        for name, layer in self._layers():
            x = layer(x)
            if name == split:
                return x
        raise AssertionError("unreachable")

    def tail(self, ir: torch.Tensor, split: str) -> torch.Tensor:
        """Run an IR produced by :meth:`head` at ``split`` to logits."""
        _check_split(split)
        started = False
        x = ir
        for name, layer in self._layers():
            if started:
                x = layer(x)
            started = started or name == split
        logits: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(x, "stage3"), "stage3")


def _check_split(split: str) -> None:
    if split not in SPLIT_POINTS:
        raise ValueError(f"unknown split point {split!r}; choose one of {', '.join(SPLIT_POINTS)}")


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` to normalised float ``(N, 1, 28, 28)``."""
    x = images.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x / 255.0 - MEAN) / STD


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, split: str | None = None) -> int:
    """Multiply-accumulates of one forward pass on one image (convs and the linear layer); with ``split``, of the
    head up to that split point only (what a sensor computes)."""
    macs = 0

    def hook(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += out.numel() * k
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        spec = getattr(model, "input_spec", None)
        x = torch.zeros(1, 1, 28, 28) if spec is None else torch.zeros(1, spec.channels, spec.height, spec.width)
        model(x) if split is None else model.head(x, split)  # type: ignore[operator]
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return macs


def with_memory_format(model: ModuleT, memory_format: torch.memory_format) -> ModuleT:
    """``model`` with its 4-d parameters in ``memory_format`` (in place; typed, unlike ``Module.to``'s stubs)."""
    return model.to(memory_format=memory_format)  # type: ignore[call-overload,no-any-return]
