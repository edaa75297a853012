"""``nairbus bench scale``: what the bus costs against the same pipeline in one process, and how far one hub goes.

One run, the same frames (the first ``frames`` test images), the shipped defaults but for the representation, which is
named: NAIR at the artifact's split (``--mode nair``), the whole IR or a wire cap per frame (``--budget``); three
parts:

- **pipeline** — the sensor's own frame encoder and the fusion agent's own handlers in one process with no MQTT
  between them: CPU ms per frame, one frame at a time and batched (the whole set encoded in one pass, then decided in
  batches of the fusion agent's ``max_batch``);
- **bus** — a private Mosquitto, one ``nairbus fusion`` and ``sensors`` ``nairbus sensor`` processes as users run
  them, each sensor replaying the frames at ``fps``: CPU ms per frame of each role (from ``/proc``, over the window
  between the first results and the last, so start-up and model loading are left out), its ratio to the
  in-process pipeline, the share decided and the latency;
- **swarm** — for each of ``swarm`` sizes, that many sensor connections from a few processes (at most 250 each,
  :mod:`nairbus.agents.tools.swarm`; each sensor its own MQTT session, retained birth and status, lean NAIR fragments
  encoded for its own session) at ``swarm_fps`` each into one ``nairbus fusion``: the share decided, p50/p99
  latency against the deadline, fusion CPU per frame and its RSS growth per sensor;
- **overload** — a swarm offering far more frames than one fusion agent decides here, into one run with
  ``--shed-late``: the rate it decides (its saturation under this sharing), the offered rate over it, the latency of
  the frames it decides against the deadline, the frames it shed, and its memory before and after.

Every ratio is measured in the same run. On one machine the hub, the broker, the sensors (or the swarm) and this
process share the cores: the report says how many there were and the load around each part, and a figure is what
this machine gave under that sharing — not a claim about a hub on a machine of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.settings import TopicSettings
from nairbus.agents.tools.results import Results
from nairbus.agents.tools.swarm import SwarmProcess, SwarmSpec, split
from nairbus.models.data.registry import load_data
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree

log = get_logger("nairbus.scalebench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT, SITE = "nairbus-bench", "scale"
SHARED_NOTE = ("one machine: the hub, the broker, the sensors (or the swarm) and the bench share its cores — "
               "CPU per frame is each process's own; rates and latencies are what this sharing allowed")


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    """What ``nairbus bench scale`` runs."""

    model: str = "base"
    frames: int = 600
    """Test frames of the pipeline and bus parts (and the pool the swarm draws its frames from)."""
    sensors: int = 2
    """Sensor processes of the bus part."""
    fps: float = 60.0
    """Frame rate of each sensor process."""
    caps: tuple[int | None, ...] = (None, 300)
    """Wire caps per frame of the pipeline and bus parts (None: the shipped default, the whole IR on a fast link)."""
    swarm: tuple[int, ...] = (50, 200, 1000)
    swarm_fps: float = 0.5
    swarm_seconds: float = 30.0
    overload_sensors: int = 400
    """The overload part: this many swarm sensors at ``overload_fps`` each (far more than one fusion agent decides
    here) into a fusion agent run with ``--shed-late``; 0 leaves it out."""
    overload_fps: float = 5.0
    fleet_agents: int = 2
    """The fleet part: this many fusion agents (``--fleet``) share ``fleet_sensors`` swarm sensors at ``swarm_fps``
    (compare with the one-agent swarm run of as many sensors); below 2 leaves it out."""
    fleet_sensors: int = 200
    deadline_ms: float = 500.0
    """The fusion agent's deadline (the shipped default), which p99 is held against."""
    report: Path = Path("reports/bench.json")
    run_dir: Path = Path("runs/scale")

    def __post_init__(self) -> None:
        if self.frames < 10 or self.sensors < 1 or self.fps <= 0 or self.swarm_fps <= 0 or self.swarm_seconds < 5:
            raise ValueError("frames >= 10, sensors >= 1, fps > 0, swarm_fps > 0 and swarm_seconds >= 5")
        if any(n < 1 for n in self.swarm):
            raise ValueError("swarm sizes must be >= 1")


