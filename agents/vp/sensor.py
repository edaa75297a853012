"""The VP sensor agent (``nairbus sensor --mode vp --variant NAME``): one variant of the shipped family, top-k out.

It loads one variant (sha256-checked), announces it in a retained birth (variant name, fusion weight, k, model hash,
labels, the session's time epoch and expiry), then classifies frames from either source and publishes each frame's
top-k as a lean :class:`~nairbus.schemas.messages.TopK` (``[2, tag, seq, frame_id, capture_ms, classes, scores]``,
:mod:`nairbus.schemas.lean`) at QoS 0 under an MQTT 5 topic alias — about 56 bytes on the wire for k = 5:

* ``replay``: the data set as a camera at ``fps``, frame id = data-set index — every variant sensor replays the
  same indices, so they share frame ids without talking to each other;
* ``mqtt``: the :class:`~nairbus.schemas.messages.Frame` messages a capture agent (:mod:`nairbus.agents.vp.capture`)
publishes on
  ``<prefix>/frames/<stream>`` — one publish reaches every variant device.

A sensor that falls behind **skips stale frames instead of queueing them** (latest frame wins), counted as
``frames_skipped``: in replay through the one paced loop (:mod:`nairbus.agents.runtime.pacing`); from MQTT it drains its
inbox every round and classifies, newest first, only the frames that it can still finish by their deadline
(capture time + ``deadline_ms``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.agents.runtime.agent import SensorBase
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.frames import FrameBatch
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.sources.images import BadImageError, frame_pixels
from nairbus.agents.sources.replay import replay, replay_indices
from nairbus.agents.vp.common import (
    FRAME_SIDE,
    MAX_PENDING_FRAMES,
    SENSOR_COUNTERS,
    VP_SPEC,
    ClassifyCost,
    VpConfigError,
    choose_young,
)
from nairbus.agents.vp.settings import vp_settings
from nairbus.models.data.registry import dataset_labels, load_data
from nairbus.models.store import WEIGHTS_DIR
from nairbus.models.vp.family import LoadedVariant, load_family, softmax_outputs
from nairbus.models.vp.fusion import check_k, topk
from nairbus.schemas import (
    Birth,
    Frame,
    ModelRef,
    TopK,
    VpBirth,
    WireError,
)
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.lean import encode_lean

log = get_logger("nairbus.vp")


class VpSensorAgent(SensorBase):
    """Runs one variant and publishes its top-k for every frame it can still classify in time."""

    event_prefix = "vp_sensor"
    supports_budget = False  # a VP sensor sends its top-k whole

    def __init__(self, config: AgentConfig, variant: LoadedVariant | None = None,
                 weights_dir: Path = WEIGHTS_DIR, bus: Bus | None = None) -> None:
        s = config.sensor
        if s.method_options.get("variant") is None:
            raise VpConfigError("a VP sensor needs a variant (--variant)")
        self.options = vp_settings(s)
        if variant is None:
            _family, variants = load_family(weights_dir)
            if self.options.variant not in variants:
                raise VpConfigError(f"unknown variant {self.options.variant!r}; the family has {', '.join(variants)}")
            variant = variants[self.options.variant]
        self.variant = variant
        self.labels: tuple[str, ...] = tuple(variant.manifest.labels or dataset_labels())
        try:
            self.k = check_k(self.options.k, len(self.labels))
        except ValueError as exc:
            raise VpConfigError(str(exc)) from exc
        super().__init__(config, bus)
        self.counters = dict.fromkeys(SENSOR_COUNTERS, 0)
        if s.source == "mqtt":
            self.comm.subscribe(self.topics.frames(self.options.frame_stream or s.stream), qos=1)
        self.topk_topic = self.topics.sensor_topk(s.sensor_id)
        self.cost = ClassifyCost()
        """Measured time of classifying and publishing a batch (judges which waiting frames are still in time)."""
        self._seq = 0

    def birth(self) -> Birth:
        """Retained description: variant, fusion weight, k, model hash, labels, and the lean wire's epoch/expiry."""
        s, m = self.settings, self.variant.manifest
        return Birth(sensor_id=s.sensor_id, session=self.comm.session, ts=time.time(), mode="vp", stream_id=s.stream,
                     labels=self.labels, model=ModelRef(name=m.name, sha256=m.sha256),
                     vp=VpBirth(variant=self.variant.name, weight=self.variant.weight, k=self.k),
                     deadline_ms=s.deadline_ms, epoch_ts=self.epoch_ts,
                     expiry_ms=max(1, round(s.expiry_s * 1000)))

    def start_fields(self) -> dict[str, Any]:
        s = self.settings
        return {"sensor": s.sensor_id, "variant": self.variant.name, "k": self.k, "source": s.source, "qos": s.qos}

    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k class ids and scores of uint8 frames ``(B, 28, 28)``."""
        return topk(softmax_outputs(self.variant.model, images), self.k)

    def publish_frame(self, frame_id: int, classes: np.ndarray, scores: np.ndarray, capture_ts: float) -> bool:
        """Publish one frame's top-k as a lean message; count it as published or dropped (returns which).

        QoS 0 by default (``qos`` setting): a vote is useful only before fusion decides its frame, so what QoS 1
        would add — a packet id, a PUBACK, paho's in-flight window that later votes queue behind on a slow link, and
        redelivery after a reconnect, by which time the frame was decided and the vote is only counted ``late`` —
        buys nothing; TCP already delivers in order while the connection lasts. QoS 0 also lets the topic alias
        replace the topic (the Communicator uses aliases for QoS 0 only). The message expiry property is sent only
        at QoS 1, where the broker may hold the vote for a disconnected fusion; fusion drops expired votes by the
        birth's ``expiry_ms`` either way.
        """
        s = self.settings
        if self.control.admit() is not None:  # paused, or over the frame-rate cap a command set
            self._skip()
            return False
        self._seq += 1
        message = TopK(sensor_id=s.sensor_id, session=self.comm.session, seq=self._seq, frame_id=frame_id,
                       capture_ts=capture_ts, expires_ts=capture_ts + s.expiry_s,
                       classes=tuple(int(c) for c in classes), scores=tuple(float(x) for x in scores))
        payload = encode_lean(message, self.ctx)
        if self.comm.publish(self.topk_topic, payload, qos=s.qos, content_type=None,
                             expiry_s=s.expiry_s if s.qos else None, alias=True, replay=True):
            self.counters["published"] += 1
            self.counters["wire_bytes"] += self.comm.last_wire_bytes
            self.counters["payload_bytes"] += len(payload)
            return True
        self.counters["dropped_outgoing"] += 1
        return False

    def _skip(self, n: int = 1) -> None:
        self.counters["frames_skipped"] += n

    def run(self) -> dict[str, int]:
        """Run the configured source until it ends (replay) or :meth:`stop` / ``count`` frames (mqtt)."""
        return self.run_replay() if self.settings.source == "replay" else self.run_mqtt()

    def run_replay(self) -> dict[str, int]:
        """Replay the configured data-set frames; the frame id is the data-set index (shared by every variant).

        The one paced loop of every agent (:func:`nairbus.agents.runtime.pacing.run_paced`): with ``fps`` the data set
        is a camera, frame ``i`` captured at its slot ``i / fps`` after the start; the sensor classifies the frames due
        when it is free and skips those whose slot passed more than one period ago — a slow variant loses frames, not
        latency, and never bursts to catch up. Without ``fps`` it classifies whole batches as fast as it can.
        """
        s = self.settings
        data = load_data(s.split, data_dir=s.data_dir)
        indices = replay_indices(len(data), s.start, s.count, s.shard)

        def emit(frame_id: int, _image: np.ndarray, result: tuple[np.ndarray, np.ndarray] | None,
                 capture_ts: float) -> None:
            self.counters["frames"] += 1
            assert result is not None
            self.publish_frame(frame_id, result[0], result[1], capture_ts)

        def late(_frame_id: int) -> None:
            self.counters["frames"] += 1
            self._skip(1)

        def work(batch: FrameBatch) -> list[Any]:
            started = time.perf_counter()
            classes, scores = self.classify(batch.images)
            self.cost.note(len(batch.frame_ids), time.perf_counter() - started)
            return list(zip(classes, scores, strict=True))

        run_paced(replay(data, indices, s.batch), Pacing(s.fps, max_batch=s.batch), self.stop_event, work, emit, late)
        self.comm.wait_published(timeout=30.0)
        return dict(self.counters)

    def run_mqtt(self) -> dict[str, int]:
        """Classify the frames a capture agent publishes until stopped (or ``count`` frames).

        Every round drains the inbox, skips the frames that can no longer be classified by their deadline (capture
        time + ``deadline_ms``, judged with the measured cost per frame; see :func:`choose_young`) and classifies up
        to ``batch`` of the rest, newest first; older frames still in time wait for the next round.
        """
        s = self.settings
        stream = self.options.frame_stream or s.stream
        deadline_s = s.deadline_ms / 1000.0
        pending: list[Frame] = []
        while not self.stop_event.is_set():
            counted_out = s.count is not None and self.counters["frames"] >= s.count
            if counted_out and not pending:
                break
            if not counted_out:
                pending.extend(self._drain(stream, timeout=0.0 if pending else 0.2,
                                           limit=None if s.count is None else s.count - self.counters["frames"]))
            if not pending:
                continue
            chosen, stale = choose_young(pending, time.time(), deadline_s,
                                         lambda n: self.cost.seconds(n, s.batch), self.epoch_ts)
            if len(chosen) > MAX_PENDING_FRAMES:
                chosen, dropped = chosen[:MAX_PENDING_FRAMES], chosen[MAX_PENDING_FRAMES:]
                stale.extend(dropped)
            if stale:
                self._skip(len(stale))
            batch, pending = chosen[: s.batch], chosen[s.batch :]
            if not batch:
                continue
            batch.sort(key=lambda f: (f.capture_ts, f.frame_id))
            started = time.perf_counter()
            images = np.stack([np.frombuffer(f.pixels, dtype=np.uint8).reshape(FRAME_SIDE, FRAME_SIDE)
                               for f in batch])
            classes, scores = self.classify(images)
            for f, c, sc in zip(batch, classes, scores, strict=True):
                self.publish_frame(f.frame_id, c, sc, f.capture_ts)
            self.cost.note(len(batch), time.perf_counter() - started)
        if pending:
            self._skip(len(pending))  # stopped with frames still waiting: they are not classified
        self.comm.wait_published(timeout=10.0)
        return dict(self.counters)

    def _drain(self, stream: str, timeout: float, limit: int | None) -> list[Frame]:
        """Every frame waiting in the inbox (waiting up to ``timeout`` for the first), counted as taken."""
        frames: list[Frame] = []
        cap = MAX_PENDING_FRAMES if limit is None else min(limit, MAX_PENDING_FRAMES)
        message = self.comm.get(timeout=timeout)
        while message is not None:
            frame = self._frame(message, stream)
            if frame is not None:
                frames.append(frame)
                self.counters["frames"] += 1
                if len(frames) >= cap:
                    break
            message = self.comm.get(timeout=0)
        return frames

    def _frame(self, message: InboundMessage, stream: str) -> Frame | None:
        try:
            frame = wire_decode(message.payload, Frame)
        except WireError as exc:
            self._reject_frame(exc.reason, message.topic)
            return None
        if frame.stream_id != stream:
            self._reject_frame("topic_mismatch", message.topic)
            return None
        if (frame.height, frame.width, frame.channels, frame.encoding) == (FRAME_SIDE, FRAME_SIDE, 1, "raw"):
            return frame
        try:  # another size, colour, or an encoded file: converted to the variants' input like any frame
            pixels = frame_pixels(frame.pixels, frame.height, frame.width, frame.channels, frame.encoding, VP_SPEC)
        except BadImageError as exc:
            self._reject_frame(f"bad_{exc.reason}", message.topic, str(exc)[:200])
            return None
        return frame.model_copy(update={"pixels": pixels.tobytes(), "height": FRAME_SIDE, "width": FRAME_SIDE,
                                        "channels": 1, "encoding": "raw"})

    def _reject_frame(self, reason: str, topic: str, detail: str = "") -> None:
        self.counters["frames_rejected"] += 1
        if self.counters["frames_rejected"] <= 20 or self.counters["frames_rejected"] % 1000 == 0:
            log.warning("frame_rejected", reason=reason, topic=topic, detail=detail,
                        count=self.counters["frames_rejected"])

    def stop_fields(self) -> dict[str, Any]:
        return {"sensor": self.settings.sensor_id, **self.counters}
