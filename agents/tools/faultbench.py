"""``nairbus bench faults``: attack a running bus the way an independent review did, and record what it cost.

Every scenario runs a fresh private Mosquitto, a fusion agent and well-behaved sensors as separate processes, exactly
as a user runs them (``nairbus fusion``, ``nairbus sensor`` — whole IR per frame, no link fitting, so each frame's
label is deterministic), plus a recorder that follows the results. The attacks:

- ``fuzz``: a known sensor (valid birth) sends ``fuzz_messages`` hostile messages on its own topics — random bytes of
  every size, byte flips of valid fragments, valid arrays with extreme fields (``seq``, frame ids, spans at 0 and
  2⁶⁴−1, wrong session tags, captures long expired), oversize payloads, garbage births;
- ``flood``: one sensor floods valid fragments of its own frames as fast as it can for ``flood_seconds``;
- ``broker-kill``: the broker is killed (SIGKILL) for each of ``outages_s``, with persistence off and on, and
  restarted on the same port;
- ``fusion-kill``: the fusion agent is killed (SIGKILL) and started again, ``kill_runs`` times;
- ``fusion-stop``: the fusion agent is frozen (SIGSTOP) for ``stop_seconds`` and resumed, ``stop_runs`` times;
- ``takeover`` (production config: accounts, ACL, TLS with client certificates): one device's account connects again
  and again with the client ids and user names of the fusion agent and the other sensors, on both listeners;
- ``exhaustion`` (production config): one device's credentials open connections as fast as it can, past each
  listener's ``max_connections``, and hold them, while a device that was not connected yet tries to join.

Per scenario the report holds the hostile messages sent, the legitimate frames sent / decided / lost, whether their
labels equal the offline pipeline's on the same images (what a fault-free run decides), the result rate before and
during the fault, times to recover, fusion restarts and crashes, and fusion memory before and after. The takeover and
exhaustion runs say whether any victim was disconnected (its retained status went offline, or the broker's log says
it closed the victim's connection) and how many of the attacker's connections were still open.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.agents.tools.cpugroups import CpuGroups
from nairbus.agents.tools.reports import FaultsReport, write_report
from nairbus.agents.tools.secure_broker import OBSERVER, SecureBroker
from nairbus.schemas import Result, Stats, Status
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.codec import WireError
from nairbus.schemas.topics import TopicTree

log = get_logger("nairbus.faultbench")

SCENARIOS = ("fuzz", "flood", "broker-kill", "fusion-kill", "fusion-stop", "takeover", "exhaustion")
ROOT, SITE = "nairbus-faults", "bench"
SECURE_ROOT = "nairbus"
"""The production ACL is written for the topic root ``nairbus``."""
FUSION_ACCOUNT = "fusion.fusion-1"
ATTACKER = "evil"


@dataclass(frozen=True)
class FaultSettings:
    """What to attack and how hard; every loop is bounded in count and time."""

    scenarios: tuple[str, ...] = SCENARIOS
    fuzz_messages: int = 100_000
    fuzz_seconds: float = 150.0
    """Time bound on sending the fuzz messages."""
    flood_seconds: float = 10.0
    legit_sensors: int = 2
    legit_fps: float = 10.0
    outages_s: tuple[float, ...] = (2.0, 20.0)
    kill_runs: int = 10
    stop_runs: int = 10
    stop_seconds: float = 30.0
    deadline_ms: float = 1000.0
    recover_s: float = 5.0
    """The bar: first result within this many seconds of a restart or resume."""
    report: Path = Path("reports/faults.json")
    run_dir: Path = Path("runs/faults")
    data_dir: Path | None = None
    device_cpus: float | None = 0.5
    """Each device's CPU cap in cores (its own control group; the hub gets twice a device's share of contended
    CPU): one test box modelling separate machines. None: no isolation."""


# ----- processes -------------------------------------------------------------------------------------------------

def _rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Recorder:
    """Follows results and fusion status; remembers every result with its arrival time."""

    def __init__(self, settings: BrokerSettings, root: str = ROOT) -> None:
        self.topics = TopicTree(root, SITE)
        # A subscriber that must not miss a decision: a persistent session, results at QoS 1 (with fusion's
        # --result-qos 1 in the broker-kill runs, results in flight when the broker dies are sent again).
        self.comm = Communicator(settings, "nairbus-faultbench-recorder", None, lambda _s: b"{}",
                                 session_expiry_s=600)
        self.comm.subscribe(self.topics.all_results(), qos=1)
        self.comm.subscribe(self.topics.all_fusion("status"), qos=0)
        self.comm.subscribe(self.topics.all_sensors("status"), qos=0)
        self.comm.subscribe(self.topics.all_fusion("stats"), qos=0)
        self.stats: Stats | None = None
        """The fusion agent's latest stats (its rejections by reason)."""
        self.offline: list[tuple[str, float]] = []
        """(agent id, arrival monotonic) of every non-retained ``offline`` status: who was disconnected, and when."""
        self.online_at: list[tuple[str, float]] = []
        """(agent id, arrival monotonic) of every non-retained ``online`` status."""
        self.online: set[str] = set()
        """Agents whose latest status is ``online``."""
        self.results: dict[tuple[str, int], tuple[int, float, float]] = {}
        """(stream, frame) → (class index, latency ms, arrival monotonic)."""
        self.duplicates = 0
        self.fusion_online = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.comm.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.comm.stop(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.comm.get(timeout=0.1)
            if msg is None:
                continue
            parsed = self.topics.parse(msg.topic)
            try:
                if parsed and parsed.kind == "result":
                    r = wire_decode(msg.payload, Result)
                    key = (r.stream_id, r.frame_id)
                    if key in self.results:
                        self.duplicates += 1
                    self.results[key] = (r.class_index, r.latency_ms, time.monotonic())
                elif parsed and parsed.kind == "fusion_stats" and msg.payload:
                    self.stats = wire_decode(msg.payload, Stats)
                elif parsed and parsed.kind in ("fusion_status", "sensor_status") and msg.payload:
                    status = wire_decode(msg.payload, Status)
                    if parsed.kind == "fusion_status":
                        self.fusion_online = status.state == "online"
                    if not msg.retain:
                        events = self.offline if status.state == "offline" else self.online_at
                        events.append((status.agent_id, time.monotonic()))
                    if status.state == "online":
                        self.online.add(status.agent_id)
                    else:
                        self.online.discard(status.agent_id)
            except WireError:
                continue

    def first_after(self, t: float, streams: set[str] | None = None) -> float | None:
        """Arrival time of the first result after monotonic ``t`` (of one of ``streams``)."""
        times = [at for (s, _f), (_c, _l, at) in list(self.results.items())
                 if at > t and (streams is None or s in streams)]
        return min(times) if times else None

    def count_between(self, t0: float, t1: float, streams: set[str]) -> int:
        return sum(1 for (s, _f), (_c, _l, at) in list(self.results.items()) if t0 <= at < t1 and s in streams)


@dataclass
class Bus:
    """A private broker, a fusion process, a recorder and legitimate sensor processes for one scenario."""

    settings: FaultSettings
    name: str
    persistence: bool = False
    production: bool = False
    """Run the production config (accounts, ACL, TLS for the sensors) instead of the development one."""
    result_qos: int = 0
    """QoS of fusion's results (``nairbus fusion --result-qos``)."""
    broker: PrivateMosquitto | None = None
    secure: SecureBroker | None = None
    fusion: subprocess.Popen[bytes] | None = None
    recorder: Recorder | None = None
    sensors: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    fusion_starts: int = 0
    groups: CpuGroups = field(default_factory=CpuGroups)
    """The hub (this process, and so the broker and the fusion agent it starts) and every device (sensor,
    attacker) in CPU groups of their own, as if on machines of their own."""

    def isolation(self) -> dict[str, Any]:
        """How the processes were kept apart, and how often each device ran into its CPU cap."""
        if not self.groups.active:
            return dict(self.groups.isolation)
        return {**self.groups.isolation, "throttled": self.groups.throttled()}

    @property
    def dir(self) -> Path:
        path = self.settings.run_dir / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def root(self) -> str:
        return SECURE_ROOT if self.production else ROOT

    def env(self, account: str | None = None) -> dict[str, str]:
        """The environment of an agent process; on the production config, ``account``'s credentials: the fusion
        agent on the hub's loopback listener with its password, a sensor over TLS with its client certificate."""
        assert self.broker is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NAIRBUS_", "NOTIFY_SOCKET"))}
        env.update({"NAIRBUS_BROKER__HOST": self.broker.host, "NAIRBUS_BROKER__PORT": str(self.broker.port),
                    "NAIRBUS_BROKER__RECONNECT_MIN_S": "0.2", "NAIRBUS_BROKER__RECONNECT_MAX_S": "1.0",
                    "NAIRBUS_TOPICS__ROOT": self.root, "NAIRBUS_TOPICS__SITE": SITE, "NAIRBUS_LOG__FORMAT": "json",
                    "COLUMNS": "200"})
        if self.secure is not None and account is not None:
            tls = account != FUSION_ACCOUNT
            broker = self.secure.settings(account, tls=tls)
            for name in ("port", "username", "password_file", "tls_ca", "tls_cert", "tls_key"):
                value = getattr(broker, name)
                if value is not None:
                    env[f"NAIRBUS_BROKER__{name.upper()}"] = str(value)
        if self.settings.data_dir is not None:
            env["NAIRBUS_DATA_DIR"] = str(self.settings.data_dir)
        return env

    def device_env(self, account: str | None = None) -> dict[str, str]:
        """A device process's environment: with CPU groups, one compute thread (a device capped below one core
        is a one-core device; more threads would spin against the cap)."""
        env = self.env(account)
        if self.groups.active:
            env["OMP_NUM_THREADS"] = "1"
        return env

    def _spawn(self, name: str, args: list[str], account: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        handle = (self.dir / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "nairbus.agents.cli", *args], env=env or self.env(account),
                                stdout=handle, stderr=handle, cwd=None, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        if self.settings.device_cpus is not None:
            self.groups = CpuGroups(device_cpus=self.settings.device_cpus).open()
            self.groups.hub(os.getpid())
        else:
            self.groups.isolation = {"kind": None, "why": "turned off (--device-cpus 0)"}
        if self.production:
            accounts = (*(f"good-{i}" for i in range(self.settings.legit_sensors)), ATTACKER, "late")
            self.secure = SecureBroker(sensors=accounts).start()
            self.broker = self.secure.broker
            recorder = self.secure.settings(OBSERVER, reconnect_min_s=0.1, reconnect_max_s=0.5)
        else:
            self.broker = PrivateMosquitto(persistence=self.persistence).start()
            recorder = BrokerSettings(port=self.broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5)
        self.recorder = Recorder(recorder, self.root)
        self.recorder.start()
        self.start_fusion()

    def start_fusion(self, timeout: float = 60.0) -> float:
        """Start the fusion process; seconds until it said online."""
        assert self.recorder is not None
        self.recorder.fusion_online = False
        began = time.monotonic()
        self.fusion = self._spawn(f"fusion-{self.fusion_starts}", [
            "fusion", "--deadline-ms", str(self.settings.deadline_ms), "--stats-interval", "1",
            "--result-qos", str(self.result_qos)], FUSION_ACCOUNT)
        self.fusion_starts += 1
        while not self.recorder.fusion_online:
            if self.fusion.poll() is not None:
                raise RuntimeError(f"fusion exited with {self.fusion.returncode}; see {self.dir}")
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"fusion not online within {timeout:g} s; see {self.dir}")
            time.sleep(0.05)
        return time.monotonic() - began

    def start_sensors(self, seconds: float) -> dict[str, range]:
        """Legitimate sensors for about ``seconds``; their frame ids (test-set indices) by stream."""
        s = self.settings
        count = max(1, round(seconds * s.legit_fps))
        frames = {}
        for i in range(s.legit_sensors):
            sid = f"good-{i}"
            start = i * count
            self.sensors[sid] = self._spawn(sid, [
                "sensor", "--mode", "nair", "--sensor-id", sid, "--start", str(start), "--count", str(count), "--fps",
                str(s.legit_fps), "--budget-fraction", "1.0", "--no-link-fit",
                "--deadline-ms", str(s.deadline_ms)], sid, self.device_env(sid))
            self.groups.device(sid, self.sensors[sid].pid)
            frames[sid] = range(start, start + count)
        self.wait_online(set(frames))
        return frames

    def wait_online(self, agents: set[str], timeout: float = 90.0) -> None:
        """Wait until every one of ``agents`` said online (a loaded machine can take seconds to start a sensor
        process; a fault injected before that would test the harness, not the bus)."""
        assert self.recorder is not None
        end = time.monotonic() + timeout
        while not agents <= self.recorder.online:
            if time.monotonic() > end:
                raise RuntimeError(f"{sorted(agents - self.recorder.online)} not online within {timeout:g} s")
            for sid in agents:
                proc = self.sensors.get(sid)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"sensor {sid} exited with {proc.returncode}; see {self.dir}")
            time.sleep(0.05)

    def wait_sensors(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Wait for the sensors to finish; their counters (last JSON line of their output) and exit codes."""
        out: dict[str, dict[str, Any]] = {}
        end = time.monotonic() + timeout
        for sid, proc in self.sensors.items():
            try:
                proc.wait(max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            counters: dict[str, Any] = {}
            for line in reversed((self.dir / f"{sid}.log").read_text(errors="replace").splitlines()):
                if line.startswith("{") and '"event"' not in line:
                    with suppress(ValueError):
                        counters = json.loads(line)
                        break
            out[sid] = {"exit": proc.returncode, **counters}
        return out

    def close(self) -> None:
        for proc in [*self.sensors.values(), self.fusion]:
            if proc is not None and proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.recorder is not None:
            self.recorder.stop()
        if self.secure is not None:
            self.secure.close()
        elif self.broker is not None:
            self.broker.close()
        self.groups.close()


@contextmanager
def bus(settings: FaultSettings, name: str, persistence: bool = False, production: bool = False,
        result_qos: int = 0) -> Iterator[Bus]:
    b = Bus(settings, name, persistence, production, result_qos)
    try:
        b.start()
        yield b
    finally:
        b.close()


# ----- what the legitimate devices got ------------------------------------------------------------------------------

class Expected:
    """The offline pipeline's labels for test images with the whole IR: what a fault-free run decides."""

    def __init__(self, data_dir: Path | None) -> None:
        from nairbus.models.data.registry import load_data
        from nairbus.models.nair.pipeline import NairPipeline
        from nairbus.models.store import sensor_artifact_path

        self.pipeline = NairPipeline.load("base", sensor_artifact_path("base"))
        self.test = load_data("test", data_dir=data_dir)
        self._labels: dict[int, int] = {}

    def labels(self, ids: list[int]) -> dict[int, int]:
        todo = sorted(set(ids) - self._labels.keys())
        if todo:
            codes = self.pipeline.encode_all(self.test.images[todo])
            ends = np.full(len(todo), self.pipeline.artifact.n_components)
            pred = self.pipeline.prefix_probs(codes, ends).argmax(1)
            self._labels.update(zip(todo, pred.tolist(), strict=True))
        return {i: self._labels[i] for i in ids}


def legit_summary(b: Bus, frames: dict[str, range], counters: dict[str, dict[str, Any]],
                  expected: Expected) -> dict[str, Any]:
    """Frames the legitimate sensors sent, what was decided, lost, late, and whether the labels are the offline ones."""
    assert b.recorder is not None
    results = b.recorder.results
    sent = sum(int(c.get("frames_sent", 0)) for c in counters.values())
    decided = [(sid, f) for sid, ids in frames.items() for f in ids if (sid, f) in results]
    labels = expected.labels([f for _s, f in decided])
    mismatched = sum(1 for sid, f in decided if results[(sid, f)][0] != labels[f])
    latencies = np.array([results[k][1] for k in decided]) if decided else np.zeros(1)
    return {
        "frames_captured": sum(int(c.get("frames", 0)) for c in counters.values()),
        "frames_sent": sent, "frames_decided": len(decided), "frames_lost": max(0, sent - len(decided)),
        "skipped_offline": sum(int(c.get("skipped_offline", 0)) for c in counters.values()),
        "labels_identical_to_offline": mismatched == 0, "labels_mismatched": mismatched,
        "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
        "within_deadline": float(np.mean(latencies <= b.settings.deadline_ms)),
        "duplicates": b.recorder.duplicates,
        "sensor_exits": {sid: c.get("exit") for sid, c in counters.items()},
        "cpu_isolation": b.isolation(),
    }


# ----- hostile traffic ----------------------------------------------------------------------------------------------

def run_attacker(b: Bus, mode: str, seconds: float, count: int = 0) -> dict[str, Any]:
    """Run the hostile device (:mod:`nairbus.agents.tools.attacker`) as a process in a CPU group of its own; what it
    sent, with ``t0`` / ``t1``: the monotonic times its attack began and ended."""
    assert b.broker is not None
    args = [sys.executable, "-m", "nairbus.agents.tools.attacker", mode, "--host", b.broker.host, "--port",
            str(b.broker.port), "--root", b.root, "--site", SITE, "--seconds", str(seconds), "--count", str(count)]
    if b.settings.data_dir is not None:
        args += ["--data-dir", str(b.settings.data_dir)]
    log_file = (b.dir / f"attacker-{mode}.log").open("ab")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                            env=b.device_env(None))
    b.groups.device(ATTACKER, proc.pid)
    t0 = t1 = None
    out: dict[str, Any] = {}
    timer = threading.Timer(seconds + 120.0, proc.kill)  # startup, the attack and the final flush, bounded
    timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            with suppress(ValueError):
                obj = json.loads(line)
                if obj.get("event") == "attacking":
                    t0 = time.monotonic()
                elif "sent" in obj:
                    t1, out = time.monotonic(), obj
        proc.wait()
    finally:
        timer.cancel()
        log_file.close()
    if t0 is None or t1 is None:
        raise RuntimeError(f"the attacker exited with {proc.returncode} before reporting; see {b.dir}")
    return {**out, "t0": t0, "t1": t1}


