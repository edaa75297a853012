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
- ``fusion-stop``: the fusion agent is frozen (SIGSTOP) for ``stop_seconds`` and resumed, ``stop_runs`` times.

Per scenario the report holds the hostile messages sent, the legitimate frames sent / decided / lost, whether their
labels equal the offline pipeline's on the same images (what a fault-free run decides), the result rate before and
during the fault, times to recover, fusion restarts and crashes, and fusion memory before and after. Client-id
takeover and connection exhaustion need the production config's accounts: ``tests/deploy/test_secure_broker.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import numpy as np

from agents.runtime.logging import get_logger
from agents.runtime.mosquitto import PrivateMosquitto
from agents.runtime.mqtt import Communicator
from agents.runtime.settings import BrokerSettings
from schemas import Result, Status
from schemas import decode as wire_decode
from schemas.codec import WireError
from schemas.topics import TopicTree

log = get_logger("nairbus.faultbench")

SCENARIOS = ("fuzz", "flood", "broker-kill", "fusion-kill", "fusion-stop")
ROOT, SITE = "nairbus-faults", "bench"
U64 = 2**64 - 1


@dataclass(frozen=True)
class FaultSettings:
    """What to attack and how hard; every loop is bounded in count and time."""

    scenarios: tuple[str, ...] = SCENARIOS
    fuzz_messages: int = 100_000
    fuzz_seconds: float = 45.0
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

    def __init__(self, port: int) -> None:
        self.topics = TopicTree(ROOT, SITE)
        settings = BrokerSettings(port=port, reconnect_min_s=0.1, reconnect_max_s=0.5)
        self.comm = Communicator(settings, "nairbus-faultbench-recorder", None, lambda _s: b"{}")
        self.comm.subscribe(self.topics.all_results(), qos=0)
        self.comm.subscribe(self.topics.all_fusion("status"), qos=1)
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
                elif parsed and parsed.kind == "fusion_status":
                    self.fusion_online = wire_decode(msg.payload, Status).state == "online"
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
    broker: PrivateMosquitto | None = None
    fusion: subprocess.Popen[bytes] | None = None
    recorder: Recorder | None = None
    sensors: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    fusion_starts: int = 0

    @property
    def dir(self) -> Path:
        path = self.settings.run_dir / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        assert self.broker is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NAIRBUS_", "NOTIFY_SOCKET"))}
        env.update({"NAIRBUS_BROKER__HOST": self.broker.host, "NAIRBUS_BROKER__PORT": str(self.broker.port),
                    "NAIRBUS_BROKER__RECONNECT_MIN_S": "0.2", "NAIRBUS_BROKER__RECONNECT_MAX_S": "1.0",
                    "NAIRBUS_TOPICS__ROOT": ROOT, "NAIRBUS_TOPICS__SITE": SITE, "NAIRBUS_LOG__FORMAT": "json",
                    "COLUMNS": "200"})
        if self.settings.data_dir is not None:
            env["NAIRBUS_DATA_DIR"] = str(self.settings.data_dir)
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        handle = (self.dir / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "agents.cli", *args], env=self.env(), stdout=handle,
                                stderr=handle, cwd=None, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        self.broker = PrivateMosquitto(persistence=self.persistence).start()
        self.recorder = Recorder(self.broker.port)
        self.recorder.start()
        self.start_fusion()

    def start_fusion(self, timeout: float = 60.0) -> float:
        """Start the fusion process; seconds until it said online."""
        assert self.recorder is not None
        self.recorder.fusion_online = False
        began = time.monotonic()
        self.fusion = self._spawn(f"fusion-{self.fusion_starts}", [
            "fusion", "--deadline-ms", str(self.settings.deadline_ms), "--stats-interval", "1"])
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
                "sensor", "--sensor-id", sid, "--start", str(start), "--count", str(count), "--fps",
                str(s.legit_fps), "--budget-fraction", "1.0", "--no-link-fit",
                "--deadline-ms", str(s.deadline_ms)])
            frames[sid] = range(start, start + count)
        return frames

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
        if self.broker is not None:
            self.broker.close()


@contextmanager
def bus(settings: FaultSettings, name: str, persistence: bool = False) -> Iterator[Bus]:
    b = Bus(settings, name, persistence)
    try:
        b.start()
        yield b
    finally:
        b.close()


# ----- what the legitimate devices got ------------------------------------------------------------------------------

class Expected:
    """The offline pipeline's labels for test images with the whole IR: what a fault-free run decides."""

    def __init__(self, data_dir: Path | None) -> None:
        from models.data import load_split
        from models.pipeline import NairPipeline
        from models.store import sensor_artifact_path

        self.pipeline = NairPipeline.load("base", sensor_artifact_path("base"))
        self.test = load_split("test", data_dir)
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
    }


