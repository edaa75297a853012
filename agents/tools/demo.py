"""``nairbus demo``: the whole bus on one machine, measured against the offline evaluator.

The sensors send each frame's budget whole (``--no-link-fit``): on loopback the link is not the limit, and the demo
shows that the bus then reproduces the evaluator at each budget exactly. How sensors fit a real, shaped link is
``nairbus bench link``'s subject.

Starts a private Mosquitto (or uses ``--broker``), one fusion agent process and several sensor agent processes
that replay the test set (shared between them), once per byte budget. A live progress display follows the
result topics; at the end a table per budget compares live accuracy with the offline evaluator on the same
frames, and ``reports/demo.json`` records it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.agents.tools.reports import DemoReport, write_report
from nairbus.models.data.registry import load_data
from nairbus.models.device import RUNTIMES
from nairbus.models.loss import LossModel
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import WEIGHTS_DIR
from nairbus.schemas import Result, Stats, Status, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What the demo runs."""

    budgets: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1)
    wire_budgets: tuple[int, ...] = ()
    """Wire bytes per frame (each frame's MQTT PUBLISH packets, as the sensor's ``--budget N``), run instead of
    ``budgets`` when given: how a range-coded artifact, whose prefix per frame depends on the frame, is checked."""
    artifact: Path | None = None
    """The NAIR artifact the sensors and the offline evaluator use (default: the model's ``base.nair.npz``)."""
    vp: bool = True
    """Also run Variant Parallelism live after the NAIR budgets."""
    sensors: int = 3
    frames: int = 10000
    fps_per_sensor: float = 60.0
    """Replay rate of each sensor; the bus must keep up with the sum, or frames queue past the deadline. Three
    sensors at 80 fps (240 in all) were at the edge of what the 2-core CI host sustains at the 100 % budget: on a
    busy day the queue grew through the run (p50 2.4 s, and later partial frames), so the default leaves headroom."""
    deadline_ms: float = 1000.0
    broker: tuple[str, int] | None = None
    root: str = "nairbus-demo"
    site: str = "demo"
    report: Path = Path("reports/demo.json")
    run_dir: Path = Path("runs/demo")
    data_dir: Path | None = None
    runtime: str = "torch"
    """What runs the sensors' model work: ``torch`` (the weights) or ``onnx`` (the light sensor: the parts
    ``export-onnx`` writes into ``run_dir/device``, and each VP variant's into ``run_dir/device-vp``)."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; one of {', '.join(RUNTIMES)}")
        if self.artifact is not None and self.runtime != "torch":
            raise ValueError("--artifact runs with the torch runtime (the light sensor takes the exported one)")
        if any(b < 1 for b in self.wire_budgets):
            raise ValueError("wire budgets are whole bytes per frame, at least 1")

    @property
    def artifact_path(self) -> Path:
        """The NAIR artifact the run uses."""
        return self.artifact if self.artifact is not None else WEIGHTS_DIR / "base.nair.npz"


@dataclass
class BudgetRun:
    """Live results of one budget."""

    fraction: float | None
    budget_bytes: int
    expected: int
    results: dict[tuple[str, int], Result] = field(default_factory=dict)
    started: float = 0.0


def _agent_env(broker: tuple[str, int], settings: DemoSettings, log_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "NAIRBUS_BROKER__HOST": broker[0],
        "NAIRBUS_BROKER__PORT": str(broker[1]),
        "NAIRBUS_TOPICS__ROOT": settings.root,
        "NAIRBUS_TOPICS__SITE": settings.site,
        "NAIRBUS_LOG__FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        # Several model processes share this machine's cores: one torch thread each, or OpenMP oversubscription
        # makes every one of them crawl.
        "OMP_NUM_THREADS": "1",
    })
    if settings.data_dir:
        env["NAIRBUS_DATA_DIR"] = str(settings.data_dir)
    env.pop("NAIRBUS_CONFIG", None)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return env


def _spawn(args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    handle = log_file.open("ab")
    return subprocess.Popen([sys.executable, "-m", "nairbus.agents.cli", *args], env=env, stdout=handle, stderr=handle,
                            cwd=None)


class Observer:
    """The demo's own MQTT client: follows results, fusion status and stats."""

    def __init__(self, broker: tuple[str, int], topics: TopicTree) -> None:
        self.topics = topics
        self.comm = Communicator(BrokerSettings(host=broker[0], port=broker[1]), "nairbus-demo-observer",
                                 f"{topics.prefix}/observers/demo/status", self._status)
        self.comm.subscribe(topics.all_results(), qos=0)
        self.comm.subscribe(topics.all_fusion("status"), qos=1)
        self.comm.subscribe(topics.all_fusion("stats"), qos=0)
        self.fusion_online = False
        self.stats: Stats | None = None
        self.bad = 0

    def _status(self, state: str) -> bytes:
        return wire_encode(Status(agent_id="demo", role="fusion", state=state, session=self.comm.session,  # type: ignore[arg-type]
                                  ts=time.time()))

    def poll(self, run: BudgetRun | None, timeout: float) -> None:
        """Take what arrived within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while (message := self.comm.get(timeout=max(0.0, end - time.monotonic()))) is not None:
            parsed = self.topics.parse(message.topic)
            try:
                if parsed is None:
                    continue
                if parsed.kind == "result" and run is not None:
                    result = wire_decode(message.payload, Result)
                    run.results[(result.stream_id, result.frame_id)] = result
                elif parsed.kind == "fusion_status":
                    self.fusion_online = wire_decode(message.payload, Status).state == "online"
                elif parsed.kind == "fusion_stats":
                    self.stats = wire_decode(message.payload, Stats)
            except WireError:
                self.bad += 1
            if time.monotonic() >= end:
                break


@contextmanager
def _broker(settings: DemoSettings) -> Iterator[tuple[str, int]]:
    if settings.broker is not None:
        yield settings.broker
        return
    with PrivateMosquitto() as broker:
        yield (broker.host, broker.port)


def _summarise(run: BudgetRun, labels: np.ndarray, stream_frames: dict[str, np.ndarray],
               offline_pred: np.ndarray, total_bytes: int, pipeline: NairPipeline,
               codes: np.ndarray) -> dict[str, Any]:
    """One budget's row. ``offline_accuracy`` is the evaluator's at the prefix each frame actually delivered (the
    sensor fits its link, so early frames of a run may carry less than the budget); ``offline_budget_accuracy``
    the evaluator's at the full budget, on the same frames."""
    frame_ids = np.concatenate(list(stream_frames.values()))
    live_pred = np.full(len(labels), -1)
    arrived_pred = np.full(len(labels), -1)
    got = list(run.results.values())
    for result in got:
        live_pred[result.frame_id] = result.class_index
    if got:
        ids = np.array([r.frame_id for r in got])
        ends = np.array([r.components_received for r in got])
        arrived_pred[ids] = pipeline.prefix_probs(codes[ids], ends).argmax(1)
    sent = np.zeros(len(labels), dtype=bool)
    sent[frame_ids] = True
    latencies = np.array([r.latency_ms for r in got]) if got else np.array([np.nan])
    first = min((r.capture_ts for r in got), default=0.0)
    last = max((r.decided_ts for r in got), default=1.0)
    return {
        "budget": run.fraction,
        "budget_bytes": run.budget_bytes,
        "wire_budget": run.budget_bytes if run.fraction is None else None,
        "frames": int(sent.sum()),
        "results": len(got),
        "fraction_received": float(np.mean([r.fraction_received for r in got])) if got else 0.0,
        "complete": float(np.mean([r.complete for r in got])) if got else 0.0,
        "bytes_per_frame": float(np.mean([r.bytes_received for r in got])) if got else 0.0,
        "wire_bytes_per_frame": float(np.mean([r.wire_bytes for r in got])) if got else 0.0,
        "wire_bytes_max": max((r.wire_bytes for r in got), default=0),
        "ir_bytes": total_bytes,
        "live_accuracy": float((live_pred[sent] == labels[sent]).mean()),
        "offline_accuracy": float((arrived_pred[sent] == labels[sent]).mean()),
        "agreement": float((live_pred[sent] == arrived_pred[sent]).mean()),
        "offline_budget_accuracy": float((offline_pred[sent] == labels[sent]).mean()),
        "full_budget_share": float(np.mean([r.bytes_received >= run.budget_bytes * 0.99 for r in got]))
        if got and run.fraction is not None else None,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "fps": len(got) / max(1e-9, last - first),
    }