# ----- scenarios ----------------------------------------------------------------------------------------------------

def _fusion_alive(b: Bus) -> bool:
    return b.fusion is not None and b.fusion.poll() is None


def scenario_fuzz(settings: FaultSettings, expected: Expected) -> dict[str, Any]:
    with bus(settings, "fuzz") as b:
        assert b.recorder is not None
        frames = b.start_sensors(seconds=settings.fuzz_seconds + 20.0)
        streams = set(frames)
        time.sleep(8.0)
        rss_before = _rss_kib(b.fusion.pid if b.fusion else None)
        t = time.monotonic()
        rate_before = b.recorder.count_between(t - 5.0, t, streams) / 5.0
        attack = run_attacker(b, "fuzz", settings.fuzz_seconds, settings.fuzz_messages)
        t0, t1 = attack["t0"], attack["t1"]
        rate_during = b.recorder.count_between(t0, t1, streams) / max(t1 - t0, 1e-9)
        counters = b.wait_sensors(timeout=120)
        time.sleep(2.0)
        rss_after = _rss_kib(b.fusion.pid if b.fusion else None)
        return {"hostile_messages": attack["sent"], "kinds": attack["kinds"], "seconds": round(t1 - t0, 1),
                "fusion_alive": _fusion_alive(b), "fusion_restarts": b.fusion_starts - 1,
                "legit_rate_before": rate_before, "legit_rate_during": rate_during,
                "legit_rate_ratio": rate_during / rate_before if rate_before else None,
                "fusion_rss_kib_before": rss_before, "fusion_rss_kib_after": rss_after,
                "fusion_rss_growth": (rss_after / rss_before) if rss_before and rss_after else None,
                "legit": legit_summary(b, frames, counters, expected)}


