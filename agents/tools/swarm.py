"""A swarm of sensor sessions for ``nairbus bench scale``: many sensor connections per process, each its own MQTT
session with its retained birth and status, sending lean NAIR fragments encoded for its own session.

paho's network loop waits on its sockets with ``select()``, which takes descriptors below 1024 only, and each client
holds three (its socket and a wake-up pair): a process holds at most :data:`SENSORS_PER_PROCESS` sensors, and a
larger swarm is several worker processes (:class:`SwarmProcess`), started together and sending on one clock. A worker
needs no torch: the frames' NAIR codes come encoded already (a ``.npy`` file), each worker only packs them.

Worker protocol over a pipe: the worker connects its sensors and publishes their births, says ``("ready", n)``; it
gets ``("go", start_wall_clock)``, sends until ``seconds`` have passed, says ``("sent", {sensor: [frame ids]})``; on
``("stop",)`` it disconnects (each sensor's ``offline`` status) and ends.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import time
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.agents.nair.outgoing import NairFrameEncoder
from nairbus.agents.runtime.logging import configure_logging
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, LogSettings
from nairbus.models.nair.artifact import NairArtifact
from nairbus.schemas import CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, Birth, Status
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.lean import LeanContext
from nairbus.schemas.topics import TopicTree

__all__ = ["SENSORS_PER_PROCESS", "SwarmProcess", "SwarmSpec", "split"]

SENSORS_PER_PROCESS = 250
"""Sensor connections per worker process: 3 descriptors each stays well below ``select()``'s 1024."""


@dataclass(frozen=True, slots=True)
class SwarmSpec:
    """What one worker runs: sensors ``first`` … ``first + count - 1`` of the swarm."""

    host: str
    port: int
    root: str
    site: str
    first: int
    count: int
    birth_json: str
    """The template birth (JSON); each sensor takes it under its own id, stream and session."""
    artifact: Path
    codes: Path
    """``.npy`` of the frames' NAIR codes, one row per frame (a sensor sends them in turn)."""
    fps: float
    seconds: float
    expiry_s: float


def split(n: int) -> list[tuple[int, int]]:
    """``(first, count)`` of each worker for a swarm of ``n`` sensors (as even as the per-process bound allows)."""
    workers = max(1, -(-n // SENSORS_PER_PROCESS))
    base, extra = divmod(n, workers)
    out, first = [], 0
    for w in range(workers):
        count = base + (1 if w < extra else 0)
        out.append((first, count))
        first += count
    return out


@dataclass(slots=True)
class _Sensor:
    comm: Communicator
    birth: Birth
    encoder: NairFrameEncoder
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def _status_payload(sensor_id: str, holder: list[Communicator]) -> Any:
    def payload(state: str) -> bytes:
        return wire_encode(Status(agent_id=sensor_id, role="sensor", state=state,  # type: ignore[arg-type]
                                  session=holder[0].session, ts=time.time()))
    return payload


def _connect(spec: SwarmSpec) -> list[_Sensor]:
    topics = TopicTree(spec.root, spec.site)
    template = Birth.model_validate_json(spec.birth_json)
    artifact = NairArtifact.load(spec.artifact)
    broker = BrokerSettings(host=spec.host, port=spec.port)
    sensors = []
    for i in range(spec.first, spec.first + spec.count):
        sid = f"swarm-{i:04d}"
        holder: list[Communicator] = []
        comm = Communicator(broker, f"nairbus-sensor-{sid}", topics.sensor_status(sid), _status_payload(sid, holder))
        holder.append(comm)
        birth = template.model_copy(update={"sensor_id": sid, "stream_id": sid, "session": comm.session,
                                            "ts": time.time()})
        encoder = NairFrameEncoder(artifact, LeanContext(sid, comm.session, template.epoch_ts, spec.expiry_s),
                                   topics.sensor_frag(sid))
        comm.start(timeout=30)
        comm.announce(topics.sensor_birth(sid), wire_encode(birth), content_type=CONTENT_TYPE_JSON)
        sensors.append(_Sensor(comm, birth, encoder))
    return sensors


def _send(sensors: list[_Sensor], codes: np.ndarray, spec: SwarmSpec, start_wall: float, total: int
          ) -> dict[str, list[int]]:
    """Each sensor sends a frame every 1/fps s, phases spread evenly over the whole swarm of ``total``."""
    period = 1.0 / spec.fps
    start = time.monotonic() + max(0.0, start_wall - time.time())
    queue = [(start + period * (spec.first + k) / total, k) for k in range(len(sensors))]
    heapq.heapify(queue)
    stop = start + spec.seconds
    sent: dict[str, list[int]] = {s.birth.sensor_id: [] for s in sensors}
    while queue:
        due, k = heapq.heappop(queue)
        if due >= stop:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s = sensors[k]
        frame_id = len(sent[s.birth.sensor_id])
        row = codes[((spec.first + k) * 7 + frame_id) % len(codes)]
        for out in s.encoder.messages(row, frame_id, s.next_seq, time.time(), s.encoder.artifact.n_components):
            s.comm.publish(out.topic, out.payload, qos=0, content_type=CONTENT_TYPE_MSGPACK)
        sent[s.birth.sensor_id].append(frame_id)
        heapq.heappush(queue, (due + period, k))
    return sent


def worker(spec: SwarmSpec, total: int, conn: Connection) -> None:
    """One swarm process (the target of :class:`SwarmProcess`)."""
    configure_logging(LogSettings(level="error"))  # a thousand connections: the bench reports, the swarm is quiet
    sensors: list[_Sensor] = []
    try:
        sensors = _connect(spec)
        codes = np.load(spec.codes)
        conn.send(("ready", len(sensors)))
        message = conn.recv()
        if message[0] == "go":
            conn.send(("sent", _send(sensors, codes, spec, float(message[1]), total)))
            conn.recv()
    except Exception as exc:
        with suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        for s in sensors:
            with suppress(Exception):
                s.comm.stop(timeout=2)


class SwarmProcess:
    """A worker process of the swarm, driven over a pipe."""

    def __init__(self, spec: SwarmSpec, total: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker, args=(spec, total, child), daemon=True,
                                   name=f"swarm-{spec.first}")
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def expect(self, kind: str, timeout: float) -> Any:
        """The worker's next message, which must be ``kind``; a clear error otherwise."""
        if not self.conn.poll(timeout):
            raise RuntimeError(f"swarm worker {self.process.name} said nothing within {timeout:.0f} s")
        message = self.conn.recv()
        if message[0] != kind:
            raise RuntimeError(f"swarm worker {self.process.name}: {message}")
        return message[1]

    def send(self, *message: Any) -> None:
        self.conn.send(message)

    def close(self) -> None:
        with suppress(Exception):
            self.conn.send(("stop",))
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
