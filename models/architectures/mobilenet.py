"""A MobileNetV2-style classifier (Sandler et al., 2018: inverted residuals, linear bottlenecks) for small RGB input.

It is the second, differently shaped architecture nairbus ships to prove the generic path: 3-channel input, depthwise
separable blocks with expansion, ReLU6, and a narrow bottleneck at every split point (where ResNet's IR is a wide
post-ReLU map, this one's is a linear, signed bottleneck). Layers are named (``stem``, ``block1`` … ``blockN``,
``last``) so a split point is a module name, as for any model imported with ``nairbus import-model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nairbus.models.architectures.split import InputSpec, check_split


@dataclass(frozen=True, slots=True)
class MobileNetConfig:
    """Shape of the network: the stem width, ``(expansion, channels, repeats, stride)`` per stage, the last 1x1
    width, and the input it takes."""

    stem: int = 16
    stages: tuple[tuple[int, int, int, int], ...] = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2), (4, 64, 2, 2),
                                                      (4, 96, 1, 1))
    last: int = 256
    channels: int = 3
    resolution: int = 32
    num_classes: int = 10
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = [list(s) for s in self.stages]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MobileNetConfig:
        fields = dict(data)
        if "stages" in fields:
            fields["stages"] = tuple(tuple(int(v) for v in s) for s in fields["stages"])
        return cls(**fields)


class InvertedResidual(nn.Module):
    """1x1 expansion (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; identity shortcut when shapes agree."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """The network; :meth:`head` and :meth:`tail` split it at any block boundary."""

    def __init__(self, config: MobileNetConfig, input_spec: InputSpec) -> None:
        super().__init__()
        self.config = config
        self.input_spec = input_spec
        self.stem = nn.Sequential(nn.Conv2d(config.channels, config.stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(config.stem), nn.ReLU6(inplace=True))
        names: list[str] = []
        c_in = config.stem
        for expansion, c_out, repeats, stride in config.stages:
            for r in range(repeats):
                name = f"block{len(names) + 1}"
                self.add_module(name, InvertedResidual(c_in, c_out, stride if r == 0 else 1, expansion))
                names.append(name)
                c_in = c_out
        self.last = nn.Sequential(nn.Conv2d(c_in, config.last, 1, bias=False), nn.BatchNorm2d(config.last),
                                  nn.ReLU6(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.last, config.num_classes))
        self.split_points: tuple[str, ...] = ("stem", *names)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def _layers(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in self.split_points]

    def head(self, x: torch.Tensor, split: str) -> torch.Tensor:
        """Run a normalised batch up to and including layer ``split``; returns the IR."""
        check_split(split, self.split_points)
        for name, layer in self._layers():
            x = layer(x)
            if name == split:
                return x
        raise AssertionError("unreachable")

    def tail(self, ir: torch.Tensor, split: str) -> torch.Tensor:
        """Run an IR produced by :meth:`head` at ``split`` to logits."""
        check_split(split, self.split_points)
        x, started = ir, False
        for name, layer in self._layers():
            if started:
                x = layer(x)
            started = started or name == split
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.last(x), 1), 1)
        logits: torch.Tensor = self.classifier(pooled)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(x, self.split_points[-1]), self.split_points[-1])