# ----- measuring processes --------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class CpuSampler:
    """Samples the CPU seconds of named processes every ``interval`` s on a thread of its own."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")

    def _sample(self) -> None:
        self.samples.append((time.monotonic(), {role: cpu_seconds(pid) for role, pid in self.pids.items()}))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds each process spent between the samples nearest ``t0`` and ``t1``."""
        if not self.samples:
            return {}
        first = min(self.samples, key=lambda s: abs(s[0] - t0))
        last = min(self.samples, key=lambda s: abs(s[0] - t1))
        out = {}
        for role in self.pids:
            a, b = first[1].get(role), last[1].get(role)
            if a is not None and b is not None:
                out[role] = b - a
        out["_seconds"] = last[0] - first[0]
        return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----- the in-process pipeline --------------------------------------------------------------------------------------
class OfflineBus:
    """What a fusion agent needs of a bus when it runs in this process with nothing between it and the sensor:
    subscriptions and routes noted, publishes counted, nothing sent."""

    session = "offline"

    def __init__(self) -> None:
        self.published = 0

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        return None

    def route(self, topic: str, handler: Callable[[InboundMessage], None], qos: int = 1) -> None:
        return None

    def publish(self, topic: str, payload: bytes, **_kw: Any) -> bool:
        self.published += 1
        return True

    def announce(self, topic: str, payload: bytes, **_kw: Any) -> bool:
        return True

    def on_session_lost(self, callback: Callable[[float], None]) -> None:
        return None


def _message(topic: str, payload: bytes, now: float) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, content_type=None, retain=False, received_ts=now)


@dataclass(slots=True)
class InProcess:
    """A sensor's frame encoder and a fusion agent in this process (the same classes the agents run)."""

    sensor: SensorAgent
    fusion: FusionAgent
    cap: int | None
    seq: int = 0

    @classmethod
    def make(cls, pipeline: NairPipeline, cap: int | None, deadline_ms: float) -> InProcess:
        cfg = AgentConfig(topics=TopicSettings(root=ROOT, site=SITE),
                          sensor=SensorSettings(sensor_id="inproc", budget_bytes=cap),
                          fusion=FusionSettings(deadline_ms=deadline_ms, max_fps_per_sensor=1e9, max_frames=100_000,
                                                max_frames_per_sensor=100_000))
        cfg = cfg.model_copy(update={"discovery": cfg.discovery.model_copy(update={"enabled": False})})
        sensor = SensorAgent(cfg, pipeline)
        fusion = FusionAgent(cfg, pipeline, bus=cast(Bus, OfflineBus()))
        topics = TopicTree(ROOT, SITE)
        fusion.handle(_message(topics.sensor_birth("inproc"), wire_encode(sensor.birth()), time.time()),
                      time.monotonic())
        return cls(sensor, fusion, cap)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, codes: np.ndarray, frame_id: int) -> list[InboundMessage]:
        """The messages of one frame, as the sensor builds them."""
        encoder = self.sensor.nair
        assert encoder is not None
        now = time.time()
        capture_ms = int((now - self.sensor.ctx.epoch_ts) * 1000)
        end = encoder.prefix_for(self.cap, self.sensor.payload_cap, self.seq + 1, frame_id, capture_ms, codes)
        return [_message(o.topic, o.payload, now) for o in encoder.messages(codes, frame_id, self._next_seq, now, end)]

    def decide(self, messages: list[InboundMessage], flush: bool) -> None:
        now = time.monotonic()
        for message in messages:
            self.fusion.handle(message, now)
        frames = self.fusion.buffer.flush() if flush else self.fusion.buffer.pop_ready(now)
        batch = self.fusion.settings.max_batch
        for i in range(0, len(frames), batch):
            self.fusion.decide(frames[i:i + batch])