def _wait_for_fusion(settings: DemoSettings, observer: Observer, fusion: subprocess.Popen[bytes]) -> None:
    """Wait until the fusion agent is online (60 s at most; a fusion agent that exits fails the run)."""
    wait_until = time.monotonic() + 60
    while not observer.fusion_online:
        if fusion.poll() is not None or time.monotonic() > wait_until:
            raise RuntimeError(f"fusion agent did not come online; see {settings.run_dir / 'fusion.log'}")
        observer.poll(None, 0.2)


def _stop_fusion(fusion: subprocess.Popen[bytes], observer: Observer) -> None:
    """Terminate the fusion agent (killed after 15 s), take the last messages, and disconnect the observer."""
    fusion.terminate()
    try:
        fusion.wait(timeout=15)
    except subprocess.TimeoutExpired:
        fusion.kill()
    observer.poll(None, 0.5)
    observer.comm.stop()


def _demo_report(settings: DemoSettings, frames: int, test_frames: int, pipeline: NairPipeline, total: int,
                 observer: Observer, rows: list[dict[str, Any]], vp_section: dict[str, Any] | None,
                 started: float) -> dict[str, Any]:
    """The demo report: settings, model and artifact, the per-budget rows and the VP section."""
    return {
        "command": demo_command(settings, frames, test_frames),
        "settings": {**{k: v for k, v in asdict(settings).items()
                        if k not in ("report", "run_dir", "data_dir", "artifact")},
                     "artifact": str(settings.artifact) if settings.artifact is not None else None},
        "model": {"name": pipeline.manifest.name, "sha256": pipeline.manifest.sha256,
                  "test_accuracy": pipeline.manifest.test_accuracy},
        "artifact": {"sha256": pipeline.artifact.sha256, "split": pipeline.artifact.split,
                     "ir_shape": list(pipeline.artifact.ir_shape), "ir_bytes": total,
                     "coding": "range" if pipeline.artifact.entropy_coded else "packed"},
        "fusion_rejected": dict(observer.stats.rejected) if observer.stats else {},
        "budgets": rows,
        "vp": vp_section,
        "wall_seconds": round(time.time() - started, 1),
    }


