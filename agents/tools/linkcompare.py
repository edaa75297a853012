"""Paired comparisons between the modes of a link bench: is one mode ever worse than the best of the others?

Every run of ``nairbus bench link`` replays the same test frames, so two modes of one cell (link rate × frame rate)
are paired frame by frame. A run's row keeps which frames it decided correctly (:func:`correct_bitmap`: a frame the
sensor skipped or fusion never decided counts as wrong, as in the live accuracy); :func:`compare_modes` then sets the
``subject`` mode of each cell against the best other mode of that cell with McNemar's exact test, and says whether the
difference is outside the noise. Pure: no processes, no model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nairbus.models.evaluation.stats import ALPHA, mcnemar

__all__ = ["compare_modes", "correct_bitmap", "correct_vector"]


def correct_bitmap(results: Mapping[int, Mapping[str, Any]], labels: np.ndarray, lo: int, hi: int) -> str:
    """Frames ``lo .. hi-1`` decided correctly, as the hex of a big-endian bit array (bit i: frame ``lo + i``).

    >>> import numpy as np
    >>> correct_bitmap({0: {"class_index": 3}, 2: {"class_index": 1}, 9: {"class_index": 0}}, np.array([3, 0, 1]), 0, 3)
    'a0'
    """
    bits = np.zeros(max(0, hi - lo), dtype=bool)
    for fid, record in results.items():
        if lo <= fid < hi and int(record["class_index"]) == int(labels[fid]):
            bits[fid - lo] = True
    return np.packbits(bits).tobytes().hex()


def correct_vector(row: Mapping[str, Any]) -> np.ndarray | None:
    """A report row's per-frame correctness (None for a row without it: skipped, or made before it was kept)."""
    text, frames = row.get("correct_frames"), row.get("frames_requested")
    if not isinstance(text, str) or not isinstance(frames, int):
        return None
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:frames].astype(bool)


def _verdict(test: Mapping[str, Any]) -> str:
    """How the subject stands against the best other mode."""
    if test["p_value"] >= ALPHA:
        return "within the noise"
    return "better, outside the noise" if test["difference"] > 0 else "worse, outside the noise"


def _cell_comparison(subject: Mapping[str, Any], others: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One cell: the subject against its best other mode (by live accuracy on the same frames)."""
    mine = correct_vector(subject)
    assert mine is not None
    paired = [(o, v) for o in others if (v := correct_vector(o)) is not None and v.shape == mine.shape]
    out: dict[str, Any] = {"rate": subject["rate"], "rate_bps": subject["rate_bps"],
                           "rtt_ms": subject.get("rtt_ms", 0.0), "fps": subject["fps"],
                           "subject": subject["mode"], "subject_accuracy": float(mine.mean()),
                           "others": {o["mode"]: float(v.mean()) for o, v in paired}}
    if not paired:
        return {**out, "verdict": "no other mode to compare"}
    best, best_vector = max(paired, key=lambda pair: float(pair[1].mean()))
    test = mcnemar(mine, best_vector, "subject", "best_other")
    return {**out, "best_other": best["mode"], "best_other_accuracy": float(best_vector.mean()),
            "difference": test["difference"], "mcnemar_p": test["p_value"],
            "discordant": [test["only_subject_correct"], test["only_best_other_correct"]], "frames": test["frames"],
            "verdict": _verdict(test)}


def compare_modes(rows: Sequence[Mapping[str, Any]], subject: str) -> list[dict[str, Any]]:
    """Per cell (rate × round trip × fps) where ``subject`` ran: the subject against the best other mode of the same
    cell."""
    cells: dict[tuple[Any, float, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        if not row.get("skipped"):
            cells.setdefault((row["rate_bps"], float(row.get("rtt_ms") or 0.0), float(row["fps"])), []).append(row)
    out = []
    for members in cells.values():
        mine = [r for r in members if r["mode"] == subject and correct_vector(r) is not None]
        if mine:
            out.append(_cell_comparison(mine[0], [r for r in members if r["mode"] != subject]))
    return out