PIPELINE_REPEATS = 3
"""The in-process pipeline is timed this many times; each figure is their median (the machine is shared)."""
WARMUP_FRAMES = 10
"""Frames the in-process pipeline runs before it is timed (lazy initialisation, caches)."""


def pipeline_costs(pipeline: NairPipeline, images: np.ndarray, cap: int | None, deadline_ms: float) -> dict[str, Any]:
    """CPU ms per frame of the sensor's and the fusion agent's work in one process: one at a time, and batched
    (medians of :data:`PIPELINE_REPEATS` runs).

    One torch thread, as every agent process of the bench runs (``OMP_NUM_THREADS=1``): the process's CPU time then
    is the work, not idle threads spinning."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [_pipeline_costs(pipeline, images, cap, deadline_ms) for _ in range(PIPELINE_REPEATS)]
    finally:
        torch.set_num_threads(threads)
    out = dict(runs[0])
    for key in ("one_at_a_time_ms", "batched_ms"):
        out[key] = {part: round(float(np.median([r[key][part] for r in runs])), 3) for part in runs[0][key]}
    out["repeats"] = PIPELINE_REPEATS
    return out


def _pipeline_costs(pipeline: NairPipeline, images: np.ndarray, cap: int | None, deadline_ms: float
                    ) -> dict[str, Any]:
    warm = InProcess.make(pipeline, cap, deadline_ms)
    for i in range(min(WARMUP_FRAMES, len(images))):
        warm.decide(warm.send(pipeline.encode(images[i:i + 1])[0], i), flush=False)
    warm.decide([], flush=True)
    one = InProcess.make(pipeline, cap, deadline_ms)
    sensor_s = fusion_s = 0.0
    wire = 0
    for i in range(len(images)):
        t0 = time.process_time()
        codes = pipeline.encode(images[i:i + 1])[0]
        messages = one.send(codes, i)
        t1 = time.process_time()
        one.decide(messages, flush=False)
        t2 = time.process_time()
        sensor_s, fusion_s = sensor_s + t1 - t0, fusion_s + t2 - t1
        wire += sum(len(m.payload) for m in messages)
    decided_one = one.fusion.counts["decided"]
    batched = InProcess.make(pipeline, cap, deadline_ms)
    t0 = time.process_time()
    all_codes = pipeline.encode(images)
    messages = [m for i in range(len(images)) for m in batched.send(all_codes[i], i)]
    t1 = time.process_time()
    batched.decide(messages, flush=True)
    t2 = time.process_time()
    n = len(images)
    return {
        "frames": n, "decided_one_at_a_time": decided_one, "decided_batched": batched.fusion.counts["decided"],
        "payload_bytes_per_frame": round(wire / n, 1),
        "one_at_a_time_ms": {"sensor": round(sensor_s / n * 1000, 3), "fusion": round(fusion_s / n * 1000, 3),
                             "total": round((sensor_s + fusion_s) / n * 1000, 3)},
        "batched_ms": {"sensor": round((t1 - t0) / n * 1000, 3), "fusion": round((t2 - t1) / n * 1000, 3),
                       "total": round((t2 - t0) / n * 1000, 3)},
    }


# ----- agents as processes ------------------------------------------------------------------------------------------
def agent_env(broker: PrivateMosquitto) -> dict[str, str]:
    """The environment of an agent process of the bench: the private broker, the bench's topic tree, JSON logs, one
    torch thread (several model processes share the cores)."""
    env = dict(os.environ)
    env.update({"NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
                "NAIRBUS_TOPICS__ROOT": ROOT, "NAIRBUS_TOPICS__SITE": SITE, "NAIRBUS_LOG__FORMAT": "json",
                "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.pop("NAIRBUS_CONFIG", None)
    return env


@contextmanager
def agent(args: list[str], env: dict[str, str], log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``nairbus <args>`` as a process logging to ``log_file`` (a new one); terminated (then killed) at the end."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "nairbus.agents.cli", *args], env=env, stdout=handle,
                                stderr=handle)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def latency_summary(latencies: list[float], deadline_ms: float) -> dict[str, Any]:
    """p50/p99/max of ``latencies`` (ms) and the share within the deadline."""
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None, "within_deadline": None}
    arr = np.asarray(latencies)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 1), "p99_ms": round(float(np.percentile(arr, 99)), 1),
            "max_ms": round(float(arr.max()), 1), "within_deadline": round(float((arr <= deadline_ms).mean()), 5)}


def _window(results: Results, skip: int) -> tuple[float, float, int]:
    """The steady window of a run: from the ``skip``-th result to the last, and the results inside it."""
    times = sorted(t for t, _ in results.got)
    if len(times) <= skip + 1:
        raise RuntimeError(f"only {len(times)} results arrived: nothing to measure")
    return times[skip], times[-1], len(times) - skip - 1


def bus_costs(settings: ScaleSettings, cap: int | None, inproc: dict[str, Any], say: Callable[[str], None]
              ) -> dict[str, Any]:
    """The bus part for one cap: CPU ms per frame of each role, its ratios to the in-process pipeline, the share
    decided and the latency."""
    name = "full" if cap is None else f"cap{cap}"
    run_dir = settings.run_dir / f"bus-{name}"
    with PrivateMosquitto() as broker, Results(broker, TopicTree(ROOT, SITE)) as results:
        env = agent_env(broker)
        with agent(["fusion", "--deadline-ms", str(settings.deadline_ms)], env, run_dir / "fusion.log") as fusion:
            results.wait_online(fusion)
            sensor_args = ["sensor", "--mode", "nair", "--count", str(settings.frames), "--fps", str(settings.fps)]
            if cap is not None:
                sensor_args += ["--budget", str(cap)]
            load_before = _load()
            with contextlib_all([agent([*sensor_args, "--sensor-id", f"s{i}"], env, run_dir / f"sensor-{i}.log")
                                 for i in range(settings.sensors)]) as sensors:
                pids = {"fusion": fusion.pid, "broker": broker.pid or 0,
                        **{f"sensor-{i}": p.pid for i, p in enumerate(sensors)}}
                with CpuSampler(pids) as sampler:
                    end = time.monotonic() + settings.frames / settings.fps + 240
                    while any(p.poll() is None for p in sensors) and time.monotonic() < end:
                        time.sleep(0.2)
                    time.sleep(1.0)
            load_after = _load()
    total = settings.frames * settings.sensors
    skip = min(len(results.got) // 10, int(settings.fps))
    t0, t1, window_frames = _window(results, skip)
    cpu = sampler.between(t0, t1)
    sensor_ms = sum(v for k, v in cpu.items() if k.startswith("sensor-")) / window_frames * 1000
    fusion_ms, broker_ms = cpu["fusion"] / window_frames * 1000, cpu["broker"] / window_frames * 1000
    bus_ms = sensor_ms + fusion_ms + broker_ms
    keys = {(r.stream_id, r.frame_id) for _, r in results.got}
    say(f"bus {name}: {len(keys)}/{total} decided; sensors {sensor_ms:.2f} + fusion {fusion_ms:.2f} + broker "
        f"{broker_ms:.2f} ms per frame = {bus_ms / inproc['one_at_a_time_ms']['total']:.2f}x one at a time")
    return {
        "cap": cap, "sensors": settings.sensors, "fps_per_sensor": settings.fps, "frames_sent": total,
        "decided": len(keys), "window_frames": window_frames, "window_s": round(cpu["_seconds"], 2),
        "cpu_ms_per_frame": {"sensors": round(sensor_ms, 3), "fusion": round(fusion_ms, 3),
                             "broker": round(broker_ms, 3), "total": round(bus_ms, 3)},
        "ratio_to_one_at_a_time": round(bus_ms / inproc["one_at_a_time_ms"]["total"], 3),
        "ratio_to_batched": round(bus_ms / inproc["batched_ms"]["total"], 3),
        "fusion_ratio_to_one_at_a_time": round(fusion_ms / inproc["one_at_a_time_ms"]["fusion"], 3),
        "latency": latency_summary([r.latency_ms for _, r in results.got], settings.deadline_ms),
        "load_before": load_before, "load_after": load_after,
    }


@contextmanager
def contextlib_all(managers: list[Any]) -> Iterator[list[Any]]:
    """Enter every context manager of ``managers`` (in order), exit them all (in reverse)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(m) for m in managers]


