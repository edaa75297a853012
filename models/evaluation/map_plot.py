"""The map's PNG (``reports/map.json`` → ``reports/map.png``): accuracy against wire bytes per frame for every
representation, coloured by the device's share of the model's MACs, and the front's winner per budget and cap.

Top: test accuracy (95 % Wilson bands) against the per-frame wire cap (log x, 40 B to the whole IR: the last point
of a representation bigger than the largest cap is its unlimited figure at its own mean size), full range and a zoom
on the top. The decision is the thick starred line, image families the dashed ones (a family that is never the best
image on validation is drawn faint), the VP ensemble dotted. Bottom: per device budget (rows) and cap (columns) the
representation that wins on validation, its test accuracy, and "≈" where McNemar's test against the runner-up says
the difference is inside the noise (p ≥ 0.05).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

__all__ = ["plot_map"]

_CMAP = plt.get_cmap("viridis")
_NORM = Normalize(0.0, 1.0)
_IMAGE_MARKERS = ("o", "s", "^", "<", ">", "D", "v", "p", "h", "x", "+", "1", "2", "3")


def _xy(rep: Mapping[str, Any], finite: Sequence[int]) -> tuple[list[float], list[float], list[float], list[float]]:
    """x (cap, or the unlimited point at its own size beyond the largest cap), accuracy and the 95 % band in %."""
    xs, ys, lo, hi = [], [], [], []
    for row in rep["caps"]:
        cap = row["cap_bytes"]
        if cap == "unlimited":
            size = row["mean_wire_bytes"]
            if size is None or not finite or size <= max(finite) * 1.05:
                continue
            x = float(size)
        else:
            x = float(cap)
        xs.append(x)
        ys.append(100 * row["test_accuracy"])
        lo.append(100 * row["ci95"][0])
        hi.append(100 * row["ci95"][1])
    return xs, ys, lo, hi


def _image_winners(report: Mapping[str, Any]) -> set[str]:
    """The image families that are the best image family on validation at one cap at least, or win a cell of the
    front."""
    images = [r for r in report["representations"] if r["kind"] == "image"]
    out = {row["winner"]["name"] for row in report.get("front", []) if row["winner"] and row["winner"]["kind"] ==
           "image"}
    for index in range(len(images[0]["caps"]) if images else 0):
        out.add(max(images, key=lambda r: r["caps"][index]["validation_accuracy"])["name"])
    return out


def _style(rep: Mapping[str, Any], index: int, strong: set[str]) -> dict[str, Any]:
    """Line style per kind: decision bold starred, images dashed (faint when never the best image), VP thin."""
    color = _CMAP(_NORM(rep["mac_share"]))
    kind = rep["kind"]
    if kind == "decision":
        return {"color": color, "marker": "*", "markersize": 9, "linewidth": 3.0, "markeredgecolor": "k", "zorder": 5}
    if kind == "image":
        faint = rep["name"] not in strong
        return {"color": "0.55" if faint else color, "marker": _IMAGE_MARKERS[index % len(_IMAGE_MARKERS)],
                "markersize": 3.5, "linestyle": "--", "linewidth": 0.8 if faint else 1.6, "alpha": 0.5 if faint else 1}
    if rep["name"] == "vp-ensemble":
        return {"color": color, "marker": "P", "markersize": 5, "linestyle": ":", "linewidth": 2.0}
    if kind == "vp":
        return {"color": color, "marker": "v", "markersize": 3, "linewidth": 0.9}
    return {"color": color, "marker": "o", "markersize": 4, "linewidth": 2.0}


def _label(rep: Mapping[str, Any]) -> str:
    share = f"{100 * rep['mac_share']:.0f} %"
    if rep["devices"] > 1:
        share += f" on each of {rep['devices']} devices"
    return f"{rep['name']} ({share})"


def _curves(ax: Any, report: Mapping[str, Any], ylim: tuple[float, float], legend: bool) -> None:
    """Every representation's test accuracy against the cap on one axis."""
    reps = report["representations"]
    finite = [c for c in report["caps"] if c != "unlimited"]
    strong = _image_winners(report)
    for index, rep in enumerate(reps):
        xs, ys, lo, hi = _xy(rep, finite)
        style = _style(rep, index, strong)
        ax.plot(xs, ys, label=_label(rep), **style)
        if style.get("alpha", 1) == 1:  # no band for a faint image family
            ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.07, linewidth=0)
    ax.set(xscale="log", ylim=ylim, xlabel="wire bytes per frame (cap; whole MQTT PUBLISH, log scale)",
           ylabel="test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    if legend:
        ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.16, 0.5), title="representation (device MACs)",
                  title_fontsize=7)


def _short(name: str) -> str:
    return name.replace("image ", "img ").replace("nair-", "NAIR ").replace("vp-ensemble", "VP ens.")


def _front(ax: Any, report: Mapping[str, Any]) -> None:
    """The front as a coloured table: rows budgets, columns caps, the winner and its test accuracy per cell."""
    caps = [str(c) for c in report["caps"]]
    labels = [b["label"] for b in report["budgets"]]
    cells = {(row["budget"], str(row["cap_bytes"])): row for row in report["front"]}
    for i, budget in enumerate(labels):
        for j, cap in enumerate(caps):
            row = cells.get((budget, cap))
            win = row["winner"] if row else None
            if win is None:
                ax.add_patch(Rectangle((j, i), 1, 1, color="0.9"))
                ax.text(j + 0.5, i + 0.5, "nothing fits", ha="center", va="center", fontsize=5.5)
                continue
            ax.add_patch(Rectangle((j, i), 1, 1, color=_CMAP(_NORM(win["mac_share"])), alpha=0.45))
            noise = " ≈" if row and row.get("verdict") == "inside the noise" else ""
            ax.text(j + 0.5, i + 0.5, f"{_short(win['name'])}\n{100 * win['test_accuracy']:.1f} %{noise}",
                    ha="center", va="center", fontsize=5.6)
    ax.set(xlim=(0, len(caps)), ylim=(len(labels), 0))
    ax.set_xticks([j + 0.5 for j in range(len(caps))], labels=[c if c == "unlimited" else f"{c} B" for c in caps],
                  fontsize=7)
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels=labels, fontsize=7)
    ax.set_title("the front, one device: the best on validation per device budget and wire cap, its test accuracy "
                 "(≈: inside the noise against the runner-up, McNemar p ≥ 0.05); colour: its device MAC share",
                 fontsize=9)


def plot_map(report: Mapping[str, Any], path: Path) -> Path:
    """Write the map's PNG for ``report`` (the JSON of ``nairbus evaluate map``) to ``path``."""
    fig = plt.figure(figsize=(20, 13))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.15, 1.0), hspace=0.28, wspace=0.08, right=0.8)
    full, zoom = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    tops = [r["caps"][-1]["test_accuracy"] * 100 for r in report["representations"]]
    top = max(tops, default=100.0)
    _curves(full, report, (0.0, 100.0), legend=False)
    _curves(zoom, report, (top - 15.0, min(100.0, top + 1.5)), legend=True)
    zoom.set_ylabel("")
    model, frames = report["model"], report["frames"]
    full.set_title(f"{model['name']}: every representation, Fashion-MNIST test ({frames['test']} frames; choices on "
                   f"{frames['validation']} validation frames)", fontsize=9)
    zoom.set_title("zoom on the top; bands: 95 % Wilson intervals", fontsize=9)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=_NORM, cmap=_CMAP), ax=[full, zoom], fraction=0.025, pad=0.01)
    bar.set_label("share of the model's MACs on the device")
    _front(fig.add_subplot(grid[1, :]), report)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
