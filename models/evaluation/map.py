"""The map: every representation a sensor can send, on the same frames, at every per-frame wire cap, with the
device's cost beside it, and the Pareto front per device budget (pure numpy: no torch, no MQTT).

A *representation* (image family, NAIR at a split, the decision, a VP variant, the VP ensemble) is measured into
:class:`CapArrays`: per wire cap and per frame, whether the frame was classified right (a frame that cannot be sent
within the cap is wrong) and the wire bytes it cost (0: not sent). It is measured twice, on a validation split of the
training images and on the test frames; :class:`MapEntry` holds both and the device's cost (:class:`DeviceCost`).

The front answers *my device can spend this much, my link carries this many bytes per frame: what do I run?* For
each :class:`Budget` (a share of the model's MACs, or Pi-class CPU ms per frame) and each cap, among the
representations the budget allows, the winner is the most accurate **on validation** (ties: the lighter device, then
fewer wire bytes, then the name); the figures shown are its **test** accuracy with a 95 % Wilson interval, the
runner-up's (second on validation), the margin and McNemar's exact paired test on the test frames between the two
(:func:`nairbus.models.evaluation.stats.mcnemar`): ``p >= 0.05`` is "inside the noise".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from nairbus.models.evaluation import stats
from nairbus.models.evaluation.image import cap_choice

__all__ = ["DEFAULT_CAPS", "DEFAULT_MS_BUDGETS", "DEFAULT_SHARE_BUDGETS", "UNLIMITED", "Budget", "Cap",
           "CapArrays", "DeviceCost", "MapEntry", "budgets", "cap_label", "cap_limits", "entry_json", "fixed_arrays",
           "front_row", "front_summary", "ladder_arrays", "memo_predictor", "pareto_front", "ranked"]

Cap = int | None
"""A per-frame wire cap in bytes; ``None`` is unlimited (the whole representation, e.g. the whole IR)."""
Kind = Literal["image", "nair", "decision", "vp"]
UNLIMITED: Final = None
DEFAULT_CAPS: Final[tuple[Cap, ...]] = (40, 50, 60, 75, 100, 125, 150, 200, 250, 300, 400, 500, 700, 1000, 1500,
                                        UNLIMITED)
"""The map's per-frame wire caps: 40 B to 1500 B, then unlimited."""
DEFAULT_SHARE_BUDGETS: Final[tuple[float, ...]] = (0.0, 0.3, 0.6, 0.7, 1.0)
"""Device budgets as a share of the model's MACs: nothing, ~30 %, 60 %, 70 % (base's stage2 puts 62 % of the MACs on
the device, mobilenet's block6 70 %: the issue's "~60 %" budget, kept apart from the strict 60 %), everything."""
DEFAULT_MS_BUDGETS: Final[tuple[float, ...]] = (1.0, 2.0, 5.0)
"""Device budgets in Pi-class CPU ms per frame (median, from ``nairbus evaluate cost``)."""
_NO_LIMIT: Final = np.iinfo(np.int64).max


def cap_label(cap: Cap) -> str | int:
    """A cap as the report writes it: its bytes, or ``"unlimited"``."""
    return "unlimited" if cap is None else int(cap)


def cap_limits(caps: Sequence[Cap]) -> np.ndarray:
    """The caps as int64 byte limits (unlimited: the largest int64)."""
    return np.array([_NO_LIMIT if cap is None else int(cap) for cap in caps], dtype=np.int64)