# ----- the swarm ----------------------------------------------------------------------------------------------------
def _known(log_file: Path) -> int:
    """Sensors the fusion agent's log says it knows."""
    try:
        return log_file.read_text(errors="replace").count('"sensor_known"')
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class SwarmLoad:
    """What a swarm run offers: ``sensors`` at ``fps`` each for ``seconds``, into a fusion agent run with
    ``fusion_args`` beside the deadline."""

    name: str
    sensors: int
    fps: float
    seconds: float
    fusion_args: tuple[str, ...] = ()
    agents: int = 1
    """Fusion agents; more than one run as a fleet (``--fleet scale``, ids ``fusion-1`` … ``fusion-N``)."""


def _fusion_rejected(log_file: Path) -> dict[str, int]:
    """The rejections the fusion agent's last line (``fusion_stopped``) counted."""
    rejected: dict[str, int] = {}
    with suppress(OSError):
        for line in log_file.read_text(errors="replace").splitlines():
            if '"fusion_stopped"' in line:
                with suppress(ValueError, AttributeError):
                    rejected = dict(json.loads(line).get("rejected") or {})
    return rejected


def _await_swarm(workers: list[SwarmProcess], fusion_log: Path, n: int) -> tuple[int, int]:
    """Sensors the workers connected, and how many of them the fusion agent knows (it waits a while for all)."""
    connected = sum(w.expect("ready", 120 + n * 0.2) for w in workers)
    end = time.monotonic() + 60 + n * 0.05
    while _known(fusion_log) < n and time.monotonic() < end:
        time.sleep(0.2)
    return connected, _known(fusion_log)


