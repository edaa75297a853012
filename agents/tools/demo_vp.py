"""The live Variant Parallelism run of the demo: one sensor per variant, a capture agent and VP fusion on a broker.

A capture agent publishes test frames on the stream's frame topic; one VP sensor process per variant of the family
classify every frame and publish their lean top-k; a VP fusion process fuses whatever arrived by the deadline.
Part-way through (``stop_at`` of the frames) one variant's process is stopped with SIGTERM, as a device that fails.

The checks tell the stopped device from overload. Frames are put in phases by their capture time: **before** (more
than :data:`TRANSITION_S` before the SIGTERM), **after** (more than :data:`TRANSITION_S` after it: the stopped
sensor classifies nothing once its signal handler ran, however long its process then takes to exit) and the short
**transition** between. Before the stop every frame must be decided by every variant, after it by exactly the
remaining ones — a frame decided on any other set, or not at all, means a variant sensor fell behind and skipped
it (or its vote came too late), which the run counts against a tolerance of :data:`PARTIAL_TOLERANCE`. On the
frames decided by the expected set, the live accuracy must match the offline evaluator's accuracy of the full set
(before) and of the remaining subset (after) within 0.5 point (the same rule on the same frames, so they should
agree exactly). The report gives the shares of full / remaining / other sets and missing results per phase, the
frames each sensor skipped, and the wire bytes per frame.

:func:`run_vp_demo` runs on a broker someone else started (``nairbus demo`` calls it inside its own run);
:func:`run_vp_demo_standalone` (``nairbus demo-vp``) starts a private Mosquitto and merges the ``vp`` section into
``reports/demo.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.tools.reports import DemoVpSection
from nairbus.agents.vp.capture import CaptureAgent, CaptureSettings
from nairbus.agents.vp.common import SENSOR_COUNTERS
from nairbus.models.data.registry import load_data
from nairbus.models.vp.family import load_family, softmax_outputs
from nairbus.models.vp.fusion import fuse_batch, subset_key
from nairbus.models.vp.manifest import FamilyManifest
from nairbus.schemas import Birth, Result, Status, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree

TOLERANCE = 0.005
"""Live and offline accuracy must agree within half a point."""
PARTIAL_TOLERANCE = 0.01
"""At most this share of a phase's frames may be decided on an unexpected variant set (or not at all)."""
TRANSITION_S = 0.5
"""Frames captured within this long of the stop (either side) may be decided with or without the stopped variant."""


FPS_DEFAULT = 50.0
"""The demo's capture rate: four variant processes, fusion, the broker and this orchestrator keep up with it on two
cores with room to spare. Measured on the 2-core development host while other work loaded it (load average 4-7),
3000 frames each: at 200 frames/s one variant sensor skipped 45 frames, so 3 % of the frames before the stop were
decided on three variants and the check failed (the capture agent itself skipped 20 %); at 100 frames/s the
variant sensors skipped none and every check passed, but the capture agent — a thread of this process — skipped
6 % of its frames; at 50 frames/s nothing was skipped by the sensors and 0.6 % by the capture agent, p99 47 ms.
``nairbus demo-vp --fps`` tries other rates; the checks say when the sensors fell behind."""


@dataclass(frozen=True, slots=True)
class VpDemoSettings:
    """What the live VP run does."""

    frames: int = 10000
    stop_at: float = 0.5
    """Fraction of the frames after which one variant agent is stopped."""
    stop_variant: str | None = None
    """Variant to stop (default: the one whose loss costs the most accuracy offline)."""
    fps: float = FPS_DEFAULT
    """Capture rate; four variant processes and fusion keep up with it on a busy 2-core host (see FPS_DEFAULT)."""
    k: int = 5
    deadline_ms: float = 2000.0
    root: str = "nairbus-demo"
    site: str = "demo-vp"
    stream_id: str = "vp-cam"
    run_dir: Path = Path("runs/demo-vp")
    data_dir: Path | None = None
    runtime: str = "torch"
    """What runs each variant: torch (its weights) or onnx (its exported whole model, found in ``model_dir``)."""
    model_dir: Path | None = None
    """Where the sensors look for the family first (``NAIRBUS_MODEL_DIR``): ``export-onnx --variants --out-dir``."""


