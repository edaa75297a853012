"""The variant family of Variant Parallelism: light members of the mature model's ResNet family.

Asadi & Goudarzi (IEEE IoT-J 2023, arXiv 2210.08376) derive variants from one base architecture with a width
multiplier and an input resolution. nairbus does the same with the mature model's family
(:mod:`nairbus.models.architectures.resnet`,
:data:`nairbus.models.zoo.BASE_CONFIG`) and adds one more knob, depth (blocks per stage), because on this family the
parameter budget is set by the last stage's width while the MAC budget is set by the first stage's resolution:

* ``width`` multiplies every stage width of the base (rounded to an integer),
* ``resolution`` is the input side the variant resamples each 28x28 frame to,
* ``blocks`` (optional) overrides the blocks per stage.

:func:`derive_config` turns a :class:`VariantSpec` into a :class:`~nairbus.models.architectures.resnet.ResNetConfig`;
:func:`cost`
counts parameters and MACs with the same committed counters as the mature model
(:func:`~nairbus.models.architectures.resnet.count_params`,
:func:`~nairbus.models.architectures.resnet.count_macs`); :func:`generate` enumerates a grid of knobs and keeps what
fits the budget (by default 1/5 of the mature model's parameters *and* MACs). :data:`VARIANTS` is the family nairbus
ships.

>>> [v.name for v in VARIANTS]
['w44r28', 'w44r24', 'w40r26d2', 'w36r28d121']
>>> all(c.fits for c in (cost(v) for v in VARIANTS))
True
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nairbus.models.architectures.resnet import ResNet, ResNetConfig, count_macs, count_params
from nairbus.models.evaluation.matrices import load_matrix
from nairbus.models.vp.manifest import FAMILY_NAME
from nairbus.models.zoo import BASE_CONFIG

BUDGET_RATIO: float = float(load_matrix("vp")["budget_ratio"])
"""Each variant may have at most this fraction of the mature model's parameters and of its MACs."""


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One variant: knobs applied to the base config, and its weight in the fusion."""

    name: str
    width: float
    resolution: int
    blocks: tuple[int, int, int] | None = None
    weight: float | None = None
    """Fusion weight; ``None`` means :func:`paper_weight` (relative resolution times relative width)."""

    def __post_init__(self) -> None:
        if not 0 < self.width <= 1:
            raise ValueError(f"variant {self.name}: width multiplier {self.width} must be in (0, 1]")
        if not 8 <= self.resolution <= 28:
            raise ValueError(f"variant {self.name}: resolution {self.resolution} must be in [8, 28]")
        if self.blocks is not None and (len(self.blocks) != 3 or min(self.blocks) < 1):
            raise ValueError(f"variant {self.name}: blocks {self.blocks} must be three counts >= 1")
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"variant {self.name}: fusion weight {self.weight} must be > 0")


@dataclass(frozen=True, slots=True)
class Cost:
    """Size of a variant, absolute and relative to the mature model."""

    params: int
    macs: int
    base_params: int
    base_macs: int
    budget_ratio: float = BUDGET_RATIO
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def params_ratio(self) -> float:
        return self.params / self.base_params

    @property
    def macs_ratio(self) -> float:
        return self.macs / self.base_macs

    @property
    def fits(self) -> bool:
        """Within the budget on both parameters and MACs."""
        return self.params <= self.budget_ratio * self.base_params and self.macs <= self.budget_ratio * self.base_macs

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "params": self.params, "macs": self.macs, "params_ratio": round(self.params_ratio, 4),
            "macs_ratio": round(self.macs_ratio, 4), "base_params": self.base_params, "base_macs": self.base_macs,
            "budget_ratio": self.budget_ratio, "fits_budget": self.fits,
        }


def derive_config(spec: VariantSpec, base: ResNetConfig = BASE_CONFIG) -> ResNetConfig:
    """The ResNet config of a variant: base widths times ``width`` (rounded, >= 4), its resolution and blocks."""
    widths = tuple(max(4, round(w * spec.width)) for w in base.widths)
    stem = None if base.stem_width is None else max(4, round(base.stem_width * spec.width))
    return ResNetConfig(
        widths=widths,  # type: ignore[arg-type]
        blocks=spec.blocks or base.blocks,
        resolution=spec.resolution,
        num_classes=base.num_classes,
        stem_width=stem,
        extra={"variant": spec.name, "width_multiplier": str(spec.width)},
    )


@lru_cache(maxsize=64)
def _count(config_key: tuple[object, ...]) -> tuple[int, int]:
    widths, blocks, resolution, num_classes, stem = config_key
    model = ResNet(ResNetConfig(widths=widths, blocks=blocks, resolution=resolution,  # type: ignore[arg-type]
                                num_classes=num_classes, stem_width=stem))  # type: ignore[arg-type]
    return count_params(model), count_macs(model)


def count_config(config: ResNetConfig) -> tuple[int, int]:
    """(parameters, MACs per image) of a config, by building it and running the committed counters."""
    return _count((config.widths, config.blocks, config.resolution, config.num_classes, config.stem_width))


def cost(spec: VariantSpec, base: ResNetConfig = BASE_CONFIG, budget_ratio: float = BUDGET_RATIO) -> Cost:
    """Parameters and MACs of a variant beside the mature model's."""
    params, macs = count_config(derive_config(spec, base))
    base_params, base_macs = count_config(base)
    return Cost(params, macs, base_params, base_macs, budget_ratio)


