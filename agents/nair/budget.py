"""The device budget: which representations a sensor's device can afford per frame.

A sensor can describe a frame three ways, at three costs on the device: the compressed ``image`` (no model), ``nair``
(the head up to the artifact's split, then the NAIR transform) and the ``decision`` (the whole model). The budget
limits which of them ``--mode auto`` may use:

* a share of the model's MACs (``0.62``, ``62%``): the representations whose device share is not above it;
* CPU milliseconds per frame (``5ms``): those the sensor measured it can run in that time, on this device;
* none given: what the sensor measures it can afford at its frame rate (at most :data:`AFFORDABLE_SHARE` of the frame
  period; everything when it has no frame rate, a file source paced by the link).

Within the budget, the calibrated tables pick per frame (:class:`~nairbus.agents.nair.auto.AutoChooser`). Pure except
:func:`measure_costs`, which times the model on this device.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "AFFORDABLE_SHARE",
    "REPRESENTATIONS",
    "DeviceBudget",
    "DevicePlan",
    "measure_costs",
    "parse_device_budget",
    "plan_device",
]

Representation = Literal["image", "nair", "decision"]
REPRESENTATIONS: tuple[Representation, ...] = ("image", "nair", "decision")
"""The representations a NAIR-method sensor can send, lightest on the device first."""
AFFORDABLE_SHARE = 0.8
"""Without a budget, a representation is affordable when its measured time per frame is at most this share of the
frame period (the rest is left for capture, encoding and the network)."""
_BUDGET = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|%)?\s*$")


@dataclass(frozen=True, slots=True)
class DeviceBudget:
    """What a device may spend per frame: a share of the model's MACs, or CPU milliseconds."""

    share: float | None = None
    ms: float | None = None

    def __post_init__(self) -> None:
        if (self.share is None) == (self.ms is None):
            raise ValueError("a device budget is a share of the model or milliseconds per frame, one of them")
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise ValueError(f"a device budget's share of the model is 0..1 (or 0%..100%), not {self.share}")
        if self.ms is not None and self.ms < 0:
            raise ValueError(f"a device budget in ms per frame is >= 0, not {self.ms}")

    def describe(self) -> str:
        """As a user writes it."""
        return f"{self.ms:g}ms" if self.ms is not None else f"{100 * (self.share or 0.0):g}%"


def parse_device_budget(text: str) -> DeviceBudget:
    """``"5ms"`` (CPU ms per frame), ``"62%"`` or ``"0.62"`` (share of the model's MACs); a ``ValueError`` that says
    what is accepted otherwise."""
    match = _BUDGET.match(text)
    if match is None:
        raise ValueError(f"device budget {text!r}: give milliseconds per frame ('5ms') or a share of the model's "
                         "MACs ('62%' or '0.62')")
    value, unit = float(match["value"]), match["unit"]
    if unit == "ms":
        return DeviceBudget(ms=value)
    return DeviceBudget(share=value / 100.0 if unit == "%" else value)


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """The representations a sensor may use, and why."""

    allowed: tuple[Representation, ...]
    shares: Mapping[str, float]
    """Each representation's share of the model's MACs on the device."""
    ms: Mapping[str, float]
    """Each representation's measured milliseconds per frame on this device (empty when not measured)."""
    reason: str

    def allows(self, representation: Representation) -> bool:
        """Whether the device may send ``representation``."""
        return representation in self.allowed


def plan_device(budget: DeviceBudget | None, shares: Mapping[str, float], ms: Mapping[str, float],
                period_s: float | None) -> DevicePlan:
    """Which representations fit ``budget`` (None: what the measured ``ms`` allow at the frame ``period_s``)."""
    if budget is not None and budget.share is not None:
        allowed = tuple(r for r in REPRESENTATIONS if shares[r] <= budget.share + 1e-9)
        why = f"budget {budget.describe()} of the model's MACs"
    elif budget is not None and budget.ms is not None:
        allowed = tuple(r for r in REPRESENTATIONS if ms.get(r, 0.0) <= budget.ms)
        why = f"budget {budget.describe()} per frame, measured"
    elif period_s:
        limit = AFFORDABLE_SHARE * period_s * 1000.0
        allowed = tuple(r for r in REPRESENTATIONS if ms.get(r, 0.0) <= limit)
        why = f"measured: at most {limit:.1f} ms per frame at {1.0 / period_s:g} frames/s"
    else:
        allowed, why = REPRESENTATIONS, "no frame rate: every representation (frames wait for the device)"
    return DevicePlan(allowed or ("image",), dict(shares), dict(ms), why)


def measure_costs(work: Mapping[str, Callable[[np.ndarray], object]], frames: np.ndarray, rounds: int = 3) -> dict[
        str, float]:
    """Milliseconds per frame of each representation's device ``work`` on ``frames`` (one batch of one frame at a
    time, as a live sensor runs them; the fastest of ``rounds`` after a warm-up, so that a busy moment does not
    forbid a representation for good)."""
    out: dict[str, float] = {}
    for name, run in work.items():
        run(frames[:1])
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for i in range(len(frames)):
                run(frames[i : i + 1])
            best = min(best, (time.perf_counter() - started) / len(frames))
        out[name] = best * 1000.0
    return out