def demo_command(settings: DemoSettings, frames: int, test_frames: int) -> str:
    """The command line that makes this run's report."""
    defaults = DemoSettings()
    parts = ["nairbus demo"]
    if frames != test_frames:
        parts.append(f"--frames {frames}")
    if settings.runtime != "torch":
        parts.append(f"--runtime {settings.runtime}")
    if settings.artifact is not None:
        parts.append(f"--artifact {settings.artifact}")
    if settings.wire_budgets:
        parts.append("--wire-budgets " + ",".join(str(b) for b in settings.wire_budgets))
    elif settings.budgets != defaults.budgets:
        parts.append("--budgets " + ",".join(f"{b:g}" for b in settings.budgets))
    if not settings.vp:
        parts.append("--no-vp")
    if settings.report != defaults.report:
        parts.append(f"--report {settings.report}")
    return " ".join(parts)


def run_demo(settings: DemoSettings, console: Console | None = None) -> dict[str, Any]:
    """Run every budget through the live bus; write and return the report."""
    console = console or Console()
    started = time.time()
    pipeline = NairPipeline.load(artifact_path=settings.artifact_path)
    test = load_data("test", data_dir=settings.data_dir)
    frames = min(settings.frames, len(test))
    labels = test.labels
    total = pipeline.artifact.total_bytes()
    topics = TopicTree(settings.root, settings.site)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    device = _export_device_parts(settings, console) if settings.runtime == "onnx" else None
    rows: list[dict[str, Any]] = []
    vp_section: dict[str, Any] | None = None
    with _broker(settings) as broker:
        console.print(f"[bold]nairbus demo[/]: broker {broker[0]}:{broker[1]}, {settings.sensors} sensors, "
                      f"{frames} test frames per budget, logs in {settings.run_dir}")
        env = _agent_env(broker, settings, settings.run_dir)
        observer = Observer(broker, topics)
        observer.comm.start()
        fusion = _spawn(["fusion", "--fusion-id", "demo-fusion", "--deadline-ms", str(settings.deadline_ms),
                         "--stats-interval", "1"], env, settings.run_dir / "fusion.log")
        try:
            # The offline evaluator's sensor half, once for every budget (its tail runs per budget), while the
            # fusion agent starts.
            codes = pipeline.encode_all(test.images[:frames])
            _wait_for_fusion(settings, observer, fusion)
            budgets: list[float | int] = list(settings.wire_budgets or settings.budgets)
            for budget in budgets:
                rows.append(_run_budget(settings, budget, frames, pipeline, codes, labels, total, env,
                                        observer, console, device))
            if settings.vp:
                from nairbus.agents.tools.demo_vp import (
                    run_vp_for_demo,  # Variant Parallelism live run (agents/tools/demo_vp.py)
                )

                vp_dir = (settings.run_dir / "device-vp").resolve() if device is not None else None
                vp_section = run_vp_for_demo(broker, frames, settings.run_dir, settings.data_dir, console,
                                             runtime=settings.runtime, model_dir=vp_dir)
        finally:
            _stop_fusion(fusion, observer)
    report = _demo_report(settings, frames, len(test), pipeline, total, observer, rows, vp_section, started)
    write_report(settings.report, DemoReport.from_data(report))
    console.print(render_table(rows))
    console.print(f"report: {settings.report}  ({report['wall_seconds']} s)")
    return report


