"""PNG plots of the NAIR report (``reports/nair.json``): prefix curves, loss curves, rate–accuracy, ablation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLE = {"nair": ("C3", "o", 2.5), "taildrop": ("C0", "s", 1.8), "pca": ("C2", "^", 1.3),
         "prune": ("C4", "v", 1.3), "naive-mean": ("C7", "D", 1.3), "naive-zero": ("C8", "x", 1.3)}


def _curve(ax: Any, curve: dict[str, float], name: str, scale: float = 100.0) -> None:
    xs = [float(k) * scale for k in curve]
    ys = [v * 100 for v in curve.values()]
    color, marker, width = STYLE.get(name, (None, ".", 1.2))
    ax.plot(xs, ys, marker=marker, color=color, linewidth=width, label=name)


def plot_prefix(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against the fraction of the IR received as a prefix, every method."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, method in report["methods"].items():
        _curve(ax, method["prefix"], name)
    ax.axhline(report["mature_accuracy"] * 100, color="k", linestyle=":", label="mature model")
    ax.set(xscale="log", xlabel="IR received (% of bytes, prefix)", ylabel="test accuracy (%)",
           title=f"NAIR vs baselines, Fashion-MNIST test ({report['frames']} images)")
    ax.set_xticks([5, 10, 25, 50, 75, 100], labels=["5", "10", "25", "50", "75", "100"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_loss(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against independent and bursty fragment loss, every method."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "random_loss", "independent loss"), (axes[1], "bursty_loss", "bursty loss (GE)")):
        for name, method in report["methods"].items():
            _curve(ax, method[key], name)
        ax.set(xlabel="fragments lost (%)", title=title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8)
    return _save(fig, path)


def plot_rate(report: dict[str, Any], path: Path) -> Path:
    """Payload bytes per frame against accuracy over quantisation and budget choices."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for point in report["rate_accuracy"]:
        groups.setdefault(point["quantisation"], []).append(point)
    for label, points in groups.items():
        points.sort(key=lambda p: p["bytes"])
        ax.plot([p["bytes"] for p in points], [p["accuracy"] * 100 for p in points], marker=".", label=f"NAIR {label}")
    mature = report["mature_accuracy"] * 100
    for family, rows in (report.get("image_codecs") or {}).get("families", {}).items():
        specs = sorted((s for s in rows if s["mean_payload_bytes"] > 0), key=lambda s: s["mean_payload_bytes"])
        if specs:
            ax.plot([s["mean_payload_bytes"] for s in specs], [s["accuracy"] * 100 for s in specs], linestyle=":",
                    marker="x", markersize=4, linewidth=1, alpha=0.8, label=f"image: {family} (whole model)")
    ax.axhline(mature, color="k", linestyle=":", label="mature model")
    ax.axhline(mature - 1, color="k", linestyle="--", linewidth=0.8, label="mature − 1 pt")
    ax.axvline(300, color="tab:red", linestyle="--", linewidth=0.8, label="300 B per frame")
    ax.axvline(784, color="tab:gray", linestyle="-.", linewidth=0.8, label="raw image (784 B)")
    ax.set(xscale="log", xlabel="payload bytes per frame", ylabel="test accuracy (%)",
           title="NAIR rate–accuracy, with the image codecs (whole model at the hub)",
           ylim=(max(0, mature - 25), mature + 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def plot_ablation(report: dict[str, Any], path: Path) -> Path:
    """Prefix curves of NAIR built up step by step."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in report["ablation"].items():
        _curve(ax, curve, name)
    ax.set(xscale="log", xlabel="IR received (% of bytes, prefix)", ylabel="test accuracy (%)", title="NAIR ablation")
    ax.set_xticks([5, 10, 25, 50, 75, 100], labels=["5", "10", "25", "50", "75", "100"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_plots(report: dict[str, Any], directory: Path, stem: str = "nair") -> list[Path]:
    """All NAIR plots that the report has data for, as ``<stem>_prefix.png`` and so on."""
    out = [plot_prefix(report, directory / f"{stem}_prefix.png"), plot_loss(report, directory / f"{stem}_loss.png")]
    if report.get("rate_accuracy"):
        out.append(plot_rate(report, directory / f"{stem}_rate.png"))
    if report.get("ablation"):
        out.append(plot_ablation(report, directory / f"{stem}_ablation.png"))
    return out


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
