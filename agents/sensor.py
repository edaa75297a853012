"""The NAIR sensor agent: replay frames, run the head, publish fragments most-important-first within budget.

Per frame it encodes the IR, picks the fragments that fit the per-frame byte budget (and the bytes-per-second
bucket, and the frame deadline), and publishes them in importance order with frame id, capture time, component
range, quantisation and an expiry. The first fragment may go at QoS 1 while the tail goes at QoS 0.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from agents.config import AgentConfig, SensorSettings
from agents.logging import get_logger
from agents.mqtt import Communicator
from agents.sources import replay, replay_indices
from models.codec import budget_spans, encode_codes
from models.data import load_split
from models.loss import LossModel
from models.pipeline import NairPipeline
from schemas import CONTENT_TYPE_JSON, CONTENT_TYPE_MSGPACK, Birth, Fragment, FragmentSpan, ModelRef, NairBirth, Status
from schemas import encode as wire_encode
from schemas.topics import TopicTree

log = get_logger("nairbus.sensor")


def loss_model(settings: SensorSettings) -> LossModel:
    """The injected-loss model a sensor's settings ask for (test tooling)."""
    loss = settings.loss
    if loss.kind == "random":
        return LossModel("random", p=loss.rate, seed=loss.seed)
    if loss.kind == "bursty" and loss.rate > 0:
        return LossModel.bursty_with_rate(loss.rate, loss.mean_burst, seed=loss.seed)
    return LossModel()


def frame_budget(settings: SensorSettings, total_bytes: int) -> int | None:
    """Per-frame payload budget in bytes (None: the whole IR)."""
    if settings.budget_bytes is not None:
        return settings.budget_bytes
    if settings.budget_fraction is not None:
        return max(1, round(settings.budget_fraction * total_bytes))
    return None


