"""``nairbus bench share``: several sensors on one kernel-shaped uplink — do they split it fairly, and is every frame
still decided?

One lab (:class:`~nairbus.agents.tools.netns.NetLab`) per run, as ``nairbus bench link`` builds it: Mosquitto, fusion
and the result recorder in the hub namespace; here ``sensors`` sensor processes (ids ``cam1``…, each its own MQTT
connection) in the device namespace behind the one tbf-shaped uplink, started ``stagger_s`` apart (the one that
comes first has the link to itself and must give way), each replaying the same test frames at ``fps`` with the
shipped link fitting. Every sensor writes a link trace (:mod:`nairbus.agents.nair.linktrace`); the bytes it got
through while all of them ran — from ``settle_s`` after the last one started until the first one stopped, the steady
state — are its share, and Jain's index of the shares says how fair the split was (1: equal; 1/N: one sensor took
the link). Every frame sent is looked up in the results: decided, and within the deadline. → ``reports/link-share.json``
"""

from __future__ import annotations

import bisect
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nairbus.agents.nair.linktrace import read_trace
from nairbus.agents.tools.linkbench import (
    Cell,
    LinkBenchSettings,
    ResultCounter,
    _await_quiet,
    _CellLab,
    _listen,
    code_state,
    hub_lab,
    parse_counters,
    read_records,
)
from nairbus.agents.tools.netns import rate_label
from nairbus.agents.tools.reports import ShareReport, write_report

__all__ = ["ShareSettings", "delivered_between", "jain", "run_share", "share_of_run"]

DEFAULT_ARGS = ("--mode", "nair", "--budget", "auto", "--artifact", "models/weights/base.nair.npz")
"""NAIR at the middle split (62 % of the MACs on the device): the representation that needs the bytes."""


@dataclass(frozen=True, slots=True)
class ShareSettings:
    """What ``nairbus bench share`` runs (every field has an option)."""

    sensors: tuple[int, ...] = (3, 5)
    """Sensors per run, one run each."""
    rate_bps: int = 1_000_000
    fps: float = 10.0
    rtt_ms: float = 0.0
    seconds: float = 40.0
    """How long each sensor sends."""
    stagger_s: float = 3.0
    settle_s: float = 5.0
    """Time after the last sensor started before the steady state begins."""
    args: tuple[str, ...] = DEFAULT_ARGS
    deadline_ms: float = 1000.0
    start: int = 4000
    """First test-set index every sensor replays."""
    report: Path = Path("reports/link-share.json")
    run_dir: Path = Path("runs/share")
    command: str = "nairbus bench share"
    link: LinkBenchSettings = field(default_factory=lambda: LinkBenchSettings(plot=None))

    def __post_init__(self) -> None:
        if not self.sensors or min(self.sensors) < 2:
            raise ValueError("every run needs at least 2 sensors")
        last_start = (max(self.sensors) - 1) * self.stagger_s + self.settle_s
        if self.seconds <= last_start + 5:
            raise ValueError(f"--seconds {self.seconds:g} leaves no steady state: the last sensor starts "
                             f"{last_start - self.settle_s:g} s after the first and settles for {self.settle_s:g} s")

    @property
    def frames(self) -> int:
        """Frames each sensor replays."""
        return round(self.seconds * self.fps)


def delivered_between(trace: Sequence[Mapping[str, Any]], start: float, end: float) -> float | None:
    """Bytes a sensor's link delivered from ``start`` to ``end`` (monotonic seconds), from its trace's samples
    (handed over minus not yet delivered, at the last sample at or before each); None if the trace does not
    cover the span."""
    samples = [r for r in trace if "handed" in r]
    times = [r["t"] for r in samples]
    i, j = bisect.bisect_right(times, start) - 1, bisect.bisect_right(times, end) - 1
    if i < 0 or j <= i:
        return None
    at = [samples[k]["handed"] - samples[k]["backlog"] for k in (i, j)]
    return float(at[1] - at[0])


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything.

    >>> round(jain([1, 1, 1]), 3), round(jain([1, 0, 0]), 3), round(jain([0.78, 0.17, 0.05]), 2)
    (1.0, 0.333, 0.52)
    """
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares > 0 else 0.0


def _frames_row(results: Sequence[Mapping[str, Any]], sensor: str, sent: int | None, deadline_ms: float,
                ) -> dict[str, Any]:
    """One sensor's frames: sent, decided, within the deadline."""
    mine = {r["frame_id"]: r for r in results if r.get("stream_id") == sensor}
    in_time = sum(1 for r in mine.values() if float(r.get("latency_ms", 1e9)) <= deadline_ms)
    return {"frames_sent": sent, "frames_decided": len(mine), "within_deadline": in_time / len(mine) if mine else None,
            "all_decided": sent is not None and len(mine) >= sent}