def scenario_flood(settings: FaultSettings, expected: Expected) -> dict[str, Any]:
    with bus(settings, "flood") as b:
        assert b.recorder is not None
        frames = b.start_sensors(seconds=settings.flood_seconds + 20.0)
        time.sleep(5.0)
        rss_before = _rss_kib(b.fusion.pid if b.fusion else None)
        attack = run_attacker(b, "flood", settings.flood_seconds)
        flood_s = attack["t1"] - attack["t0"]
        counters = b.wait_sensors(timeout=120)
        time.sleep(2.0)
        return {"flood_messages": attack["sent"], "seconds": round(flood_s, 1),
                "flood_rate_msg_s": attack["sent"] / max(attack["seconds"], 1e-9),
                "fusion_alive": _fusion_alive(b), "fusion_rss_kib_before": rss_before,
                "fusion_rss_kib_after": _rss_kib(b.fusion.pid if b.fusion else None),
                "legit": legit_summary(b, frames, counters, expected)}


def scenario_broker_kill(settings: FaultSettings, expected: Expected) -> list[dict[str, Any]]:
    runs = []
    for persistence in (False, True):
        for outage in settings.outages_s:
            name = f"broker-kill-{outage:g}s-{'persist' if persistence else 'nopersist'}"
            # Results at QoS 1: a result in flight when the broker dies is sent again (at QoS 0 it is lost with the
            # broker although its frame was decided — what the recorder would then count as a lost frame).
            with bus(settings, name, persistence=persistence, result_qos=1) as b:
                assert b.broker is not None
                assert b.recorder is not None
                frames = b.start_sensors(seconds=outage + 25.0)
                streams = set(frames)
                time.sleep(8.0)
                b.broker.kill()
                killed = time.monotonic()
                time.sleep(outage)
                b.broker.start()
                back = time.monotonic()
                first: dict[str, float | None] = dict.fromkeys(streams)
                while time.monotonic() - back < 30 and None in first.values():
                    for sid in streams:
                        if first[sid] is None:
                            at = b.recorder.first_after(back, {sid})
                            first[sid] = None if at is None else at - back
                    time.sleep(0.1)
                counters = b.wait_sensors(timeout=120)
                time.sleep(2.0)
                runs.append({"persistence": persistence, "outage_s": outage, "result_qos": 1,
                             "measured_outage_s": round(back - killed, 2),
                             "first_result_after_return_s": first,
                             "every_sensor_known_again": all(v is not None for v in first.values()),
                             "recovered_within_bar": all(v is not None and v <= settings.recover_s
                                                         for v in first.values()),
                             "fusion_alive": _fusion_alive(b),
                             # Frames sent again after the outage but older than their expiry (10 s) are refused
                             # as "expired": a frame lost with the broker's buffers cannot come back after a longer
                             # outage than that.
                             "fusion_rejected": dict(b.recorder.stats.rejected) if b.recorder.stats else None,
                             "replays": replay_summary(b.dir),
                             "legit": legit_summary(b, frames, counters, expected)})
    return runs