@dataclass
class TokenBucket:
    """Bytes-per-second budget; holds at most one second of credit."""

    rate: float
    level: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def available(self, now: float) -> float:
        self.level = min(self.rate, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def spend(self, nbytes: int) -> None:
        self.level -= nbytes


class SensorAgent:
    """Publishes one stream of NAIR fragments."""

    def __init__(self, config: AgentConfig, pipeline: NairPipeline | None = None) -> None:
        self.config = config
        self.settings = config.sensor
        self.topics = TopicTree(config.topics.root, config.topics.site)
        self.pipeline = pipeline or NairPipeline.load(self.settings.model, self.settings.artifact)
        self.loss = loss_model(self.settings)
        self.budget = frame_budget(self.settings, self.pipeline.artifact.total_bytes())
        self.bucket = TokenBucket(self.settings.bytes_per_second) if self.settings.bytes_per_second else None
        self.stop_event = threading.Event()
        self.counters = {"frames": 0, "fragments": 0, "payload_bytes": 0, "injected_loss": 0, "deadline_cut": 0,
                         "budget_cut": 0, "dropped_outgoing": 0}
        sid = self.settings.sensor_id
        self.comm = Communicator(
            config.broker, f"nairbus-sensor-{sid}", self.topics.sensor_status(sid), self._status_payload
        )
        self._seq = 0

    def _status_payload(self, state: str) -> bytes:
        return wire_encode(
            Status(agent_id=self.settings.sensor_id, role="sensor", state=state, session=self.comm.session,  # type: ignore[arg-type]
                   ts=time.time())
        )

    def birth(self) -> Birth:
        """The retained description of this sensor: everything fusion needs to decode it."""
        a, s = self.pipeline.artifact, self.settings
        return Birth(
            sensor_id=s.sensor_id,
            session=self.comm.session,
            ts=time.time(),
            mode="nair",
            stream_id=s.stream,
            labels=self.pipeline.labels,
            model=ModelRef(name=self.pipeline.manifest["name"], sha256=self.pipeline.manifest["sha256"]),
            nair=NairBirth(
                artifact_sha256=a.sha256,
                split=a.split,
                ir_shape=a.ir_shape,
                n_components=a.n_components,
                bits=int(a.bits.max()),
                fragments=tuple(FragmentSpan(start=int(st), end=int(en)) for st, en in a.plan.tolist()),
            ),
            budget_bytes=self.budget,
            deadline_ms=s.deadline_ms,
        )

    def start(self) -> None:
        """Connect, publish status and the retained birth."""
        self.comm.start()
        topic = self.topics.sensor_birth(self.settings.sensor_id)
        self.comm.publish(topic, wire_encode(self.birth()), qos=1, retain=True, content_type=CONTENT_TYPE_JSON)
        self.comm.wait_published()
        log.info("sensor_started", sensor=self.settings.sensor_id, budget_bytes=self.budget,
                 artifact=self.pipeline.artifact.sha256[:12], session=self.comm.session)

    def run_replay(self) -> dict[str, int]:
        """Replay the configured data-set frames once, then return the counters."""
        s = self.settings
        data = load_split(s.split, s.data_dir)
        indices = replay_indices(len(data), s.start, s.count, s.shard)
        period = 1.0 / s.fps if s.fps else 0.0
        next_at = time.monotonic()
        for batch in replay(data, indices, s.batch):
            if self.stop_event.is_set():
                break
            started = time.perf_counter()
            codes = self.pipeline.encode(batch.images)
            head_s = (time.perf_counter() - started) / len(codes)
            for frame_id, frame_codes in zip(batch.frame_ids.tolist(), codes, strict=True):
                if period:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self.stop_event.wait(delay)
                    next_at = max(next_at + period, time.monotonic() - 1.0)
                # A replayed frame is "captured" at its replay slot; the head ran ahead for the whole batch, so
                # its share of that work is charged to the frame's latency.
                self.send_frame(int(frame_id), frame_codes, time.time() - head_s)
        self.comm.wait_published(timeout=30.0)
        return dict(self.counters)

    def send_frame(self, frame_id: int, codes: np.ndarray, capture_ts: float) -> None:
        """Publish one frame's fragments, most important first, within budget and deadline."""
        a, s = self.pipeline.artifact, self.settings
        budget = self.budget
        if self.bucket is not None:
            credit = int(self.bucket.available(time.monotonic()))
            if budget is None or credit < budget:
                self.counters["budget_cut"] += 1
            budget = credit if budget is None else min(budget, credit)
        spans = budget_spans(a, budget)
        lost = self.loss.lost(frame_id, len(spans))
        deadline = capture_ts + s.deadline_ms / 1000.0
        topic = self.topics.sensor_frag(s.sensor_id)
        self.counters["frames"] += 1
        for payload, gone in zip(encode_codes(codes, a, spans), lost, strict=True):
            now = time.time()
            if now > deadline:
                self.counters["deadline_cut"] += 1
                break
            self._seq += 1
            if self.bucket is not None:
                self.bucket.spend(len(payload.data))
            if gone:
                self.counters["injected_loss"] += 1
                continue
            message = Fragment(
                sensor_id=s.sensor_id, session=self.comm.session, seq=self._seq, frame_id=frame_id,
                capture_ts=capture_ts, expires_ts=capture_ts + s.expiry_s, index=payload.index,
                start=payload.start, end=payload.end, bits=payload.bits, frame_fragments=len(spans),
                data=payload.data,
            )
            qos = s.first_fragment_qos if payload.index == 0 else s.tail_qos
            if self.comm.publish(topic, wire_encode(message), qos=qos, content_type=CONTENT_TYPE_MSGPACK,
                                 expiry_s=s.expiry_s):
                self.counters["fragments"] += 1
                self.counters["payload_bytes"] += len(payload.data)
            else:
                self.counters["dropped_outgoing"] += 1

    def stop(self) -> None:
        """Publish offline and disconnect."""
        self.stop_event.set()
        self.comm.stop()
        log.info("sensor_stopped", sensor=self.settings.sensor_id, **self.counters)
