"""``nairbus bench link``: the bus measured over real, kernel-shaped links.

For every cell of a grid — link rate × frame rate × sensor mode — the bench builds a fresh private lab
(:mod:`nairbus.agents.tools.netns`: a hub and a device network namespace joined by a veth pair, the device's uplink
shaped with ``tbf``) and runs, in the hub namespace, a private Mosquitto (config derived from
``broker/mosquitto.dev.conf``, listening on the hub's lab address), a fusion agent (``nairbus fusion``) and a result
recorder; in the device namespace one sensor (``nairbus sensor``) replaying the Fashion-MNIST test split (frame id =
test-set index). Each agent reports readiness over ``$NOTIFY_SOCKET`` (the sd_notify protocol the systemd units use), so
the recorder and fusion are subscribed before the sensor publishes its first fragment.

Per run it records frames sent and decided, live accuracy (an undecided frame counts as wrong; the denominator is
the frames the sensor sent, and the ``*_of_captured`` figures count skipped frames as wrong too) and the offline
accuracy of the same frames at the bytes that actually arrived (each with a 95 % Wilson interval), the share of the
IR received, wire bytes per frame, p50/p99 latency, frames skipped, the latency trend (first vs last fifth of the
frames by capture time), the sensor's peak memory and the kernel's own ``tc -s qdisc`` counters for the shaped
uplink. Everything lands in ``reports/link.json`` (rewritten after every run, so an interrupted grid leaves its
evidence) and ``reports/link.png``.

Sensor modes are data (:data:`MODES`: name → extra ``nairbus sensor`` arguments); a mode whose flags the sensor
rejects is reported as skipped rather than failing the grid. An optional soak run (``--soak-seconds``) samples the
sensor's memory every few seconds to show whether it stays flat.

The module also holds the result recorder, run as ``python -m nairbus.agents.tools.linkbench record …`` inside the hub
namespace: a bare paho client that writes every result and fusion stats message as a JSON line, without validating it
against the schemas, so it keeps working while the wire contract evolves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.tools.linkcompare import compare_modes, correct_bitmap
from nairbus.agents.tools.netns import LinkShape, NetLab, rate_label
from nairbus.agents.tools.reports import LinkReport, LinkRun, write_report
from nairbus.broker import BROKER_DIR

if TYPE_CHECKING:
    from rich.progress import Progress

log = get_logger("nairbus.linkbench")

REPO = Path(__file__).resolve().parents[2]
"""The source tree (for git and repository-relative artifact paths in cell commands)."""
MODES: dict[str, tuple[str, ...]] = {
    "nair-auto": ("--mode", "nair", "--budget", "auto"),
    "nair-fixed-100": ("--mode", "nair", "--budget-fraction", "1.0", "--no-link-fit", "--artifact",
                       "models/weights/base.nair.npz"),
    "image": ("--mode", "image"),
    "auto": ("--mode", "auto"),
    "nair2-auto": ("--mode", "nair", "--budget", "auto", "--artifact", "models/weights/base.nair.npz"),
    "auto2": ("--mode", "auto", "--artifact", "models/weights/base.nair.npz"),
    "decision": ("--mode", "decision"),
    "auto2-budget": ("--mode", "auto", "--device-budget", "62.3%"),
    "decision-w36r28d121": ("--model", "variants-w36r28d121", "--mode", "decision"),
}
"""Sensor modes of the grid: name → extra ``nairbus sensor`` arguments. A new mode is one line here (or ``--add-mode
NAME='ARGS'`` on the command line). ``nair-auto`` and ``auto`` are NAIR and auto as shipped, with nothing else
configured: the model manifest's ``sensor_artifact`` (stage3, chosen on the validation split; the device runs the
whole convolutional stack). ``nair2-auto`` and ``auto2`` send NAIR at the middle split (stage2 artifact, 62 % of the
MACs on the device). ``nair-fixed-100`` is the original behaviour: the whole stage2 IR of every frame, whatever the
link (``--no-link-fit``: the sensor does not size frames to the measured link). ``decision`` runs the whole model on
the device and sends its top-1 (about 30 wire bytes a frame). ``auto2-budget`` is auto within stage2's share of the
MACs (``--device-budget 62.3%``): image or NAIR at the deepest split within it, per frame, never the decision.
``decision-w36r28d121`` is the decision of a lighter model (the VP variant w36r28d121, 20 % of ``base``'s MACs),
which the map finds the most accurate thing to send within 30–70 % budgets at small caps."""
DEFAULT_MODES: tuple[str, ...] = ("nair-auto", "nair-fixed-100", "image", "auto", "nair2-auto", "auto2")
"""The modes a grid runs when none is named (``reports/link.json``); the others are run by name (``--mode``)."""
DEFAULT_RATES: tuple[int | None, ...] = (None, 10_000_000, 1_000_000, 250_000, 100_000)
"""Uplink rates in bit/s; ``None`` is the unshaped veth."""
FIRST_SECONDS = 5.0
"""The start of a run, reported apart: the frames captured in its first seconds."""
ENVELOPE_ESTIMATE_B = 240
"""Wire bytes per fragment beyond its data when the sensor does not count wire bytes itself: what issue 14 measured
for the original envelope (msgpack map with field names, a 45-byte topic, content-type and expiry properties)."""
USAGE_ERROR = re.compile(r"No such option|Invalid value|invalid configuration|Usage:|Missing option|Got unexpected",
                         re.IGNORECASE)
BOX_CHARS = re.compile(r"[│╭╮╰╯─]+")


@dataclass(frozen=True, slots=True)
class LinkBenchSettings:
    """What the link bench runs (every field has a ``nairbus bench link`` option)."""

    rates_bps: tuple[int | None, ...] = DEFAULT_RATES
    fps: tuple[float, ...] = (10.0, 30.0)
    rtts_ms: tuple[float, ...] = (0.0,)
    """Round trips of the path to add (0: the veth's own, well under a millisecond); a run with a round trip joins
    the namespaces through a user-space delay line (:mod:`nairbus.agents.tools.delayline`) and gives the frames half
    of it on top of their deadline."""
    modes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {m: MODES[m] for m in DEFAULT_MODES})
    """The modes to run, in order: name → extra sensor arguments."""
    frames: int = 300
    """Test frames replayed per run (from ``start``; frame id = test-set index)."""
    start: int = 0
    deadline_ms: float = 1000.0
    """The frame deadline: passed to the sensor and to fusion, and drawn on the latency plot."""
    fusion_deadline_ms: float | None = None
    """Fusion's reassembly deadline (default: ``deadline_ms``)."""
    tbf_latency_ms: float = 50.0
    broker_port: int = 18830
    """The private broker's port on the hub's lab address (nothing outside the lab can reach it)."""
    root: str = "nairbus-link"
    site: str = "bench"
    soak_seconds: float = 0.0
    """Length of the soak run; 0 runs none."""
    soak_rate_bps: int = 1_000_000
    soak_fps: float = 30.0
    soak_mode: str | None = None
    """Mode of the soak run (default: the first mode of the grid the sensor supports)."""
    rss_interval_s: float = 5.0
    """Seconds between samples of the sensor's resident memory."""
    startup_timeout_s: float = 180.0
    """Bound on each agent's start (model loading on a busy 2-core host is slow)."""
    skip_grid: bool = False
    """Run only the soak."""
    compare: str | None = None
    """A mode to set against the best other mode of every cell, frame by frame (McNemar): the report's
    ``comparison``."""
    cpu_load: int = 0
    """Busy processes beside the sensor during every run (a device whose CPU other work takes): each spins one
    core until the run ends, and at most for the run's time budget."""
    report: Path = Path("reports/link.json")
    plot: Path | None = Path("reports/link.png")
    run_dir: Path = Path("runs/link")
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.frames < 1 or self.start < 0 or not self.fps or any(f <= 0 for f in self.fps):
            raise ValueError("frames >= 1, start >= 0, and every fps > 0")
        if not self.rtts_ms or any(not 0 <= r <= 10_000 for r in self.rtts_ms):
            raise ValueError("every round trip is 0..10000 ms")
        if self.deadline_ms <= 0 or self.soak_seconds < 0 or self.rss_interval_s <= 0:
            raise ValueError("deadline_ms > 0, soak_seconds >= 0, rss_interval_s > 0")
        if not self.modes:
            raise ValueError("at least one sensor mode")
        if self.compare is not None and self.compare not in self.modes:
            raise ValueError(f"--compare {self.compare}: not one of the modes run ({', '.join(self.modes)})")

    @property
    def fusion_deadline(self) -> float:
        """Fusion's reassembly deadline in milliseconds."""
        return self.fusion_deadline_ms if self.fusion_deadline_ms is not None else self.deadline_ms


@dataclass(frozen=True, slots=True)
class Cell:
    """One run of the grid."""

    rate_bps: int | None
    fps: float
    mode: str
    args: tuple[str, ...]
    frames: int
    soak: bool = False
    rtt_ms: float = 0.0
    """The round trip the path adds (a delay line of half of it each way)."""

    @property
    def slug(self) -> str:
        """A file-name-safe name, e.g. ``1Mbit-30fps-nair-auto`` (``1Mbit-rtt300ms-30fps-…`` with a round trip)."""
        rate = "unshaped" if self.rate_bps is None else rate_label(self.rate_bps).replace(" ", "").replace("/s", "")
        rtt = f"-rtt{self.rtt_ms:g}ms" if self.rtt_ms else ""
        return f"{'soak-' if self.soak else ''}{rate}{rtt}-{self.fps:g}fps-{self.mode}"

    def deadline_ms(self, settings: LinkBenchSettings) -> float:
        """The frames' deadline in this run: the bench's, plus half the added round trip (the path's one way)."""
        return settings.deadline_ms + self.rtt_ms / 2

    def fusion_deadline_ms(self, settings: LinkBenchSettings) -> float:
        """Fusion's reassembly deadline in this run (plus half the added round trip, as the frames')."""
        return settings.fusion_deadline + self.rtt_ms / 2


# ----- pure statistics and report assembly ---------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None when ``n`` is 0.

    >>> [round(x, 4) for x in wilson(93, 100)]
    [0.8625, 0.9657]
    """
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile, or None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def latency_trend(capture_ts: Sequence[float], latency_ms: Sequence[float], parts: int = 5) -> dict[str, Any]:
    """p50 latency of the first and the last ``1/parts`` of the frames by capture time, and their ratio.

    A link the sensor fits keeps the two alike; a backlog that grows through the run shows as a ratio well above 1.

    >>> latency_trend([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 10, 20, 20, 30, 30, 40, 40, 50, 50])
    {'first_p50_ms': 10.0, 'last_p50_ms': 50.0, 'ratio': 5.0, 'frames_per_part': 2}
    """
    order = np.argsort(np.asarray(capture_ts, dtype=float), kind="stable")
    lat = np.asarray(latency_ms, dtype=float)[order]
    k = len(lat) // parts
    if k == 0:
        return {"first_p50_ms": None, "last_p50_ms": None, "ratio": None, "frames_per_part": 0}
    first, last = float(np.median(lat[:k])), float(np.median(lat[-k:]))
    return {"first_p50_ms": first, "last_p50_ms": last, "ratio": last / first if first > 0 else None,
            "frames_per_part": k}


def window_trend(capture_ts: Sequence[float], latency_ms: Sequence[float], window_s: float = 60.0) -> dict[str, Any]:
    """p50 latency of the first and the last ``window_s`` seconds of capture time (the soak's criterion)."""
    ts = np.asarray(capture_ts, dtype=float)
    lat = np.asarray(latency_ms, dtype=float)
    if len(ts) == 0:
        return {"first_p50_ms": None, "last_p50_ms": None, "ratio": None, "window_s": window_s}
    first = lat[ts <= ts.min() + window_s]
    last = lat[ts >= ts.max() - window_s]
    f, la = float(np.median(first)), float(np.median(last))
    return {"first_p50_ms": f, "last_p50_ms": la, "ratio": la / f if f > 0 else None, "window_s": window_s}


def parse_counters(*texts: str) -> dict[str, Any] | None:
    """The sensor's final counters: the last JSON object line with a ``frames`` key that is not a log line, else the
    counters of its ``sensor_stopped`` log line."""
    for text in texts:
        for raw in reversed(text.splitlines()):
            line = raw.strip()
            if not (line.startswith("{") and line.endswith("}")):
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and "event" not in value and ("frames" in value or "frames_sent" in value):
                return value
    for text in texts:  # a sensor that died before printing them still logged them on the way out
        for raw in reversed(text.splitlines()):
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict) and value.get("event") == "sensor_stopped":
                return {k: v for k, v in value.items() if k not in ("event", "logger", "level", "timestamp", "sensor")}
    return None


def usage_error(text: str) -> str | None:
    """The sensor's complaint about its command line (unknown flag, bad value), without the box drawing."""
    if not USAGE_ERROR.search(text):
        return None
    lines = [BOX_CHARS.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Usage:", "Try '")) and line != "Error"]
    wanted = [line for line in lines if USAGE_ERROR.search(line)]
    return " ".join((wanted or lines)[-2:])[:300] or "rejected"


class _FrameCounts(NamedTuple):
    """How many frames a run's shares are of."""

    sent: int | None
    """Frames the sensor says it sent (None when it printed no counters)."""
    denominator: int
    """Frames the live figures are of: those sent, or those asked for when the sensor failed."""
    captured: int
    """Frames the sensor took from its source, skipped ones included."""


class _Tally(NamedTuple):
    """Right answers among a run's decided frames, live and offline."""

    correct: int
    """Decided frames whose live class is the label."""
    offline_known: list[int]
    """Decided frames with an offline prediction."""
    offline_correct: int
    """Of those, the ones whose offline class is the label."""
    agree: int
    """Of those, the ones whose offline class is the live one."""


def _first_results(cell: Cell, records: Sequence[Mapping[str, Any]],
                   settings: LinkBenchSettings) -> dict[int, Mapping[str, Any]]:
    """The first result per frame id among the frames the run replayed."""
    lo, hi = cell_frames(cell, settings)
    results: dict[int, Mapping[str, Any]] = {}
    for r in records:
        fid = int(r.get("frame_id", -1))
        if lo <= fid < hi and fid not in results:
            results[fid] = r
    return results


def _frame_counts(cell: Cell, counters: Mapping[str, Any], sensor_failed: bool) -> _FrameCounts:
    """Frames sent, the live figures' denominator and frames captured, from the sensor's counters."""
    sent = counters.get("frames_sent", counters.get("frames"))
    frames_sent = int(sent) if sent is not None else None
    denominator = frames_sent if frames_sent is not None and not sensor_failed else cell.frames
    # Frames the sensor took from its source, skipped ones included (the sensor's "frames" counter next to
    # "frames_sent"; without that pair, the frames asked for).
    captured = int(counters["frames"]) if "frames" in counters and "frames_sent" in counters else cell.frames
    if sensor_failed:
        captured = cell.frames
    return _FrameCounts(frames_sent, denominator, captured)


def _tally(results: Mapping[int, Mapping[str, Any]], labels: np.ndarray, offline: Mapping[int, int]) -> _Tally:
    """Count the decided frames that are right live and offline, and where offline agrees with live."""
    correct = sum(int(r["class_index"]) == int(labels[fid]) for fid, r in results.items())
    offline_known = [fid for fid in results if fid in offline]
    offline_correct = sum(offline[fid] == int(labels[fid]) for fid in offline_known)
    agree = sum(offline[fid] == int(results[fid]["class_index"]) for fid in offline_known)
    return _Tally(correct, offline_known, offline_correct, agree)


def _cell_fields(cell: Cell) -> dict[str, Any]:
    """The fields naming a run's cell, first in every report row."""
    return {"rate_bps": cell.rate_bps, "rate": rate_label(cell.rate_bps), "rtt_ms": cell.rtt_ms, "fps": cell.fps,
            "mode": cell.mode,
            "sensor_args": list(cell.args)}


def _skipped_row(cell: Cell, why: str) -> dict[str, Any]:
    """The report row of a run the sensor could not do."""
    return {**_cell_fields(cell), "skipped": why}


def _accuracy_figures(cell: Cell, first_frame: int, decided: int, counts: _FrameCounts, tally: _Tally,
                      offline_source: str) -> dict[str, Any]:
    """Frames decided and live and offline accuracy (with 95 % Wilson intervals) of a report row."""
    live_ci = wilson(tally.correct, counts.denominator)
    decided_ci = wilson(tally.correct, decided)
    offline_ci = wilson(tally.offline_correct, len(tally.offline_known))
    denominator, captured, known = counts.denominator, counts.captured, len(tally.offline_known)
    return {
        "frames_requested": cell.frames,
        "first_frame": first_frame,
        "frames_sent": counts.sent,
        "frames_decided": decided,
        "share_decided": decided / denominator if denominator else 0.0,
        "frames_captured": captured,
        "share_decided_of_captured": decided / captured if captured else 0.0,
        "live_accuracy_of_captured": tally.correct / captured if captured else 0.0,
        "live_accuracy": tally.correct / denominator if denominator else 0.0,
        "live_accuracy_ci95": list(live_ci) if live_ci else None,
        "live_accuracy_decided": tally.correct / decided if decided else None,
        "live_accuracy_decided_ci95": list(decided_ci) if decided_ci else None,
        "offline_accuracy": tally.offline_correct / known if known else None,
        "offline_accuracy_ci95": list(offline_ci) if offline_ci else None,
        "offline_frames": known,
        "offline_source": offline_source,
        "agreement_with_offline": tally.agree / known if known else None,
    }


def _reception_figures(got: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Share of the IR received (NAIR frames), share complete and representations of the decided frames."""
    nair = [r for r in got if r.get("representation", "nair") == "nair"]
    representations: dict[str, int] = {}
    for r in got:
        rep = str(r.get("representation", "nair"))
        representations[rep] = representations.get(rep, 0) + 1
    return {
        "fraction_received": float(np.mean([float(r.get("fraction_received", 0.0)) for r in nair])) if nair else None,
        "complete": float(np.mean([bool(r.get("complete", False)) for r in got])) if got else None,
        "representations": representations,
    }


def _wire_bytes(got: Sequence[Mapping[str, Any]], counters: Mapping[str, Any], frames_sent: int | None,
                wire_results: Sequence[int]) -> tuple[float | None, str]:
    """Wire bytes per frame and where the figure comes from: the sensor's counters, fusion's, else an estimate."""
    if "wire_bytes" in counters and frames_sent:
        return counters["wire_bytes"] / frames_sent, "sensor counters (wire_bytes / frames sent)"
    if wire_results:
        return sum(wire_results) / len(wire_results), "fusion's wire_bytes of the decided frames"
    if got:
        fragments = sum(int(r.get("fragments_received", 1)) for r in got)
        payload_received = sum(int(r.get("bytes_received", 0)) for r in got)
        return ((payload_received + ENVELOPE_ESTIMATE_B * fragments) / len(got),
                f"estimate: payload received + {ENVELOPE_ESTIMATE_B} B per fragment received "
                "(the sensor does not count wire bytes)")
    return None, "no results"


def _byte_figures(got: Sequence[Mapping[str, Any]], counters: Mapping[str, Any], frames_sent: int | None,
                  qdisc: Mapping[str, int] | None) -> dict[str, Any]:
    """Bytes per frame of a report row: on the wire, of payload sent and received, and through the shaper."""
    wire_results = [int(r["wire_bytes"]) for r in got if r.get("wire_bytes") is not None]
    wire, wire_source = _wire_bytes(got, counters, frames_sent, wire_results)
    payload_received = sum(int(r.get("bytes_received", 0)) for r in got)
    return {
        "wire_bytes_per_frame": wire,
        "wire_bytes_source": wire_source,
        "payload_bytes_per_frame_sent": (counters["payload_bytes"] / frames_sent
                                         if "payload_bytes" in counters and frames_sent else None),
        "payload_bytes_per_frame_received": payload_received / len(got) if got else None,
        "wire_bytes_per_frame_received": sum(wire_results) / len(wire_results) if wire_results else None,
        "link_bytes_per_frame": (qdisc["sent_bytes"] / frames_sent
                                 if qdisc and qdisc.get("sent_bytes") and frames_sent else None),
    }


def _timing_figures(got: Sequence[Mapping[str, Any]], deadline_ms: float,
                    frames_skipped: Any) -> dict[str, Any]:
    """Latency of the decided frames against the deadline, frames the sensor skipped, and the latency trend."""
    latencies = [float(r["latency_ms"]) for r in got]
    captures = [float(r.get("capture_ts", 0.0)) for r in got]
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "within_deadline": (sum(x <= deadline_ms for x in latencies) / len(latencies)) if latencies else None,
        "frames_skipped": frames_skipped,
        "latency_trend": latency_trend(captures, latencies),
    }


def first_seconds(got: Sequence[Mapping[str, Any]], deadline_ms: float, fps: float,
                  seconds: float = FIRST_SECONDS) -> float | None:
    """Of the frames the first ``seconds`` of a run captured (``fps × seconds``), the share decided within the
    deadline: the start reported apart from the steady state.

    >>> got = [{"capture_ts": 100.0 + i / 10, "latency_ms": 50.0 if i % 10 else 2000.0} for i in range(80)]
    >>> first_seconds(got, 1000.0, 10.0)
    0.9
    """
    if not got:
        return None
    start = min(float(r.get("capture_ts", 0.0)) for r in got)
    in_time = sum(1 for r in got if float(r.get("capture_ts", 0.0)) < start + seconds
                  and float(r["latency_ms"]) <= deadline_ms)
    return min(1.0, in_time / max(1.0, round(fps * seconds)))


def summarise(cell: Cell, records: Sequence[Mapping[str, Any]], labels: np.ndarray, offline: Mapping[int, int],
              offline_source: str, counters: Mapping[str, Any] | None, qdisc: Mapping[str, int] | None,
              settings: LinkBenchSettings, sensor_failed: bool = False) -> dict[str, Any]:
    """The per-run figures of ``reports/link.json`` from the recorded results (pure: no processes, no model).

    ``records`` are result messages as decoded JSON (the first one per frame id counts), ``offline`` the offline
    prediction per frame id at the bytes that arrived, ``counters`` the sensor's final counters (None when it
    printed none), ``qdisc`` the shaped uplink's ``tc -s`` counters. When the sensor failed, every share is of the
    frames asked for: the frames it never got to count as undecided.
    """
    results = _first_results(cell, records, settings)
    got = list(results.values())
    counters = dict(counters or {})
    counts = _frame_counts(cell, counters, sensor_failed)
    tally = _tally(results, labels, offline)
    timing = {**_timing_figures(got, cell.deadline_ms(settings), counters.get("frames_skipped")),
              "deadline_ms": cell.deadline_ms(settings),
              "first_seconds_within_deadline": first_seconds(got, cell.deadline_ms(settings), cell.fps)}
    byte_figures = _byte_figures(got, counters, counts.sent, qdisc)
    return {
        **_cell_fields(cell),
        **_accuracy_figures(cell, cell_frames(cell, settings)[0], len(got), counts, tally, offline_source),
        **_reception_figures(got),
        **byte_figures,
        **timing,
        "sensor_counters": counters or None,
        "qdisc": dict(qdisc) if qdisc else None,
        "correct_frames": correct_bitmap(results, labels, *cell_frames(cell, settings)),
    }


def cell_frames(cell: Cell, settings: LinkBenchSettings) -> tuple[int, int]:
    """The test-set index range ``[lo, hi)`` a run replays."""
    return settings.start, settings.start + cell.frames


def settings_json(settings: LinkBenchSettings) -> dict[str, Any]:
    """The settings as they go into the report (paths relative to the repository)."""
    out = asdict(settings)
    out["modes"] = {name: list(args) for name, args in settings.modes.items()}
    out["fusion_deadline_ms"] = settings.fusion_deadline
    for key in ("report", "plot", "run_dir", "data_dir"):
        value = out.pop(key)
        if key == "data_dir" and value is not None:
            out[key] = str(value)
    return out


def assemble_report(settings: LinkBenchSettings, command: str, runs: Sequence[Mapping[str, Any]],
                    soak: Mapping[str, Any] | None, started: float, meta: Mapping[str, Any],
                    done: bool = True) -> dict[str, Any]:
    """The whole ``reports/link.json``."""
    return {
        "command": command,
        "complete": done,
        "settings": settings_json(settings),
        **meta,
        "runs": list(runs),
        "comparison": compare_modes(runs, settings.compare) if settings.compare else None,
        "soak": dict(soak) if soak else None,
        "wall_seconds": round(time.time() - started, 1),
    }


def rate_arg(rate_bps: int | None) -> str:
    """A rate as ``--rates`` takes it back.

    >>> [rate_arg(r) for r in (None, 10_000_000, 250_000, 1_500_000, 12_345)]
    ['unshaped', '10M', '250k', '1500k', '12345']
    """
    if rate_bps is None:
        return "unshaped"
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if rate_bps % scale == 0:
            return f"{rate_bps // scale}{unit}"
    return str(rate_bps)


def _grid_args(settings: LinkBenchSettings, default: LinkBenchSettings) -> list[str]:
    """The ``--rates``/``--fps``/``--rtt-ms``/``--mode`` part of :func:`command_line`."""
    parts = []
    if settings.rates_bps != default.rates_bps:
        parts.append("--rates " + ",".join(rate_arg(r) for r in settings.rates_bps))
    if settings.fps != default.fps:
        parts.append("--fps " + ",".join(f"{f:g}" for f in settings.fps))
    if settings.rtts_ms != default.rtts_ms:
        parts.append("--rtt-ms " + ",".join(f"{r:g}" for r in settings.rtts_ms))
    if dict(settings.modes) == dict(default.modes):
        return parts
    for name, args in settings.modes.items():
        parts.append(f"--mode {name}" if MODES.get(name) == tuple(args) else f"--add-mode '{name}={' '.join(args)}'")
    return parts


def command_line(settings: LinkBenchSettings) -> str:
    """The ``nairbus bench link`` invocation that reproduces ``settings`` (defaults left out)."""
    default = LinkBenchSettings()
    parts = ["nairbus bench link", *_grid_args(settings, default)]
    for key, flag in (("frames", "--frames"), ("start", "--start"), ("deadline_ms", "--deadline-ms"),
                      ("fusion_deadline_ms", "--fusion-deadline-ms"), ("tbf_latency_ms", "--tbf-latency-ms"),
                      ("soak_seconds", "--soak-seconds"), ("soak_mode", "--soak-mode")):
        value = getattr(settings, key)
        if key == "soak_seconds" and value and settings.soak_rate_bps != default.soak_rate_bps:
            parts.append(f"--soak-rate {rate_arg(settings.soak_rate_bps)}")
        if key == "soak_seconds" and value and settings.soak_fps != default.soak_fps:
            parts.append(f"--soak-fps {settings.soak_fps:g}")
        if value != getattr(default, key):
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if settings.skip_grid:
        parts.append("--soak-only")
    if settings.compare:
        parts.append(f"--compare {settings.compare}")
    if settings.cpu_load:
        parts.append(f"--cpu-load {settings.cpu_load}")
    return " ".join(parts)


# ----- offline predictions at the bytes that arrived -----------------------------------------------------------


class OfflinePredictor:
    """The offline twin of a live result: the same test image, only what arrived.

    A NAIR result is recomputed with the mature model's split pipeline from the importance-ordered prefix that
    arrived — ``components_received`` when the result carries it, else ``round(fraction_received × n_components)``.
    A result with ``"representation": "image"`` is the mature model on the image decoded with the result's
    ``codec`` (:func:`nairbus.models.image.codec.get_image_codec`). A ``"decision"`` result is the mature model on
    the whole frame (what the device ran).
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        from nairbus.models.data.registry import load_data
        from nairbus.models.nair.pipeline import NairPipeline
        from nairbus.models.store import sensor_artifact_path

        self.pipeline = self.default = NairPipeline.load("base", sensor_artifact_path("base"))
        self._by_args: dict[tuple[str | None, str | None, str | None], NairPipeline] = {}
        self.test = load_data("test", data_dir=data_dir)
        self.n_components = int(self.pipeline.artifact.n_components)

    def for_args(self, args: Sequence[str]) -> OfflinePredictor:
        """This predictor set to what a mode's sensor arguments run: the model ``--model NAME`` names (its artifact
        optional: a decision needs none), the NAIR artifact ``--artifact PATH`` names, or — for ``--mode auto`` with
        a ``--device-budget`` share and no artifact — the deepest artifact within the budget, as the sensor picks it."""
        model, path, budget = _arg(args, "--model"), _arg(args, "--artifact"), _arg(args, "--device-budget")
        key = (model, path, budget)
        if key == (None, None, None):
            self.pipeline = self.default
        else:
            if key not in self._by_args:
                self._by_args[key] = self._pipeline_for(model, path, budget, _arg(args, "--mode") == "auto")
            self.pipeline = self._by_args[key]
        self.n_components = int(self.pipeline.artifact.n_components) if self.pipeline.has_artifact else 0
        return self

    def _pipeline_for(self, model: str | None, path: str | None, budget: str | None, auto: bool) -> Any:
        """The pipeline of one mode's sensor arguments (see :meth:`for_args`)."""
        from nairbus.agents.nair.budget import parse_device_budget
        from nairbus.agents.nair.sensor import deepest_within
        from nairbus.models.nair.pipeline import NairPipeline
        from nairbus.models.nair.transform import NairArtifact
        from nairbus.models.store import sensor_artifact_path

        base = self.default if model is None else NairPipeline.load(model, sensor_artifact_path(model), optional=True)
        if path is not None:
            return NairPipeline(base.model, base.manifest, NairArtifact.load(_artifact_file(path)))
        share = parse_device_budget(budget).share if budget is not None else None
        if auto and share and base.has_artifact:
            return deepest_within(base, sensor_artifact_path(base.manifest.name), share)[0]
        return base

    @property
    def labels(self) -> np.ndarray:
        """Test-set labels."""
        return self.test.labels

    def predict(self, records: Sequence[Mapping[str, Any]]) -> tuple[dict[int, int], str]:
        """Offline class per frame id for ``records`` (first result per frame), and where the prefix came from."""
        seen: dict[int, Mapping[str, Any]] = {}
        for r in records:
            fid = int(r.get("frame_id", -1))
            if 0 <= fid < len(self.test) and fid not in seen:
                seen[fid] = r
        nair = {fid: r for fid, r in seen.items()
                if r.get("representation", "nair") == "nair" and not r.get("variants")}
        image = {fid: r for fid, r in seen.items() if r.get("representation") == "image"}
        decided = sorted(fid for fid, r in seen.items() if r.get("representation") == "decision")
        out: dict[int, int] = {}
        sources: set[str] = set()
        if nair:
            ids = np.array(sorted(nair), dtype=np.int64)
            ends = []
            for fid in ids.tolist():
                r = nair[fid]
                if r.get("components_received") is not None:
                    ends.append(int(r["components_received"]))
                    sources.add("components_received")
                else:
                    ends.append(round(float(r.get("fraction_received", 0.0)) * self.n_components))
                    sources.add("round(fraction_received × n_components)")
            preds = self._prefix_predictions(ids, np.array(ends, dtype=np.int64))
            out.update(zip(ids.tolist(), preds.tolist(), strict=True))
        if image:
            preds_img, source = self._image_predictions(image)
            out.update(preds_img)
            sources.add(source)
        if decided:
            probs = self.pipeline.full_model_probs(self.test.images[np.array(decided, dtype=np.int64)])
            out.update(zip(decided, probs.argmax(1).tolist(), strict=True))
            sources.add("the whole model on the frame")
        return out, " + ".join(sorted(sources)) or "no results"

    def _prefix_predictions(self, ids: np.ndarray, ends: np.ndarray) -> np.ndarray:
        codes = self.pipeline.encode_all(self.test.images[ids])
        return np.asarray(self.pipeline.prefix_probs(codes, ends).argmax(1))

    def _image_predictions(self, image: Mapping[int, Mapping[str, Any]]) -> tuple[dict[int, int], str]:
        try:
            from nairbus.models.image import codec as imagecodec  # type: ignore[attr-defined, unused-ignore]
        except ImportError:
            return {}, "image results without nairbus.models.image.codec (no offline figure)"
        decoded, ids = [], []
        for fid, r in image.items():
            try:
                codec: Any = imagecodec.get_image_codec(str(r.get("codec")))
                frame = self.test.images[fid]
                decoded.append(np.asarray(codec.decode(codec.encode(frame), frame.shape), dtype=np.uint8))
                ids.append(fid)
            except Exception as exc:  # an unknown codec must not sink the whole report
                log.warning("linkbench.image_offline_failed", frame=fid, codec=r.get("codec"), error=str(exc))
        if not ids:
            return {}, "image codec round trip failed"
        probs = self.pipeline.full_model_probs(np.stack(decoded))
        return dict(zip(ids, probs.argmax(1).tolist(), strict=True)), "image decoded with the result's codec"


# ----- processes ---------------------------------------------------------------------------------------------------


class NotifyListener:
    """A ``$NOTIFY_SOCKET`` of our own: agents send ``READY=1`` there once subscribed/connected (sd_notify)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)

    def wait_ready(self, proc: subprocess.Popen[Any], timeout: float) -> bool:
        """True once ``READY=1`` arrived; False when ``proc`` exited first or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if proc.poll() is not None:
                    return False
                continue
            if b"READY=1" in data.split(b"\n"):
                return True
        return False

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (``VmRSS``), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def agent_env(settings: LinkBenchSettings, hub_addr: str, notify: Path) -> dict[str, str]:
    """Environment of an agent process in the lab."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAIRBUS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    if os.environ.get("NAIRBUS_DATA_DIR"):
        env["NAIRBUS_DATA_DIR"] = os.environ["NAIRBUS_DATA_DIR"]
    env.update({
        "NAIRBUS_BROKER__HOST": hub_addr,
        "NAIRBUS_BROKER__PORT": str(settings.broker_port),
        "NAIRBUS_TOPICS__ROOT": settings.root,
        "NAIRBUS_TOPICS__SITE": settings.site,
        "NAIRBUS_LOG__FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "100000",  # the sensor prints its counters through rich: no wrapping inside the JSON line
        "NOTIFY_SOCKET": str(notify),
        "STATE_DIRECTORY": str(notify.parent / "state"),  # every run starts cold: no link remembered from another
    })
    if settings.data_dir is not None:
        env["NAIRBUS_DATA_DIR"] = str(settings.data_dir)
    return env


def probe_mode(args: Sequence[str], timeout: float = 120.0) -> str | None:
    """None if ``nairbus sensor`` accepts ``args`` (checked with ``--help``, which stops after parsing), else why."""
    try:
        done = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "sensor", *args, "--help"],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "COLUMNS": "200"}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None  # slow host: let the run itself find out
    if done.returncode == 0:
        return None
    return usage_error(done.stderr + done.stdout) or f"exit {done.returncode}"


@dataclass
class RunOutcome:
    """What one lab run left behind, before it is summarised."""

    records: list[dict[str, Any]]
    stats: dict[str, Any] | None
    counters: dict[str, Any] | None
    qdisc_text: str
    qdisc: dict[str, int] | None
    rss: list[tuple[float, int]]
    sensor_rc: int | None
    wall_s: float
    sensor_s: float
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)


def read_records(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Results and the last fusion stats from a recorder file."""
    results: list[dict[str, Any]] = []
    stats = None
    if not path.is_file():
        return results, stats
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        payload = entry.get("payload")
        if not isinstance(payload, dict):
            continue
        if "/results/" in entry.get("topic", ""):
            payload["_recv_ts"] = entry.get("t")
            results.append(payload)
        elif entry.get("topic", "").endswith("/stats"):
            stats = payload
    return results, stats


class ResultCounter:
    """Counts the result lines of a recorder file as it grows (stats lines do not count)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0
        self._partial = b""

    def __call__(self) -> int:
        """Result lines written so far."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return self.count
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.count += sum(b"/results/" in line for line in lines)
        return self.count


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@dataclass(frozen=True, slots=True)
class _RunPaths:
    """Where one run keeps its files: logs, results and counters under ``out``; sockets and the broker's config
    under ``tmp`` (removed after the run)."""

    out: Path
    tmp: Path

    @property
    def results(self) -> Path:
        """The recorder's JSON lines."""
        return self.out / "results.jsonl"

    @property
    def sensor_out(self) -> Path:
        """The sensor's stdout (its final counters)."""
        return self.out / "sensor.out"

    @property
    def sensor_err(self) -> Path:
        """The sensor's stderr (its log)."""
        return self.out / "sensor.err"

    @property
    def link_trace(self) -> Path:
        """The sensor's link fitting, sample by sample (``nairbus sensor --link-trace``; not for VP)."""
        return self.out / "link-trace.jsonl"


@dataclass(frozen=True, slots=True)
class _CellLab:
    """One run's lab and what its steps share."""

    cell: Cell
    settings: LinkBenchSettings
    lab: NetLab
    paths: _RunPaths
    listeners: list[NotifyListener]
    """Every readiness socket opened for the run (closed when it ends)."""

    @property
    def budget_s(self) -> float:
        """How long the sensor may take: three times its nominal replay, plus two minutes."""
        return self.cell.frames / self.cell.fps * 3 + 120.0


class _SensorWatch(NamedTuple):
    """What watching the sensor until it exited left."""

    started: float
    """``time.monotonic()`` when the sensor was ready."""
    seconds: float
    """How long it ran from then."""
    rss: list[tuple[float, int]]
    """Its resident memory samples: (seconds since ready, KiB)."""
    problem: str | None
    """Why it had to be stopped, if it had to."""


def _run_paths(cell: Cell, settings: LinkBenchSettings) -> _RunPaths:
    """A fresh run directory for ``cell`` and a private temporary one."""
    out_dir = settings.run_dir / cell.slug
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="nairbus-linkbench-"))
    tmp.chmod(0o755)  # Mosquitto drops root for its own user and must still read its config
    return _RunPaths(out_dir, tmp)


def _start_broker(run: _CellLab) -> None:
    """Start the private Mosquitto in the hub namespace, on the hub's lab address."""
    from nairbus.agents.runtime.mosquitto import derive_config, find_mosquitto

    conf = run.paths.tmp / "mosquitto.conf"
    source = (BROKER_DIR / "mosquitto.dev.conf").read_text()
    conf.write_text(derive_config(source, [run.settings.broker_port], host=run.lab.hub_addr))
    conf.chmod(0o644)
    with (run.paths.out / "mosquitto.log").open("wb") as mlog:
        run.lab.popen(run.lab.hub, [find_mosquitto(), "-c", str(conf)], stdout=mlog, stderr=subprocess.STDOUT)


def _listen(run: _CellLab, name: str) -> tuple[NotifyListener, dict[str, str]]:
    """A readiness socket for the agent ``name`` and the environment that points the agent at it."""
    listener = NotifyListener(run.paths.tmp / f"{name}.sock")
    run.listeners.append(listener)
    return listener, agent_env(run.settings, run.lab.hub_addr, listener.path)


def _start_recorder(run: _CellLab) -> subprocess.Popen[Any]:
    """Start the result recorder in the hub namespace and wait until it is subscribed."""
    settings, lab, out_dir = run.settings, run.lab, run.paths.out
    prefix = f"{settings.root}/v1/{settings.site}"
    ready, env = _listen(run, "recorder")
    with (out_dir / "recorder.log").open("wb") as rlog:
        recorder = lab.popen(lab.hub, [
            sys.executable, "-m", "nairbus.agents.tools.linkbench", "record", "--host", lab.hub_addr, "--port",
            str(settings.broker_port), "--topic", f"{prefix}/results/+", "--topic", f"{prefix}/fusion/+/stats",
            "--out", str(run.paths.results), "--max-seconds", str(settings.startup_timeout_s * 2 + run.budget_s)],
            stdout=rlog, stderr=subprocess.STDOUT, env=env)
    if not ready.wait_ready(recorder, 30.0):
        raise RuntimeError(f"the result recorder did not connect to the lab's broker:\n"
                           f"{_tail(out_dir / 'recorder.log')}\n{_tail(out_dir / 'mosquitto.log')}")
    return recorder


def _served_models(args: Sequence[str]) -> list[str]:
    """Fusion options serving the model a sensor mode names (``--model NAME``) beside ``base``.

    >>> _served_models(("--model", "variants-w44r24", "--mode", "decision")), _served_models(("--mode", "image"))
    (['--also-model', 'variants-w44r24'], [])
    """
    model = _arg(args, "--model")
    return ["--also-model", model] if model is not None and model != "base" else []


def _start_fusion(run: _CellLab) -> subprocess.Popen[Any]:
    """Start the fusion agent in the hub namespace and wait until it is ready."""
    settings, lab, out_dir = run.settings, run.lab, run.paths.out
    ready, env = _listen(run, "fusion")
    with (out_dir / "fusion.log").open("wb") as flog:
        fusion = lab.popen(lab.hub, [
            sys.executable, "-m", "nairbus.agents.cli", "fusion", "--fusion-id", "link-fusion", "--deadline-ms",
            f"{run.cell.fusion_deadline_ms(settings):g}", "--stats-interval", "1", *_served_models(run.cell.args)],
            stdout=flog, stderr=subprocess.STDOUT, env=env)
    if not ready.wait_ready(fusion, settings.startup_timeout_s):
        raise RuntimeError(f"the fusion agent did not come up; see {out_dir / 'fusion.log'}:\n"
                           f"{_tail(out_dir / 'fusion.log')}")
    return fusion


def _start_sensor(run: _CellLab) -> tuple[subprocess.Popen[Any], str | None]:
    """Start the sensor in the device namespace and wait until it is ready; returns it and, when it rejected the
    mode's arguments, why the run is skipped (any other failure to come up raises)."""
    cell, settings, lab, paths = run.cell, run.settings, run.lab, run.paths
    ready, env = _listen(run, "sensor")
    trace = () if "vp" in cell.args else ("--link-trace", str(paths.link_trace))
    with paths.sensor_out.open("wb") as so, paths.sensor_err.open("wb") as se:
        sensor = lab.popen(lab.dev, [
            sys.executable, "-m", "nairbus.agents.cli", "sensor", "--sensor-id", "cam1",
            "--count", str(cell.frames),
            "--start", str(settings.start), "--fps", f"{cell.fps:g}", "--deadline-ms",
            f"{cell.deadline_ms(settings):g}", *trace, *cell.args], stdout=so, stderr=se, env=env)
    if ready.wait_ready(sensor, settings.startup_timeout_s):
        return sensor, None
    with contextlib.suppress(subprocess.TimeoutExpired):
        sensor.wait(5)
    text = paths.sensor_err.read_text(errors="replace") + paths.sensor_out.read_text(errors="replace")
    why = usage_error(text) if sensor.returncode not in (None, 0) else None
    if why is None:
        raise RuntimeError(f"the sensor did not come up (exit {sensor.returncode}); see {paths.sensor_err}:\n"
                           f"{_tail(paths.sensor_err)}")
    return sensor, f"sensor does not support {' '.join(cell.args)}: {why}"


_BUSY = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
"""One busy process: spins a core until its time is up."""


def _start_cpu_load(run: _CellLab) -> list[subprocess.Popen[Any]]:
    """The run's busy processes (:attr:`LinkBenchSettings.cpu_load`), in the device namespace beside the sensor,
    each bounded by the run's time budget."""
    return [run.lab.popen(run.lab.dev, [sys.executable, "-c", _BUSY, f"{run.budget_s:.0f}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(run.settings.cpu_load)]


def _watch_sensor(run: _CellLab, sensor: subprocess.Popen[Any], count_results: ResultCounter,
                  on_progress: Callable[[int], None] | None) -> _SensorWatch:
    """Sample the sensor's memory and report progress until it exits; stop it once it overruns its budget."""
    sensor_started = time.monotonic()
    rss: list[tuple[float, int]] = []
    problem = None
    next_sample = 0.0
    hard_end = sensor_started + run.budget_s
    while sensor.poll() is None:
        now = time.monotonic()
        if now >= next_sample:
            value = rss_kib(sensor.pid)
            if value is not None:
                rss.append((round(now - sensor_started, 2), value))
            next_sample = now + run.settings.rss_interval_s
        if on_progress is not None:
            on_progress(count_results())
        if now > hard_end:
            problem = f"sensor still running after {run.budget_s:.0f} s: stopped"
            run.lab.stop_process(sensor, grace=10.0)
            break
        time.sleep(0.25)
    return _SensorWatch(sensor_started, time.monotonic() - sensor_started, rss, problem)


def _await_quiet(run: _CellLab, sensor_started: float, count_results: ResultCounter,
                 on_progress: Callable[[int], None] | None) -> None:
    """Let fusion decide what is still in flight: wait until no result came for the reassembly deadline plus a
    margin (bounded by the sensor's budget plus 30 s)."""
    quiet_s, last, last_change = run.cell.fusion_deadline_ms(run.settings) / 1000.0 + 2.0, -1, time.monotonic()
    while time.monotonic() - last_change < quiet_s and time.monotonic() - sensor_started < run.budget_s + 30:
        count = count_results()
        if count != last:
            last, last_change = count, time.monotonic()
            if on_progress is not None:
                on_progress(count)
        time.sleep(0.25)


def _stop_agents(run: _CellLab, fusion: subprocess.Popen[Any], recorder: subprocess.Popen[Any],
                 sensor: subprocess.Popen[Any]) -> list[str]:
    """Stop fusion, then the recorder; returns the problems their (and the sensor's) exits show."""
    problems = []
    if run.lab.stop_process(fusion, grace=15.0) not in (0, None):
        problems.append(f"fusion exited with {fusion.returncode}")
    time.sleep(0.5)
    run.lab.stop_process(recorder, grace=5.0)
    if sensor.returncode not in (0, None):
        problems.append(f"sensor exited with {sensor.returncode}: {_tail(run.paths.sensor_err, 3)}")
    return problems


def _collect_outcome(paths: _RunPaths, qdisc_text: str, qdisc: dict[str, int] | None, watch: _SensorWatch,
                     sensor_rc: int | None, started: float, problems: list[str]) -> RunOutcome:
    """Keep the qdisc counters with the run's files and read back the results and the sensor's final counters."""
    (paths.out / "qdisc.txt").write_text(qdisc_text)
    records, stats = read_records(paths.results)
    counters = parse_counters(paths.sensor_out.read_text(errors="replace"),
                              paths.sensor_err.read_text(errors="replace"))
    if counters is None:
        problems.append("the sensor printed no final counters")
    return RunOutcome(records, stats, counters, qdisc_text, qdisc, watch.rss, sensor_rc,
                      time.monotonic() - started, watch.seconds, problems=problems)


@contextlib.contextmanager
def hub_lab(cell: Cell, settings: LinkBenchSettings,
            ) -> Iterator[tuple[_CellLab, subprocess.Popen[Any], subprocess.Popen[Any]]]:
    """A fresh lab for ``cell`` with the hub side running: Mosquitto, the result recorder and fusion in the hub
    namespace; yields the run, fusion and the recorder. Readiness sockets and the private folder go at the end."""
    paths = _run_paths(cell, settings)
    listeners: list[NotifyListener] = []
    try:
        with NetLab(LinkShape(cell.rate_bps, settings.tbf_latency_ms, delay_ms=cell.rtt_ms / 2)) as lab:
            run = _CellLab(cell, settings, lab, paths, listeners)
            _start_broker(run)
            recorder = _start_recorder(run)
            fusion = _start_fusion(run)
            yield run, fusion, recorder
    finally:
        for listener in listeners:
            listener.close()
        shutil.rmtree(paths.tmp, ignore_errors=True)


def run_cell(cell: Cell, settings: LinkBenchSettings, on_progress: Callable[[int], None] | None = None) -> RunOutcome:
    """One run in a fresh lab (:func:`hub_lab`), the sensor in the device namespace."""
    started = time.monotonic()
    with hub_lab(cell, settings) as (run, fusion, recorder):
        load = _start_cpu_load(run)
        sensor, rejected = _start_sensor(run)
        if rejected is not None:
            return RunOutcome([], None, None, "", None, [], sensor.returncode, time.monotonic() - started,
                              0.0, skipped=rejected)
        count_results = ResultCounter(run.paths.results)
        watch = _watch_sensor(run, sensor, count_results, on_progress)
        _await_quiet(run, watch.started, count_results, on_progress)
        qdisc_text = run.lab.qdisc_show()
        qdisc = run.lab.qdisc_stats()
        problems = [watch.problem] if watch.problem is not None else []
        problems += _stop_agents(run, fusion, recorder, sensor)
        for proc in load:
            run.lab.stop_process(proc, grace=1.0)
    return _collect_outcome(run.paths, qdisc_text, qdisc, watch, sensor.returncode, started, problems)


def outcome_row(cell: Cell, outcome: RunOutcome, offline: OfflinePredictor, settings: LinkBenchSettings,
                ) -> dict[str, Any]:
    """A run's report row: :func:`summarise` plus the process-level evidence."""
    if outcome.skipped is not None:
        return _skipped_row(cell, outcome.skipped)
    preds, source = offline.for_args(cell.args).predict(outcome.records)
    row = summarise(cell, outcome.records, offline.labels, preds, source, outcome.counters, outcome.qdisc, settings,
                    sensor_failed=outcome.sensor_rc not in (0, None))
    rss = [kib for _t, kib in outcome.rss]
    row.update({
        "qdisc_text": outcome.qdisc_text,
        "fusion_rejected": (outcome.stats or {}).get("rejected"),
        "sensor_rss_kib_max": max(rss) if rss else None,
        "sensor_exit": outcome.sensor_rc,
        "sensor_seconds": round(outcome.sensor_s, 1),
        "wall_seconds": round(outcome.wall_s, 1),
        "problems": outcome.problems,
    })
    if cell.soak:
        lat = [float(r["latency_ms"]) for r in outcome.records]
        cap = [float(r.get("capture_ts", 0.0)) for r in outcome.records]
        minute = [kib for t, kib in outcome.rss if t <= 60.0]
        last_minute = [kib for t, kib in outcome.rss if t >= outcome.rss[-1][0] - 60.0] if outcome.rss else []
        row.update({
            "soak_seconds": round(outcome.sensor_s, 1),
            "rss_samples": [[t, kib] for t, kib in outcome.rss],
            "rss_first_minute_kib": float(np.mean(minute)) if minute else None,
            "rss_last_minute_kib": float(np.mean(last_minute)) if last_minute else None,
            "rss_growth": (float(np.mean(last_minute)) / float(np.mean(minute))) if minute and last_minute else None,
            "minute_trend": window_trend(cap, lat, 60.0),
        })
    return row


# ----- the grid ------------------------------------------------------------------------------------------------


def grid(settings: LinkBenchSettings) -> list[Cell]:
    """The grid's cells in run order: per fps, per rate, per mode."""
    if settings.skip_grid:
        return []
    return [Cell(rate, fps, mode, tuple(args), settings.frames, rtt_ms=rtt)
            for fps in settings.fps for rtt in settings.rtts_ms for rate in settings.rates_bps
            for mode, args in settings.modes.items()]


def soak_cell(settings: LinkBenchSettings, unsupported: Mapping[str, str]) -> Cell | None:
    """The soak run, or None when none is asked for (or no mode is supported)."""
    if settings.soak_seconds <= 0:
        return None
    names = [settings.soak_mode] if settings.soak_mode else [m for m in settings.modes if m not in unsupported]
    if not names or names[0] is None or names[0] in unsupported:
        return None
    name = names[0]
    args = settings.modes.get(name, MODES.get(name))
    if args is None:
        raise ValueError(f"unknown soak mode {name!r}")
    frames = min(10000 - settings.start, round(settings.soak_seconds * settings.soak_fps))
    return Cell(settings.soak_rate_bps, settings.soak_fps, name, tuple(args), frames, soak=True)


def _arg(args: Sequence[str], flag: str) -> str | None:
    """The value a sensor argument list gives ``flag`` (None: not given).

    >>> _arg(("--mode", "auto", "--artifact", "a.npz"), "--artifact"), _arg(("--mode",), "--mode")
    ('a.npz', None)
    """
    items = list(args)
    return items[items.index(flag) + 1] if flag in items[:-1] else None


def _artifact_file(path: str) -> Path:
    """An artifact named on a cell's command line: as given (absolute, or relative to the working directory), else
    relative to the source tree (``models/weights/...`` when running from an installed package)."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else REPO / path


def code_state() -> dict[str, Any]:
    """The commit the bench ran from and the tracked files that differed from it (evidence of what was measured)."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "modified_files": changed}


def _meta(offline: OfflinePredictor) -> dict[str, Any]:
    p = offline.default
    return {
        "code": code_state(),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "model": {"name": p.manifest.name, "sha256": p.manifest.sha256,
                  "test_accuracy": p.manifest.test_accuracy},
        "artifact": {"sha256": p.artifact.sha256, "n_components": offline.n_components,
                     "ir_bytes": p.artifact.total_bytes()},
        "link": {"shaping": "tbf on the device side's veth egress (sensor → hub)",
                 "burst": "max(2 × 1514 B, rate / 8 / 100)", "latency_ms": None},
    }


@dataclass(frozen=True, slots=True)
class _Bench:
    """What every run of the bench shares and the report repeats."""

    settings: LinkBenchSettings
    command: str
    """The ``nairbus bench link`` invocation that reproduces the settings."""
    started: float
    """``time.time()`` when the bench started."""
    offline: OfflinePredictor
    meta: dict[str, Any]
    """The report's evidence of what was measured (:func:`_meta`)."""


def _prepare_bench(settings: LinkBenchSettings) -> _Bench:
    """Load the offline predictor and gather the report's metadata."""
    started = time.time()
    command = command_line(settings)
    offline = OfflinePredictor(settings.data_dir)
    meta = _meta(offline)
    meta["link"]["latency_ms"] = settings.tbf_latency_ms
    return _Bench(settings, command, started, offline, meta)


def _probe_modes(settings: LinkBenchSettings, console: Any) -> dict[str, str]:
    """The modes whose arguments the sensor rejects, each with why (printed as it is found)."""
    unsupported: dict[str, str] = {}
    for name, args in settings.modes.items():
        why = probe_mode(args)
        if why is not None:
            unsupported[name] = f"sensor does not support {' '.join(args)}: {why}"
            console.print(f"[yellow]mode {name} skipped[/]: {unsupported[name]}")
    return unsupported


def _save_report(bench: _Bench, rows: Sequence[Mapping[str, Any]], soak_row: Mapping[str, Any] | None,
                 done: bool) -> dict[str, Any]:
    """Write ``reports/link.json`` as it stands and return it."""
    settings = bench.settings
    report = assemble_report(settings, bench.command, rows, soak_row, bench.started, bench.meta, done)
    write_report(settings.report, LinkReport.from_data(report))
    return report


def _run_tracked(bench: _Bench, cell: Cell, progress: Progress, unsupported: dict[str, str]) -> dict[str, Any]:
    """Run one cell with a progress bar and return its report row; a mode the sensor rejects joins ``unsupported``."""
    label = (f"{rate_label(cell.rate_bps):>11}" + (f" RTT {cell.rtt_ms:g} ms" if cell.rtt_ms else "")
             + f" {cell.fps:>4g} fps {cell.mode}" + (" (soak)" if cell.soak else ""))
    task = progress.add_task(label, total=cell.frames)

    def advance(done: int) -> None:
        progress.update(task, completed=done)

    outcome = run_cell(cell, bench.settings, advance)
    if outcome.skipped:
        unsupported[cell.mode] = outcome.skipped
    row = outcome_row(cell, outcome, bench.offline, bench.settings)
    progress.update(task, completed=row.get("frames_decided", 0), visible=False)
    return row


def _run_cells(bench: _Bench, cells: Sequence[Cell], unsupported: dict[str, str],
               console: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Run the cells in order (the soak among them), saving the report after each; returns the grid's rows and the
    soak's row."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    rows: list[dict[str, Any]] = []
    soak_row: dict[str, Any] | None = None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        for cell in cells:
            if cell.mode in unsupported:
                row = _skipped_row(cell, unsupported[cell.mode])
            else:
                row = _run_tracked(bench, cell, progress, unsupported)
            if cell.soak:
                soak_row = row
            else:
                rows.append(row)
            console.print(describe_row(row))
            log.info("linkbench.run", **{k: row.get(k) for k in ("rate", "fps", "mode", "frames_decided",
                                                                  "live_accuracy", "p99_ms", "skipped")})
            _save_report(bench, rows, soak_row, False)
    return rows, soak_row


def _print_summary(settings: LinkBenchSettings, report: Mapping[str, Any], console: Any) -> None:
    """The table people read at the end, and where the report and plot went."""
    from rich.console import Console

    wide = console if console.is_terminal else Console(file=console.file, width=220)
    wide.print(render_table(report))
    console.print(f"report: {settings.report}" + (f"; plot: {settings.plot}" if settings.plot else "")
                  + f" ({report['wall_seconds']:.0f} s)")


def run_bench(settings: LinkBenchSettings, console: Any = None) -> dict[str, Any]:
    """Run the grid (and the soak); write ``reports/link.json`` after every run and the plot at the end."""
    from rich.console import Console

    console = console or Console()
    bench = _prepare_bench(settings)
    unsupported = _probe_modes(settings, console)
    cells = grid(settings)
    soak = soak_cell(settings, unsupported)
    console.print(f"[bold]nairbus bench link[/]: {len(cells)} runs" + (f" + a {soak.frames / soak.fps:.0f} s soak"
                  if soak else "") + f", logs under {settings.run_dir}")
    rows, soak_row = _run_cells(bench, [*cells, *([soak] if soak else [])], unsupported, console)
    report = _save_report(bench, rows, soak_row, True)
    if settings.plot is not None and rows:
        plot_link(report, settings.plot)
    _print_summary(settings, report, console)
    return report


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def _link(row: Mapping[str, Any]) -> str:
    """A row's link as people read it: ``250 kbit/s``, or ``250 kbit/s, RTT 300 ms`` with an added round trip."""
    return _link_label(str(row["rate"]), row.get("rtt_ms"))


def _link_label(rate: str, rtt_ms: float | None) -> str:
    return rate + (f", RTT {rtt_ms:g} ms" if rtt_ms else "")


def describe_row(row: Mapping[str, Any]) -> str:
    """One line per finished run, for the console."""
    head = f"{_link(row):>11} {row['fps']:>4g} fps {row['mode']:<15}"
    if row.get("skipped"):
        return f"{head} [yellow]skipped[/]: {row['skipped']}"
    return (f"{head} decided {row['frames_decided']}/{row['frames_sent']} ({_pct(row['share_decided'])}), live "
            f"{_pct(row['live_accuracy'])} (offline {_pct(row['offline_accuracy'])}), "
            f"IR {_pct(row['fraction_received'])}, p50/p99 {_ms(row['p50_ms'])}/{_ms(row['p99_ms'])} ms")


def table_rows(report: LinkReport | Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the link table (console and README share them); a report given as a mapping is validated
    against :class:`~nairbus.agents.tools.reports.LinkReport` first."""
    link = report if isinstance(report, LinkReport) else LinkReport.from_data(report)
    head = ["link", "fps", "mode", "frames decided/sent", "live accuracy (95 % CI)", "offline, same frames",
            "IR received (NAIR frames)", "wire B/frame", "p50 ms", "p99 ms", "skipped", "p50 first → last fifth"]
    runs = [*link.runs, *([link.soak] if link.soak else [])]
    long_paths = any(r.first_seconds_within_deadline is not None for r in runs)  # reports made since these were kept
    if long_paths:
        head += ["decided within the deadline", "first 5 s within it", "link used (wire B × fps ÷ rate)"]
    return head, [_table_row(r, len(head), long_paths) for r in runs]


def _table_row(r: LinkRun, columns: int, long_paths: bool) -> list[str]:
    """One run's row of the link table."""
    mode = r.mode + (" (soak)" if r.soak_seconds is not None else "")
    if r.skipped:
        return [_link_label(r.rate, r.rtt_ms), f"{r.fps:g}", mode, "skipped", *[""] * (columns - 4)]
    ci = r.live_accuracy_ci95
    trend = r.latency_trend
    est = "" if str(r.wire_bytes_source or "").startswith("sensor") else " (est.)"
    failed = r.sensor_exit not in (0, None)
    of = r.frames_requested if failed or r.frames_sent is None else r.frames_sent
    return [
        _link_label(r.rate, r.rtt_ms), f"{r.fps:g}", mode,
        f"{r.frames_decided}/{of} ({_pct(r.share_decided)})"
        + (f" ⚠ sensor failed (exit {r.sensor_exit})" if failed else ""),
        f"{_pct(r.live_accuracy)}" + (f" ({_pct(ci[0])}–{_pct(ci[1])})" if ci else ""),
        _pct(r.offline_accuracy), _pct(r.fraction_received),
        ("–" if r.wire_bytes_per_frame is None else f"{r.wire_bytes_per_frame:.0f}") + est,
        _ms(r.p50_ms), _ms(r.p99_ms),
        "–" if r.frames_skipped is None else str(r.frames_skipped),
        f"{_ms(trend.first_p50_ms if trend else None)} → {_ms(trend.last_p50_ms if trend else None)}",
        *(_path_cells(r, of or 0) if long_paths else []),
    ]


def _path_cells(row: LinkRun, of: int) -> list[str]:
    """The long-path columns of a run: frames decided within their deadline (of those sent), and the share of the
    link's bytes per frame period its frames used."""
    within = row.within_deadline
    in_time = None if within is None or not of else within * (row.frames_decided or 0) / of
    wire, rate = row.wire_bytes_per_frame, row.rate_bps
    used = None if wire is None or not rate else wire * row.fps * 8 / rate
    return [f"{_pct(in_time)} (≤ {row.deadline_ms or 0:.0f} ms)", _pct(row.first_seconds_within_deadline),
            _pct(used)]


def render_table(report: LinkReport | Mapping[str, Any]) -> Any:
    """The table people read at the end of the bench."""
    from rich.table import Table

    head, rows = table_rows(report)
    table = Table(title="nairbus bench link — one sensor over a tbf-shaped uplink (live vs offline, same frames)")
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i in (0, 2) else "right")
    for row in rows:
        table.add_row(*row)
    return table


# ----- the plot ----------------------------------------------------------------------------------------------------


def _xpos(rates: Sequence[int | None]) -> tuple[dict[int | None, float], float]:
    shaped = [r for r in rates if r is not None]
    unshaped_at = float(max(shaped) * 10) if shaped else 1e8
    return {r: (unshaped_at if r is None else float(r)) for r in rates}, unshaped_at


def _failed(run: Mapping[str, Any]) -> bool:
    return run.get("sensor_exit") not in (0, None)


class _PlotGrid(NamedTuple):
    """What every panel of the link plot shares: the runs drawn, the columns, the modes and where rates sit."""

    runs: list[Mapping[str, Any]]
    """The runs that were not skipped."""
    fps_values: list[float]
    """One column per frame rate, ascending."""
    modes: list[str]
    """One line per mode, in run order."""
    colors: dict[str, str]
    xpos: dict[int | None, float]
    """Position of each rate on the x axis (the unshaped veth to the right of the fastest shaped rate)."""
    unshaped_at: float
    deadline: float


def _plot_grid(report: Mapping[str, Any]) -> _PlotGrid:
    """Columns, modes, colours and x positions of the link plot, from the report's runs."""
    modes = list(dict.fromkeys(r["mode"] for r in report["runs"]))
    xpos, unshaped_at = _xpos(list(dict.fromkeys(r["rate_bps"] for r in report["runs"])))
    return _PlotGrid(runs=[r for r in report["runs"] if not r.get("skipped")],
                     fps_values=sorted({float(r["fps"]) for r in report["runs"]}), modes=modes,
                     colors={m: f"C{i}" for i, m in enumerate(modes)}, xpos=xpos, unshaped_at=unshaped_at,
                     deadline=float(report["settings"]["deadline_ms"]))


def _plot_value(run: Mapping[str, Any], key: str, scale: float = 100.0) -> float:
    """A run's figure as plotted: scaled, NaN (a gap in the line) when the sensor failed or the figure is missing."""
    v = run.get(key)
    return float("nan") if _failed(run) or v is None else scale * float(v)


def _draw_mode(axs: tuple[Any, Any, Any], pts: Sequence[Mapping[str, Any]], x: np.ndarray, color: str) -> float:
    """Draw one mode's lines in one column (accuracy with CI and offline, share decided, p99); returns the lowest
    accuracy or CI bound drawn."""
    acc_ax, dec_ax, lat_ax = axs
    acc = np.array([_plot_value(r, "live_accuracy") for r in pts])
    ci = np.array([r.get("live_accuracy_ci95") or [r["live_accuracy"]] * 2 for r in pts], dtype=float) * 100
    err = np.nan_to_num(np.maximum(0.0, np.array([acc - ci[:, 0], ci[:, 1] - acc])))
    acc_ax.errorbar(x, acc, yerr=err, color=color, marker="o", linewidth=2, capsize=3)
    ok = ~np.isnan(acc)
    lowest = min(float(acc[ok].min()), float(ci[ok, 0].min()))
    acc_ax.plot(x, [_plot_value(r, "offline_accuracy") for r in pts], color=color, linestyle="--", linewidth=1.2)
    dec_ax.plot(x, [_plot_value(r, "share_decided_of_captured" if "share_decided_of_captured" in r
                                else "share_decided") for r in pts],
                color=color, marker="s", markersize=4, linewidth=1.5)
    lat_ax.plot(x, [_plot_value(r, "p99_ms", 1.0) for r in pts], color=color, marker="o", linewidth=2)
    return lowest


def _draw_column(axs: tuple[Any, Any, Any], col: int, fps: float, grid: _PlotGrid,
                 failed: list[tuple[int, float, str]]) -> float:
    """Draw every mode's lines in the column of one frame rate; appends the failed runs' crosses (column, x, colour)
    to ``failed``; returns the lowest accuracy drawn (100 when none)."""
    lowest = 100.0
    for mode in grid.modes:
        pts = sorted((r for r in grid.runs if r["mode"] == mode and float(r["fps"]) == fps),
                     key=lambda r: grid.xpos[r["rate_bps"]])
        if not pts:
            continue
        color = grid.colors[mode]
        shift = 1.0 + 0.06 * (grid.modes.index(mode) - (len(grid.modes) - 1) / 2)  # crosses of two modes side by side
        failed.extend((col, grid.xpos[r["rate_bps"]] * shift, color) for r in pts if _failed(r))
        if all(_failed(r) for r in pts):
            continue
        # A failed run's figures say nothing about the link: a gap in the line (NaN), and a cross below.
        x = np.array([grid.xpos[r["rate_bps"]] for r in pts])
        lowest = min(lowest, _draw_mode(axs, pts, x, color))
    return lowest


def _style_column(axs: tuple[Any, Any, Any], fps: float, skipped: Sequence[str], grid: _PlotGrid) -> None:
    """Titles, labels, scales, the deadline line and the rate ticks of one frame rate's column."""
    acc_ax, dec_ax, lat_ax = axs
    acc_ax.set(title=f"{fps:g} frames/s per sensor" + (f"  (skipped: {', '.join(skipped)})" if skipped else ""),
               ylabel="accuracy (% of frames sent)", xscale="log")
    dec_ax.set(ylabel="decided (% of frames\ncaptured, skips count)", ylim=(-3, 103))
    lat_ax.axhline(grid.deadline, color="k", linestyle="--", linewidth=1)
    lat_ax.set(yscale="log", xlabel="uplink rate (tbf on the sensor's egress)", ylabel="p99 latency (ms)")
    low, high = lat_ax.get_ylim()
    lat_ax.set_ylim(min(low, grid.deadline / 10), max(high, grid.deadline * 2))
    ticks = sorted(grid.xpos.values())
    lat_ax.set_xticks(ticks, labels=[rate_label(r).replace(" ", "\n", 1) if r is not None else "unshaped"
                                     for r in sorted(grid.xpos, key=lambda r: grid.xpos[r])])
    for ax in (acc_ax, dec_ax, lat_ax):
        ax.grid(alpha=0.3, which="both")
        ax.minorticks_off()
    acc_ax.set_xlim(min(ticks) / 1.6, grid.unshaped_at * 1.6)


def _set_accuracy_floor(axes: Any, columns: int, floor: float, failed: Sequence[tuple[int, float, str]]) -> None:
    """Start every accuracy axis at ``floor`` and put the failed runs' crosses on it."""
    for col in range(columns):
        axes[0][col].set_ylim(floor, 100.5)
    for col, xi, color in failed:  # on the axis floor: the run produced no figure worth a point
        axes[0][col].plot([xi], [floor], linestyle="none", marker="X", markersize=11, color=color,
                          markeredgecolor="k", clip_on=False, zorder=5)


def _legend_handles(grid: _PlotGrid, any_failed: bool) -> list[Any]:
    """The figure legend: one entry per mode (skipped ones so named), live vs offline, failed runs, the deadline."""
    from matplotlib.lines import Line2D

    ran = {r["mode"] for r in grid.runs}
    handles = [Line2D([], [], color=grid.colors[m], marker="o", linewidth=2,
                      label=m if m in ran else f"{m} (skipped)") for m in grid.modes]
    handles += [Line2D([], [], color="0.3", marker="o", linewidth=2, label="live (95 % CI)"),
                Line2D([], [], color="0.3", linestyle="--", linewidth=1.2, label="offline, same frames and bytes")]
    if any_failed:
        handles.append(Line2D([], [], color="0.5", marker="X", markersize=9, markeredgecolor="k", linestyle="none",
                              label="sensor failed: no figure (see report)"))
    handles.append(Line2D([], [], color="k", linestyle="--", linewidth=1, label=f"deadline {grid.deadline:g} ms"))
    return handles


def plot_link(report: Mapping[str, Any], path: Path) -> Path:
    """Per fps a column: live accuracy (95 % CI) with the offline accuracy at the same bytes dashed, the share of
    frames decided, and p99 latency against the deadline — all against the uplink rate (log scale), one line per
    mode. Runs whose sensor failed are drawn as crosses; skipped modes are named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _plot_grid(report)
    columns = len(grid.fps_values)
    fig, axes = plt.subplots(3, columns, figsize=(max(8.5, 6.5 * columns), 10.5), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3, 1.4, 2]}, layout="constrained")
    lowest = 100.0
    failed: list[tuple[int, float, str]] = []
    for col, fps in enumerate(grid.fps_values):
        axs = (axes[0][col], axes[1][col], axes[2][col])
        lowest = min(lowest, _draw_column(axs, col, fps, grid, failed))
        skipped = sorted({r["mode"] for r in report["runs"] if r.get("skipped") and float(r["fps"]) == fps})
        _style_column(axs, fps, skipped, grid)
    floor = max(0.0, 5 * math.floor((lowest - 1) / 5))
    _set_accuracy_floor(axes, columns, floor, failed)
    handles = _legend_handles(grid, bool(failed))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=min(5, len(handles)))
    fig.suptitle("nairbus over a shaped uplink: one sensor, Mosquitto and fusion in private network namespaces\n"
                 f"{report['settings']['frames']} test frames per run; an undecided frame counts as wrong"
                 + ("" if floor == 0 else f"; accuracy axis from {floor:g} %"), fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----- the result recorder (runs inside the hub namespace) -----------------------------------------------------


def _sd_notify(message: str) -> None:
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), "\0" + target[1:] if target.startswith("@") else target)


def record(host: str, port: int, topics: Sequence[str], out: Path, max_seconds: float) -> int:
    """Write every message on ``topics`` as ``{"t", "topic", "payload"}`` JSON lines until SIGTERM or
    ``max_seconds``; sends ``READY=1`` to ``$NOTIFY_SOCKET`` once subscribed. Returns the messages written."""
    import signal
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    count = 0
    lock = threading.Lock()
    handle = out.open("a", encoding="utf-8")

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 0) for t in topics])

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any = None) -> None:
        _sd_notify("READY=1")

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal count
        try:
            payload: Any = json.loads(message.payload)
        except ValueError:
            payload = message.payload.decode("utf-8", errors="replace")
        with lock:
            handle.write(json.dumps({"t": time.time(), "topic": message.topic, "payload": payload}) + "\n")
            handle.flush()
            count += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"nairbus-linkbench-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.reconnect_delay_set(1, 1)
    client.connect_async(host, port, keepalive=30)
    client.loop_start()
    try:
        stop.wait(max_seconds)
    finally:
        client.disconnect()
        client.loop_stop()
        with lock:
            handle.close()
    return count


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nairbus.agents.tools.linkbench",
                                     description="Internal helpers of nairbus bench link.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="record result messages as JSON lines (runs inside the hub namespace)")
    rec.add_argument("--host", required=True)
    rec.add_argument("--port", type=int, required=True)
    rec.add_argument("--topic", action="append", required=True)
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    record(args.host, args.port, args.topic, args.out, args.max_seconds)
    return 0


__all__ = ["MODES", "Cell", "LinkBenchSettings", "OfflinePredictor", "assemble_report", "grid", "latency_trend",
           "plot_link", "run_bench", "run_cell", "summarise", "table_rows", "wilson"]

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