# --- per-frame outcomes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapArrays:
    """Per cap (rows) and frame (columns): classified right (a frame not sent is wrong), and wire bytes (0: not
    sent)."""

    correct: np.ndarray
    wire: np.ndarray

    def __post_init__(self) -> None:
        if self.correct.shape != self.wire.shape or self.correct.ndim != 2:
            raise ValueError(f"correct {self.correct.shape} and wire {self.wire.shape} must be the same (caps, "
                             "frames) shape")

    @property
    def frames(self) -> int:
        """Frames measured."""
        return int(self.correct.shape[1])

    def accuracy(self, index: int) -> float:
        """Accuracy over every frame at cap ``index`` (frames not sent count as wrong)."""
        return float(self.correct[index].mean()) if self.frames else 0.0

    def mean_wire(self, index: int) -> float | None:
        """Mean wire bytes of the frames sent at cap ``index`` (None: none was sent)."""
        sent = self.wire[index] > 0
        return float(self.wire[index][sent].mean()) if sent.any() else None

    def row(self, index: int) -> dict[str, Any]:
        """Accuracy with its 95 % Wilson interval, share of frames sent and their mean wire bytes at cap ``index``."""
        acc = stats.accuracy(self.correct[index])
        return {"accuracy": acc["accuracy"], "ci95": acc["ci95"],
                "share_sent": float((self.wire[index] > 0).mean()) if self.frames else 0.0,
                "mean_wire_bytes": self.mean_wire(index)}


def ladder_arrays(wire: np.ndarray, correct: np.ndarray, caps: Sequence[Cap]) -> CapArrays:
    """A ladder of settings (rows of ``wire``/``correct``, ``(rungs, frames)``, lowest quality first) under each cap:
    per frame the highest rung whose wire bytes fit (:func:`nairbus.models.evaluation.image.cap_choice`, the sensor's
    rule); none fits: not sent, wrong."""
    wire, correct = np.asarray(wire, dtype=np.int64), np.asarray(correct, dtype=bool)
    cols = np.arange(wire.shape[1])
    out_correct, out_wire = [], []
    for limit in cap_limits(caps).tolist():
        choice = cap_choice(wire, int(limit))
        sent = choice >= 0
        rows = np.maximum(choice, 0)
        out_correct.append(correct[rows, cols] & sent)
        out_wire.append(np.where(sent, wire[rows, cols], 0))
    return CapArrays(np.array(out_correct, dtype=bool).reshape(len(caps), -1),
                     np.array(out_wire, dtype=np.int64).reshape(len(caps), -1))


def fixed_arrays(wire: np.ndarray, correct: np.ndarray, caps: Sequence[Cap]) -> CapArrays:
    """One message per frame of fixed content (the decision, a VP top-k): sent where its wire bytes fit the cap."""
    wire, correct = np.asarray(wire, dtype=np.int64), np.asarray(correct, dtype=bool)
    fits = wire[None, :] <= cap_limits(caps)[:, None]
    return CapArrays(fits & correct[None, :], np.where(fits, wire[None, :], 0))