def share_of_run(traces: Mapping[str, Sequence[Mapping[str, Any]]], settle_s: float, rate_bps: int,
                 ) -> dict[str, Any]:
    """Each sensor's share of the link over the steady state — from ``settle_s`` after the last sensor sized its
    first frame until the first one sized its last — and Jain's index of them."""
    frames = {name: [r["t"] for r in trace if "budget" in r] for name, trace in traces.items()}
    if not all(frames.values()):
        return {"steady_s": 0.0, "bytes_per_s": {}, "share_of_link": {}, "link_used": None, "jain": None}
    start, end = max(t[0] for t in frames.values()) + settle_s, min(t[-1] for t in frames.values())
    rates = {}
    for sensor, trace in traces.items():
        got = delivered_between(trace, start, end) if end > start else None
        rates[sensor] = None if got is None else got / (end - start)
    known = [v for v in rates.values() if v is not None]
    complete = len(known) == len(rates) and end > start
    return {"steady_s": round(max(0.0, end - start), 2),
            "bytes_per_s": {s: None if v is None else round(v, 1) for s, v in rates.items()},
            "share_of_link": {s: None if v is None else round(v * 8 / rate_bps, 4) for s, v in rates.items()},
            "link_used": round(sum(known) * 8 / rate_bps, 4) if complete else None,
            "jain": round(jain(known), 4) if complete else None}


def _start_sensor(run: _CellLab, index: int) -> tuple[subprocess.Popen[Any], Path]:
    """Start sensor ``cam<index>`` in the device namespace and wait until it is ready; its link trace's path."""
    cell, settings, lab, out = run.cell, run.settings, run.lab, run.paths.out
    name = f"cam{index}"
    ready, env = _listen(run, name)
    env["STATE_DIRECTORY"] = str(run.paths.tmp / f"state-{name}")
    trace = out / f"link-trace-{name}.jsonl"
    with (out / f"{name}.out").open("wb") as so, (out / f"{name}.err").open("wb") as se:
        proc = lab.popen(lab.dev, [
            sys.executable, "-m", "nairbus.agents.cli", "sensor", "--sensor-id", name, "--count", str(cell.frames),
            "--start", str(settings.start), "--fps", f"{cell.fps:g}", "--deadline-ms",
            f"{cell.deadline_ms(settings):g}", "--link-trace", str(trace), *cell.args], stdout=so, stderr=se, env=env)
    if not ready.wait_ready(proc, settings.startup_timeout_s):
        raise RuntimeError(f"sensor {name} did not come up (exit {proc.poll()}); see {out / f'{name}.err'}")
    return proc, trace


def _run_sensors(run: _CellLab, count: int, stagger_s: float, say: Callable[[str], None],
                 ) -> tuple[dict[str, float], dict[str, float], dict[str, Path], dict[str, int | None]]:
    """Start the sensors ``stagger_s`` apart and wait for all to finish; when each started and stopped
    (monotonic), its trace, and its exit code."""
    procs: dict[str, subprocess.Popen[Any]] = {}
    started: dict[str, float] = {}
    stopped: dict[str, float] = {}
    traces: dict[str, Path] = {}
    first = None
    for i in range(1, count + 1):
        if first is not None:
            time.sleep(max(0.0, first + (i - 1) * stagger_s - time.monotonic()))
        name = f"cam{i}"
        procs[name], traces[name] = _start_sensor(run, i)
        started[name] = time.monotonic()
        first = started[name] if first is None else first
        say(f"  {name} sending")
    hard_end = time.monotonic() + run.budget_s
    while len(stopped) < count and time.monotonic() < hard_end:
        for name, proc in procs.items():
            if name not in stopped and proc.poll() is not None:
                stopped[name] = time.monotonic()
        time.sleep(0.1)
    for name, proc in procs.items():
        if name not in stopped:
            run.lab.stop_process(proc, grace=10.0)
            stopped[name] = time.monotonic()
    return started, stopped, traces, {n: p.returncode for n, p in procs.items()}