def paper_weight(spec: VariantSpec, family: Sequence[VariantSpec]) -> float:
    """The paper's fusion weight: resolution and width relative to the family's largest, multiplied."""
    top_res = max(v.resolution for v in family)
    top_width = max(v.width for v in family)
    return (spec.resolution / top_res) * (spec.width / top_width)


def fusion_weights(family: Sequence[VariantSpec]) -> dict[str, float]:
    """Each variant's fusion weight (explicit where given, else :func:`paper_weight`), rounded to 4 digits."""
    return {v.name: round(v.weight if v.weight is not None else paper_weight(v, family), 4) for v in family}


def generate(
    widths: Iterable[float] = (0.32, 0.36, 0.40, 0.44, 0.48),
    resolutions: Iterable[int] = (20, 22, 24, 26, 28),
    blocks: Iterable[tuple[int, int, int] | None] = (None, (2, 1, 1), (1, 2, 1)),
    base: ResNetConfig = BASE_CONFIG,
    budget_ratio: float = BUDGET_RATIO,
) -> list[tuple[VariantSpec, Cost]]:
    """Every knob combination that fits the budget, largest MACs first (a menu to pick a family from)."""
    out = []
    for width, res, depth in itertools.product(widths, resolutions, blocks):
        suffix = "" if depth is None else "d" + "".join(str(b) for b in depth)
        spec = VariantSpec(name=f"w{round(width * 100)}r{res}{suffix}", width=width, resolution=res, blocks=depth)
        c = cost(spec, base, budget_ratio)
        if c.fits:
            out.append((spec, c))
    return sorted(out, key=lambda item: (-item[1].macs, item[0].name))


def family_from_matrix(matrix: dict[str, Any]) -> tuple[VariantSpec, ...]:
    """The ``[[variants]]`` of a VP matrix as specs (each one validated)."""
    return tuple(VariantSpec(name=str(row["name"]), width=float(row["width"]), resolution=int(row["resolution"]),
                             blocks=tuple(row["blocks"]) if "blocks" in row else None,
                             weight=float(row["weight"]) if "weight" in row else None)
                 for row in matrix["variants"])


VARIANTS: tuple[VariantSpec, ...] = family_from_matrix(load_matrix("vp"))
"""The shipped family (``models/experiments/vp.toml``): three resolutions, three widths, three depth profiles; each
within 1/5 of the mature model."""


def variant_by_name(name: str, family: Sequence[VariantSpec] = VARIANTS) -> VariantSpec:
    """Look a variant up by name, with a clear error listing the family."""
    for spec in family:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown variant {name!r}; the family has {', '.join(v.name for v in family)}")


def weights_name(variant: str) -> str:
    """Store name of one variant's weights: ``variants-<name>``."""
    return f"{FAMILY_NAME}-{variant}"
