"""The fusion agent: learn sensors from their births, reassemble NAIR frames, run the tail in batches, publish.

All model work runs on the agent's worker thread (:meth:`FusionAgent.run`), never on paho's network thread.
Every message that cannot be used is rejected with a reason, a structured log line and a counter, and never
stalls or corrupts the other frames. Connection, counters, stats and the worker loop are
:class:`~agents.fusion_base.FusionBase`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from agents.config import AgentConfig
from agents.discovery import HomeAssistantDiscovery, streams_of
from agents.fusion_base import FusionBase, owns_sensor
from agents.logging import get_logger
from agents.mqtt import InboundMessage
from agents.reassembly import AddOutcome, PendingFrame, Reassembler
from models.codec import FragmentPayload, PayloadError, check_payload, decode_payloads
from models.pipeline import NairPipeline
from schemas import CONTENT_TYPE_JSON, Birth, ClassScore, Fragment, Result, WireError
from schemas import decode as wire_decode
from schemas import encode as wire_encode

log = get_logger("nairbus.fusion")


@dataclass(frozen=True, slots=True)
class KnownSensor:
    """What fusion knows of a sensor from its birth."""

    sensor_id: str
    session: str
    stream_id: str


__all__ = ["FusionAgent", "KnownSensor", "owns_sensor"]


class FusionAgent(FusionBase):
    """Reassembles NAIR frames from many sensors and publishes one result per frame."""

    buffer: Reassembler[FragmentPayload]
    sensors: dict[str, KnownSensor]

    def __init__(self, config: AgentConfig, pipeline: NairPipeline | None = None) -> None:
        self.pipeline = pipeline or NairPipeline.load(config.fusion.model, config.fusion.artifact)
        self.artifact_sha = self.pipeline.artifact.sha256
        self.model_sha = self.pipeline.manifest["sha256"]
        self.buffer = Reassembler(
            config.fusion.deadline_ms / 1000.0, config.fusion.max_frames
        )
        self.sensors = {}
        super().__init__(config, ("birth", "frag"))
        self.discovery = (HomeAssistantDiscovery(self.comm, self.topics, self.settings.fusion_id, config.discovery)
                          if config.discovery.enabled else None)
        if self.discovery is not None:
            self.discovery.attach()

    # ----- message handling (worker thread) -------------------------------------------------------------------

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
        self.track_seq(sensor_id, frag.session, frag.seq)
        key = (sensor_id, frag.session, frag.frame_id)
        outcome = self.buffer.add(key, frag.index, payload, len(frag.data), frag.frame_fragments,
                                       frag.capture_ts, now)
        if outcome is AddOutcome.ADDED:
            self.counts["fragments"] += 1
            self.counts["bytes"] += len(frag.data)
        else:
            self.reject(outcome.value, message.topic, f"frame {frag.frame_id} fragment {frag.index}")

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
        self.note_decided(latency, frame.complete, frame.evicted)

    # ----- hooks of the worker loop -------------------------------------------------------------------------

    def after_round(self, now: float) -> None:
        """Keep the Home Assistant discovery in step with the known streams."""
        if self.discovery is not None:
            self.discovery.update(streams_of(self.sensors.values()), now)

    def start_fields(self) -> dict[str, object]:
        return {"artifact": self.artifact_sha[:12]}