def replay_summary(run_dir: Path) -> dict[str, Any]:
    """What the agents' logs in ``run_dir`` say about replays: how often a fusion agent found its session lost and
    asked the sensors to replay, and how many messages the sensors published again — after their own reconnect
    (the window before the loss) or on that request."""
    sent: Counter[str] = Counter()
    asked = 0
    for path in sorted(run_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "session_lost_replay_requested" in line:
                asked += 1
            elif "mqtt.replayed" in line:
                fields = _log_fields(line)
                sent[str(fields.get("why", "reconnect"))] += int(fields.get("messages", 0))
    return {"fusion_replay_requests": asked, "sensor_messages_replayed": dict(sent)}


def _log_fields(line: str) -> dict[str, Any]:
    """The fields of one log line: a JSON object (the agents' JSON logs), or ``key=value`` pairs (console logs)."""
    if line.startswith("{"):
        with suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                return obj
    return dict(re.findall(r"(\w+)=(\S+)", line))


def _repeat(settings: FaultSettings, expected: Expected, name: str, runs: int, per_run_s: float,
            fault: Callable[[Bus], float]) -> dict[str, Any]:
    """``runs`` faults on one bus; ``fault`` returns the monotonic time from which recovery is measured."""
    with bus(settings, name) as b:
        assert b.recorder is not None
        frames = b.start_sensors(seconds=runs * per_run_s + 15.0)
        time.sleep(5.0)
        recover = []
        for _ in range(runs):
            began = time.monotonic()
            t = fault(b)
            at = None
            while time.monotonic() - t < 30 and at is None:
                at = b.recorder.first_after(t)
                time.sleep(0.05)
            recover.append(None if at is None else round(at - t, 3))
            time.sleep(max(0.0, per_run_s - (time.monotonic() - began)))  # one run = per_run_s, fault included
        counters = b.wait_sensors(timeout=per_run_s * runs + 120)
        time.sleep(2.0)
        ok = [r for r in recover if r is not None]
        return {"runs": runs, "first_result_s": recover, "max_first_result_s": max(ok) if ok else None,
                "all_within_bar": len(ok) == runs and max(ok) <= settings.recover_s,
                "fusion_alive": _fusion_alive(b), "fusion_starts": b.fusion_starts,
                "legit": legit_summary(b, frames, counters, expected)}


def scenario_fusion_kill(settings: FaultSettings, expected: Expected) -> dict[str, Any]:
    def kill(b: Bus) -> float:
        assert b.fusion is not None
        b.fusion.kill()
        b.fusion.wait()
        restarted = time.monotonic()  # recovery is measured from the new process's start (model loading included)
        b.start_fusion()
        return restarted

    return _repeat(settings, expected, "fusion-kill", settings.kill_runs, 8.0, kill)


def scenario_fusion_stop(settings: FaultSettings, expected: Expected) -> dict[str, Any]:
    def freeze(b: Bus) -> float:
        assert b.fusion is not None
        os.kill(b.fusion.pid, signal.SIGSTOP)
        time.sleep(settings.stop_seconds)
        os.kill(b.fusion.pid, signal.SIGCONT)
        return time.monotonic()

    return _repeat(settings, expected, "fusion-stop", settings.stop_runs, settings.stop_seconds + 8.0, freeze)


# ----- one account against the others (production config) ----------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, username: str | None = None, password: str | None = None,
                   keepalive: int = 120) -> bytes:
    """An MQTT 5 CONNECT packet (clean start, no will, no properties)."""
    flags, payload = 0x02, _mqtt_string(client_id.encode())
    if username is not None:
        flags, payload = flags | 0x80, payload + _mqtt_string(username.encode())
    if password is not None:
        flags, payload = flags | 0x40, payload + _mqtt_string(password.encode())
    body = _mqtt_string(b"MQTT") + bytes([5, flags]) + keepalive.to_bytes(2, "big") + b"\x00" + payload
    return b"\x10" + _varint(len(body)) + body