def _env(broker: tuple[str, int], s: VpDemoSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"NAIRBUS_BROKER__HOST": broker[0], "NAIRBUS_BROKER__PORT": str(broker[1]),
                "NAIRBUS_TOPICS__ROOT": s.root, "NAIRBUS_TOPICS__SITE": s.site, "NAIRBUS_LOG__FORMAT": "json",
                "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})  # the model processes share the cores
    if s.data_dir:
        env["NAIRBUS_DATA_DIR"] = str(s.data_dir)
    env.pop("NAIRBUS_CONFIG", None)
    return env


def _spawn(args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handle = log_file.open("ab")
    return subprocess.Popen([sys.executable, "-m", "nairbus.agents.cli", *args], env=env, stdout=handle, stderr=handle,
                            cwd=None)


class _Watcher:
    """The orchestrator's MQTT client: births and status of the VP sensors, fusion status, results."""

    def __init__(self, broker: tuple[str, int], topics: TopicTree) -> None:
        self.topics = topics
        self.comm = Communicator(BrokerSettings(host=broker[0], port=broker[1]), "nairbus-demo-vp-observer",
                                 f"{topics.prefix}/observers/demo-vp/status", self._status)
        for leaf in ("birth", "status"):
            self.comm.subscribe(topics.all_sensors(leaf), qos=1)
        self.comm.subscribe(topics.all_fusion("status"), qos=1)
        self.comm.subscribe(topics.all_results(), qos=1)
        self.births: dict[str, Birth] = {}
        self.online: dict[str, str] = {}
        self.fusion_online = False
        self.results: dict[int, Result] = {}
        self.arrival: dict[int, float] = {}
        self.bad = 0

    def _status(self, state: str) -> bytes:
        return wire_encode(Status(agent_id="demo-vp", role="fusion", state=state,  # type: ignore[arg-type]
                                  session=self.comm.session, ts=time.time()))

    def poll(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while (message := self.comm.get(timeout=max(0.0, end - time.monotonic()))) is not None:
            parsed = self.topics.parse(message.topic)
            try:
                if parsed is None or not message.payload:
                    pass
                elif parsed.kind == "result":
                    result = wire_decode(message.payload, Result)
                    self.results[result.frame_id] = result
                    self.arrival[result.frame_id] = time.monotonic()
                elif parsed.kind == "sensor_birth":
                    self.births[parsed.ident] = wire_decode(message.payload, Birth)
                elif parsed.kind == "sensor_status":
                    status = wire_decode(message.payload, Status)
                    self.online[parsed.ident] = status.session if status.state == "online" else ""
                elif parsed.kind == "fusion_status":
                    self.fusion_online = wire_decode(message.payload, Status).state == "online"
            except WireError:
                self.bad += 1
            if time.monotonic() >= end:
                break

    def sensors_ready(self, ids: list[str]) -> bool:
        return all(i in self.births and self.online.get(i) == self.births[i].session for i in ids)


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass(frozen=True, slots=True)
class _VpOffline:
    """The offline side of a live VP run: its frames, the evaluator's decisions, and the variant to stop."""

    family: FamilyManifest
    names: list[str]
    frames: int
    labels: np.ndarray
    offline_full: np.ndarray
    offline_rest: np.ndarray
    loo: dict[str, float]
    victim: str
    remaining: list[str]


@dataclass(frozen=True, slots=True)
class _VpAgents:
    """The processes and the observer of a live VP run."""

    watcher: _Watcher
    fusion: subprocess.Popen[bytes]
    sensors: dict[str, subprocess.Popen[bytes]]
    sensor_ids: dict[str, str]
    log_starts: dict[str, int]
    run_dir: Path


def _offline_vp(settings: VpDemoSettings) -> _VpOffline:
    """The family on the test frames offline: full set, leave-one-out, the variant to stop and the remaining set."""
    family, variants = load_family()
    names = list(variants)
    weights = {n: v.weight for n, v in variants.items()}
    test = load_data("test", data_dir=settings.data_dir)
    frames = min(settings.frames, len(test))
    images, labels = test.images[:frames], test.labels[:frames]
    probs = {n: softmax_outputs(v.model, images) for n, v in variants.items()}
    offline_full = fuse_batch(probs, weights, settings.k).argmax(1)
    loo = {n: float((fuse_batch(probs, weights, settings.k, [x for x in names if x != n]).argmax(1) == labels).mean())
           for n in names}
    victim = settings.stop_variant or min(loo, key=lambda n: loo[n])
    if victim not in names:
        raise RuntimeError(f"unknown variant {victim!r} to stop; the family has {', '.join(names)}")
    remaining = [n for n in names if n != victim]
    offline_rest = fuse_batch(probs, weights, settings.k, remaining).argmax(1)
    return _VpOffline(family, names, frames, labels, offline_full, offline_rest, loo, victim, remaining)


def _start_vp_agents(settings: VpDemoSettings, broker: tuple[str, int], names: list[str]) -> _VpAgents:
    """Start the observer, the VP fusion process and one VP sensor process per variant."""
    topics = TopicTree(settings.root, settings.site)
    env = _env(broker, settings)
    run_dir = settings.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    sensor_ids = {n: f"vp-{n}" for n in names}
    watcher = _Watcher(broker, topics)
    watcher.comm.start()
    fusion = _spawn(["fusion", "--mode", "vp", "--fusion-id", "demo-vp-fusion", "--deadline-ms",
                     str(settings.deadline_ms), "--stats-interval", "1"], env, run_dir / "fusion.log")
    # The sensors' deadline is fusion's: a vote is still useful until fusion decides its frame, which is never
    # before the deadline counted from the frame's first vote (so never before capture + deadline).
    log_starts = {n: _size(run_dir / f"{sensor_ids[n]}.log") for n in names}  # logs are appended to
    sensor_env = env | ({"NAIRBUS_MODEL_DIR": str(settings.model_dir)} if settings.model_dir else {})
    sensors = {n: _spawn(["sensor", "--mode", "vp", "--variant", n, "--sensor-id", sensor_ids[n], "--stream-id",
                          settings.stream_id, "--source", "mqtt", "--k", str(settings.k), "--deadline-ms",
                          str(settings.deadline_ms), "--runtime", settings.runtime], sensor_env,
                         run_dir / f"{sensor_ids[n]}.log") for n in names}
    return _VpAgents(watcher, fusion, sensors, sensor_ids, log_starts, run_dir)


def _wait_online(agents: _VpAgents) -> None:
    """Wait until fusion and every sensor are online (90 s at most; an agent that exits fails the run)."""
    watcher = agents.watcher
    wait_until = time.monotonic() + 90
    while not (watcher.fusion_online and watcher.sensors_ready(list(agents.sensor_ids.values()))):
        dead = [n for n, p in agents.sensors.items() if p.poll() is not None]
        dead += ["fusion"] if agents.fusion.poll() else []
        if dead or time.monotonic() > wait_until:
            raise RuntimeError(f"VP agents did not come online ({', '.join(dead) or 'timeout'}); logs in "
                               f"{agents.run_dir}")
        watcher.poll(0.2)
    time.sleep(0.5)  # let fusion see every birth and status before the first frame
    watcher.poll(0.1)


def _capture_and_follow(settings: VpDemoSettings, broker: tuple[str, int], offline: _VpOffline, agents: _VpAgents,
                        console: Console, captured: dict[int, float], capture_counts: dict[str, int]) -> dict[str, Any]:
    """Publish the frames from a capture agent, stop the victim part-way, and follow the results; return the stop."""
    cfg = AgentConfig(broker=BrokerSettings(host=broker[0], port=broker[1]),
                      topics=TopicSettings(root=settings.root, site=settings.site))
    capture = CaptureAgent(cfg, CaptureSettings(stream_id=settings.stream_id, count=offline.frames, fps=settings.fps,
                                                data_dir=settings.data_dir))
    try:
        capture.start()
        stop_after = max(1, int(offline.frames * settings.stop_at))
        cut = threading.Event()

        def on_frame(sent: int, frame_id: int, capture_ts: float) -> None:
            captured[frame_id] = capture_ts
            if sent == stop_after:
                cut.set()

        def send() -> None:
            capture_counts.update(capture.run(on_frame=on_frame))

        sender = threading.Thread(target=send, daemon=True)
        console.print(f"[bold]VP live run[/]: {len(offline.names)} variant sensors ({', '.join(offline.names)}), "
                      f"{offline.frames} frames at {settings.fps:g} fps; {offline.victim} stops after frame "
                      f"{stop_after}")
        sender.start()
        stopped_at = _follow_results(settings, offline, agents, sender, cut, captured, stop_after, console)
        sender.join(timeout=10)
    finally:
        capture.stop()
    return stopped_at


def _follow_results(settings: VpDemoSettings, offline: _VpOffline, agents: _VpAgents, sender: threading.Thread,
                    cut: threading.Event, captured: dict[int, float], stop_after: int,
                    console: Console) -> dict[str, Any]:
    """Follow the results with a progress bar, stopping the victim once ``cut`` is set; return when and how."""
    watcher, frames, victim = agents.watcher, offline.frames, offline.victim
    stopped_at: dict[str, Any] = {}
    with Progress(TextColumn("VP frames decided"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("frames", total=frames)
        quiet_since: float | None = None
        while len(watcher.results) < frames:
            before = len(watcher.results)
            watcher.poll(0.2)
            progress.update(task, completed=len(watcher.results))
            if cut.is_set() and not stopped_at:
                stopped_at = {"variant": victim, "after_frames_published": stop_after, "ts": time.time()}
                progress.console.print(f"stopping {victim} (SIGTERM) after {stop_after} frames")
                stopped_at["exit_code"] = _stop(agents.sensors[victim])
                stopped_at["exited_ts"] = time.time()
            if not sender.is_alive() and captured.keys() <= watcher.results.keys():
                break  # every frame the capture agent sent is decided (it may have skipped some)
            if not sender.is_alive() and len(watcher.results) == before:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > settings.deadline_ms / 1000.0 + 3.0:
                    break
            else:
                quiet_since = None
    return stopped_at


def _stop_vp_agents(agents: _VpAgents) -> None:
    """Stop every sensor and fusion, take the last messages, and disconnect the observer."""
    for p in agents.sensors.values():
        _stop(p)
    _stop(agents.fusion)
    agents.watcher.poll(0.3)
    agents.watcher.comm.stop()


def run_vp_demo(settings: VpDemoSettings, broker: tuple[str, int], console: Console | None = None) -> dict[str, Any]:
    """Run the live VP scenario on ``broker`` and return the report section."""
    console = console or Console()
    started = time.time()
    offline = _offline_vp(settings)
    agents = _start_vp_agents(settings, broker, offline.names)
    capture_counts: dict[str, int] = {}
    captured: dict[int, float] = {}
    try:
        _wait_online(agents)
        stopped_at = _capture_and_follow(settings, broker, offline, agents, console, captured, capture_counts)
    finally:
        _stop_vp_agents(agents)
    skipped = {n: _sensor_counters(agents.run_dir / f"{agents.sensor_ids[n]}.log", agents.log_starts[n])
               for n in offline.names}
    return _summarise(settings, agents.watcher, offline.labels, offline.offline_full, offline.offline_rest,
                      offline.names, offline.victim, offline.remaining, offline.loo, stopped_at, offline.family,
                      time.time() - started, captured, capture_counts, skipped)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _sensor_counters(log_file: Path, start: int = 0) -> dict[str, int] | None:
    """The final counters a VP sensor logged in this run (its last JSON line with ``frames_skipped`` after byte
    ``start`` of its log), if it got that far."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(start)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        start = line.find("{")
        if start < 0:
            continue
        try:
            data = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(data, dict) and "frames_skipped" in data:
            return {k: int(data[k]) for k in SENSOR_COUNTERS if isinstance(data.get(k), int)}
    return None


def _phase_of(capture_ts: float, stopped_at: dict[str, Any]) -> str:
    """``before``, ``transition`` or ``after`` the stop, by capture time (all ``before`` if nothing was stopped)."""
    if not stopped_at or capture_ts < stopped_at["ts"] - TRANSITION_S:
        return "before"
    return "after" if capture_ts > stopped_at["ts"] + TRANSITION_S else "transition"


def _phases(captured: dict[int, float], results: dict[int, Result],
            stopped_at: dict[str, Any]) -> tuple[list[int], dict[str, list[int]]]:
    """Every frame sent or decided, and those frames by phase (capture time against the stop)."""
    sent = sorted(set(captured) | set(results))
    phases: dict[str, list[int]] = {"before": [], "transition": [], "after": []}
    for frame_id in sent:
        ts = captured.get(frame_id)
        if ts is None:
            ts = results[frame_id].capture_ts
        phases[_phase_of(ts, stopped_at)].append(frame_id)
    return sent, phases


def _variant_sets(ids: list[int], results: dict[int, Result], full_key: str, rest_key: str) -> dict[str, Any]:
    """Shares of a phase's frames decided by all variants, by the remaining ones, by another set, or not."""
    tally = {"full": 0, "remaining": 0, "other": 0, "missing": 0}
    subsets: dict[str, int] = {}
    for frame_id in ids:
        result = results.get(frame_id)
        if result is None:
            tally["missing"] += 1
            continue
        key = subset_key(result.variants)
        kind = "full" if key == full_key else "remaining" if key == rest_key else "other"
        tally[kind] += 1
        if kind == "other":
            subsets[key] = subsets.get(key, 0) + 1
    n = max(1, len(ids))
    return {"frames": len(ids), **tally, **{f"{k}_share": v / n for k, v in tally.items()},
            "other_sets": subsets}


def _live_accuracy(ids: list[int], key: str, offline: np.ndarray, results: dict[int, Result],
                   labels: np.ndarray) -> dict[str, Any]:
    """Live against offline on the frames of a phase decided by the set ``key``."""
    chosen = np.array(sorted(i for i in ids if i in results
                             and subset_key(results[i].variants) == key), dtype=np.int64)
    if not len(chosen):
        return {"variants": key.split(","), "frames": 0}
    live = np.array([results[int(i)].class_index for i in chosen])
    wire = np.array([results[int(i)].wire_bytes for i in chosen], dtype=np.float64)
    payload = np.array([results[int(i)].bytes_received for i in chosen], dtype=np.float64)
    return {
        "variants": key.split(","), "frames": len(chosen), "first_frame": int(chosen.min()),
        "last_frame": int(chosen.max()),
        "live_accuracy": float((live == labels[chosen]).mean()),
        "offline_accuracy_same_frames": float((offline[chosen] == labels[chosen]).mean()),
        "agreement_with_offline": float((live == offline[chosen]).mean()),
        "wire_bytes_per_frame": float(wire.mean()), "payload_bytes_per_frame": float(payload.mean()),
    }


def _checks(sets: dict[str, dict[str, Any]], before: dict[str, Any], after: dict[str, Any],
            unexpected_before: float, unexpected_after: float, after_stop: list[Result]) -> dict[str, Any]:
    """The run's checks: the expected variant sets per phase, live within 0.5 point of offline, results flowing."""
    return {
        # Overload, not the stopped device: before the stop every frame has every variant, after it the rest.
        "before_full_set": sets["before"]["frames"] > 0 and unexpected_before <= PARTIAL_TOLERANCE,
        "after_remaining_set": sets["after"]["frames"] > 0 and unexpected_after <= PARTIAL_TOLERANCE,
        "before_within_0_5pt": before.get("frames", 0) > 0
        and abs(before["live_accuracy"] - before["offline_accuracy_same_frames"]) <= TOLERANCE,
        "after_within_0_5pt": after.get("frames", 0) > 0
        and abs(after["live_accuracy"] - after["offline_accuracy_same_frames"]) <= TOLERANCE,
        "results_kept_flowing": len(after_stop) > 0 and after.get("frames", 0) > 0,
    }


def _section_head(s: VpDemoSettings, names: list[str], victim: str, remaining: list[str],
                  stopped_at: dict[str, Any], family: FamilyManifest) -> dict[str, Any]:
    """The section's opening: the command, the settings, the family and what was stopped."""
    return {
        "command": "nairbus demo-vp" + ("" if s.frames >= 10000 else f" --frames {s.frames}")
        + ("" if s.fps == FPS_DEFAULT else f" --fps {s.fps:g}"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()
                     if k not in ("run_dir", "data_dir", "model_dir")},
        "family": {"variants": names, "weights": {v.name: v.fusion_weight for v in family.variants},
                   "sha256": {v.name: v.sha256 for v in family.variants}},
        "stopped": {**stopped_at, "variant": victim, "remaining": remaining, "transition_s": TRANSITION_S},
    }


def _summarise(s: VpDemoSettings, watcher: _Watcher, labels: np.ndarray, offline_full: np.ndarray,
               offline_rest: np.ndarray, names: list[str], victim: str, remaining: list[str], loo: dict[str, float],
               stopped_at: dict[str, Any], family: FamilyManifest, wall: float, captured: dict[int, float],
               capture_counts: dict[str, int], sensor_counters: dict[str, dict[str, int] | None]) -> dict[str, Any]:
    """The report section of a live VP run: variant sets per phase, live against offline, and the checks."""
    full_key, rest_key = subset_key(names), subset_key(remaining)
    results = watcher.results
    sent, phases = _phases(captured, results, stopped_at)
    sets = {name: _variant_sets(ids, results, full_key, rest_key) for name, ids in phases.items()}
    before = {**_live_accuracy(phases["before"], full_key, offline_full, results, labels), "phase": sets["before"]}
    after = {**_live_accuracy(phases["after"], rest_key, offline_rest, results, labels), "phase": sets["after"]}
    got = list(results.values())
    latencies = np.array([r.latency_ms for r in got]) if got else np.array([np.nan])
    after_stop = [r for r in got if stopped_at and r.decided_ts > stopped_at["ts"]]
    unexpected_before = 1.0 - sets["before"]["full_share"]
    unexpected_after = 1.0 - sets["after"]["remaining_share"]
    checks = _checks(sets, before, after, unexpected_before, unexpected_after, after_stop)
    wire = [r.wire_bytes for r in got]
    return {
        **_section_head(s, names, victim, remaining, stopped_at, family),
        "frames_sent": len(sent),
        "capture": capture_counts,
        "results": len(got),
        "missing": int(len(sent) - sum(1 for i in sent if i in results)),
        "before": before,
        "after": after,
        "variant_sets": sets,
        "partial_tolerance": PARTIAL_TOLERANCE,
        "unexpected_share": {"before": unexpected_before, "after": unexpected_after},
        "frames_skipped_by_sensors": {n: (c or {}).get("frames_skipped") for n, c in sensor_counters.items()},
        "sensor_counters": sensor_counters,
        "wire_bytes_per_frame": float(np.mean(wire)) if wire else None,
        "offline_whole_run": {
            "full_set_accuracy": float((offline_full == labels).mean()),
            "remaining_subset_accuracy": float((offline_rest == labels).mean()),
            "leave_one_out_accuracy": loo,
        },
        "results_after_stop": len(after_stop),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "checks": checks,
        "passed": all(checks.values()),
        "wall_seconds": round(wall, 1),
    }


def render_table(section: dict[str, Any]) -> Table:
    """Before/after table people read at the end of the VP run."""
    table = Table(title=f"VP live run — {section['stopped']['variant']} stopped part-way (same frames as offline)")
    for name in ("phase", "variants", "frames", "expected set", "live acc", "offline acc", "agreement",
                 "wire B/frame"):
        table.add_column(name, justify="right")
    for label, share in (("before", "full_share"), ("after", "remaining_share")):
        row = section[label]
        if row.get("frames"):
            phase = row["phase"]
            table.add_row(label, "+".join(row["variants"]), f"{row['frames']} of {phase['frames']}",
                          f"{phase[share]:.2%}", f"{row['live_accuracy']:.2%}",
                          f"{row['offline_accuracy_same_frames']:.2%}", f"{row['agreement_with_offline']:.2%}",
                          f"{row['wire_bytes_per_frame']:.0f}")
    return table


def run_vp_demo_standalone(settings: VpDemoSettings, report: Path | None = None,
                           console: Console | None = None) -> dict[str, Any]:
    """``nairbus demo-vp``: private Mosquitto, the live VP run, and its ``vp`` section merged into the demo report."""
    console = console or Console()
    with PrivateMosquitto() as broker:
        section = run_vp_demo(settings, (broker.host, broker.port), console)
    path = report or Path("reports/demo.json")
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    # the section is this command's; the rest of the file is the demo's, kept as it is
    data["vp"] = DemoVpSection.from_data(section).model_dump(mode="json", exclude_unset=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    console.print(render_table(section))
    console.print(f"frames skipped by the variant sensors: {section['frames_skipped_by_sensors']}")
    console.print(f"checks: {section['checks']}; report: {path}")
    return section


def run_vp_for_demo(broker: tuple[str, int], frames: int, run_dir: Path, data_dir: Path | None,
                    console: Console, runtime: str = "torch", model_dir: Path | None = None) -> dict[str, Any]:
    """The ``vp`` section of ``nairbus demo`` (on the demo's broker); a clear note instead if no family is trained."""
    from nairbus.models.store import WEIGHTS_DIR
    from nairbus.models.vp.manifest import FAMILY_NAME

    if not (WEIGHTS_DIR / f"{FAMILY_NAME}.json").is_file():
        return {"skipped": "no variant family in models/weights; run 'nairbus train variants'"}
    section = run_vp_demo(VpDemoSettings(frames=frames, run_dir=run_dir / "vp", data_dir=data_dir, runtime=runtime,
                                         model_dir=model_dir), broker, console)
    console.print(render_table(section))
    return section
