"""The figure tables of the README and docs, rendered from the JSON reports under ``reports/`` (``nairbus readme``).

Every number the README shows sits between a pair of markers (``<!-- nairbus:NAME -->`` … ``<!-- /nairbus:NAME -->``)
and is written here from the report that a committed command regenerates; nothing is typed in by hand. A test
checks that the committed README equals what this module renders from the committed reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
Report = dict[str, Any]


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _num(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


def _load(reports: Path, name: str) -> Report | None:
    path = reports / name
    return json.loads(path.read_text()) if path.is_file() else None


def demo_block(demo: Report | None) -> str:
    """Per-budget table of ``reports/demo.json`` plus the VP live run."""
    if demo is None:
        return "_Not measured yet: run `nairbus demo`._"
    lines = [
        f"From `reports/demo.json` (`{demo['command']}`, {demo['wall_seconds']:.0f} s in all; mature model "
        f"`{demo['model']['name']}`, IR {_num(demo['artifact']['ir_bytes'])} B at 8 bit):",
        "",
        "| budget | IR received | payload B/frame | live accuracy | offline accuracy | p50 ms | p99 ms | frames/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in demo["budgets"]:
        lines.append(
            f"| {row['budget']:.0%} | {_pct(row['fraction_received'], 1)} | {row['bytes_per_frame']:.0f} | "
            f"{_pct(row['live_accuracy'])} | {_pct(row['offline_accuracy'])} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['fps']:.0f} |"
        )
    vp = demo.get("vp") or {}
    if vp.get("before"):
        lines += ["", f"VP live run: `{vp['stopped']['variant']}` stopped after "
                      f"{vp['stopped']['after_frames_published']} frames; results kept flowing "
                      f"({vp['results']} of {vp['frames_sent']} frames decided).", "",
                  "| phase | variants | frames | live accuracy | offline accuracy (same frames) |", "|---|---|---|---|---|"]
        for phase in ("before", "after"):
            row = vp[phase]
            if row.get("frames"):
                lines.append(f"| {phase} | {' + '.join(row['variants'])} | {row['frames']} | "
                             f"{_pct(row['live_accuracy'])} | {_pct(row['offline_accuracy_same_frames'])} |")
    return "\n".join(lines)


NAIR_METHODS = ("nair", "taildrop", "pca", "prune", "naive-mean", "naive-zero")


def nair_block(nair: Report | None) -> str:
    """Prefix-accuracy table and bars of ``reports/nair.json``."""
    if nair is None:
        return "_Not measured yet: run `nairbus evaluate nair`._"
    fractions = [f for f in ("0.05", "0.1", "0.25", "0.5", "1") if f in nair["methods"]["nair"]["prefix"]]
    head = " | ".join(f"{float(f):.0%}" for f in fractions)
    lines = [
        f"From `reports/nair.json` (`{nair['command']}`, {nair['frames']} test frames; mature model "
        f"{_pct(nair['mature_accuracy'])}). Accuracy with only the first fraction of the IR's bytes received:",
        "",
        f"| method | {head} |",
        "|---" * (len(fractions) + 1) + "|",
    ]
    for name in NAIR_METHODS:
        if name in nair["methods"]:
            prefix = nair["methods"][name]["prefix"]
            lines.append(f"| {name} | " + " | ".join(_pct(prefix[f]) for f in fractions) + " |")
    bars = nair["bars"]
    td = nair.get("taildrop_training") or {}
    lines += [
        "",
        f"- share of the mature model's accuracy with 10 % of the IR: {_pct(bars['nair_share_of_mature_at_10pct'], 1)}; "
        f"with 25 %: {_pct(bars['nair_share_of_mature_at_25pct'], 1)}",
        f"- everything received: predictions equal the mature model's on "
        f"{_pct(bars['nair_full_agrees_with_mature_transform_only'])} of frames (transform only), "
        f"{_pct(bars['nair_full_agrees_with_mature_8bit'])} with 8-bit quantisation",
        f"- NAIR over the naive split (mean-fill) at 10 %: {bars.get('nair_over_naive_mean_at_10pct', float('nan')):.2f}×",
        f"- fewest payload bytes per frame within 1 point of the mature model: "
        f"{bars['min_bytes_within_1pt_of_mature']:.0f} B"
        + (f" ({bars['min_bytes_within_1pt_quantisation']}, {_pct(bars['min_bytes_within_1pt_accuracy'])})"
           if "min_bytes_within_1pt_quantisation" in bars else ""),
    ]
    if td:
        cal = nair["methods"]["nair"]["calibration_seconds"]
        lines.append(f"- calibration {cal:.1f} s against {td['train_wall_seconds']:.0f} s of tail-drop retraining")
    return "\n".join(lines)


def vp_block(vp: Report | None) -> str:
    """Variant table and ensemble figures of ``reports/vp.json``."""
    if vp is None:
        return "_Not measured yet: run `nairbus train variants` and `nairbus evaluate vp`._"
    base = vp["base"]
    lines = [
        f"From `reports/vp.json` (`{vp['command']}`, {vp['frames']} test frames, top-{vp['k']} fusion):",
        "",
        "| model | params | MACs | params / mature | MACs / mature | accuracy |",
        "|---|---|---|---|---|---|",
        f"| mature `{base['name']}` | {_num(base['params'])} | {_num(base['macs'])} | 1 | 1 | {_pct(base['accuracy'])} |",
    ]
    for name, row in vp["variants"].items():
        lines.append(f"| variant `{name}` | {_num(row['params'])} | {_num(row['macs'])} | {row['params_ratio']:.3f} | "
                     f"{row['macs_ratio']:.3f} | {_pct(row['accuracy'])} |")
    ens = vp["ensemble"]
    lines.append(f"| ensemble of all | {_num(ens['total_params'])} | {_num(ens['total_macs'])} | | | "
                 f"{_pct(ens['accuracy'])} |")
    lost = ", ".join(f"without `{n}` {_pct(a)}" for n, a in ens["one_lost"].items())
    lines += ["", f"With one variant lost: {lost} (largest drop {100 * ens['max_drop_one_lost']:.2f} points)."]
    return "\n".join(lines)


def vp_family_block(vp: Report | None) -> str:
    """The shipped variant family: knobs, counts, ratios, fusion weights (``reports/vp.json``)."""
    if vp is None:
        return "_Not measured yet: run `nairbus train variants` and `nairbus evaluate vp`._"
    base = vp["base"]
    lines = [
        f"The mature model: {_num(base['params'])} parameters, {_num(base['macs'])} MACs per image. The family "
        "(from `reports/vp.json`):",
        "",
        "| variant | width × | input | stage widths | blocks | params | MACs | params / mature | MACs / mature "
        "| fusion weight |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in vp["variants"].items():
        lines.append(f"| `{name}` | {row['width_multiplier']:g} | {row['resolution']}×{row['resolution']} | "
                     f"{', '.join(map(str, row['widths']))} | {', '.join(map(str, row['blocks']))} | "
                     f"{_num(row['params'])} | {_num(row['macs'])} | {row['params_ratio']:.3f} | "
                     f"{row['macs_ratio']:.3f} | {row['fusion_weight']:.3f} |")
    return "\n".join(lines)


def vp_availability_block(vp: Report | None) -> str:
    """Availability and expected accuracy against the per-device failure probability (``reports/vp.json``)."""
    if vp is None:
        return "_Not measured yet: run `nairbus evaluate vp`._"
    av = vp["availability"]
    lines = [
        f"From `reports/vp.json` ({av['devices']} devices, {av['trials']} simulated trials per p; {av['note']}):",
        "",
        "| p | VP answers (closed / simulated) | model parallelism answers (closed / simulated) "
        "| VP accuracy (closed / simulated) | MP accuracy (closed / simulated) |",
        "|---|---|---|---|---|",
    ]
    for row in av["rows"]:
        lines.append(
            f"| {row['p']:g} | {_pct(row['vp_closed'])} / {_pct(row['vp_simulated'])} | {_pct(row['mp_closed'])} / "
            f"{_pct(row['mp_simulated'])} | {_pct(row['vp_accuracy_closed'])} / {_pct(row['vp_accuracy_simulated'])} "
            f"| {_pct(row['mp_accuracy_closed'])} / {_pct(row['mp_accuracy_simulated'])} |"
        )
    return "\n".join(lines)


def vp_payload_block(vp: Report | None) -> str:
    """Bytes per frame of VP beside the raw image and NAIR (``reports/vp.json``)."""
    if vp is None:
        return "_Not measured yet: run `nairbus evaluate vp`._"
    pay = vp["payload"]
    lines = [
        f"From `reports/vp.json` ({pay['variants']} variants; raw image {pay['raw_image_bytes']} B, its zlib "
        f"{pay['zlib_image_bytes_mean']:.0f} B on average):",
        "",
        "| k | numbers per variant | data B/frame (all variants) | whole messages B/frame (all variants) |",
        "|---|---|---|---|",
    ]
    for k, row in pay["topk"].items():
        msg = row["message_bytes_per_frame"]
        lines.append(f"| {k} | {row['numbers']} | {row['data_bytes_per_frame']} | {'–' if msg is None else msg} |")
    if pay.get("nair"):
        lines += ["", "NAIR fragment payload per frame: " + ", ".join(f"{k} {v:.0f} B" for k, v in pay["nair"].items())
                  + "."]
    return "\n".join(lines)


def vp_live_block(demo: Report | None) -> str:
    """The VP live run of ``reports/demo.json``."""
    vp = (demo or {}).get("vp") or {}
    if not vp.get("before"):
        return "_Not measured yet: run `nairbus demo` (or `nairbus demo-vp`)._"
    lines = [
        f"From `reports/demo.json` → `vp` (`{vp['command']}`): `{vp['stopped']['variant']}` stopped after "
        f"{vp['stopped']['after_frames_published']} of {vp['frames_sent']} frames; {vp['results']} results, "
        f"{vp['results_after_stop']} of them after the stop; p50 {vp['p50_ms']:.1f} ms, p99 {vp['p99_ms']:.1f} ms.",
        "",
        "| phase | variants | frames | live accuracy | offline accuracy (same frames) | agreement with offline |",
        "|---|---|---|---|---|---|",
    ]
    for phase in ("before", "after"):
        row = vp[phase]
        if row.get("frames"):
            lines.append(f"| {phase} | {' + '.join(row['variants'])} | {row['frames']} | {_pct(row['live_accuracy'])} | "
                         f"{_pct(row['offline_accuracy_same_frames'])} | {_pct(row['agreement_with_offline'])} |")
    lines += ["", "Checks: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in vp["checks"].items()) + "."]
    return "\n".join(lines)


def nair_loss_block(nair: Report | None) -> str:
    """Accuracy under independent and bursty fragment loss, every method (``reports/nair.json``)."""
    if nair is None:
        return "_Not measured yet: run `nairbus evaluate nair`._"
    rates = list(nair["methods"]["nair"]["random_loss"])
    lines = [f"From `reports/nair.json` ({nair['frames']} test frames; every fragment sent, a share of them lost; "
             f"bursty loss is Gilbert–Elliott with mean burst {nair['settings']['mean_burst']:g} fragments):", "",
             "| method | loss | " + " | ".join(f"{float(r):.0%} lost" for r in rates) + " |",
             "|---|---|" + "---|" * len(rates)]
    for name in NAIR_METHODS:
        if name in nair["methods"]:
            m = nair["methods"][name]
            for key, label in (("random_loss", "independent"), ("bursty_loss", "bursty")):
                lines.append(f"| {name} | {label} | " + " | ".join(_pct(m[key][r]) for r in rates) + " |")
    return "\n".join(lines)


def nair_ablation_block(nair: Report | None) -> str:
    """Prefix accuracy of NAIR built up step by step (``reports/nair.json``)."""
    if nair is None or not nair.get("ablation"):
        return "_Not measured yet: run `nairbus evaluate nair`._"
    fractions = list(next(iter(nair["ablation"].values())))
    lines = ["| step | " + " | ".join(f"{float(f):.0%}" for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]
    for name, curve in nair["ablation"].items():
        lines.append(f"| {name} | " + " | ".join(_pct(curve[f]) for f in fractions) + " |")
    return "\n".join(lines)


def nair_rate_block(nair: Report | None) -> str:
    """For each bit allocation, the fewest bytes within 1 point of the mature model (``reports/nair.json``)."""
    if nair is None or not nair.get("rate_accuracy"):
        return "_Not measured yet: run `nairbus evaluate nair`._"
    mature = nair["mature_accuracy"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for point in nair["rate_accuracy"]:
        groups.setdefault(point["quantisation"], []).append(point)
    lines = [f"Mature model {_pct(mature)}; \"within 1 point\" means ≥ {_pct(mature - 0.01)}.", "",
             "| bit allocation | full IR: bytes, accuracy | fewest bytes within 1 point: bytes, accuracy |",
             "|---|---|---|"]
    for label, points in groups.items():
        full = max(points, key=lambda p: p["bytes"])
        ok = [p for p in points if p["accuracy"] >= mature - 0.01]
        best = min(ok, key=lambda p: p["bytes"]) if ok else None
        lines.append(f"| {label} | {full['bytes']:.0f} B, {_pct(full['accuracy'])} | "
                     + (f"{best['bytes']:.0f} B, {_pct(best['accuracy'])}" if best else "none") + " |")
    return "\n".join(lines)


def nair_cost_block(nair: Report | None) -> str:
    """Calibration wall time of every method against tail-drop retraining (``reports/nair.json``)."""
    if nair is None:
        return "_Not measured yet: run `nairbus evaluate nair`._"
    td = nair.get("taildrop_training") or {}
    lines = ["| what | wall time |", "|---|---|"]
    for name, m in nair["methods"].items():
        lines.append(f"| calibrate `{name}` ({nair['settings']['calibration_images']} training images) | "
                     f"{m['calibration_seconds']:.1f} s |")
    if td:
        lines.append(f"| retrain the tail-drop model (`{td.get('command', 'nairbus train taildrop')}`) | "
                     f"{td['train_wall_seconds']:.0f} s |")
    return "\n".join(lines)


BLOCKS: dict[str, tuple[str, Callable[[Report | None], str]]] = {
    "demo": ("demo.json", demo_block),
    "nair": ("nair.json", nair_block),
    "vp": ("vp.json", vp_block),
    "vp-family": ("vp.json", vp_family_block),
    "vp-availability": ("vp.json", vp_availability_block),
    "vp-payload": ("vp.json", vp_payload_block),
    "vp-live": ("demo.json", vp_live_block),
    "nair-loss": ("nair.json", nair_loss_block),
    "nair-ablation": ("nair.json", nair_ablation_block),
    "nair-rate": ("nair.json", nair_rate_block),
    "nair-cost": ("nair.json", nair_cost_block),
}
DOCUMENTS: dict[str, tuple[str, ...]] = {
    "README.md": ("demo", "nair", "vp"),
    "docs/vp.md": ("vp", "vp-family", "vp-availability", "vp-payload", "vp-live"),
    "docs/nair.md": ("nair", "nair-loss", "nair-rate", "nair-ablation", "nair-cost"),
}
"""Each file whose figures are rendered, and the blocks it must hold."""


def render(text: str, reports: Path, required: tuple[str, ...] = DOCUMENTS["README.md"]) -> str:
    """``text`` with every marked block replaced by its table rendered from ``reports``."""
    for name, (file_name, block) in BLOCKS.items():
        pattern = re.compile(rf"(<!-- nairbus:{name} -->\n)(?:.*?\n)?(<!-- /nairbus:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            if name in required:
                raise ValueError(f"no <!-- nairbus:{name} --> … <!-- /nairbus:{name} --> block")
            continue
        body = block(_load(reports, file_name))
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def stale(repo: Path = REPO) -> list[str]:
    """The documents whose blocks differ from what the reports give."""
    return [doc for doc, required in DOCUMENTS.items()
            if render((repo / doc).read_text(), repo / "reports", required) != (repo / doc).read_text()]


def refresh(repo: Path = REPO) -> list[str]:
    """Rewrite every document's blocks from the reports; return the documents that changed."""
    changed = stale(repo)
    for doc in changed:
        path = repo / doc
        path.write_text(render(path.read_text(), repo / "reports", DOCUMENTS[doc]))
    return changed
