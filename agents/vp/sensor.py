"""The VP sensor agent (``nairbus sensor --mode vp --variant NAME``): one variant of the shipped family, top-k out.

It loads one variant (sha256-checked), announces it in a retained birth (variant name, fusion weight, k, model hash,
labels, the session's time epoch and expiry), then classifies the frames of its source and publishes each frame's
top-k as a lean :class:`~nairbus.schemas.messages.TopK` (``[2, tag, seq, frame_id, capture_ms, classes, scores]``,
:mod:`nairbus.schemas.lean`) at QoS 0 under an MQTT 5 topic alias — about 56 bytes on the wire for k = 5.

Its frames come from any registered source (:data:`nairbus.agents.sources.SOURCES`, opened with
:func:`~nairbus.agents.sources.open_source` like every sensor's), converted to the variant's own input spec (its
manifest) at the edge. Two of them give every variant of a family the same frames:

* ``replay``: the data set as a camera at ``fps``, frame id = data-set index — every variant sensor replays the
  same indices, so they share frame ids without talking to each other;
* ``mqtt``: the :class:`~nairbus.schemas.messages.Frame` messages a capture agent (:mod:`nairbus.agents.vp.capture`)
  publishes on ``<prefix>/frames/<stream>`` (:mod:`nairbus.agents.sources.frame_stream`) — one publish reaches every
  variant device; the stream is ``--frame-stream`` (the sensor's stream id by default);

and ``folder``, ``image-topic`` and ``camera`` serve one sensor as they serve a NAIR one.

A sensor that falls behind **skips stale frames instead of queueing them** (latest frame wins), counted as
``frames_skipped``: the one paced loop of every agent (:mod:`nairbus.agents.runtime.pacing`) skips the frames whose
slot passed, and the frame stream keeps, newest first, only the frames that can still be classified by their deadline
(capture time + ``deadline_ms``).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nairbus.agents.runtime.agent import SensorBase
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.frames import FrameBatch, SourceContext
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.sources import FrameSource, open_source, subscribe_source
from nairbus.agents.vp.common import SENSOR_COUNTERS, VpConfigError
from nairbus.agents.vp.settings import vp_settings, with_frame_stream
from nairbus.models.data.registry import dataset_labels
from nairbus.models.vp.device import DeviceVariant, load_device_variant, torch_variant
from nairbus.models.vp.fusion import check_k, topk
from nairbus.schemas import Birth, DeviceRef, ModelRef, TopK, VpBirth
from nairbus.schemas.lean import encode_lean

if TYPE_CHECKING:
    from nairbus.models.vp.family import LoadedVariant

log = get_logger("nairbus.vp")


class VpSensorAgent(SensorBase):
    """Runs one variant and publishes its top-k for every frame it can still classify in time."""

    event_prefix = "vp_sensor"
    supports_budget = False  # a VP sensor sends its top-k whole

    def __init__(self, config: AgentConfig, variant: DeviceVariant | LoadedVariant | None = None,
                 weights_dir: Path | None = None, bus: Bus | None = None) -> None:
        s = config.sensor
        if s.method_options.get("variant") is None:
            raise VpConfigError("a VP sensor needs a variant (--variant)")
        self.options = vp_settings(s)
        if variant is None:
            try:
                variant = load_device_variant(self.options.runtime, self.options.variant, weights_dir, s.threads)
            except ValueError as exc:  # an unknown variant: the message names the family's
                raise VpConfigError(str(exc)) from exc
        self.variant = variant if isinstance(variant, DeviceVariant) else torch_variant(variant)
        """The variant on its runtime (torch: its weights; onnx: its exported whole model)."""
        self.spec = self.variant.spec
        """What the variant takes (its manifest): every frame is converted to it at the edge."""
        self.labels: tuple[str, ...] = tuple(variant.manifest.labels or dataset_labels())
        try:
            self.k = check_k(self.options.k, len(self.labels))
        except ValueError as exc:
            raise VpConfigError(str(exc)) from exc
        super().__init__(config, bus)
        self.counters = dict.fromkeys(SENSOR_COUNTERS, 0)
        subscribe_source(with_frame_stream(s, self.options), self.comm, self.topics)  # before it connects
        self.topk_topic = self.topics.sensor_topk(s.sensor_id)
        self._seq = 0

    def birth(self) -> Birth:
        """Retained description: variant, fusion weight, k, model hash, labels, and the lean wire's epoch/expiry."""
        s, m = self.settings, self.variant.manifest
        return Birth(sensor_id=s.sensor_id, session=self.comm.session, ts=time.time(), mode="vp", stream_id=s.stream,
                     labels=self.labels, model=ModelRef(name=m.name, sha256=m.sha256),
                     device=DeviceRef(runtime=self.variant.runtime, parts=self.variant.part_hashes),
                     vp=VpBirth(variant=self.variant.name, weight=self.variant.weight, k=self.k),
                     deadline_ms=s.deadline_ms, epoch_ts=self.epoch_ts,
                     expiry_ms=max(1, round(s.expiry_s * 1000)))

    def start_fields(self) -> dict[str, Any]:
        s = self.settings
        return {"sensor": s.sensor_id, "variant": self.variant.name, "k": self.k, "source": s.source, "qos": s.qos,
                "runtime": self.variant.runtime, "input": self.spec.describe()}

    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k class ids and scores of uint8 frames in the variant's input spec (``(B, H, W)`` grey)."""
        return topk(self.variant.probs(images), self.k)

    def publish_frame(self, frame_id: int, classes: np.ndarray, scores: np.ndarray, capture_ts: float) -> bool:
        """Publish one frame's top-k as a lean message; count it as published, skipped or dropped (returns whether it
        went out).

        QoS 0 by default (``qos`` setting): a vote is useful only before fusion decides its frame, so what QoS 1
        would add — a packet id, a PUBACK, paho's in-flight window that later votes queue behind on a slow link, and
        redelivery after a reconnect, by which time the frame was decided and the vote is only counted ``late`` —
        buys nothing; TCP already delivers in order while the connection lasts. QoS 0 also lets the topic alias
        replace the topic (the Communicator uses aliases for QoS 0 only). The message expiry property is sent only
        at QoS 1, where the broker may hold the vote for a disconnected fusion; fusion drops expired votes by the
        birth's ``expiry_ms`` either way. A frame captured before the session's epoch has no time on the lean wire:
        it is skipped.
        """
        s = self.settings
        if capture_ts < self.epoch_ts or self.control.admit() is not None:  # paused, or over a command's rate cap
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

    def open_frames(self) -> FrameSource:
        """The configured source, opened for this variant's input spec on this sensor's bus."""
        s = with_frame_stream(self.settings, self.options)
        return open_source(s, SourceContext(self.spec, self.stop_event, self.comm))

    def run(self) -> dict[str, int]:
        """Classify the frames of the configured source until it ends, :meth:`stop`, or ``count`` frames.

        The one paced loop of every agent (:func:`nairbus.agents.runtime.pacing.run_paced`): with ``fps`` the source
        is a camera, frame ``i`` captured at its slot ``i / fps`` after the start; the sensor classifies the frames due
        when it is free and skips those whose slot passed more than one period ago — a slow variant loses frames, not
        latency, and never bursts to catch up. Without ``fps`` it classifies the source's batches as fast as it can
        (the frame stream keeps to the frames that can still be classified by their deadline). A frame keeps the
        capture time its source gives it (a capture agent's), else its slot's time.
        """
        s = self.settings
        source = self.open_frames()
        batches = source.batches(s.batch)
        pacing: Pacing[tuple[np.ndarray, np.ndarray]] = Pacing(
            s.fps, skip_late=source.skip_late, source_paced=source.source_paced, max_batch=s.batch)
        try:
            run_paced(batches, pacing, self.stop_event, self._work, self._emit, self._late)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # a generator: frames it still held are counted by its source
                close()
            self._merge_source_counters(source.counters)
        self.comm.wait_published(timeout=10.0 if self.stop_event.is_set() else 30.0)
        return dict(self.counters)

    def run_replay(self) -> dict[str, int]:
        """:meth:`run` (the name of before, when replay had its own loop)."""
        return self.run()

    def run_mqtt(self) -> dict[str, int]:
        """:meth:`run` (the name of before, when the capture stream had its own loop)."""
        return self.run()

    def _work(self, batch: FrameBatch) -> list[tuple[np.ndarray, np.ndarray]]:
        classes, scores = self.classify(batch.images)
        return list(zip(classes, scores, strict=True))

    def _emit(self, frame_id: int, _image: np.ndarray, result: tuple[np.ndarray, np.ndarray] | None,
              capture_ts: float) -> None:
        self.counters["frames"] += 1
        assert result is not None
        self.publish_frame(frame_id, result[0], result[1], capture_ts)

    def _late(self, _frame_id: int) -> None:
        self.counters["frames"] += 1
        self._skip()

    def _merge_source_counters(self, counters: Counter[str]) -> None:
        """What the source refused (``frames_rejected``) and took but passed over (``skipped_stale``: ``frames``,
        ``frames_skipped``) into the sensor's counters."""
        refused = sum(n for reason, n in counters.items() if reason.startswith("bad_"))
        self.counters["frames_rejected"] += refused
        stale = counters.get("skipped_stale", 0)
        self.counters["frames"] += stale
        self._skip(stale)
        if refused:
            log.warning("frames_refused", sensor=self.settings.sensor_id,
                        reasons={k: n for k, n in counters.items() if k.startswith("bad_")})

    def stop_fields(self) -> dict[str, Any]:
        return {"sensor": self.settings.sensor_id, **self.counters}
