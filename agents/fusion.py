"""The fusion agent: learn sensors from their births, reassemble NAIR frames, run the tail in batches, publish.

All model work runs on the agent's worker thread (:meth:`FusionAgent.run`), never on paho's network thread.
Every message that cannot be used is rejected with a reason, a structured log line and a counter, and never
stalls or corrupts the other frames.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from agents.config import AgentConfig
from agents.discovery import HomeAssistantDiscovery, streams_of
from agents.logging import get_logger
from agents.mqtt import Communicator, InboundMessage
from agents.reassembly import AddOutcome, PendingFrame, Reassembler
from models.codec import FragmentPayload, PayloadError, check_payload, decode_payloads
from models.pipeline import NairPipeline
from schemas import CONTENT_TYPE_JSON, Birth, ClassScore, Fragment, Result, Stats, Status, WireError
from schemas import decode as wire_decode
from schemas import encode as wire_encode
from schemas.topics import TopicTree

log = get_logger("nairbus.fusion")


@dataclass(frozen=True, slots=True)
class KnownSensor:
    """What fusion knows of a sensor from its birth."""

    sensor_id: str
    session: str
    stream_id: str


def owns_sensor(sensor_id: str, partition: tuple[int, int] | None) -> bool:
    """Deterministic partition of sensors between fusion agents (all fragments of a frame go to one agent)."""
    if partition is None:
        return True
    i, n = partition
    return zlib.crc32(sensor_id.encode()) % n == i


class FusionAgent:
    """Reassembles frames from many sensors and publishes one result per frame."""

    def __init__(self, config: AgentConfig, pipeline: NairPipeline | None = None) -> None:
        self.config = config
        self.settings = config.fusion
        self.topics = TopicTree(config.topics.root, config.topics.site)
        self.pipeline = pipeline or NairPipeline.load(self.settings.model, self.settings.artifact)
        self.artifact_sha = self.pipeline.artifact.sha256
        self.model_sha = self.pipeline.manifest["sha256"]
        self.reassembler: Reassembler[FragmentPayload] = Reassembler(
            self.settings.deadline_ms / 1000.0, self.settings.max_frames
        )
        self.sensors: dict[str, KnownSensor] = {}
        self.last_seq: dict[tuple[str, str], int] = {}
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=10000)
        self.stop_event = threading.Event()
        self.started = time.time()
        self.heartbeat = time.monotonic()
        """``time.monotonic()`` of the worker loop's last round (the systemd watchdog watches it)."""
        fid = self.settings.fusion_id
        self.comm = Communicator(config.broker, f"nairbus-fusion-{fid}", self.topics.fusion_status(fid),
                                 self._status_payload)
        self.comm.subscribe(self.topics.all_sensors("birth"), qos=1)
        self.comm.subscribe(self.topics.all_sensors("frag"), qos=1)
        self.discovery = (HomeAssistantDiscovery(self.comm, self.topics, fid, config.discovery)
                          if config.discovery.enabled else None)
        if self.discovery is not None:
            self.discovery.attach()

    def _status_payload(self, state: str) -> bytes:
        return wire_encode(Status(agent_id=self.settings.fusion_id, role="fusion", state=state,  # type: ignore[arg-type]
                                  session=self.comm.session, ts=time.time()))

    # ----- message handling (worker thread) -------------------------------------------------------------------

    def reject(self, reason: str, topic: str, detail: str = "") -> None:
        """Count and log a message that cannot be used."""
        self.rejected[reason] += 1
        if self.rejected[reason] <= 20 or self.rejected[reason] % 1000 == 0:
            log.warning("message_rejected", reason=reason, topic=topic, detail=detail[:200],
                        count=self.rejected[reason])

    def handle(self, message: InboundMessage, now: float) -> None:
        """Route one inbound message."""
        if self.discovery is not None and self.discovery.handle(message, now):
            return
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            self.reject("unknown_topic", message.topic)
        elif parsed.kind == "sensor_birth":
            self.on_birth(parsed.ident, message)
        elif parsed.kind == "sensor_frag":
            self.on_fragment(parsed.ident, message, now)
        else:
            self.reject("unknown_topic", message.topic)

    def on_birth(self, sensor_id: str, message: InboundMessage) -> None:
        """Learn (or forget) a sensor from its retained birth."""
        if not message.payload:
            self.sensors.pop(sensor_id, None)
            return
        if not owns_sensor(sensor_id, self.settings.partition):
            return
        try:
            birth = wire_decode(message.payload, Birth)
        except WireError as exc:
            self.reject(f"birth_{exc.reason}", message.topic, str(exc))
            return
        if birth.sensor_id != sensor_id:
            self.reject("birth_topic_mismatch", message.topic, birth.sensor_id)
            return
        if birth.mode != "nair" or birth.nair is None:
            self.reject("unsupported_mode", message.topic, birth.mode)
            return
        if birth.model.sha256 != self.model_sha or birth.nair.artifact_sha256 != self.artifact_sha:
            self.sensors.pop(sensor_id, None)
            self.reject("artifact_mismatch", message.topic,
                        f"sensor model {birth.model.sha256[:12]} artifact {birth.nair.artifact_sha256[:12]}, "
                        f"fusion model {self.model_sha[:12]} artifact {self.artifact_sha[:12]}")
            return
        self.sensors[sensor_id] = KnownSensor(sensor_id, birth.session, birth.stream_id)
        log.info("sensor_known", sensor=sensor_id, session=birth.session, stream=birth.stream_id)

    def on_fragment(self, sensor_id: str, message: InboundMessage, now: float) -> None:
        """Validate a fragment and put it into its frame's buffer."""
        if not owns_sensor(sensor_id, self.settings.partition):
            return
        try:
            frag = wire_decode(message.payload, Fragment)
        except WireError as exc:
            self.reject(exc.reason, message.topic, str(exc))
            return
        sensor = self.sensors.get(sensor_id)
        if frag.sensor_id != sensor_id:
            self.reject("topic_mismatch", message.topic, frag.sensor_id)
            return
        if sensor is None:
            self.reject("unknown_sensor", message.topic)
            return
        if frag.session != sensor.session:
            self.reject("stale_session", message.topic, frag.session)
            return
        if frag.expires_ts < time.time():
            self.reject("expired", message.topic)
            return
        payload = FragmentPayload(frag.index, frag.start, frag.end, frag.bits, frag.data)
        try:
            check_payload(self.pipeline.artifact, payload)
        except PayloadError as exc:
            self.reject("shape", message.topic, str(exc))
            return
        self._track_seq(sensor_id, frag.session, frag.seq)
        key = (sensor_id, frag.session, frag.frame_id)
        outcome = self.reassembler.add(key, frag.index, payload, len(frag.data), frag.frame_fragments,
                                       frag.capture_ts, now)
        if outcome is AddOutcome.ADDED:
            self.counts["fragments"] += 1
            self.counts["bytes"] += len(frag.data)
        else:
            self.reject(outcome.value, message.topic, f"frame {frag.frame_id} fragment {frag.index}")

    def _track_seq(self, sensor_id: str, session: str, seq: int) -> None:
        last = self.last_seq.get((sensor_id, session))
        if last is not None:
            if seq > last + 1:
                self.counts["seq_gap"] += seq - last - 1
            elif seq <= last:
                self.counts["seq_reordered"] += 1
        if last is None or seq > last:
            self.last_seq[(sensor_id, session)] = seq

    # ----- decisions ------------------------------------------------------------------------------------------

    def decide(self, frames: list[PendingFrame[FragmentPayload]]) -> None:
        """Run the tail on a batch of frames and publish their results."""
        for start in range(0, len(frames), self.settings.max_batch):
            batch = frames[start : start + self.settings.max_batch]
            decoded = [decode_payloads(self.pipeline.artifact, f.parts.values()) for f in batch]
            values = np.stack([v for v, _ in decoded])
            masks = np.stack([m for _, m in decoded])
            probs = self.pipeline.decode(values, masks)
            decided = time.time()
            for frame, p, mask in zip(batch, probs, masks, strict=True):
                self.publish_result(frame, p, float(mask.mean()), decided)

    def publish_result(self, frame: PendingFrame[FragmentPayload], probs: np.ndarray, fraction: float,
                       decided: float) -> None:
        """Publish one frame's JSON result."""
        sensor_id, _session, frame_id = frame.key
        known = self.sensors.get(sensor_id)
        stream = known.stream_id if known else sensor_id
        labels = self.pipeline.labels
        top = np.argsort(-probs)[: self.settings.topk]
        latency = max(0.0, (decided - frame.capture_ts) * 1000.0)
        result = Result(
            stream_id=stream, fusion_id=self.settings.fusion_id, frame_id=frame_id, label=labels[int(top[0])],
            class_index=int(top[0]), confidence=float(min(1.0, max(0.0, probs[top[0]]))),
            topk=tuple(ClassScore(class_index=int(i), label=labels[int(i)], score=float(probs[i])) for i in top),
            fraction_received=min(1.0, fraction), bytes_received=frame.nbytes, fragments_received=len(frame.parts),
            sensors=(sensor_id,), capture_ts=frame.capture_ts, decided_ts=decided, latency_ms=latency,
            complete=frame.complete,
        )
        payload = wire_encode(result)
        self.comm.publish(self.topics.result(stream), payload, qos=0, content_type=CONTENT_TYPE_JSON)
        if self.discovery is not None:
            self.discovery.note_result(stream, payload)
        self.latencies.append(latency)
        self.counts["decided"] += 1
        self.counts["complete" if frame.complete else "partial"] += 1
        if frame.evicted:
            self.counts["evicted"] += 1

    def stats(self) -> Stats:
        """Current counters as a stats message."""
        lat = np.array(self.latencies) if self.latencies else None
        rejected = dict(self.rejected)
        for name in ("seq_gap", "seq_reordered"):
            if self.counts[name]:
                rejected[name] = self.counts[name]
        for name in ("inbox_dropped", "outgoing_dropped"):
            if self.comm.counters.get(name):
                rejected[name] = self.comm.counters[name]
        return Stats(
            fusion_id=self.settings.fusion_id, session=self.comm.session, ts=time.time(),
            uptime_s=time.time() - self.started, frames_decided=self.counts["decided"],
            frames_complete=self.counts["complete"], frames_partial=self.counts["partial"],
            frames_in_flight=len(self.reassembler), frames_evicted=self.counts["evicted"],
            fragments_received=self.counts["fragments"], bytes_received=self.counts["bytes"],
            rejected=rejected, sensors=tuple(sorted(self.sensors)),
            latency_p50_ms=float(np.percentile(lat, 50)) if lat is not None else None,
            latency_p99_ms=float(np.percentile(lat, 99)) if lat is not None else None,
        )

    def publish_stats(self) -> None:
        """Publish the stats message (retained, so a late subscriber sees the latest)."""
        self.comm.publish(self.topics.fusion_stats(self.settings.fusion_id), wire_encode(self.stats()), qos=0,
                          retain=True, content_type=CONTENT_TYPE_JSON)

    # ----- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and subscribe (returns once subscriptions are granted)."""
        self.comm.start()
        log.info("fusion_started", fusion=self.settings.fusion_id, artifact=self.artifact_sha[:12],
                 deadline_ms=self.settings.deadline_ms)

    def run(self) -> None:
        """Worker loop until :meth:`stop`: drain messages, decide ready frames in batches, publish stats."""
        next_stats = time.monotonic() + self.settings.stats_interval_s
        while not self.stop_event.is_set():
            now = self.heartbeat = time.monotonic()
            deadline = self.reassembler.next_deadline()
            wait = min(0.2, max(0.0, deadline - now)) if deadline is not None else 0.2
            message = self.comm.get(timeout=wait)
            handled = 0
            while message is not None:
                self.handle(message, time.monotonic())
                handled += 1
                if handled >= self.settings.max_batch * 8:
                    break
                message = self.comm.get(timeout=0)
            ready = self.reassembler.pop_ready(time.monotonic())
            if ready:
                self.decide(ready)
            if self.discovery is not None:
                self.discovery.update(streams_of(self.sensors.values()), time.monotonic())
            if time.monotonic() >= next_stats:
                self.publish_stats()
                next_stats = time.monotonic() + self.settings.stats_interval_s
        self.decide(self.reassembler.flush())
        self.publish_stats()

    def stop(self) -> None:
        """Ask the worker loop to finish."""
        self.stop_event.set()

    def close(self) -> None:
        """Publish offline and disconnect."""
        self.comm.stop()
        log.info("fusion_stopped", fusion=self.settings.fusion_id, rejected=dict(self.rejected), **self.counts)