class RawClient:
    """One hand-made MQTT connection (no network thread: an attacker holding hundreds of them)."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float = 5.0) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock: socket.socket = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw

    def connect(self, client_id: str, username: str | None, password: str | None) -> int:
        """Send CONNECT; the CONNACK's reason code (0: accepted), or -1 when the broker closed the connection."""
        try:
            self.sock.sendall(connect_packet(client_id, username, password))
            head = self.sock.recv(2)
            if len(head) < 2 or head[0] != 0x20:
                return -1
            rest = self.sock.recv(head[1])
            return rest[1] if len(rest) >= 2 else -1
        except (OSError, ssl.SSLError):
            return -1

    def open(self) -> bool:
        """Whether the broker still holds the connection (it sends DISCONNECT and closes one it took over)."""
        try:
            self.sock.setblocking(False)
            self.sock.recv(64)  # data (the broker's DISCONNECT) or EOF: the broker closed it
            return False
        except (BlockingIOError, ssl.SSLWantReadError):
            return True
        except (OSError, ssl.SSLError):
            return False

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def _attacker_tls(secure: SecureBroker) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(secure.dir / "ca.crt"))
    ctx.load_cert_chain(secure.dir / "clients" / f"{ATTACKER}.crt", secure.dir / "clients" / f"{ATTACKER}.key")
    return ctx