def _cpu_per_frame(cpu: dict[str, float], frames: int) -> dict[str, float | None]:
    """CPU ms per decided frame of the fusion agents (all of a fleet), the broker and the swarm processes."""
    totals = {"fusion": sum(v for k, v in cpu.items() if k.startswith("fusion-")), "broker": cpu.get("broker"),
              "bench": sum(v for k, v in cpu.items() if k.startswith("swarm-"))}
    return {role: round(v / frames * 1000, 3) if frames and v is not None else None for role, v in totals.items()}


def _drive(workers: list[SwarmProcess], seconds: float) -> tuple[dict[str, list[int]], float, float]:
    """Start every worker on one clock and collect the frames each sensor sent; when sending began and ended."""
    start_wall = time.time() + 0.5
    for w in workers:
        w.send("go", start_wall)
    t_send0 = time.monotonic() + 0.5
    sent_ids: dict[str, list[int]] = {}
    for w in workers:
        sent_ids.update(w.expect("sent", seconds + 120))
    return sent_ids, t_send0, time.monotonic()


def _decisions(results: Results, sent_ids: dict[str, list[int]]) -> dict[str, Any]:
    """What became of the frames sent: decided (share), by which agent, and any decided twice."""
    sent = {(sid, f) for sid, frames in sent_ids.items() for f in frames}
    decided = len({(r.stream_id, r.frame_id) for _, r in results.got} & sent)
    per_frame = results.per_frame()
    return {"frames_sent": len(sent), "decided": decided, "decided_share": round(decided / max(1, len(sent)), 5),
            "decided_by_agent": dict(sorted(Counter(r.fusion_id for _, r in results.got).items())),
            "decided_twice": sum(1 for count in per_frame.values() if count > 1)}