def memo_predictor(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` remembering its answer per distinct frame (by content): codecs that decode to the same pixels
    (``grey4+deflate`` and ``grey4+zstd``, lossless ones) run the model once."""
    seen: dict[bytes, int] = {}

    def cached(images: np.ndarray) -> np.ndarray:
        keys = [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).digest() for im in images]
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in seen:
                first.setdefault(key, i)
        missing = sorted(first.values())
        if missing:
            fresh = predict(images[missing])
            for i, pred in zip(missing, fresh.tolist(), strict=True):
                seen[keys[i]] = int(pred)
        return np.array([seen[key] for key in keys], dtype=np.int64)

    return cached


# --- representations and budgets ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCost:
    """What one device pays for a representation: its share of the model's MACs (``macs_device`` of the model's),
    Pi-class CPU ms per frame and RSS (None: not measured), and how many devices the representation needs."""

    macs_device: int
    macs_model: int
    cpu_ms: float | None = None
    rss_mb: float | None = None
    devices: int = 1
    source: str | None = None
    """Where ``cpu_ms``/``rss_mb`` come from (a cost report), or why they are missing."""

    @property
    def mac_share(self) -> float:
        """The share of the model's MACs computed on (each) device."""
        return self.macs_device / self.macs_model if self.macs_model else 0.0


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One representation measured on the validation and the test frames, with its cost on the device."""

    name: str
    kind: Kind
    cost: DeviceCost
    validation: CapArrays
    test: CapArrays
    split: str | None = None
    variant: str | None = None
    note: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Budget:
    """A device budget: at most ``max_share`` of the model's MACs, or at most ``max_cpu_ms`` Pi-class CPU ms per
    frame (a representation whose CPU time was not measured does not fit an ms budget)."""

    label: str
    max_share: float | None = None
    max_cpu_ms: float | None = None

    def allows(self, cost: DeviceCost) -> bool:
        """Whether one device within this budget can run a representation of cost ``cost``."""
        if self.max_share is not None and cost.mac_share > self.max_share + 1e-9:
            return False
        if self.max_cpu_ms is not None:
            return cost.cpu_ms is not None and cost.cpu_ms <= self.max_cpu_ms
        return True

    def as_json(self) -> dict[str, Any]:
        """The budget as the report records it."""
        return {"label": self.label, "max_mac_share": self.max_share, "max_cpu_ms": self.max_cpu_ms}


def budgets(shares: Sequence[float] = DEFAULT_SHARE_BUDGETS,
            ms: Sequence[float] = DEFAULT_MS_BUDGETS) -> list[Budget]:
    """The front's budgets: each MAC share, then each CPU-ms budget."""
    return ([Budget(f"<= {share:.0%} of the MACs", max_share=float(share)) for share in shares]
            + [Budget(f"<= {limit:g} ms CPU", max_cpu_ms=float(limit)) for limit in ms])


# --- the front ------------------------------------------------------------------------------------------------------


def ranked(entries: Sequence[MapEntry], index: int) -> list[MapEntry]:
    """``entries`` best first at cap ``index`` by **validation** accuracy; ties: the lighter device (MAC share to
    the whole per cent: NAIR at the last stage, 99.996 %, is no lighter than the decision), then fewer mean wire
    bytes on validation, then the name."""
    def key(entry: MapEntry) -> tuple[float, float, float, str]:
        wire = entry.validation.mean_wire(index)
        return (-entry.validation.accuracy(index), round(entry.cost.mac_share, 2),
                float("inf") if wire is None else wire, entry.name)

    return sorted(entries, key=key)


def _pick(entry: MapEntry, index: int) -> dict[str, Any]:
    """What the front says of one representation at one cap: validation accuracy, test figures, cost."""
    test = entry.test.row(index)
    return {"name": entry.name, "kind": entry.kind, "devices": entry.cost.devices,
            "mac_share": round(entry.cost.mac_share, 6), "cpu_ms": entry.cost.cpu_ms,
            "validation_accuracy": entry.validation.accuracy(index), "test_accuracy": test["accuracy"],
            "ci95": test["ci95"], "mean_wire_bytes": test["mean_wire_bytes"], "share_sent": test["share_sent"]}


def front_row(entries: Sequence[MapEntry], budget: Budget, index: int, cap: Cap) -> dict[str, Any]:
    """The winner among the representations ``budget`` allows at cap ``index`` (chosen on validation), the
    runner-up, the test margin and McNemar's paired test on the test frames."""
    allowed = [e for e in entries if budget.allows(e.cost)]
    order = ranked(allowed, index)
    row: dict[str, Any] = {"budget": budget.label, "cap_bytes": cap_label(cap), "candidates": len(order),
                           "winner": _pick(order[0], index) if order else None,
                           "runner_up": _pick(order[1], index) if len(order) > 1 else None}
    if len(order) > 1:
        win, second = order[0], order[1]
        test = stats.mcnemar(win.test.correct[index], second.test.correct[index], "winner", "runner_up")
        row.update(margin_test=row["winner"]["test_accuracy"] - row["runner_up"]["test_accuracy"],
                   margin_validation=row["winner"]["validation_accuracy"] - row["runner_up"]["validation_accuracy"],
                   mcnemar_p=test["p_value"], discordant=[test["only_winner_correct"], test["only_runner_up_correct"]],
                   verdict="inside the noise" if test["within_noise"] else "outside the noise")
    return row


def pareto_front(entries: Sequence[MapEntry], budget_list: Sequence[Budget],
                 caps: Sequence[Cap]) -> list[dict[str, Any]]:
    """:func:`front_row` for every budget and cap (budget-major)."""
    return [front_row(entries, budget, index, cap) for budget in budget_list for index, cap in enumerate(caps)]


def versus_best_image(entries: Sequence[MapEntry], caps: Sequence[Cap]) -> list[dict[str, Any]]:
    """Each NAIR representation against the strongest image a user could pick instead, cap by cap: the image
    family best on **validation** at that cap, McNemar's paired test on the test frames (a claim for NAIR names its
    split and the device's share: both are in the row)."""
    images = [e for e in entries if e.kind == "image"]
    out = []
    for entry in (e for e in entries if e.kind == "nair"):
        rows = []
        for index, cap in enumerate(caps):
            if not images:
                break
            image = ranked(images, index)[0]
            test = stats.mcnemar(entry.test.correct[index], image.test.correct[index], "nair", "image")
            nair_acc, image_acc = entry.test.accuracy(index), image.test.accuracy(index)
            rows.append({"cap_bytes": cap_label(cap), "image": image.name, "nair_test_accuracy": nair_acc,
                         "image_test_accuracy": image_acc, "margin_test": nair_acc - image_acc,
                         "mcnemar_p": test["p_value"],
                         "discordant": [test["only_nair_correct"], test["only_image_correct"]],
                         "verdict": "inside the noise" if test["within_noise"] else
                         ("NAIR better" if nair_acc > image_acc else "image better")})
        out.append({"name": entry.name, "split": entry.split, "mac_share": round(entry.cost.mac_share, 6),
                    "caps": rows})
    return out


# --- the report -----------------------------------------------------------------------------------------------------


def entry_json(entry: MapEntry, caps: Sequence[Cap]) -> dict[str, Any]:
    """One representation as the report keeps it: cost, and per cap validation accuracy and the test figures."""
    cost = entry.cost
    rows = []
    for index, cap in enumerate(caps):
        test = entry.test.row(index)
        rows.append({"cap_bytes": cap_label(cap), "validation_accuracy": entry.validation.accuracy(index),
                     "test_accuracy": test["accuracy"], "ci95": test["ci95"],
                     "mean_wire_bytes": test["mean_wire_bytes"], "share_sent": test["share_sent"]})
    out: dict[str, Any] = {
        "name": entry.name, "kind": entry.kind, "split": entry.split, "variant": entry.variant,
        "devices": cost.devices, "mac_share": round(cost.mac_share, 6), "macs_device": cost.macs_device,
        "cpu_ms": cost.cpu_ms if cost.cpu_ms is not None else "not measured",
        "rss_mb": cost.rss_mb if cost.rss_mb is not None else "not measured", "cost_source": cost.source}
    if entry.note:
        out["note"] = entry.note
    out.update(entry.detail)
    out["caps"] = rows
    return out


def front_summary(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The front as short lines a person reads in a terminal or a log."""
    out = []
    for row in rows:
        win, second = row["winner"], row["runner_up"]
        if win is None:
            out.append(f"{row['budget']:>22} @ {row['cap_bytes']!s:>9} B: nothing fits the budget")
            continue
        line = (f"{row['budget']:>22} @ {row['cap_bytes']!s:>9} B: {win['name']} {100 * win['test_accuracy']:.2f} % "
                f"[{100 * win['ci95'][0]:.2f}, {100 * win['ci95'][1]:.2f}]")
        if second is not None:
            line += (f"; runner-up {second['name']} {100 * second['test_accuracy']:.2f} %, "
                     f"p = {row['mcnemar_p']:.3g} ({row['verdict']})")
        out.append(line)
    return out