# ----- hostile traffic ----------------------------------------------------------------------------------------------

class Attacker:
    """A known sensor (in this process, with a valid birth) whose messages are hostile."""

    def __init__(self, b: Bus, sensor_id: str = "evil") -> None:
        from agents.nair.sensor import SensorAgent
        from agents.runtime.config import AgentConfig, SensorSettings

        assert b.broker is not None
        cfg = AgentConfig.model_validate({
            "broker": {"host": b.broker.host, "port": b.broker.port, "max_outgoing": 50_000},
            "topics": {"root": ROOT, "site": SITE},
            "sensor": SensorSettings(sensor_id=sensor_id, link_fit=False, budget_fraction=1.0).model_dump()})
        self.agent = SensorAgent(cfg)
        self.agent.start()
        self.topics = TopicTree(ROOT, SITE)
        self.sid = sensor_id
        self.rng = random.Random(17)
        self.sent = 0
        self.refused = 0
        self.kinds: dict[str, int] = {}
        from models.data import load_split

        self.images = load_split("test", b.settings.data_dir).images[:64]
        self.codes = self.agent.pipeline.encode(self.images)

    def valid_frame(self, frame_id: int) -> list[bytes]:
        out = self.agent.build(frame_id, self.images[frame_id % 64], self.codes[frame_id % 64], time.time(), None)
        return [m.payload for m in out]

    def publish(self, topic: str, payload: bytes, kind: str) -> None:
        while not self.agent.comm.publish(topic, payload, qos=0, content_type=None, alias=True):
            self.refused += 1
            time.sleep(0.002)  # paho's queue is full: wait rather than drop (every hostile message is sent)
            if not self.agent.comm.connected.is_set():
                return
        self.sent += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def hostile(self, i: int) -> tuple[str, bytes, str]:
        """The i-th hostile message: (topic, payload, kind)."""
        r = self.rng
        frag, image, topk = (self.topics.sensor_frag(self.sid), self.topics.sensor_image(self.sid),
                             self.topics.sensor_topk(self.sid))
        choice = i % 8
        if choice == 0:
            n = r.choice((0, 1, 7, 64, 500, 4000))
            return r.choice((frag, image, topk)), r.randbytes(n), "random_bytes"
        if choice == 1:
            payload = bytearray(self.valid_frame(r.randrange(64))[0])
            for _ in range(r.randint(1, 4)):
                payload[r.randrange(len(payload))] ^= 1 << r.randrange(8)
            return frag, bytes(payload), "byte_flips"
        if choice == 2:
            tag = self.agent.ctx.tag
            fields = [2, tag, r.choice((0, U64, r.randrange(U64))), r.choice((0, U64, r.randrange(2**40))),
                      r.choice((0, 2**40 - 1, r.randrange(10**6))), r.choice((0, U64, 5)),
                      r.choice((0, 1, U64)), r.choice((0, U64, 6272)), b"\x00" * r.choice((0, 1, 100))]
            return frag, msgpack.packb(fields), "extreme_fields"
        if choice == 3:
            payload = msgpack.unpackb(self.valid_frame(r.randrange(64))[0])
            payload[1] = (payload[1] + 1 + r.randrange(126)) % 128  # another session's tag
            return frag, msgpack.packb(payload), "wrong_session"
        if choice == 4:
            payload = msgpack.unpackb(self.valid_frame(r.randrange(64))[0])
            payload[4] = 0  # captured at the epoch: long expired
            return frag, msgpack.packb(payload), "expired"
        if choice == 5:
            return r.choice((frag, image)), r.randbytes(60_000), "oversize"
        if choice == 6:
            payload = msgpack.unpackb(self.valid_frame(r.randrange(64))[0])
            payload[2] = r.choice((U64, 2**63 + r.randrange(2**62)))  # sequence jumps to the top
            return frag, msgpack.packb(payload), "seq_jump"
        return r.choice((image, topk)), msgpack.packb([2, 0, 1, 2, 3, [1, 2], b"x"]), "wrong_kind"

    def fuzz(self, count: int, seconds: float) -> float:
        began = time.monotonic()
        for i in range(count):
            if time.monotonic() - began > seconds:
                break
            topic, payload, kind = self.hostile(i)
            self.publish(topic, payload, kind)
        self.agent.comm.wait_published(timeout=30)
        return time.monotonic() - began

    def flood(self, seconds: float) -> float:
        began = time.monotonic()
        frame_id = 10**6
        while time.monotonic() - began < seconds:
            for payload in self.valid_frame(frame_id):
                self.publish(self.topics.sensor_frag(self.sid), payload, "valid_flood")
            frame_id += 1
        self.agent.comm.wait_published(timeout=30)
        return time.monotonic() - began

    def close(self) -> None:
        self.agent.stop()


