"""The figure tables of the README and docs, rendered from the JSON reports under ``reports/`` (``nairbus readme``).

Every number the README shows sits between a pair of markers (``<!-- nairbus:NAME -->`` … ``<!-- /nairbus:NAME -->``)
and is written here from the report that a committed command regenerates; nothing is typed in by hand. A test
checks that the committed README equals what this module renders from the committed reports.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from nairbus.agents.tools.reports import (
    BrokerKillRun,
    DemoReport,
    DemoVpSection,
    ExhaustionRun,
    FaultRun,
    FaultsReport,
    FilesReport,
    FloodRun,
    FusionRestartRun,
    FuzzRun,
    HarnessError,
    HomeAssistantTruthReport,
    LinkReport,
    OneShotRun,
    ReportModel,
    ScaleReport,
    SensorCounters,
    Share,
    ShareReport,
    SplitCap,
    SplitReport,
    TakeoverRun,
    load_typed,
)
from nairbus.models.evaluation.reports import (
    AccuracyCi,
    CapAccuracy,
    FrontCell,
    LightPart,
    LightReport,
    MapReport,
    McNemarTest,
    NairBars,
    NairMethod,
    NairReport,
    NairVsImageRow,
    NairWireSummary,
    RatePoint,
    VpReport,
    WireArtifact,
    WireArtifactBrief,
    WireReport,
)

REPO = Path(__file__).resolve().parents[2]
R = TypeVar("R", bound=ReportModel)


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _num(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


def _table(head: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """A markdown table: header, separator, one line per row."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def _vp_phase_rows(vp: DemoVpSection, agreement: bool) -> list[list[str]]:
    """Before/after rows of the VP live run (``reports/demo.json`` → ``vp``)."""
    rows = []
    for phase, row in (("before", vp.before), ("after", vp.after)):
        if row.frames:
            rows.append([phase, " + ".join(row.variants), str(row.frames), _pct(row.live_accuracy),
                         _pct(row.offline_accuracy_same_frames),
                         *([_pct(row.agreement_with_offline)] if agreement else [])])
    return rows