def _kicked_in_log(secure: SecureBroker, victims: list[str]) -> int:
    """Lines of the broker's log saying it closed a victim's connection for a newer one with its id."""
    return sum(1 for line in secure.log().splitlines() if "closing old connection" in line
               and any(f"Client {v} " in line for v in victims))


def _identity_summary(b: Bus, frames: dict[str, range], counters: dict[str, dict[str, Any]], expected: Expected,
                      window: tuple[float, float]) -> dict[str, Any]:
    """What the attack cost its victims; ``window``: the attack's monotonic start and end. An offline status in it, or
    up to 2 s after it, is a victim knocked off — the fusion agent's always (it never stops by itself), a sensor's
    when the sensor came back online afterwards (a sensor that ended its run in the window stops for good; the
    broker's log counts every connection it closed for another, whenever)."""
    assert b.recorder is not None
    assert b.secure is not None
    victims = ["fusion-1", *frames]
    returned = b.recorder.online_at

    def knocked_off(who: str, at: float) -> bool:
        return who == "fusion-1" or any(w == who and t > at for w, t in returned)

    offline = [who for who, at in b.recorder.offline
               if window[0] <= at <= window[1] + 2.0 and who in victims and knocked_off(who, at)]
    return {"victims": victims, "victim_offline_events": len(offline),
            "victim_connections_closed_by_broker": _kicked_in_log(b.secure, [FUSION_ACCOUNT, *frames]),
            "fusion_alive": _fusion_alive(b), "legit": legit_summary(b, frames, counters, expected)}