# ----- scenarios ----------------------------------------------------------------------------------------------------

def _fusion_alive(b: Bus) -> bool:
    return b.fusion is not None and b.fusion.poll() is None


def scenario_fuzz(settings: FaultSettings, expected: Expected) -> dict[str, Any]:
    with bus(settings, "fuzz") as b:
        assert b.recorder is not None
        frames = b.start_sensors(seconds=settings.fuzz_seconds + 15.0)
        streams = set(frames)
        time.sleep(8.0)
        rss_before = _rss_kib(b.fusion.pid if b.fusion else None)
        t0 = time.monotonic()
        rate_before = b.recorder.count_between(t0 - 5.0, t0, streams) / 5.0
        attacker = Attacker(b)
        try:
            fuzz_s = attacker.fuzz(settings.fuzz_messages, seconds=settings.fuzz_seconds)
        finally:
            attacker.close()
        t1 = time.monotonic()
        rate_during = b.recorder.count_between(t0, t1, streams) / max(t1 - t0, 1e-9)
        counters = b.wait_sensors(timeout=120)
        time.sleep(2.0)
        rss_after = _rss_kib(b.fusion.pid if b.fusion else None)
        return {"hostile_messages": attacker.sent, "kinds": attacker.kinds, "seconds": round(fuzz_s, 1),
                "fusion_alive": _fusion_alive(b), "fusion_restarts": b.fusion_starts - 1,
                "legit_rate_before": rate_before, "legit_rate_during": rate_during,
                "legit_rate_ratio": rate_during / rate_before if rate_before else None,
                "fusion_rss_kib_before": rss_before, "fusion_rss_kib_after": rss_after,
                "fusion_rss_growth": (rss_after / rss_before) if rss_before and rss_after else None,
                "legit": legit_summary(b, frames, counters, expected)}


def scenario_flood(settings: FaultSettings, expected: Expected) -> dict[str, Any]:
    with bus(settings, "flood") as b:
        assert b.recorder is not None
        frames = b.start_sensors(seconds=settings.flood_seconds + 15.0)
        time.sleep(5.0)
        rss_before = _rss_kib(b.fusion.pid if b.fusion else None)
        attacker = Attacker(b)
        try:
            flood_s = attacker.flood(settings.flood_seconds)
        finally:
            attacker.close()
        counters = b.wait_sensors(timeout=120)
        time.sleep(2.0)
        return {"flood_messages": attacker.sent, "seconds": round(flood_s, 1),
                "flood_rate_msg_s": attacker.sent / max(flood_s, 1e-9),
                "fusion_alive": _fusion_alive(b), "fusion_rss_kib_before": rss_before,
                "fusion_rss_kib_after": _rss_kib(b.fusion.pid if b.fusion else None),
                "legit": legit_summary(b, frames, counters, expected)}


def scenario_broker_kill(settings: FaultSettings, expected: Expected) -> list[dict[str, Any]]:
    runs = []
    for persistence in (False, True):
        for outage in settings.outages_s:
            name = f"broker-kill-{outage:g}s-{'persist' if persistence else 'nopersist'}"
            with bus(settings, name, persistence=persistence) as b:
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
                runs.append({"persistence": persistence, "outage_s": outage,
                             "measured_outage_s": round(back - killed, 2),
                             "first_result_after_return_s": first,
                             "every_sensor_known_again": all(v is not None for v in first.values()),
                             "recovered_within_bar": all(v is not None and v <= settings.recover_s
                                                         for v in first.values()),
                             "fusion_alive": _fusion_alive(b),
                             "legit": legit_summary(b, frames, counters, expected)})
    return runs


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


RUNNERS: dict[str, Callable[[FaultSettings, Expected], Any]] = {
    "fuzz": scenario_fuzz, "flood": scenario_flood, "broker-kill": scenario_broker_kill,
    "fusion-kill": scenario_fusion_kill, "fusion-stop": scenario_fusion_stop,
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
    return " ".join(parts)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def quick(settings: FaultSettings) -> FaultSettings:
    """A short version for CI: every scenario, fewer and shorter faults."""
    return replace(settings, fuzz_messages=20_000, fuzz_seconds=10.0, flood_seconds=3.0, outages_s=(2.0,),
                   kill_runs=2, stop_runs=1, stop_seconds=5.0)