def _one_run(settings: ShareSettings, count: int, say: Callable[[str], None]) -> dict[str, Any]:
    """One run of ``count`` sensors in a fresh lab, summarised."""
    cell = Cell(settings.rate_bps, settings.fps, f"share{count}", settings.args, settings.frames,
                rtt_ms=settings.rtt_ms)
    link = replace(settings.link, run_dir=settings.run_dir, deadline_ms=settings.deadline_ms, start=settings.start)
    with hub_lab(cell, link) as (run, fusion, recorder):
        started, stopped, traces, exits = _run_sensors(run, count, settings.stagger_s, say)
        _await_quiet(run, min(started.values()), ResultCounter(run.paths.results), None)
        qdisc = run.lab.qdisc_stats()
        run.lab.stop_process(fusion, grace=15.0)
        run.lab.stop_process(recorder, grace=5.0)
    return _summarise(settings, count, cell, run.paths.out, (started, stopped, traces, exits), qdisc)


def _summarise(settings: ShareSettings, count: int, cell: Cell, out: Path,
               ran: tuple[dict[str, float], dict[str, float], dict[str, Path], dict[str, int | None]],
               qdisc: Mapping[str, int] | None) -> dict[str, Any]:
    """The run's row: shares and Jain's index over the steady state, and each sensor's frames."""
    started, _stopped, trace_paths, exits = ran
    traces = {name: list(read_trace(path)) for name, path in trace_paths.items()}
    results, _stats = read_records(out / "results.jsonl")
    deadline = cell.deadline_ms(replace(settings.link, deadline_ms=settings.deadline_ms))
    frames = {}
    for name in trace_paths:
        counters = parse_counters((out / f"{name}.out").read_text(errors="replace")) or {}
        frames[name] = {**_frames_row(results, name, counters.get("frames_sent"), deadline),
                        "frames_skipped": counters.get("frames_skipped"), "exit": exits[name]}
    return {"sensors": count, "rate_bps": settings.rate_bps, "rate": rate_label(settings.rate_bps),
            "rtt_ms": settings.rtt_ms, "fps": settings.fps, "deadline_ms": deadline,
            "started_s": {n: round(t - min(started.values()), 2) for n, t in started.items()},
            **share_of_run(traces, settings.settle_s, settings.rate_bps),
            "every_frame_decided": all(f["all_decided"] for f in frames.values()),
            "frames": frames, "qdisc": dict(qdisc) if qdisc else None}


def run_share(settings: ShareSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """Every run of ``settings``; the report, written after each run."""
    report: dict[str, Any] = {"command": settings.command, "code": code_state(),
                              "settings": {"sensors": list(settings.sensors), "rate_bps": settings.rate_bps,
                                           "fps": settings.fps, "rtt_ms": settings.rtt_ms,
                                           "seconds": settings.seconds, "stagger_s": settings.stagger_s,
                                           "settle_s": settings.settle_s, "sensor_args": list(settings.args),
                                           "deadline_ms": settings.deadline_ms, "start": settings.start},
                              "runs": []}
    for count in settings.sensors:
        say(f"{count} sensors on one {rate_label(settings.rate_bps)} uplink, {settings.fps:g} fps each")
        row = _one_run(settings, count, say)
        report["runs"].append(row)
        say(f"  Jain's index {row['jain']}, shares {row['share_of_link']}, link used {row['link_used']}, "
            f"every frame decided: {row['every_frame_decided']}")
        write_report(settings.report, ShareReport.from_data(report))
    return report