def scenario_takeover(settings: FaultSettings, expected: Expected, repeats: int = 5,
                      run_s: float = 30.0) -> dict[str, Any]:
    """One device's account connects with the fusion agent's and the other sensors' client ids and user names."""
    with bus(settings, "takeover", production=True) as b:
        assert b.secure is not None
        assert b.broker is not None
        frames = b.start_sensors(seconds=run_s)
        time.sleep(8.0)
        since = time.monotonic()
        password = b.secure.password_file(ATTACKER).read_text().strip()
        tls = _attacker_tls(b.secure)
        targets = [FUSION_ACCOUNT, "nairbus-fusion-fusion-1", *frames, *(f"nairbus-sensor-{sid}" for sid in frames)]
        attempts = accepted = 0
        for _ in range(repeats):
            for target in targets:
                # The loopback listener with the attacker's password; the TLS listener with the attacker's
                # certificate and the victim's name as user name (the certificate decides who it is).
                for port, ctx, user in ((b.secure.port, None, ATTACKER), (b.secure.tls_port, tls, target)):
                    client = RawClient(b.broker.host, port, ctx)
                    attempts += 1
                    accepted += client.connect(target, user, password) == 0
                    time.sleep(0.05)
                    client.close()
        ended = time.monotonic()
        time.sleep(2.0)
        counters = b.wait_sensors(timeout=120)
        time.sleep(2.0)
        return {"attempts": attempts, "accepted": accepted, "seconds": round(ended - since, 1),
                "client_ids_tried": targets, **_identity_summary(b, frames, counters, expected, (since, ended))}