def swarm_run(settings: ScaleSettings, load: SwarmLoad, template: SensorAgent, codes_path: Path, artifact: Path,
              say: Callable[[str], None]) -> dict[str, Any]:
    """``load.sensors`` swarm sensors at ``load.fps`` each for ``load.seconds`` into one fusion agent."""
    n = load.sensors
    run_dir = settings.run_dir / load.name
    fusion_log = run_dir / "fusion.log"
    birth = template.birth().model_dump_json()
    fleet = [[]] if load.agents == 1 else [["--fleet", "scale", "--fusion-id", f"fusion-{k + 1}"]
                                            for k in range(load.agents)]
    with PrivateMosquitto() as broker, Results(broker, TopicTree(ROOT, SITE)) as results:
        env = agent_env(broker)
        with contextlib_all([agent(["fusion", "--deadline-ms", str(settings.deadline_ms), *load.fusion_args, *args],
                                   env, fusion_log if k == 0 else run_dir / f"fusion-{k + 1}.log")
                             for k, args in enumerate(fleet)]) as fusions:
            fusion = fusions[0]
            results.wait_online(fusion, agents=load.agents)
            time.sleep(1.0)
            rss_before = rss_mb(fusion.pid)
            t_connect = time.monotonic()
            workers = [SwarmProcess(SwarmSpec(broker.host, broker.port, ROOT, SITE, first, count, birth, artifact,
                                              codes_path, load.fps, load.seconds,
                                              template.ctx.expiry_s), n) for first, count in split(n)]
            try:
                connected, known = _await_swarm(workers, fusion_log, n)
                connect_s = time.monotonic() - t_connect
                time.sleep(1.0)
                rss_known = rss_mb(fusion.pid)
                say(f"{load.name}: {connected} connected, {known} known to fusion after {connect_s:.1f} s "
                    f"({len(workers)} swarm processes); sending at {load.fps:g} fps each for {load.seconds:g} s")
                load_before = _load()
                pids = {"broker": broker.pid or 0, **{f"fusion-{k}": f.pid for k, f in enumerate(fusions)},
                        **{f"swarm-{k}": w.pid for k, w in enumerate(workers)}}
                with CpuSampler(pids, interval=0.25) as sampler:
                    sent_ids, t_send0, t_send1 = _drive(workers, load.seconds)
                    time.sleep(settings.deadline_ms / 1000.0 + 2.0)
                rss_after = rss_mb(fusion.pid)
                load_after = _load()
            finally:
                for w in workers:
                    w.close()
    rejected = _fusion_rejected(fusion_log)
    outcome = _decisions(results, sent_ids)
    warm = t_send0 + 2.0
    in_window = sum(1 for t, _ in results.got if warm <= t <= t_send1)
    per_frame = _cpu_per_frame(sampler.between(warm, t_send1), in_window)
    lat = latency_summary([r.latency_ms for _, r in results.got], settings.deadline_ms)
    say(f"{load.name}: {outcome['decided']}/{outcome['frames_sent']} decided ({outcome['decided_share']:.4%}), "
        f"p99 {lat['p99_ms']} ms, fusion {per_frame['fusion']} ms per frame, shed {rejected.get('shed_late', 0)}")
    seconds = max(1e-9, t_send1 - t_send0)
    return {
        "sensors": n, "fps_per_sensor": load.fps, "seconds": round(seconds, 1), "agents": load.agents,
        "fusion_args": list(load.fusion_args), "offered_fps": round(outcome["frames_sent"] / seconds, 1),
        "decided_fps": round(in_window / max(1e-9, t_send1 - warm), 1), "shed": rejected.get("shed_late", 0),
        "rejected": rejected, "sensors_known": known, "connect_s": round(connect_s, 1), **outcome,
        "latency": lat, "cpu_ms_per_frame": per_frame,
        "fusion_rss_mb": {"before": rss_before, "sensors_known": rss_known, "after": rss_after},
        "fusion_rss_kib_per_sensor": (round((rss_known - rss_before) * 1024 / n, 1)
                                      if rss_known is not None and rss_before is not None else None),
        "load_before": load_before, "load_after": load_after,
    }