def _export_device_parts(settings: DemoSettings, console: Console) -> Path:
    """The light sensors' model folders, as ``nairbus export-onnx --out-dir`` writes them: base's parts and
    artifacts in ``run_dir/device``, each VP variant's whole model in ``run_dir/device-vp``; base's manifest there."""
    from nairbus.models.export.onnx import export_family_parts, export_sensor_parts

    with console.status("exporting the device parts to ONNX (the light sensors run them)"):
        record = export_sensor_parts("base", (settings.run_dir / "device").resolve())
        export_family_parts((settings.run_dir / "device-vp").resolve())
    return record.with_name("base.json")


def _model_args(device: Path | None, artifact: Path) -> list[str]:
    """The sensor flags naming the model and the artifact the offline evaluator uses: the shipped ones (torch), or
    their copies beside the exported parts (``device``: the light sensor's manifest)."""
    if device is None:
        return ["--artifact", str(artifact)]
    return ["--runtime", "onnx", "--model", str(device), "--artifact", str(device.with_name("base.nair.npz"))]


def _offline_at(pipeline: NairPipeline, codes: np.ndarray, frames: int, n_labels: int,
                budget: float | int, total: int) -> tuple[np.ndarray, int, str, list[str]]:
    """The offline evaluator at one budget — a fraction of the IR (float) or wire bytes per frame (int): its
    prediction per test frame (-1: not sent), the budget in bytes, the stream tag and the sensor's budget flags."""
    offline_pred = np.full(n_labels, -1)
    if isinstance(budget, int):
        from nairbus.agents.tools.map_nair import prefix_predictions

        offline_pred[:frames] = prefix_predictions(pipeline, codes, budget)
        return offline_pred, budget, f"w{budget}", ["--budget", str(budget)]
    budget_bytes = max(1, round(budget * total))
    probs, _fractions, _bytes = pipeline.offline_probs(codes, np.arange(frames), budget_bytes, LossModel())
    offline_pred[:frames] = probs.argmax(1)
    return offline_pred, budget_bytes, f"b{round(budget * 100)}", ["--budget-fraction", str(budget)]


def _run_budget(settings: DemoSettings, budget: float | int, frames: int, pipeline: NairPipeline,
                codes: np.ndarray, labels: np.ndarray, total: int, env: dict[str, str], observer: Observer,
                console: Console, device: Path | None = None) -> dict[str, Any]:
    offline_pred, budget_bytes, tag, budget_args = _offline_at(pipeline, codes, frames, len(labels), budget, total)
    ids = np.arange(frames)
    run = BudgetRun(None if isinstance(budget, int) else budget, budget_bytes, frames)
    stream_frames = {f"cam{i}-{tag}": ids[i :: settings.sensors] for i in range(settings.sensors)}
    sensors = []
    for i, sensor_id in enumerate(stream_frames):
        args = ["sensor", "--mode", "nair", "--sensor-id", sensor_id, "--count", str(frames),
                "--shard", f"{i}/{settings.sensors}",
                *budget_args, "--no-link-fit", "--fps", str(settings.fps_per_sensor),
                *_model_args(device, settings.artifact_path),  # the artifact the offline evaluator uses
                "--deadline-ms", str(settings.deadline_ms * 10)]
        sensors.append(_spawn(args, env, settings.run_dir / f"{sensor_id}.log"))
    label = (f"budget {budget} wire B/frame" if run.fraction is None
             else f"budget {round(budget * 100):>3} % of the IR ({budget_bytes} B/frame)")
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("frames", total=frames)
        quiet_since: float | None = None
        while len(run.results) < frames:
            before = len(run.results)
            observer.poll(run, 0.25)
            progress.update(task, completed=len(run.results))
            done = all(p.poll() is not None for p in sensors)
            if done and len(run.results) == before:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > settings.deadline_ms / 1000.0 + 3.0:
                    break
            else:
                quiet_since = None
    for sensor, sensor_id in zip(sensors, stream_frames, strict=True):
        if sensor.wait() != 0:
            console.print(f"[red]sensor {sensor_id} exited with {sensor.returncode}; see "
                          f"{settings.run_dir / (sensor_id + '.log')}[/]")
    return _summarise(run, labels, stream_frames, offline_pred, total, pipeline, codes)


def render_table(rows: list[dict[str, Any]]) -> Table:
    """The per-budget table people read at the end of the demo."""
    table = Table(title="nairbus demo — NAIR over the live bus vs the offline evaluator (same frames)")
    for name in ("budget", "IR received", "payload B/frame", "wire B/frame", "live acc", "offline acc", "p50 ms",
                 "p99 ms", "frames/s"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            f"{row['budget']:.0%}" if row["budget"] is not None else f"{row['budget_bytes']} wire B",
            f"{row['fraction_received']:.1%}", f"{row['bytes_per_frame']:.0f}",
            f"{row.get('wire_bytes_per_frame', 0):.0f}",
            f"{row['live_accuracy']:.2%}", f"{row['offline_accuracy']:.2%}", f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}", f"{row['fps']:.0f}",
        )
    return table
