"""The VP fusion agent (``nairbus fusion --mode vp``): whichever variants reported, fused into one answer.

It learns VP sensors from their births (refusing model hashes that are not in the committed family manifest) and decodes
their lean top-k with the context of the sensor's current birth (no birth: ``unknown_sensor``; another session's tag:
``session``). It buffers votes per ``(stream, frame id)``, and decides a frame when every variant that was online when
the frame opened has reported, or when the deadline (from the first vote's arrival) passes — a variant that never
reports never holds a frame longer than that, and one whose status goes ``offline`` stops being waited for at once. The
decision is the pure rule :func:`nairbus.models.vp.fusion.fuse`; the result lists the variants that contributed and the
wire bytes of the votes fused. Bad input is rejected with a reason, a log line and a counter.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from nairbus.agents.home.discovery import attach_home_assistant
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.deadline import DeadlineBuffer
from nairbus.agents.runtime.fusion_base import FusionBase, device_fields, owns_sensor, topk_problem
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.registry import Registry
from nairbus.agents.vp.settings import VP_LEAVES, VP_MODES
from nairbus.models.catalog import WEIGHTS_DIR
from nairbus.models.data.registry import dataset_labels
from nairbus.models.vp.fusion import Vote, fuse
from nairbus.models.vp.manifest import FamilyManifest
from nairbus.schemas import (
    ClassScore,
    Result,
    TopK,
    WireError,
)
from nairbus.schemas.lean import LeanContext, decode_lean

log = get_logger("nairbus.vp")


@dataclass(frozen=True, slots=True)
class VpSensor:
    """What fusion knows of a VP sensor from its birth."""

    sensor_id: str
    session: str
    stream_id: str
    variant: str
    weight: float
    k: int
    ctx: LeanContext
    """How its lean top-k decode: session tag, time epoch and expiry (from the birth)."""


@dataclass(slots=True)
class PendingVotes:
    """Votes of one frame of one stream."""

    stream_id: str
    frame_id: int
    capture_ts: float
    deadline: float
    waiting_for: set[str]
    """Sensors online when the frame opened that have not voted yet (shrinks as they vote or go offline)."""
    expected: int
    votes: dict[str, Vote] = field(default_factory=dict)
    opened_by: str = ""
    """The sensor whose vote opened the frame (the per-sensor bound counts frames against it)."""
    nbytes: int = 0
    """Payload bytes of the votes."""
    wire_bytes: int = 0
    """MQTT PUBLISH bytes of the votes (counted with a topic alias, as the sensors send them)."""
    evicted: bool = False


class VoteBuffer:
    """Per-frame vote buffers in the fusion agents' one deadline buffer (:class:`~nairbus.agents.runtime.deadline.
    DeadlineBuffer`, owner: the sensor whose vote opened the frame); stragglers are counted as late.

    Two bounds: ``max_frames`` pending frames in all, and ``max_frames_per_sensor`` opened by any one sensor. A
    sensor that opens frames faster than they close (a flood, or frame ids nobody else votes on) pushes out only the
    oldest of the frames *it* opened; when the global bound is hit, the oldest frame of the sensor with the most open
    frames goes first, so one device cannot evict the others' frames.
    """

    def __init__(self, deadline_s: float, max_frames: int = 4096, remember_decided: int = 65536,
                 max_frames_per_sensor: int = 512) -> None:
        if deadline_s <= 0 or max_frames < 1 or max_frames_per_sensor < 1:
            raise ValueError("deadline_s must be > 0, max_frames >= 1 and max_frames_per_sensor >= 1")
        self.deadline_s = deadline_s
        self.frames: DeadlineBuffer[tuple[str, int], PendingVotes] = DeadlineBuffer(
            max_frames, max_frames_per_sensor, remember_decided)

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, stream_id: str, frame_id: int, sensor_id: str, vote: Vote, nbytes: int, capture_ts: float,
            online: set[str], now: float, wire_bytes: int = 0) -> str:
        """Offer a vote of ``nbytes`` payload (``wire_bytes`` on the wire); ``online`` is the stream's online sensors
        (used when the frame opens). Returns the outcome: ``added``, ``duplicate`` or ``late``."""
        key = (stream_id, frame_id)
        if self.frames.is_decided(key):
            return "late"
        frame = self.frames.get(key)
        if frame is None:
            waiting = set(online) | {sensor_id}
            frame = self.frames.open(key, sensor_id, PendingVotes(
                stream_id, frame_id, capture_ts, now + self.deadline_s, waiting, len(waiting), opened_by=sensor_id))
        if sensor_id in frame.votes:
            return "duplicate"
        frame.votes[sensor_id] = vote
        frame.waiting_for.discard(sensor_id)
        frame.nbytes += nbytes
        frame.wire_bytes += wire_bytes
        return "added"

    def is_open(self, stream_id: str, frame_id: int) -> bool:
        """Whether a frame of ``stream_id`` is open here (a vote opened it and it is not decided yet)."""
        return self.frames.get((stream_id, frame_id)) is not None

    def sensor_gone(self, sensor_id: str) -> None:
        """Stop waiting for a sensor that went offline (frames it already voted on keep its vote)."""
        for frame in self.frames.frames():
            frame.waiting_for.discard(sensor_id)

    def pop_ready(self, now: float) -> list[PendingVotes]:
        """Frames every expected sensor voted on, frames past their deadline, and frames forced out by the bound."""
        return self.frames.pop_ready(now, lambda frame: not frame.waiting_for)

    def pending_of(self, sensor_id: str) -> int:
        """Frames open that ``sensor_id``'s vote opened."""
        return self.frames.pending_of(sensor_id)

    def next_deadline(self) -> float | None:
        """Earliest deadline among pending frames (they open in deadline order)."""
        return self.frames.next_deadline()

    def flush(self) -> list[PendingVotes]:
        """Everything pending, e.g. at shutdown."""
        return self.frames.flush()


def read_family_manifest(weights_dir: Path = WEIGHTS_DIR) -> FamilyManifest:
    """The committed family manifest (fusion needs only hashes and labels from it, no weights)."""
    return FamilyManifest.load(weights_dir)


class VpFusionAgent(FusionBase):
    """Fuses the top-k of variant-parallel sensors into one result per frame and stream."""

    event_prefix = "vp_fusion"
    received_counter = "votes"
    buffer: VoteBuffer
    sensors: dict[str, VpSensor]
    sensor_modes = VP_MODES
    data_leaves = VP_LEAVES
    fleet_by_stream = True
    handlers: ClassVar[Mapping[str, str]] = {"sensor_birth": "on_birth", "sensor_status": "on_status",
                                             "sensor_topk": "on_topk"}

    def __init__(self, config: AgentConfig, family: FamilyManifest | None = None,
                 weights_dir: Path = WEIGHTS_DIR, bus: Bus | None = None) -> None:
        family = family if family is not None else read_family_manifest(weights_dir)
        self.labels: tuple[str, ...] = family.labels or dataset_labels()
        self.hashes = {v.weights_name: v.sha256 for v in family.variants}
        self.buffer = VoteBuffer(config.fusion.deadline_ms / 1000.0, config.fusion.max_frames,
                                 max_frames_per_sensor=config.fusion.max_frames_per_sensor)
        self.sensors = Registry()
        self.online: dict[str, set[str]] = {}
        """Online VP sensors per stream."""
        super().__init__(config, bus)
        self.discovery = attach_home_assistant(self)
        """Home Assistant discovery, an observer of this agent (None: disabled in the config)."""

    # ----- input ----------------------------------------------------------------------------------------------
    def on_birth(self, sensor_id: str, message: InboundMessage, now: float = 0.0) -> None:
        """Learn (or forget) a VP sensor from its retained birth; refuse models not in the committed family."""
        if not message.payload:
            self._forget(sensor_id)
            self.sensor_left(sensor_id)
            return
        birth = self.read_birth(sensor_id, message)
        if birth is None:
            return
        if not self.serves(sensor_id, birth) or birth.vp is None:  # a decision sensor's top-k is NAIR fusion's
            self._forget(sensor_id)
            return
        if not owns_sensor(birth.stream_id, self.settings.partition):
            self.forget_tally(sensor_id)
            return
        if self.hashes.get(birth.model.name) != birth.model.sha256:
            self._forget(sensor_id)
            self.reject("artifact_mismatch", message.topic,
                        f"sensor model {birth.model.name} {birth.model.sha256[:12]} is not in the variant family")
            return
        if birth.labels != self.labels:
            self._forget(sensor_id)
            self.reject("labels_mismatch", message.topic)
            return
        self._forget(sensor_id)
        self.sensors[sensor_id] = VpSensor(sensor_id, birth.session, birth.stream_id, birth.vp.variant,
                                           birth.vp.weight, birth.vp.k, LeanContext.from_birth(birth))
        self.online.setdefault(birth.stream_id, set()).add(sensor_id)
        log.info("vp_sensor_known", sensor=sensor_id, variant=birth.vp.variant, weight=birth.vp.weight,
                 k=birth.vp.k, stream=birth.stream_id, session=birth.session, **device_fields(birth))
        self.released(sensor_id)

    def _forget(self, sensor_id: str) -> None:
        known = self.sensors.pop(sensor_id, None)
        if known is not None:
            self.online.get(known.stream_id, set()).discard(sensor_id)
            self.buffer.sensor_gone(sensor_id)

    def on_status(self, sensor_id: str, message: InboundMessage, now: float = 0.0) -> None:
        """An ``offline`` status (clean stop or last will) means: stop waiting for this sensor."""
        status = self.note_sensor_status(sensor_id, message)
        known = self.sensors.get(sensor_id)
        if known is None or status is None:
            return
        if status.session != known.session:
            return
        if status.state == "offline":
            self.online.get(known.stream_id, set()).discard(sensor_id)
            self.buffer.sensor_gone(sensor_id)
            log.info("vp_sensor_offline", sensor=sensor_id, variant=known.variant)
        else:
            self.online.setdefault(known.stream_id, set()).add(sensor_id)

    def on_topk(self, sensor_id: str, message: InboundMessage, now: float) -> None:
        """Decode a lean top-k with the context of the sensor's current birth, validate it, buffer its vote."""
        sensor = self.sensors.get(sensor_id)
        if sensor is None:
            self.park(sensor_id, message)
            return
        try:
            msg = decode_lean(message.payload, TopK, sensor.ctx)
        except WireError as exc:
            self.reject(exc.reason, message.topic, str(exc))
            return
        if msg.expires_ts < time.time():
            self.reject("expired", message.topic)
            return
        problem = topk_problem(msg, sensor.k, len(self.labels))
        if problem:
            self.reject("shape", message.topic, problem)
            return
        if self.fleet is not None and not self.takes_frame(
                sensor.stream_id, msg.capture_ts, self.buffer.is_open(sensor.stream_id, msg.frame_id)):
            return
        self.track_seq(sensor_id, msg.session, msg.seq)
        if not self.buffer.is_open(sensor.stream_id, msg.frame_id) and self.sheds(msg.capture_ts, message.topic):
            return
        vote = Vote(sensor.variant, tuple(msg.classes), tuple(msg.scores), sensor.weight)
        nbytes = len(message.payload)
        wire = self.sensor_wire_bytes(sensor_id, msg.session, message.topic, nbytes)
        outcome = self.buffer.add(sensor.stream_id, msg.frame_id, sensor_id, vote, nbytes, msg.capture_ts,
                                  self.online.get(sensor.stream_id, set()), now, wire)
        if outcome == "added":
            self.counts["votes"] += 1
            self.counts["bytes"] += nbytes
            self.counts["wire_bytes"] += wire
        else:
            self.reject(outcome, message.topic, f"frame {msg.frame_id}")

    # ----- decisions ------------------------------------------------------------------------------------------
    def decide(self, frames: list[PendingVotes]) -> None:
        """Fuse and publish each frame's result."""
        for frame in self.on_time(frames):
            if not frame.votes:
                continue
            scores = fuse(list(frame.votes.values()), len(self.labels))
            self.publish_result(frame, scores, time.time())

    def publish_result(self, frame: PendingVotes, scores: np.ndarray, decided: float) -> None:
        """Publish one frame's JSON result, listing the contributing variants."""
        top = np.argsort(-scores, kind="stable")[: self.settings.topk]
        latency = max(0.0, (decided - frame.capture_ts) * 1000.0)
        sensor_ids = tuple(sorted(frame.votes))
        complete = len(frame.votes) >= frame.expected
        result = Result(
            stream_id=frame.stream_id, fusion_id=self.settings.fusion_id, frame_id=frame.frame_id,
            label=self.labels[int(top[0])], class_index=int(top[0]),
            confidence=float(min(1.0, max(0.0, scores[top[0]]))),
            topk=tuple(ClassScore(class_index=int(i), label=self.labels[int(i)], score=float(scores[i]))
                       for i in top if scores[i] > 0 or i == top[0]),
            fraction_received=min(1.0, len(frame.votes) / max(1, frame.expected)), bytes_received=frame.nbytes,
            fragments_received=len(frame.votes), sensors=sensor_ids,
            variants=tuple(sorted(v.variant for v in frame.votes.values())), capture_ts=frame.capture_ts,
            decided_ts=decided, latency_ms=latency, complete=complete, representation="vp",
            wire_bytes=frame.wire_bytes,
        )
        self.publish_decision(result)
        self.note_decided(latency, complete, frame.evicted)

    def stream_labels(self) -> dict[str, tuple[str, ...]]:
        return {s.stream_id: tuple(self.labels) for s in self.sensors.values()}

    def start_fields(self) -> dict[str, object]:
        return {"variants": sorted(self.hashes)}