# ----- the whole bench ----------------------------------------------------------------------------------------------
def command_line(settings: ScaleSettings) -> str:
    defaults = ScaleSettings()
    parts = ["nairbus bench scale"]
    if settings.frames != defaults.frames:
        parts.append(f"--frames {settings.frames}")
    if settings.sensors != defaults.sensors:
        parts.append(f"--sensors {settings.sensors}")
    if settings.fps != defaults.fps:
        parts.append(f"--fps {settings.fps:g}")
    if settings.caps != defaults.caps:
        parts.extend(f"--cap {c}" for c in settings.caps if c is not None)
    if settings.swarm != defaults.swarm:
        parts.extend(f"--swarm {n}" for n in settings.swarm)
    if settings.swarm_fps != defaults.swarm_fps:
        parts.append(f"--swarm-fps {settings.swarm_fps:g}")
    if settings.swarm_seconds != defaults.swarm_seconds:
        parts.append(f"--swarm-seconds {settings.swarm_seconds:g}")
    if settings.overload_sensors != defaults.overload_sensors:
        parts.append(f"--overload-sensors {settings.overload_sensors}")
    if settings.overload_fps != defaults.overload_fps:
        parts.append(f"--overload-fps {settings.overload_fps:g}")
    return " ".join(parts)


def run_scale(settings: ScaleSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every part, in order; the report is written after each part (an interrupted run keeps what it measured)."""
    from nairbus.agents.tools.reports import ScaleReport, write_report

    pipeline = NairPipeline.load(settings.model, sensor_artifact_path(settings.model))
    images = load_data("test").images[: settings.frames]
    report: dict[str, Any] = {"command": command_line(settings), "cpus": os.cpu_count(), "model": settings.model,
                              "artifact_sha256": pipeline.artifact.sha256, "deadline_ms": settings.deadline_ms,
                              "shared_machine": SHARED_NOTE, "pipeline": [], "bus": [], "swarm": [],
                              "fleet": None, "overload": None}

    def write() -> None:
        write_report(settings.report, ScaleReport.from_data(report))

    for cap in settings.caps:
        say(f"pipeline in one process, cap {cap or 'none'}: {settings.frames} frames")
        inproc = pipeline_costs(pipeline, images, cap, settings.deadline_ms)
        report["pipeline"].append({"cap": cap, **inproc})
        write()
        report["bus"].append(bus_costs(settings, cap, inproc, say))
        write()
    cfg = AgentConfig(topics=TopicSettings(root=ROOT, site=SITE),
                      sensor=SensorSettings(sensor_id="swarm-template"))
    template = SensorAgent(cfg, pipeline)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    codes_path = settings.run_dir / "codes.npy"
    np.save(codes_path, pipeline.encode(images))
    for n in settings.swarm:
        load = SwarmLoad(f"swarm-{n}", n, settings.swarm_fps, settings.swarm_seconds)
        report["swarm"].append(swarm_run(settings, load, template, codes_path, sensor_artifact_path(settings.model),
                                         say))
        write()
    if settings.fleet_agents > 1:
        load = SwarmLoad("fleet", settings.fleet_sensors, settings.swarm_fps, settings.swarm_seconds,
                         agents=settings.fleet_agents)
        report["fleet"] = swarm_run(settings, load, template, codes_path, sensor_artifact_path(settings.model), say)
        write()
    if settings.overload_sensors:
        load = SwarmLoad("overload", settings.overload_sensors, settings.overload_fps, settings.swarm_seconds,
                         ("--shed-late",))
        run = swarm_run(settings, load, template, codes_path, sensor_artifact_path(settings.model), say)
        run["offered_over_decided"] = round(run["offered_fps"] / max(1e-9, run["decided_fps"]), 2)
        report["overload"] = run
        write()
    say(json.dumps({"bus": [b["ratio_to_one_at_a_time"] for b in report["bus"]],
                    "swarm": [(s["sensors"], s["decided_share"]) for s in report["swarm"]]}))
    return report