def scenario_exhaustion(settings: FaultSettings, expected: Expected, tls_connections: int = 600,
                        loopback_connections: int = 80, time_limit_s: float = 60.0,
                        run_s: float = 40.0) -> dict[str, Any]:
    """One device's credentials open more connections than each listener allows, and hold them."""
    with bus(settings, "exhaustion", production=True) as b:
        assert b.secure is not None
        assert b.broker is not None
        frames = b.start_sensors(seconds=run_s)
        time.sleep(8.0)
        since = time.monotonic()
        password = b.secure.password_file(ATTACKER).read_text().strip()
        tls = _attacker_tls(b.secure)
        held: list[RawClient] = []
        accepted = refused = 0
        for port, ctx, n in ((b.secure.tls_port, tls, tls_connections), (b.secure.port, None, loopback_connections)):
            for i in range(n):
                if time.monotonic() - since > time_limit_s:
                    break
                try:
                    client = RawClient(b.broker.host, port, ctx)
                except (OSError, ssl.SSLError):
                    refused += 1
                    continue
                code = client.connect(f"{ATTACKER}-{port}-{i}", ATTACKER if ctx is None else None,
                                      password if ctx is None else None)
                accepted += code == 0
                refused += code != 0
                held.append(client)
        open_s = time.monotonic() - since
        # While every one of those is held: a device that was not connected before joins, over TLS.
        newcomer = Communicator(b.secure.settings("late", tls=True), "late", None, lambda _s: b"{}")
        try:
            newcomer.start(timeout=10.0)
            newcomer_joined = newcomer.connected.is_set()
        except ConnectionError:
            newcomer_joined = False
        finally:
            newcomer.stop(timeout=1.0)
        time.sleep(1.0)
        still_open = sum(client.open() for client in held)
        for client in held:
            client.close()
        ended = time.monotonic()
        counters = b.wait_sensors(timeout=120)
        time.sleep(2.0)
        return {"connections_attempted": tls_connections + loopback_connections, "accepted": accepted,
                "refused": refused, "seconds": round(open_s, 1), "attacker_connections_still_open": still_open,
                "newcomer_joined": newcomer_joined,
                **_identity_summary(b, frames, counters, expected, (since, ended))}


RUNNERS: dict[str, Callable[[FaultSettings, Expected], Any]] = {
    "fuzz": scenario_fuzz, "flood": scenario_flood, "broker-kill": scenario_broker_kill,
    "fusion-kill": scenario_fusion_kill, "fusion-stop": scenario_fusion_stop,
    "takeover": scenario_takeover, "exhaustion": scenario_exhaustion,
}


def run_faults(settings: FaultSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the chosen scenarios; the report (also written to ``settings.report`` after each scenario)."""
    unknown = set(settings.scenarios) - set(RUNNERS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; choose from {list(RUNNERS)}")
    expected = Expected(settings.data_dir)
    report: dict[str, Any] = {"command": command_line(settings), "settings": _jsonable(asdict(settings)),
                              "scenarios": {}, "complete": False}
    started = time.monotonic()
    for name in settings.scenarios:
        say(f"{name} ...")
        t = time.monotonic()
        try:
            report["scenarios"][name] = RUNNERS[name](settings, expected)
        except Exception as exc:  # a scenario that breaks the harness is recorded, the others still run
            log.exception("scenario_failed", scenario=name)
            report["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        report["scenarios"][name] = {"wall_seconds": round(time.monotonic() - t, 1), "result":
                                     report["scenarios"][name]}
        say(f"{name}: {json.dumps(report['scenarios'][name], default=str)[:400]}")
        _write(settings.report, report)
    report["complete"] = True
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    _write(settings.report, report)
    return report


def command_line(settings: FaultSettings) -> str:
    default = FaultSettings()
    parts = ["nairbus bench faults"]
    for name in ("fuzz_messages", "flood_seconds", "kill_runs", "stop_runs", "stop_seconds"):
        if getattr(settings, name) != getattr(default, name):
            parts.append(f"--{name.replace('_', '-')} {getattr(settings, name)}")
    if settings.scenarios != default.scenarios:
        parts += [f"--scenario {s}" for s in settings.scenarios]
    if settings.outages_s != default.outages_s:
        parts.append("--outages " + ",".join(f"{o:g}" for o in settings.outages_s))
    if settings.device_cpus != default.device_cpus:
        parts.append(f"--device-cpus {settings.device_cpus or 0:g}")
    return " ".join(parts)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _write(path: Path, report: dict[str, Any]) -> None:
    write_report(path, FaultsReport.from_data(report, lenient=True))


def quick(settings: FaultSettings) -> FaultSettings:
    """A short version for CI: every scenario, fewer and shorter faults."""
    return replace(settings, fuzz_messages=20_000, fuzz_seconds=10.0, flood_seconds=3.0, outages_s=(2.0,),
                   kill_runs=2, stop_runs=1, stop_seconds=5.0)