def _splice(body: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that puts ``body`` between a block's opening and closing markers."""
    return lambda m: m.group(1) + body + "\n" + m.group(2)


def _vp_run(demo: DemoReport) -> DemoVpSection | None:
    """The demo's VP live run, if it made one."""
    return demo.vp if isinstance(demo.vp, DemoVpSection) else None


def demo_block(demo: DemoReport) -> str:
    """Per-budget table of ``reports/demo.json`` plus the VP live run."""
    rate = demo.settings
    lines = [
        f"From `reports/demo.json` (`{demo.command}`, {demo.wall_seconds:.0f} s in all; mature model "
        f"`{demo.model.name}`, IR {_num(demo.artifact.ir_bytes)} B at 8 bit"
        + (f"; {rate.sensors} sensors replaying {rate.fps_per_sensor:g} frames/s each" if rate else "") + "):",
        "",
        *_table(["budget", "IR received", "payload B/frame", "wire B/frame", "live accuracy",
                 "offline accuracy (at the bytes that arrived)", "p50 ms", "p99 ms", "frames/s"],
                ([f"{r.budget:.0%}", _pct(r.fraction_received, 1), f"{r.bytes_per_frame:.0f}",
                  f"{r.wire_bytes_per_frame:.0f}" if r.wire_bytes_per_frame is not None else "–",
                  _pct(r.live_accuracy), _pct(r.offline_accuracy), f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                  f"{r.fps:.0f}"] for r in demo.budgets)),
    ]
    vp = _vp_run(demo)
    if vp is not None:
        fps = (vp.settings or {}).get("fps")
        lines += ["", f"VP live run: `{vp.stopped.variant}` stopped after "
                      f"{vp.stopped.after_frames_published} frames"
                      + (f" of a {fps:g} frames/s capture" if isinstance(fps, int | float) else "")
                      + f"; results kept flowing ({vp.results} of {vp.frames_sent} frames decided"
                      + (f", p50 {vp.p50_ms:.1f} ms" if vp.p50_ms is not None else "") + ").", "",
                  *_table(["phase", "variants", "frames", "live accuracy", "offline accuracy (same frames)"],
                          _vp_phase_rows(vp, agreement=False))]
    return "\n".join(lines)


NAIR_METHODS = ("nair", "taildrop", "pca", "prune", "naive-mean", "naive-zero")


def _fractions(report: NairReport) -> list[str]:
    """The prefix fractions of the IR the README's NAIR tables show (those the report has)."""
    return [f for f in ("0.05", "0.1", "0.25", "0.5", "1") if f in report.methods["nair"].prefix]


def _prefix_rows(report: NairReport, fractions: list[str]) -> list[list[str]]:
    """One row per method of the prefix table: its accuracy (95 % interval) at each fraction."""
    return [[name, *(_prefix_cell(report.methods[name], f) for f in fractions)]
            for name in NAIR_METHODS if name in report.methods]


def _bar_lines(bars: NairBars, goals: tuple[str, str, str] = ("", "", "")) -> list[str]:
    """The share, agreement and naive-split bars (``goals``: the bar each is held to, when the text says so)."""
    over = bars.nair_over_naive_mean_at_10pct
    return [
        "- share of the mature model's accuracy with 10 % of the IR: "
        f"{_pct(bars.nair_share_of_mature_at_10pct, 1)}{goals[0]}; "
        f"with 25 %: {_pct(bars.nair_share_of_mature_at_25pct, 1)}{goals[1]}",
        f"- everything received: predictions equal the mature model's on "
        f"{_pct(bars.nair_full_agrees_with_mature_transform_only)} of frames (transform only), "
        f"{_pct(bars.nair_full_agrees_with_mature_8bit)} with 8-bit quantisation",
        "- NAIR over the naive split (mean-fill) at 10 %: "
        f"{float('nan') if over is None else over:.2f}×{goals[2]}",
        _fewest_bytes_line(bars),
    ]


def nair_block(nair: NairReport) -> str:
    """Prefix-accuracy table and bars of ``reports/nair.json``."""
    fractions = _fractions(nair)
    lines = [
        f"From `reports/nair.json` (`{nair.command}`, {nair.frames} test frames; mature model "
        f"{_pct(nair.mature_accuracy)}). Accuracy with only the first fraction of the IR's bytes received:",
        "",
        *_table(["method", *(f"{float(f):.0%}" for f in fractions)], _prefix_rows(nair, fractions)),
    ]
    versus = (nair.comparisons or {}).get("nair_vs_taildrop")
    if versus:
        lines += ["", "NAIR against the retrained tail-drop model on the same frames (McNemar, exact): "
                  + "; ".join(f"{float(f):.0%}: {_test(row)}" for f, row in versus.items()) + "."]
    td = nair.taildrop_training
    lines += ["", *_bar_lines(nair.bars)]
    if td:
        cal = nair.methods["nair"].calibration_seconds
        lines.append(f"- calibration {cal:.1f} s against {td.train_wall_seconds:.0f} s of tail-drop retraining")
    lines += _nair_wire_lines(nair.wire)
    return "\n".join(lines)


def _prefix_cell(method: NairMethod, fraction: str) -> str:
    """A prefix accuracy with its 95 % interval where the report has one."""
    ci = (method.prefix_ci95 or {}).get(fraction)
    return _ci_of(method.prefix[fraction], ci) if ci else _pct(method.prefix[fraction])


def _fewest_bytes_line(bars: NairBars) -> str:
    """The fewest-payload-bytes bar: the point, how it was chosen, and the command that writes its artifact."""
    if bars.min_bytes_within_1pt_of_mature is None:
        return "- fewest payload bytes per frame within 1 point of the mature model: none"
    line = ("- fewest payload bytes per frame within 1 point of the mature model: "
            f"{bars.min_bytes_within_1pt_of_mature:.0f} B")
    if bars.min_bytes_within_1pt_ci95 is not None and bars.min_bytes_within_1pt_accuracy is not None:
        return (line + f" ({bars.min_bytes_within_1pt_quantisation}, chosen on "
                f"{bars.min_bytes_within_1pt_chosen_on}; on test "
                f"{_ci_of(bars.min_bytes_within_1pt_accuracy, bars.min_bytes_within_1pt_ci95)}"
                f"; artifact: `{bars.min_bytes_within_1pt_command}`)")
    if "min_bytes_within_1pt_quantisation" in bars.model_fields_set:
        line += f" ({bars.min_bytes_within_1pt_quantisation}, {_pct(bars.min_bytes_within_1pt_accuracy)})"
    return line


def _artifact_label(key: str, entry: WireArtifact | WireArtifactBrief) -> str:
    """A wire report's artifact as the README names it: its split point, and its bit allocation unless 8 bit."""
    split, bands = entry.split or key, entry.bit_bands
    return split + (f", bits {bands}" if bands and bands != "1:8" else "")


def _chosen_on_validation(fewest: dict[str, CapAccuracy | None]) -> bool:
    return any(row is not None and row.chosen_on == "validation" for row in fewest.values())


def _nair_wire_lines(wire: NairWireSummary | object) -> list[str]:
    """The wire bars ``nairbus evaluate nair`` records (its ``wire`` section), as README bullets."""
    if not isinstance(wire, NairWireSummary):
        return []
    fewest = wire.fewest_wire_bytes_within_1pt_of_mature
    lines = [f"- on the wire (whole MQTT PUBLISH, {wire.nair_message_overhead_bytes} B per NAIR message beyond "
             "its data): fewest wire bytes per frame within 1 point of the mature model"
             + (" (cap chosen on validation, accuracy on test) " if _chosen_on_validation(fewest) else " ")
             + "; ".join(f"{sp} {row.mean_wire_bytes:.0f} B ({_ci(row)})" if row else f"{sp}: none"
                         for sp, row in fewest.items())]
    for bar in wire.bars.values():
        best = bar.images[bar.best_image_family]
        noise = "outside" if bar.difference_outside_noise else "inside"
        lines.append(f"- ≤ {bar.nair.cap_bytes} B on the wire: NAIR ({bar.nair.artifact}, chosen on "
                     f"validation) {_ci(bar.nair)}, best image codec ({bar.best_image_family}) {_ci(best)}, "
                     f"{noise} the 95 % intervals")
    return lines


def _vp_accuracy(row: AccuracyCi | None, fallback: float) -> str:
    return _ci(row) if row else _pct(fallback)


def vp_block(vp: VpReport) -> str:
    """Variant table and ensemble figures of ``reports/vp.json``."""
    base, ens, ev = vp.base, vp.ensemble, vp.evidence
    by_name = ev.accuracy if ev else {}
    by_variant = ev.variants if ev else {}
    rows = [[f"mature `{base.name}`", _num(base.params), _num(base.macs), "1", "1",
             _vp_accuracy(by_name.get("mature model"), base.accuracy)],
            *([f"variant `{name}`", _num(r.params), _num(r.macs), f"{r.params_ratio:.3f}",
               f"{r.macs_ratio:.3f}", _vp_accuracy(by_variant.get(name), r.accuracy)]
              for name, r in vp.variants.items()),
            ["ensemble of all", _num(ens.total_params), _num(ens.total_macs), "", "",
             _vp_accuracy(by_name.get("ensemble"), ens.accuracy)]]
    lines = [
        f"From `reports/vp.json` (`{vp.command}`, {vp.frames} test frames, top-{vp.k} fusion):",
        "",
        *_table(["model", "params", "MACs", "params / mature", "MACs / mature", "accuracy"], rows),
    ]
    lost = ", ".join(f"without `{n}` {_pct(a)}" for n, a in ens.one_lost.items())
    lines += ["", f"With one variant lost: {lost} (largest drop {100 * ens.max_drop_one_lost:.2f} points)."]
    if ev:
        named = ", named on validation" if ev.best_single_variant_named_on == "validation" else ""
        lines += ["", "Paired tests on the same test frames (McNemar, exact): "
                  + "; ".join(f"{label} {_test(test)}" for label, test in (
                      ("ensemble vs mature", ev.ensemble_vs_mature),
                      (f"ensemble vs the best single variant (`{ev.best_single_variant}`{named})",
                       ev.ensemble_vs_best_variant),
                      ("best single variant vs mature", ev.best_variant_vs_mature))) + "."]
    rule = vp.fusion_rule_on_validation
    if rule:
        best = rule.rules[rule.best_on_validation]
        shipped = rule.rules[rule.shipped_rule]
        lines += ["", f"Fusion rule, chosen on the validation split the family never trained on: the shipped "
                  f"`{rule.shipped_rule}` {_ci(shipped)} there, the best of {len(rule.rules)} rules "
                  f"`{rule.best_on_validation}` {_ci(best)} ({_test(rule.best_vs_shipped)}); chosen: "
                  f"`{rule.chosen}`."]
    return "\n".join(lines)


def _test(row: McNemarTest) -> str:
    """A McNemar result as prose: the difference, its p-value, and whether it is inside the noise."""
    verdict = "within noise" if row.within_noise else "significant"
    return f"{100 * row.difference:+.2f} points, p = {row.p_value:.2g} ({verdict})"


def vp_family_block(vp: VpReport) -> str:
    """The shipped variant family: knobs, counts, ratios, fusion weights (``reports/vp.json``)."""
    base = vp.base
    return "\n".join([
        f"The mature model: {_num(base.params)} parameters, {_num(base.macs)} MACs per image. The family "
        "(from `reports/vp.json`):",
        "",
        *_table(["variant", "width ×", "input", "stage widths", "blocks", "params", "MACs", "params / mature",
                 "MACs / mature", "fusion weight"],
                ([f"`{name}`", f"{r.width_multiplier:g}", f"{r.resolution}×{r.resolution}",
                  ", ".join(map(str, r.widths)), ", ".join(map(str, r.blocks)), _num(r.params),
                  _num(r.macs), f"{r.params_ratio:.3f}", f"{r.macs_ratio:.3f}", f"{r.fusion_weight:.3f}"]
                 for name, r in vp.variants.items())),
    ])


def vp_availability_block(vp: VpReport) -> str:
    """Availability and expected accuracy against the per-device failure probability (``reports/vp.json``)."""
    av = vp.availability

    def pair(closed: float, simulated: float) -> str:
        return f"{_pct(closed)} / {_pct(simulated)}"

    return "\n".join([
        f"From `reports/vp.json` ({av.devices} devices, {av.trials} simulated trials per p; {av.note}):",
        "",
        *_table(["p", "VP answers (closed / simulated)", "model parallelism answers (closed / simulated)",
                 "VP accuracy (closed / simulated)", "MP accuracy (closed / simulated)"],
                ([f"{r.p:g}", pair(r.vp_closed, r.vp_simulated), pair(r.mp_closed, r.mp_simulated),
                  pair(r.vp_accuracy_closed, r.vp_accuracy_simulated),
                  pair(r.mp_accuracy_closed, r.mp_accuracy_simulated)] for r in av.rows)),
    ])


def vp_payload_block(vp: VpReport) -> str:
    """Bytes per frame of VP beside the raw image and NAIR (``reports/vp.json``)."""
    pay = vp.payload
    lines = [
        f"From `reports/vp.json` ({pay.variants} variants; raw image {pay.raw_image_bytes} B, its zlib "
        f"{pay.zlib_image_bytes_mean:.0f} B on average):",
        "",
        *_table(["k", "numbers per variant", "data B/frame (all variants)",
                 "on the wire B/frame (all variants: whole MQTT PUBLISH, topic alias)"],
                ([k, r.numbers, r.data_bytes_per_frame,
                  "–" if r.message_bytes_per_frame is None else r.message_bytes_per_frame]
                 for k, r in pay.topk.items())),
    ]
    if pay.nair:
        lines += ["", "NAIR fragment payload per frame: " + ", ".join(f"{k} {v:.0f} B" for k, v in pay.nair.items())
                  + "."]
    return "\n".join(lines)


def vp_live_block(demo: DemoReport) -> str | None:
    """The VP live run of ``reports/demo.json`` (None before a demo with a VP run)."""
    vp = _vp_run(demo)
    if vp is None:
        return None
    return "\n".join([
        f"From `reports/demo.json` → `vp` (`{vp.command}`): `{vp.stopped.variant}` stopped after "
        f"{vp.stopped.after_frames_published} of {vp.frames_sent} frames; {vp.results} results, "
        f"{vp.results_after_stop} of them after the stop; p50 {vp.p50_ms:.1f} ms, p99 {vp.p99_ms:.1f} ms.",
        "",
        *_table(["phase", "variants", "frames", "live accuracy", "offline accuracy (same frames)",
                 "agreement with offline"], _vp_phase_rows(vp, agreement=True)),
        "",
        "Checks: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in vp.checks.items()) + ".",
    ])


def nair_loss_block(nair: NairReport) -> str:
    """Accuracy under independent and bursty fragment loss, every method (``reports/nair.json``)."""
    rates = list(nair.methods["nair"].random_loss)
    rows = [[name, label, *(_pct(curve[r]) for r in rates)]
            for name in NAIR_METHODS if name in nair.methods
            for curve, label in ((nair.methods[name].random_loss, "independent"),
                                 (nair.methods[name].bursty_loss, "bursty"))]
    return "\n".join([
        f"From `reports/nair.json` ({nair.frames} test frames; every fragment sent, a share of them lost; "
        f"bursty loss is Gilbert–Elliott with mean burst {nair.settings['mean_burst']:g} fragments):",
        "",
        *_table(["method", "loss", *(f"{float(r):.0%} lost" for r in rates)], rows),
    ])


def nair_ablation_block(nair: NairReport) -> str | None:
    """Prefix accuracy of NAIR built up step by step (``reports/nair.json``)."""
    if not nair.ablation:
        return None
    fractions = list(next(iter(nair.ablation.values())))
    return "\n".join(_table(["step", *(f"{float(f):.0%}" for f in fractions)],
                            ([name, *(_pct(curve[f]) for f in fractions)] for name, curve in nair.ablation.items())))


def _fewest_within(points: Sequence[RatePoint], mature: float, on_validation: bool) -> RatePoint | None:
    """The point with the fewest bytes whose accuracy (on validation, or on test) is within 1 point of ``mature``
    (as ``nairbus.models.evaluation.nair.fewest_bytes_within``)."""
    def accuracy(p: RatePoint) -> float:
        got = p.validation_accuracy if on_validation else p.accuracy
        return -1.0 if got is None else got

    return min((p for p in points if accuracy(p) >= mature - 0.01), key=lambda p: p.bytes, default=None)


def nair_rate_block(nair: NairReport) -> str | None:
    """For each bit allocation, the fewest bytes within 1 point of the mature model (``reports/nair.json``)."""
    if not nair.rate_accuracy:
        return None
    mature = nair.mature_accuracy
    validation = nair.validation
    groups: dict[str, list[RatePoint]] = {}
    for point in nair.rate_accuracy:
        groups.setdefault(point.quantisation, []).append(point)
    rows = []
    for label, points in groups.items():
        full = max(points, key=lambda p: p.bytes)
        best = (_fewest_within(points, validation.mature_accuracy, on_validation=True) if validation
                else _fewest_within(points, mature, on_validation=False))
        rows.append([label, f"`{full.command}`" if full.command is not None else "–",
                     f"{full.bytes:.0f} B, {_ci(full)}", f"{best.bytes:.0f} B, {_ci(best)}" if best else "none"])
    intro = (f"Mature model {_pct(mature)}. \"Within 1 point\" is judged on the validation split "
             f"({validation.frames} training images; mature model {_pct(validation.mature_accuracy)} there), "
             "the accuracy shown is on the test frames with its 95 % interval." if validation else
             f"Mature model {_pct(mature)}; \"within 1 point\" means ≥ {_pct(mature - 0.01)}.")
    return "\n".join([
        intro,
        "",
        *_table(["bit allocation", "artifact", "full IR: bytes, accuracy",
                 "fewest bytes within 1 point: bytes, accuracy"], rows),
    ])


def nair_cost_block(nair: NairReport) -> str:
    """Calibration wall time of every method against tail-drop retraining (``reports/nair.json``)."""
    td = nair.taildrop_training
    rows = [[f"calibrate `{name}` ({nair.settings['calibration_images']} training images)",
             f"{m.calibration_seconds:.1f} s"] for name, m in nair.methods.items()]
    if td:
        chosen = td.selection
        how = (f", {chosen.epochs_run} epochs, checkpoint of epoch {chosen.best_epoch} chosen on validation"
               if chosen else "")
        rows.append([f"retrain the tail-drop model (`{td.command or 'nairbus train taildrop'}`{how})",
                     f"{td.train_wall_seconds:.0f} s"])
    return "\n".join(_table(["what", "wall time"], rows))


def _comparison_lines(link: LinkReport) -> list[str]:
    """The bench's paired comparison (``--compare MODE``): the mode against the best other of each cell."""
    comparison = link.comparison or []
    subject = comparison[0].subject
    rows = []
    for c in comparison:
        if c.best_other is None:
            continue
        rows.append([c.rate, f"{c.fps:g}", f"{100 * float(c.subject_accuracy or 0):.1f} %",
                     f"{c.best_other} {100 * float(c.best_other_accuracy or 0):.1f} %",
                     f"{100 * float(c.difference or 0):+.1f}", f"{float(c.mcnemar_p or 0):.2g}", str(c.verdict)])
    return [f"`{subject}` against the best other mode of each cell, frame by frame on the same frames (live; "
            "an undecided frame is wrong; McNemar, exact):", "",
            *_table(["link", "fps", str(subject), "best other mode", "points", "p", "verdict"], rows)]


def _soak_line(link: LinkReport) -> list[str]:
    """The soak run's latency and memory, first minute against last."""
    soak = link.soak
    if soak is None or soak.skipped:
        return []
    minute = soak.minute_trend
    first = (minute.first_p50_ms if minute else None) or float("nan")
    last = (minute.last_p50_ms if minute else None) or float("nan")
    return ["", f"Soak: {soak.rate}, {soak.fps:g} frames/s, {soak.mode}, {soak.soak_seconds:.0f} s: "
                f"p50 latency first minute {first:.0f} ms, last minute {last:.0f} ms; sensor memory "
                f"{(soak.rss_first_minute_kib or 0) / 1024:.0f} → {(soak.rss_last_minute_kib or 0) / 1024:.0f} MiB."]


def link_block(link: LinkReport, file: str = "link.json") -> str:
    """Per-run table of ``reports/link*.json`` (``nairbus bench link``): the bus over tbf-shaped uplinks."""
    from nairbus.agents.tools.linkbench import table_rows

    head, rows = table_rows(link)
    settings = link.settings
    host = link.host
    deadline = settings.get("deadline_ms", 1000)
    rtts = settings.get("rtts_ms")
    lines = [
        f"From `reports/{file}` (`{link.command}`, {link.wall_seconds:.0f} s in all"
        + (f"; kernel {host.kernel}, {host.cpus} CPUs" if host and host.kernel else "") + "): one sensor in a network "
        "namespace replaying the test split, its uplink shaped with `tbf`, Mosquitto and fusion in a second "
        f"namespace; deadline {deadline:g} ms"
        + (" plus half the round trip a run adds (a user-space delay line between TUN devices, the TCP connection "
           "end to end)" if isinstance(rtts, list) and any(rtts) else "")
        + ". Live accuracy counts an undecided frame as wrong; offline is the same frames recomputed from the bytes "
        "that arrived.",
        "",
        *_table(head, rows),
    ]
    if link.comparison:
        lines += ["", *_comparison_lines(link)]
    lines += _soak_line(link)
    return "\n".join(lines)


class _HasCi(Protocol):
    """A row with an accuracy and its 95 % interval."""

    @property
    def accuracy(self) -> float: ...

    @property
    def ci95(self) -> tuple[float, float]: ...


def _ci_of(accuracy: float, ci95: tuple[float, float]) -> str:
    lo, hi = ci95
    return f"{100 * accuracy:.2f} % ({100 * lo:.1f}–{100 * hi:.1f})"


def _ci(row: _HasCi | None) -> str:
    return _ci_of(row.accuracy, row.ci95) if row else "–"


def wire_block(wire: WireReport) -> str:
    """Accuracy at the wire caps of the bars, NAIR per split point against every image family."""
    nair = wire.nair
    lines = [
        f"From `reports/wire.json` (`{wire.command}`, {wire.frames} test frames; mature model "
        f"{_pct(wire.mature_accuracy)}). Bytes are whole MQTT PUBLISH packets per frame (QoS 0, topic alias, lean "
        f"envelope: {wire.nair_message_overhead_bytes} B per NAIR message beyond its data); accuracy with its 95 % "
        "interval; a frame that no setting fits under the cap counts as wrong.",
        "",
    ]
    bars = wire.bars
    caps = [k for k in ("at_200_wire_bytes", "at_300_wire_bytes") if k in bars]
    head = ["method (device share of the MACs)", *[f"≤ {bars[k].nair.cap_bytes} B on the wire" for k in caps]]
    rows = [[f"NAIR at {_artifact_label(sp, nair[sp])} ({nair[sp].device_macs_share:.0%})",
             *[_ci(bars[k].nair_per_artifact[sp]) for k in caps]] for sp in nair]
    families = sorted(bars[caps[0]].images) if caps else []
    rows += [[f"image: {fam} (0 %)", *[_ci(bars[k].images[fam]) for k in caps]] for fam in families]
    lines += _table(head, rows)
    fewest = wire.fewest_wire_bytes_within_1pt_of_mature
    lines += ["", "- fewest wire bytes per frame within 1 point of the mature model"
              + (" (the cap chosen on validation, the accuracy on test)" if _chosen_on_validation(fewest) else "")
              + ": " + "; ".join(f"NAIR at {sp} {row.mean_wire_bytes:.0f} B ({_ci(row)})" if row
                                 else f"NAIR at {sp}: none" for sp, row in fewest.items())]
    for k in caps:
        b = bars[k]
        noise = "outside" if b.difference_outside_noise else "inside"
        best = b.best_image or b.images[b.best_image_family]
        lines.append(f"- at ≤ {b.nair.cap_bytes} B: NAIR (`{b.nair.artifact}`, chosen on validation) "
                     f"{_pct(b.nair.accuracy)} against the best image codec (`{b.best_image_family}`) "
                     f"{_pct(best.accuracy)}: {100 * b.nair_minus_best_image:+.2f} points, {noise} "
                     "the 95 % intervals")
    return "\n".join(lines)


def _runs(result: object) -> list[object]:
    """A scenario's outcomes: one per run (``broker-kill`` has one per outage)."""
    return list(result) if isinstance(result, list) else [result]


def _isolation_text(faults: FaultsReport) -> str:
    """How the fault bench kept the hub and the devices apart on its one machine (each scenario's legit summary)."""
    for entry in faults.scenarios.values():
        for run in _runs(entry.result):
            iso = run.legit.cpu_isolation if isinstance(run, FaultRun) else None
            if iso is None:
                continue
            if not iso.kind:
                return (f"The devices were **not** isolated from the hub ({iso.why}): on one machine the "
                        "attacker, the broker and fusion take CPU from the sensors' own processes.")
            return (f"One machine models separate ones: every device (each sensor, the attacker) runs in a CPU "
                    f"control group of its own capped at {iso.device_cpus:g} of a core ({iso.kind}), the hub "
                    f"(broker, fusion, recorder) has {iso.hub_weight}× a device's share of contended CPU.")
    return ("On one machine (this report predates the bench's CPU groups) the attacker, the broker and fusion take "
            "CPU from the sensors' own processes, which on real devices they would not.")


def _attack(name: str, run: FaultRun) -> tuple[str, str]:
    """What one attack did, and how the bus recovered (the faults table's attack and recovery cells)."""
    if isinstance(run, FuzzRun):
        recovery = (f"rate {run.legit_rate_ratio:.2f}× of before; memory "
                    f"{(run.fusion_rss_growth or 0) - 1:+.1%}") if run.legit_rate_ratio else "–"
        return f"{run.hostile_messages} hostile messages ({len(run.kinds)} kinds)", recovery
    if isinstance(run, FloodRun):
        return f"{run.flood_messages} valid fragments in {run.seconds:g} s from one sensor", "–"
    if isinstance(run, BrokerKillRun):
        firsts = [v for v in run.first_result_after_return_s.values() if v is not None]
        return (f"broker kill -9, {run.outage_s:g} s outage, persistence {'on' if run.persistence else 'off'}",
                f"every sensor back in ≤ {max(firsts):.1f} s" if run.every_sensor_known_again
                else "a sensor never came back")
    if isinstance(run, TakeoverRun | ExhaustionRun):
        if isinstance(run, TakeoverRun):
            attack = (f"another account connects {run.attempts}× with the fusion agent's and the "
                      "sensors' client ids / user names (production config)")
        else:
            attack = (f"{run.connections_attempted} connections held by one device's credentials "
                      f"(listener caps 512 + 64); {run.attacker_connections_still_open} still open, "
                      f"a new device {'joined' if run.newcomer_joined else '**could not join**'}")
        kicked = run.victim_offline_events + run.victim_connections_closed_by_broker
        return attack, "no victim disconnected" if kicked == 0 else f"**{kicked} victim disconnections**"
    assert isinstance(run, FusionRestartRun), type(run)
    what = "kill -9 + restart" if name == "fusion-kill" else "SIGSTOP/SIGCONT"
    worst = run.max_first_result_s
    return (f"fusion {what} × {run.runs}",
            "no result after one run" if worst is None else f"first result ≤ {worst:.1f} s")


def _fault_row(name: str, run: object) -> list[str]:
    """One row of the faults table: the attack, what the legitimate sensors got, the recovery."""
    if not isinstance(run, FaultRun):
        why = run.error if isinstance(run, HarnessError) else run
        return [name, "–", f"harness error: {why}", "–", "–", "–", "–"]
    legit = run.legit
    attack, recovery = _attack(name, run)
    captured = legit.frames_sent if legit.frames_captured is None else legit.frames_captured
    unsent = captured - legit.frames_sent - (legit.skipped_offline or 0)
    return [name, attack,
            f"{legit.frames_decided}/{legit.frames_sent} ({legit.frames_lost} lost)"
            + (f"; {unsent} of {legit.frames_captured} captured skipped by the sensors as late" if unsent > 0 else ""),
            "yes" if legit.labels_identical_to_offline else f"no ({legit.labels_mismatched})",
            f"{legit.p99_ms:.0f}", recovery, "yes" if run.fusion_alive else "**no**"]


def faults_block(faults: FaultsReport) -> str:
    """One row per attack of ``reports/faults.json`` (``nairbus bench faults``): what the legitimate sensors got."""
    rows = [_fault_row(name, run) for name, entry in faults.scenarios.items() for run in _runs(entry.result)]
    lines = [f"From `reports/faults.json` (`{faults.command}`"
             + (f", {faults.wall_seconds:.0f} s" if faults.wall_seconds else "")
             + "): a private Mosquitto, fusion and two well-behaved sensors as processes; the attack below; "
             "what the well-behaved sensors got (a sensor skips a frame it cannot send in time). "
             + _isolation_text(faults) + " Labels are compared with the offline pipeline on the same images. "
             "Takeover and exhaustion run the production config (accounts, ACL, sensors over TLS with client "
             "certificates).",
             "", *_table(["scenario", "attack", "legitimate frames decided/sent", "labels = offline",
                          "their p99 ms", "recovery", "fusion alive"], rows)]
    if not faults.complete:
        lines += ["", "_The run did not finish: the scenarios above are those that ran._"]
    return "\n".join(lines)


def _scale_cap(cap: int | None) -> str:
    return "whole IR" if cap is None else f"{cap} B cap"


def scale_block(bench: ScaleReport) -> str:
    """``reports/bench.json`` (``nairbus bench scale``): the bus against the same pipeline in one process, swarms, a
    fleet and an overloaded hub."""
    lines = [f"From `reports/bench.json` (`{bench.command}`, {bench.cpus} cores, model {bench.model}, NAIR at its "
             f"split, deadline {bench.deadline_ms:g} ms): {bench.shared_machine}.", ""]
    pipeline = {p.cap: p for p in bench.pipeline}
    rows = []
    for b in bench.bus:
        p = pipeline.get(b.cap)
        ms = b.cpu_ms_per_frame
        rows.append([_scale_cap(b.cap), f"{b.sensors} × {b.fps_per_sensor:g} fps",
                     f"{p.one_at_a_time_ms.total:.2f} / {p.batched_ms.total:.2f}" if p else "–",
                     f"{ms.sensors:.2f} + {ms.fusion:.2f} + {ms.broker:.2f} = {ms.total:.2f}",
                     f"{b.ratio_to_one_at_a_time:.2f}× / {b.ratio_to_batched:.2f}×", f"{b.decided}/{b.frames_sent}"])
    lines += _table(["frames", "sensors", "in one process, ms/frame (one at a time / batched)",
                     "bus ms/frame (sensors + fusion + broker)", "bus ÷ in one process", "decided"], rows)
    runs = [*bench.swarm, *([bench.fleet] if bench.fleet else []), *([bench.overload] if bench.overload else [])]
    rows = []
    for r in runs:
        kind = ("fleet of " + str(r.agents) + " (" + ", ".join(f"{k} {v}" for k, v in r.decided_by_agent.items())
                + ")" if r.agents > 1 else "overload, --shed-late" if r.fusion_args else "one agent")
        lat = r.latency
        rows.append([f"{r.sensors} × {r.fps_per_sensor:g} fps", kind, f"{r.offered_fps:.0f} / {r.decided_fps:.0f}",
                     f"{r.decided}/{r.frames_sent} ({_pct(r.decided_share)})" + (f", {r.shed} shed" if r.shed else "")
                     + (f", {r.decided_twice} twice" if r.decided_twice else ""),
                     f"{_num(lat.p50_ms)} / {_num(lat.p99_ms)}" if lat.p50_ms is not None and lat.p99_ms is not None
                     else "–",
                     f"{r.cpu_ms_per_frame.fusion:.2f}" if r.cpu_ms_per_frame.fusion is not None else "–",
                     f"{r.fusion_rss_kib_per_sensor:g}" if r.fusion_rss_kib_per_sensor is not None else "–"])
    lines += ["", *_table(["sensors", "hub", "frames/s offered / decided", "decided", "latency p50 / p99 ms",
                           "fusion CPU ms/frame", "fusion RSS KiB per sensor"], rows)]
    return "\n".join([*lines, "", *_scale_bars(bench)])


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _scale_bars(bench: ScaleReport) -> list[str]:
    """Issue 35's bars, each against this report's figures."""
    out = []
    if bench.bus:
        worst = max(b.ratio_to_one_at_a_time for b in bench.bus)
        out.append(f"- Bus CPU per frame ≤ 1.5× the in-process pipeline one at a time: {worst:.2f}× at worst — "
                   f"{_met(worst <= 1.5)}.")
    swarm = {r.sensors: r for r in bench.swarm}
    biggest, smallest = (swarm[max(swarm)], swarm[min(swarm)]) if swarm else (None, None)
    if biggest is not None and smallest is not None and biggest is not smallest:
        p99 = biggest.latency.p99_ms
        ok = biggest.decided_share >= 0.999 and p99 is not None and p99 <= bench.deadline_ms
        out.append(f"- {biggest.sensors} sensors: ≥ 99.9 % decided with p99 ≤ the deadline — {_met(ok)}; fusion CPU "
                   f"per frame no higher than with {smallest.sensors} — "
                   f"{_met((biggest.cpu_ms_per_frame.fusion or 0) <= (smallest.cpu_ms_per_frame.fusion or 0))}.")
    fleet = bench.fleet
    alone = swarm.get(fleet.sensors) if fleet is not None else None
    if fleet is not None and alone is not None and fleet.decided and alone.cpu_ms_per_frame.fusion:
        half = fleet.decided / max(1, fleet.agents)
        even = all(abs(n - half) <= 0.1 * half for n in fleet.decided_by_agent.values())
        cpu = (fleet.cpu_ms_per_frame.fusion or 0) / alone.cpu_ms_per_frame.fusion
        out.append(f"- A fleet of {fleet.agents}: each within 10 % of an even share — {_met(even)}; none decided "
                   f"twice — {_met(fleet.decided_twice == 0)}; their CPU per frame {cpu:.2f}× one agent's (bar "
                   f"within 10 %) — {_met(cpu <= 1.1)}.")
    over = bench.overload
    if over is not None and over.latency.p99_ms is not None:
        ratio = over.offered_fps / max(1e-9, over.decided_fps)
        out.append(f"- Overloaded ({ratio:.1f}× what it decides offered; bar 2×): p99 of the frames decided "
                   f"{over.latency.p99_ms:.0f} ms ≤ the deadline — {_met(over.latency.p99_ms <= bench.deadline_ms)}; "
                   f"the rest shed and counted ({over.shed}).")
    return out


def second_model_block(report: NairReport) -> str:
    """The second architecture through the generic path: ``reports/nair-mobilenet.json``."""
    fractions = _fractions(report)
    spec, shipped, model = report.input_spec, report.shipped_artifact, report.mature_model
    lines = [
        f"From `reports/nair-{model.name}.json` (`{report.command}`, {report.frames} test frames converted "
        f"to the model's {spec.channels}x{spec.height}x{spec.width} input; calibration: "
        f"{report.calibration_source}, no labels). Mature model "
        f"{_ci_of(report.mature_accuracy, report.mature_ci95)}. Accuracy with only the "
        f"first fraction of the IR's bytes received:",
        "",
        *_table(["method", *(f"{float(f):.0%}" for f in fractions)], _prefix_rows(report, fractions)),
        "",
        *_bar_lines(report.bars, (" (bar 95 %)", " (bar 99 %)", " (bar 2.12×)")),
    ]
    versus = (report.comparisons or {}).get("nair_vs_taildrop")
    if versus:
        td = report.taildrop_training
        trained = td.train_wall_seconds if td and td.train_wall_seconds is not None else float("nan")
        lines.append(f"- NAIR against its retrained tail-drop model (`{td.command if td else None}`, "
                     f"{trained:.0f} s of training; NAIR's calibration "
                     f"{report.methods['nair'].calibration_seconds:.1f} s), McNemar exact on the same frames: "
                     + "; ".join(f"{float(f):.0%}: {_test(row)}" for f, row in versus.items()))
    lines += _nair_wire_lines(report.wire)
    if shipped:
        lines.append(f"- the shipped artifact `{shipped.file}` ({shipped.sha256[:12]}, "
                     f"`{shipped.command}`) is {'the one' if shipped.same_as_evaluated else 'NOT the one'} "
                     f"this evaluation calibrated")
    return "\n".join(lines)


MAP_CAPS = (40, 100, 200, 300, 500, "unlimited")
"""The wire caps the README's map table shows (the report has them all)."""


def _cap_heads(caps: list[int | str]) -> list[str]:
    return [f"≤ {c} B" if c != "unlimited" else "unlimited" for c in caps]


def _front_cell(row: FrontCell | None) -> str:
    """One cell of the map's front: the winner, its test accuracy, and whether it beats the runner-up."""
    if row is None or row.winner is None:
        return "nothing fits"
    win = row.winner
    cell = f"{win.name} {_pct(win.test_accuracy, 1)}"
    if row.runner_up is not None:
        margin = row.margin_test or 0.0
        sign = "+" if margin >= 0 else "−"
        cell += (f" ({sign}{abs(100 * margin):.1f} vs {row.runner_up.name}"
                 f"{', noise' if row.verdict == 'inside the noise' else ''})")
    return cell


def map_block(report: MapReport, file: str = "map.json") -> str:
    """The Pareto front of ``reports/map*.json``: per device budget and wire cap, what wins and by how much."""
    rows = {(r.budget, str(r.cap_bytes)): r for r in report.front}
    budgets = list(dict.fromkeys(r.budget for r in report.front))
    caps: list[int | str] = [c for c in MAP_CAPS if any(str(c) == cap for _b, cap in rows)]
    model = report.model
    name = "map.json" if model.name == "base" else f"map-{model.name}.json"
    lines = [f"From `reports/{name}` (`{report.command}`; model `{model.name}`"
             f", {report.frames.test} test frames, choices on {report.frames.validation} validation "
             f"frames). Per device budget and per-frame wire cap (whole MQTT PUBLISH bytes): the representation "
             f"chosen on validation, its test accuracy, and its margin in points over the runner-up (McNemar, "
             f"paired; \"noise\": p ≥ 0.05).", "",
             *_table(["device budget", *_cap_heads(caps)],
                     ([b, *[_front_cell(rows.get((b, str(c)))) for c in caps]] for b in budgets))]
    shares = {e.name: e.mac_share for e in report.representations}
    named = ", ".join(f"{name} {100 * share:.3g} %" for name, share in shares.items() if share > 0)
    lines += ["", f"Device share of the model's MACs: {named}; the image families run no model on the device."]
    if not model.validation_held_out_of_training:
        lines.append(f"Caveat: {model.selection}.")
    return "\n".join(lines)


def _versus_cell(row: NairVsImageRow, cap: object) -> str:
    """NAIR against the image family at one cap: both test accuracies and the margin."""
    got = next((c for c in row.caps if str(c.cap_bytes) == str(cap)), None)
    if got is None:
        return "-"
    sign = "+" if got.margin_test >= 0 else "−"
    noise = ", noise" if got.verdict == "inside the noise" else ""
    return (f"{_pct(got.nair_test_accuracy, 1)} vs {_pct(got.image_test_accuracy, 1)} "
            f"({sign}{abs(100 * got.margin_test):.1f}{noise})")


def map_nair_vs_image_block(report: MapReport, file: str = "map.json") -> str | None:
    """NAIR at each split against the image a user would pick instead (best on validation per cap), McNemar on
    test; None when the map has no such section."""
    rows = report.nair_vs_image
    if not rows:
        return None
    caps: list[int | str] = [c for c in MAP_CAPS
                             if any(str(cap.cap_bytes) == str(c) for row in rows for cap in row.caps)]
    lines = [f"From `reports/{file}` (`{report.command}`): NAIR against the image "
             "family best on validation at the same per-frame wire cap; test accuracy, margin in points (McNemar, "
             "paired; \"noise\": p ≥ 0.05).", ""]
    lines += _table(["NAIR (device share)", *_cap_heads(caps)],
                    ([f"{row.name} ({100 * row.mac_share:.3g} %)", *[_versus_cell(row, c) for c in caps]]
                     for row in rows))
    return "\n".join(lines)


def _acc_ci(accuracy: float, ci95: Sequence[float]) -> str:
    """``92.1 % (91.6–92.6)``."""
    return f"{_pct(accuracy, 1)} ({100 * ci95[0]:.1f}–{100 * ci95[1]:.1f})"


def _split_cell(row: SplitCap) -> str:
    sign = "+" if row.margin >= 0 else "−"
    noise = ", noise" if row.verdict == "inside the noise" else ""
    return (f"{_acc_ci(row.nair.accuracy, row.nair.ci95)} vs {_acc_ci(row.image.accuracy, row.image.ci95)} "
            f"{row.image_family} ({sign}{abs(100 * row.margin):.1f}{noise})")


DECISION_WIRE_BYTES = 32
"""The most a top-1 decision takes on the wire (issue 30's bar; 24–30 B measured, ``reports/link-decision.json``)."""


def split_block(report: SplitReport) -> str:
    """Each artifact at its split against the image family chosen on validation, paired on every test frame, and
    the decision a device that runs the whole model sends."""
    caps = [row.cap_bytes for row in report.artifacts[0].caps] if report.artifacts else []
    lines = [f"From `reports/split.json` (`{report.command}`, {report.frames} test frames; mature model "
             f"{_pct(report.mature.accuracy)}): NAIR against the image family most accurate on validation at the "
             "same per-frame wire cap, on the same test frames, each with its 95 % interval; margin in points "
             "(McNemar, paired; \"noise\": p ≥ 0.05). The last row is the decision of a device that runs the "
             f"whole model (at most {DECISION_WIRE_BYTES} wire bytes): the mature model's accuracy at every cap.", ""]
    rows: list[list[str]] = [[f"`{a.artifact}` ({a.split}, {100 * a.device_mac_share:.0f} %)",
                              *[_split_cell(row) for row in a.caps]] for a in report.artifacts]
    decision = _acc_ci(report.mature.accuracy, report.mature.ci95)
    rows.append(["decision, top-1 (whole model, 100 %)",
                 *[decision if cap >= DECISION_WIRE_BYTES else "–" for cap in caps]])
    lines += _table(["artifact (split, device share)", *_cap_heads(list(caps))], rows)
    return "\n".join(lines)


def demo_coded_block(report: DemoReport) -> str:
    """The range-coded artifact live over Mosquitto against the offline evaluator."""
    rows = ([f"{b.wire_budget} B", f"{b.results}/{b.frames}", _pct(b.live_accuracy), _pct(b.offline_accuracy),
             _pct(b.agreement, 1), f"{b.wire_bytes_per_frame or 0:.0f} (max {b.wire_bytes_max})"]
            for b in report.budgets)
    return "\n".join([f"From `reports/demo-coded.json` (`{report.command}`; artifact "
                      f"`{report.artifact.sha256[:12]}`, {report.artifact.coding}-coded, {report.artifact.split}):",
                      "", *_table(["--budget", "decided", "live acc", "offline acc", "same class",
                                   "wire B/frame"], rows)])


def share_block(report: ShareReport) -> str:
    """Sensors sharing one shaped uplink: each one's share over the steady state, Jain's index, frames decided."""
    rows = []
    for run in report.runs:
        shares = " / ".join("–" if v is None else f"{100 * v:.1f} %" for v in run.share_of_link.values())
        sent = sum(f.frames_sent or 0 for f in run.frames.values())
        decided = sum(f.frames_decided for f in run.frames.values())
        in_time = [f.within_deadline for f in run.frames.values() if f.within_deadline is not None]
        rows.append([str(run.sensors), f"{run.rate}, {run.fps:g} fps", f"{run.steady_s:.0f} s", shares,
                     _pct(run.link_used), "–" if run.jain is None else f"{run.jain:.3f}", f"{decided}/{sent}",
                     _pct(min(in_time)) if in_time else "–"])
    settings = report.settings
    return "\n".join([
        f"From `reports/link-share.json` (`{report.command}`): the sensors start {settings.get('stagger_s')} s apart "
        "behind one `tbf`-shaped uplink (one FIFO queue), each its own process and MQTT connection, sending NAIR at "
        "the middle split with the shipped link fitting; shares of the link over the time all of them send (from "
        f"{settings.get('settle_s')} s after the last one started), from their link traces.", "",
        *_table(["sensors", "uplink", "steady state", "shares of the link (first to last started)", "link used",
                 "Jain's index", "frames decided/sent", "worst sensor within its deadline"], rows)])


def _skips(sensor: SensorCounters) -> str:
    reasons = {k.removeprefix("skipped_"): v for k, v in sensor.items() if k.startswith("skipped_") and v}
    return ", ".join(f"{v} {k}" for k, v in sorted(reasons.items())) or "none"


def _ci_share(share: Share) -> str:
    low, high = share.ci95
    return f"{share.hits}/{share.n} ({100 * low:.1f}–{100 * high:.1f} %)"


def _oneshot_label(o: OneShotRun) -> str:
    """The one-shot row's scenario cell: the model, and for a user's own model how it was made."""
    made = o.own_model
    if made is None:
        return "one-shot folder" + (f" (`{o.model}`)" if o.model else "")
    classes, accuracy = made.get("classes"), made.get("validation_accuracy")
    return (f"one-shot folder, own model `{o.model}` ({len(classes) if isinstance(classes, list) else '?'} classes, "
            f"{made.get('input')}; imported, calibrated without labels; validation accuracy "
            f"{_pct(float(accuracy) if isinstance(accuracy, int | float) else None, 1)})")


def _files_rows(report: FilesReport) -> list[list[str]]:
    """The files bench's rows: scenario, input, outcome, what was lost."""
    rows = []
    if (o := report.oneshot) is not None:
        rows.append([_oneshot_label(o), f"{o.files} files", f"{o.decided} decided, {o.named_right} named "
                     f"right; live = whole model offline {_ci_share(o.live_equals_offline)}"
                     + (f", = offline twin of what was sent {_ci_share(o.live_equals_sent)}"
                        if o.live_equals_sent is not None else "") + "; accuracy live "
                     f"{_ci_share(o.live_accuracy)}, offline {_ci_share(o.offline_accuracy)}",
                     f"skipped: {_skips(o.sensor)}"])
    for w, label in ((report.watch_burst, "`--watch`, files written at once"),
                     (report.slow_writes, "`--watch`, files written in place slowly")):
        if w is not None:
            extra = f" over {w.write_s:g} s each" if w.write_s is not None else ""
            rows.append([label, f"{w.files} files{extra}", f"{w.decided} decided, {w.named_right} named",
                         f"refused: {w.files_refused}"])
    if (live := report.live) is not None:
        for run, r in (("quiet", live.quiet), ("busy", live.busy)):
            wire = "-" if r.wire_bytes_mean is None else f"{r.wire_bytes_mean:.0f} B/frame"
            rows.append([f"live source, {live.fps:g} fps, {run}", f"{live.frames} frames",
                         f"{r.sensor.get('frames_sent', 0)} sent, {r.decided} decided, {wire}",
                         f"skipped: {_skips(r.sensor)}"])
    if (q := report.qos1_replay) is not None:
        rows.append([f"replay at {q.fps:g} fps", f"{q.frames} frames",
                     f"{q.sensor.get('frames_sent', 0)} sent, {q.received_qos1} received at QoS 1",
                     f"skipped: {_skips(q.sensor)}"])
    return rows


def files_block(report: FilesReport) -> str:
    """The files bench: every file decided and named, watched bursts and slow writes, a live source quiet and busy,
    a QoS 1 subscriber's share of a replay."""
    lines = [f"From `reports/files.json` (`{report.command}`): model `{report.model}` unless named, agents as "
             f"processes with their shipped defaults on one {report.cpus}-core machine, {report.hogs} busy-looping "
             "processes beside them, results recorded by a QoS 1 subscriber.", ""]
    lines += _table(["scenario", "input", "outcome", "lost"], _files_rows(report))
    return "\n".join(lines)


@dataclass(frozen=True)
class Block(Generic[R]):
    """One marked block: the report it is rendered from, its model, the renderer and the command that makes the
    report. A renderer returns None when the report lacks the section it shows."""

    file: str
    kind: type[R]
    render: Callable[[R], str | None]
    command: str

    def text(self, reports: Path) -> str | None:
        """The block rendered from ``reports``, or None when the report or its section is missing."""
        path = reports / self.file
        return self.render(load_typed(path, self.kind)) if path.is_file() else None


class _Renders(Protocol):
    """What :func:`render` needs of a :class:`Block`, whatever its report's model."""

    @property
    def command(self) -> str: ...

    def text(self, reports: Path) -> str | None: ...


def _light_row(part: LightPart) -> list[str]:
    """One part of ``reports/light.json``: torch against ONNX Runtime on the same frames."""
    codes = "; ".join(f"`{a.artifact}`: {a.codes.differ} of {a.codes.codes} (≤ {a.codes.max_delta} step)"
                      for a in part.artifacts) or "–"
    budgets = "; ".join(
        f"`{a.artifact}` " + ", ".join(f"{b.agree.hits}/{b.agree.n}" for b in a.budgets) for a in part.artifacts) or "–"
    return [f"`{part.model}`", part.split or "whole", f"{part.decision_agree.hits}/{part.decision_agree.n}",
            f"{part.topk_agree.hits}/{part.topk_agree.n}", f"{part.max_abs:.1e}", codes, budgets,
            f"{_pct(part.accuracy_torch.share)} / {_pct(part.accuracy_onnx.share)}"]


def light_block(report: LightReport) -> str:
    """Torch against the light sensor's runtime, per part (``reports/light.json``, ``nairbus evaluate light``)."""
    s = report.summary
    budgets = "/".join(f"{b:.0%}" for b in report.demo_budgets)
    lines = [f"From `reports/light.json` (`{report.command}`, {report.wall_seconds:.0f} s; ONNX Runtime "
             f"{report.onnxruntime} on {report.threads} thread against torch {report.torch}; {report.frames} test "
             f"frames each): per part a sensor runs, frames whose decision and top-{report.top_k} are the same, the "
             "largest output difference, the NAIR codes the sensor sends compared code by code, the hub's class from "
             f"either sensor's codes at the demo's budgets ({budgets} of the IR), and both accuracies."
             + (f" Left out: {report.left_out}." if report.left_out else ""), ""]
    lines += _table(["model", "part", "decision equal", f"top-{report.top_k} equal", "max abs diff",
                     "NAIR codes differing", f"class equal at {budgets}", "accuracy torch / ONNX"],
                    [_light_row(p) for p in report.parts])
    lines += ["", f"In all: decisions differ on {s.decisions_differ} of {s.decisions_compared} frame-parts, top-"
                  f"{report.top_k} on {s.topk_differ}; {s.codes_differ} of {s.codes_compared} codes differ, by at "
                  f"most {s.code_max_delta} step (a value on a rounding boundary); the hub's class differs on "
                  f"{s.budget_classes_differ} of {s.budget_classes_compared}; accuracy changed in "
                  f"{s.accuracy_changes} places."]
    return "\n".join(lines)


def _ha_entity_rows(report: HomeAssistantTruthReport) -> list[list[str]]:
    """One row per entity the check's Home Assistant registered: its unique id, the id it got, the one asked for."""
    return [[f"`{e['unique_id']}`", f"`{e['entity_id']}`", f"`{e['default_entity_id']}`"]
            for e in report.entity_ids or ()]


def homeassistant_block(report: HomeAssistantTruthReport) -> str | None:
    """What a real Home Assistant did with nairbus's entities (``reports/homeassistant-truth.json``)."""
    checks: dict[str, Any] = dict(report.checks or {})  # the sections as the script wrote them (JSON)
    if not {"a_commands", "b_truth", "c_recorder", "d_stop"} <= set(checks) or not report.entity_ids:
        return None
    ha: dict[str, Any] = dict(report.home_assistant or {})
    cmd, truth, rec, stop = checks["a_commands"], checks["b_truth"], checks["c_recorder"], checks["d_stop"]
    verdict = "every check passed" if report.passed else "failed: " + ", ".join(report.failed or ["(see report)"])
    lines = [f"From `reports/homeassistant-truth.json` (`deploy/homeassistant/ha_truth.py`, Home Assistant "
             f"{ha.get('version')}, nairbus's and the recorder's defaults; {verdict}):", ""]
    kitchen, porch = truth["kitchen"], truth["porch"]
    lines += _table(["what", "measured"], [
        ["frame rate 2 from Home Assistant, then 0 (no cap)",
         f"controls in {cmd['cap_2']['after_s']} s; results {cmd['cap_2']['result_fps']} fps, then "
         f"{cmd['cap_0']['result_fps']} fps (cap cleared)"],
        ["budget 300 B from Home Assistant, sensor restarted",
         f"controls, birth and Home Assistant's number after the restart: {cmd['restart']['controls_budget_bytes']}, "
         f"{cmd['restart']['birth_budget_bytes']}, {cmd['restart']['home_assistant_state']}"],
        ["an invalid request", f"`{cmd['invalid']['status']}`, transaction `{cmd['invalid']['transaction']}` echoed"],
        ["paused from Home Assistant: label, frame rate",
         f"{kitchen['label_state_then']} {kitchen['last_frame_to_unknown_s']} s and 0 fps "
         f"{kitchen['last_frame_to_zero_fps_s']} s after the last frame (bounds {truth['bounds_s']['label_unknown']} "
         f"s, {truth['bounds_s']['fps_zero']} s)"],
        ["camera stalled: label, frame rate",
         f"{porch['label_state_then']} {porch['last_frame_to_unknown_s']} s and 0 fps "
         f"{porch['last_frame_to_zero_fps_s']} s after the last frame"],
        ["sensor stopped",
         f"its stream unavailable {stop['stop_to_unavailable_s']} s later (bound {stop['bound_s']} s)"],
        *([f"recorder, {name} scene ({rec[key]['frames']} frames in {rec[key]['window_s']:.0f} s, "
           f"{rec[key]['label_changes']} label changes)",
           f"**{rec[key]['bytes_per_frame']} B per frame** (bar {rec['bars_bytes_per_frame'][key]:g} B)"]
          for name, key in (("static", "porch"), ("changing", "kitchen")))])
    lines += ["", "The entity ids Home Assistant gave (its entity registry; `default_entity_id` is honoured from "
                  "Home Assistant 2025.10, earlier versions build the id from the device and entity names):", ""]
    lines += _table(["unique id", f"entity id on {ha.get('version')}", "entity id from 2025.10 (asked for)"],
                    _ha_entity_rows(report))
    return "\n".join(lines)


def homeassistant_frame_block(report: HomeAssistantTruthReport) -> str | None:
    """The recorder's cost of per-frame events (``reports/homeassistant-truth-frame.json``)."""
    rec: Any = (report.checks or {}).get("c_recorder")
    if not rec:
        return None
    return ("With `events = \"frame\"` (`reports/homeassistant-truth-frame.json`, "
            "`deploy/homeassistant/ha_truth.py --events frame`): "
            + "; ".join(f"{name} scene **{rec[key]['bytes_per_frame']} B per frame** ({rec[key]['frames']} frames, "
                        f"{rec[key]['label_changes']} label changes)"
                        for name, key in (("static", "porch"), ("changing", "kitchen"))) + ".")


def _link(file: str, command: str) -> Block[LinkReport]:
    return Block(file, LinkReport, functools.partial(link_block, file=file), command)


EVALUATE_VP = "`nairbus train variants` and `nairbus evaluate vp`"
EVALUATE_NAIR = "`nairbus evaluate nair`"
BLOCKS: dict[str, _Renders] = {
    "demo": Block("demo.json", DemoReport, demo_block, "`nairbus demo`"),
    "nair": Block("nair.json", NairReport, nair_block, EVALUATE_NAIR),
    "vp": Block("vp.json", VpReport, vp_block, EVALUATE_VP),
    "vp-family": Block("vp.json", VpReport, vp_family_block, EVALUATE_VP),
    "vp-availability": Block("vp.json", VpReport, vp_availability_block, EVALUATE_VP),
    "vp-payload": Block("vp.json", VpReport, vp_payload_block, EVALUATE_VP),
    "vp-live": Block("demo.json", DemoReport, vp_live_block, "`nairbus demo` (or `nairbus demo-vp`)"),
    "nair-loss": Block("nair.json", NairReport, nair_loss_block, EVALUATE_NAIR),
    "nair-ablation": Block("nair.json", NairReport, nair_ablation_block, EVALUATE_NAIR),
    "nair-rate": Block("nair.json", NairReport, nair_rate_block, EVALUATE_NAIR),
    "nair-cost": Block("nair.json", NairReport, nair_cost_block, EVALUATE_NAIR),
    "link": _link("link.json", "`nairbus bench link` (as root)"),
    "wire": Block("wire.json", WireReport, wire_block, "`nairbus evaluate images` and `nairbus evaluate wire`"),
    "faults": Block("faults.json", FaultsReport, faults_block, "`nairbus bench faults`"),
    "scale": Block("bench.json", ScaleReport, scale_block, "`nairbus bench scale`"),
    "light": Block("light.json", LightReport, light_block, "`nairbus evaluate light`"),
    "homeassistant": Block("homeassistant-truth.json", HomeAssistantTruthReport, homeassistant_block,
                           "`.venv/bin/python deploy/homeassistant/ha_truth.py`"),
    "homeassistant-frame": Block("homeassistant-truth-frame.json", HomeAssistantTruthReport,
                                 homeassistant_frame_block, "`.venv/bin/python deploy/homeassistant/ha_truth.py "
                                 "--events frame --static-bar 1000 --changing-bar 1000 --report "
                                 "reports/homeassistant-truth-frame.json`"),
    "second-model": Block("nair-mobilenet.json", NairReport, second_model_block,
                          "`nairbus evaluate nair --model mobilenet --images-dir build/frames` (docs/your-model.md)"),
    "map": Block("map.json", MapReport, map_block, "`nairbus evaluate map`"),
    "split": Block("split.json", SplitReport, split_block, "`nairbus evaluate split`"),
    "demo-coded": Block("demo-coded.json", DemoReport, demo_coded_block,
                        "`nairbus demo --artifact models/weights/base.coded.nair.npz --wire-budgets 200,300 --no-vp "
                        "--report reports/demo-coded.json`"),
    "files": Block("files.json", FilesReport, files_block, "`nairbus bench files`"),
    "map-mobilenet": Block("map-mobilenet.json", MapReport, map_block, "`nairbus evaluate map --model mobilenet`"),
    "map-nair-vs-image": Block("map.json", MapReport, map_nair_vs_image_block, "`nairbus evaluate map --frames 2000 "
                               "--coded-split stage2`"),
    "link-decision": _link("link-decision.json", "`nairbus bench link --rates 50k,20k --fps 30,10 --mode decision "
                           "--frames 1000 --report reports/link-decision.json` (as root)"),
    "link-auto": _link("link-auto.json", "`nairbus bench link --rates 10M,1M,250k,50k,20k --mode image --mode "
                       "nair2-auto --mode decision-w36r28d121 --mode auto2-budget --compare auto2-budget --frames "
                       "500 --report reports/link-auto.json` (as root)"),
    "link-rtt": _link("link-rtt.json", "`nairbus bench link --rates 1M,250k --rtt-ms 100,300,600 --mode nair2-auto "
                      "--mode image --frames 600 --start 4000 --deadline-ms 500 --report reports/link-rtt.json` "
                      "(as root)"),
    "link-share": Block("link-share.json", ShareReport, share_block, "`nairbus bench share` (as root)"),
    "link-start": _link("link-start.json", "`nairbus bench link --rates 50k,20k --mode nair2-auto --mode image "
                        "--start 4000 --report reports/link-start.json` (as root)"),
    "link-cpu": _link("link-cpu.json", "`nairbus bench link --rates unshaped --fps 10 --add-mode 'cap300=--mode nair "
                      "--budget 300 --artifact models/weights/base.nair.npz' --start 4000 --cpu-load 2 --report "
                      "reports/link-cpu.json` (as root)"),
    "link-qos": _link("link_qos.json", "`nairbus bench link --rates 1M,250k,100k --fps 30 --mode nair-auto "
                      "--add-mode 'nair-auto-qos1=--qos 1' --report reports/link_qos.json` (as root)"),
}
"""Block name: what it is rendered from and how."""
DOCUMENTS: dict[str, tuple[str, ...]] = {
    "README.md": ("demo", "map", "link-decision", "link-auto", "link", "link-rtt", "link-share", "link-start",
                  "link-cpu", "wire", "nair", "vp"),
    "docs/vp.md": ("vp", "vp-family", "vp-availability", "vp-payload", "vp-live"),
    "docs/nair.md": ("nair", "nair-loss", "nair-rate", "nair-ablation", "nair-cost"),
    "docs/your-model.md": ("second-model", "files"),
    "docs/deployment.md": ("light", "homeassistant", "homeassistant-frame"),
}
"""Each file whose figures are rendered, and the blocks it must hold."""


def render(text: str, reports: Path, required: tuple[str, ...] = DOCUMENTS["README.md"]) -> str:
    """``text`` with every marked block replaced by its table rendered from ``reports``."""
    for name, block in BLOCKS.items():
        pattern = re.compile(rf"(<!-- nairbus:{name} -->\n)(?:.*?\n)?(<!-- /nairbus:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            if name in required:
                raise ValueError(f"no <!-- nairbus:{name} --> … <!-- /nairbus:{name} --> block")
            continue
        body = block.text(reports) or f"_Not measured yet: run {block.command}._"
        text = pattern.sub(_splice(body), text)
    return text


def _rendered(repo: Path) -> dict[str, tuple[str, str]]:
    """Each document's current text and the text the reports give."""
    out = {}
    for doc, required in DOCUMENTS.items():
        old = (repo / doc).read_text()
        out[doc] = (old, render(old, repo / "reports", required))
    return out


def stale(repo: Path = REPO) -> list[str]:
    """The documents whose blocks differ from what the reports give."""
    return [doc for doc, (old, new) in _rendered(repo).items() if old != new]


def refresh(repo: Path = REPO) -> list[str]:
    """Rewrite every document's blocks from the reports; return the documents that changed."""
    changed = []
    for doc, (old, new) in _rendered(repo).items():
        if old != new:
            (repo / doc).write_text(new)
            changed.append(doc)
    return changed
