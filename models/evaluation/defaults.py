"""A model's default sensor settings, read off its map (``reports/map-<model>.json``, ``nairbus evaluate map``).

The map's Pareto front names, per device budget (a share of the model's MACs) and per-frame wire cap, the
representation chosen on the validation split. What a sensor of this model may send by itself is the image (no model
on the device), NAIR at one of the model's splits, or its decision (the whole model on the device); a VP variant is
another, lighter model, which a user runs by name. :func:`derive_sensor_defaults` turns the front into the mode a
sensor runs when none is asked for:

* one of the sensor's own representations wins every cell → that mode;
* several win somewhere → ``auto``, which measures what the device can afford and, per frame, sends the
  representation its validation tables expect to be most accurate at the bytes the link gives;

and says why, with the figures (test accuracy of the winners, which splits of NAIR win where, and which lighter
model wins where). Pure: the front in, the defaults out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from nairbus.models.manifest import SensorDefaults

__all__ = ["OWN_KINDS", "REAL_SPLIT_HUB_SHARE", "derive_sensor_defaults"]

OWN_KINDS = ("image", "nair", "decision")
"""The representations a sensor of the model sends by itself (its mode's names)."""
REAL_SPLIT_HUB_SHARE = 0.10
"""A split is "real" when the hub runs at least this share of the model's MACs."""


def _share_rows(front: Sequence[Mapping[str, Any]], budgets: Sequence[Mapping[str, Any]]) -> dict[
        float, list[Mapping[str, Any]]]:
    """The front's rows per MAC-share budget (the CPU-ms budgets depend on the machine that measured them)."""
    share_of = {b["label"]: b["max_mac_share"] for b in budgets if b.get("max_mac_share") is not None}
    out: dict[float, list[Mapping[str, Any]]] = defaultdict(list)
    for row in front:
        if row["budget"] in share_of and row.get("winner"):
            out[float(share_of[row["budget"]])].append(row)
    return dict(sorted(out.items()))


def _caps(rows: Sequence[Mapping[str, Any]]) -> str:
    """The caps of ``rows`` as a short range (``40–200 B``, ``unlimited``)."""
    numbers = sorted(int(r["cap_bytes"]) for r in rows if str(r["cap_bytes"]).isdigit())
    text = (f"{numbers[0]} B" if len(numbers) == 1 else f"{numbers[0]}–{numbers[-1]} B") if numbers else ""
    if any(not str(r["cap_bytes"]).isdigit() for r in rows):
        text = f"{text} and unlimited" if text else "unlimited"
    return text


def _accuracy_range(rows: Sequence[Mapping[str, Any]]) -> str:
    """The winners' test accuracies over ``rows`` (``93.7 %`` or ``48.7–94.1 %``)."""
    values = sorted(100 * float(r["winner"]["test_accuracy"]) for r in rows)
    return f"{values[0]:.1f} %" if values[0] == values[-1] else f"{values[0]:.1f}–{values[-1]:.1f} %"


def _budget_line(share: float, rows: Sequence[Mapping[str, Any]]) -> str:
    """What wins within one share budget, by representation, with caps and test accuracy."""
    by_name: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_name[row["winner"]["name"]].append(row)
    parts = [f"{name} at {_caps(won)} ({_accuracy_range(won)})" for name, won in by_name.items()]
    return f"device budget {100 * share:g} % of the MACs: " + "; ".join(parts)


def _nair_finding(rows_by_share: Mapping[float, Sequence[Mapping[str, Any]]]) -> str:
    """Where NAIR wins, split by split, and whether any of those splits is real."""
    wins: dict[str, tuple[float, list[Mapping[str, Any]]]] = {}
    for rows in rows_by_share.values():
        for row in rows:
            if row["winner"]["kind"] == "nair":
                name = row["winner"]["name"]
                wins.setdefault(name, (float(row["winner"]["mac_share"]), []))[1].append(row)
    if not wins:
        return "NAIR wins no cell at any split"
    real = {n: w for n, w in wins.items() if w[0] <= 1.0 - REAL_SPLIT_HUB_SHARE}
    listed = "; ".join(f"{n} ({100 * w[0]:.3g} % of the MACs on the device) at {_caps(w[1])}"
                       for n, w in wins.items())
    return f"NAIR wins {listed}" + ("" if real else " — no real split (the hub runs under 10 % of the work there)")


def _lighter_models(rows_by_share: Mapping[float, Sequence[Mapping[str, Any]]]) -> str | None:
    """Where another, lighter model's decision wins (a VP variant): advice a user acts on by naming the model."""
    wins: dict[str, list[float]] = defaultdict(list)
    for share, rows in rows_by_share.items():
        for row in rows:
            if row["winner"]["kind"] == "vp" and share not in wins[row["winner"]["name"]]:
                wins[row["winner"]["name"]].append(share)
    if not wins:
        return None
    return "a lighter model wins where the device cannot run this one: " + "; ".join(
        f"{name} ({', '.join(f'{100 * s:g} %' for s in shares)} budgets; run it by name, e.g. --model "
        f"variants-{name.removeprefix('vp-')} --mode decision)" for name, shares in wins.items())


def derive_sensor_defaults(report: Mapping[str, Any], report_file: str) -> SensorDefaults:
    """The default sensor mode the map ``report`` argues for, and why (see the module docstring)."""
    rows_by_share = _share_rows(report["front"], report["budgets"])
    if not rows_by_share:
        raise ValueError(f"{report_file} has no front per share of the MACs: remake it with 'nairbus evaluate map'")
    own = {row["winner"]["kind"] for rows in rows_by_share.values() for row in rows
           if row["winner"]["kind"] in OWN_KINDS}
    if not own:
        raise ValueError(f"{report_file}: no representation a sensor of this model sends wins any cell")
    mode = "auto" if len(own) > 1 else next(iter(own))
    findings = [_budget_line(share, rows) for share, rows in rows_by_share.items()]
    findings.append(_nair_finding(rows_by_share))
    lighter = _lighter_models(rows_by_share)
    if lighter:
        findings.append(lighter)
    if mode == "auto":
        verdict = (f"{' and '.join(k for k in OWN_KINDS if k in own)} each win somewhere, so the sensor runs auto: "
                   "it measures what the device can afford at its frame rate (or takes --device-budget) and sends, "
                   "per frame, whichever of those its validation tables expect to be most accurate at the bytes the "
                   "link gives — its decision where it can run the whole model in time")
    else:
        verdict = f"{mode} wins every cell a sensor of this model can send, so the sensor sends {mode}"
    frames = report.get("frames") or {}
    model = report.get("model") or {}
    caveat = ("" if model.get("validation_held_out_of_training", True)
              else "; caveat: the model's validation frames were in its training")
    evidence = (f"{report_file} (`{report.get('command', 'nairbus evaluate map')}`, {frames.get('test', '?')} test "
                f"frames, choices on {frames.get('validation', '?')} validation frames{caveat})")
    return SensorDefaults(mode=mode, reason=f"{verdict}. From the map: " + "; ".join(findings) + ".",
                          evidence=evidence, represented=tuple(k for k in OWN_KINDS if k in own))
