"""Variant Parallelism on the bus: the VP sensor agent (one variant, top-k out) and the VP fusion agent.

Sensor (``nairbus sensor --mode vp --variant NAME``): loads one variant of the shipped family (sha256-checked),
announces it in a retained birth (variant name, fusion weight, k, model hash, labels, the session's time epoch and
expiry), then classifies frames from either source and publishes each frame's top-k as a lean
:class:`~schemas.messages.TopK` (``[2, tag, seq, frame_id, capture_ms, classes, scores]``, :mod:`schemas.lean`) at
QoS 0 under an MQTT 5 topic alias — about 56 bytes on the wire for k = 5:

* ``replay``: the data set as a camera at ``fps``, frame id = data-set index — every variant sensor replays the
  same indices, so they share frame ids without talking to each other;
* ``mqtt``: the :class:`~schemas.messages.Frame` messages a capture agent (:mod:`agents.capture`) publishes on
  ``<prefix>/frames/<stream>`` — one publish reaches every variant device.

A sensor that falls behind **skips stale frames instead of queueing them** (latest frame wins), counted as
``frames_skipped``: in replay a frame whose slot passed more than one period ago is not classified (the sensor never
bursts to catch up); from MQTT it drains its inbox every round and classifies, newest first, only the frames that
it can still finish by their deadline (capture time + ``deadline_ms``).

Fusion (``nairbus fusion --mode vp``): learns VP sensors from their births (refusing model hashes that are not in
the committed family manifest) and decodes their lean top-k with the context of the sensor's current birth (no
birth: ``unknown_sensor``; another session's tag: ``session``). It buffers votes per ``(stream, frame id)``, and
decides a frame when every variant that was online when the frame opened has reported, or when the deadline (from
the first vote's arrival) passes — a variant that never reports never holds a frame longer than that, and one whose
status goes ``offline`` stops being waited for at once. The decision is the pure rule :func:`models.vp.fuse`; the
result lists the variants that contributed and the wire bytes of the votes fused. Bad input is rejected with a
reason, a log line and a counter.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from agents.config import AgentConfig
from agents.fusion_base import FusionBase, owns_sensor
from agents.logging import configure_logging, get_logger
from agents.mqtt import Communicator, InboundMessage
from agents.notify import systemd_service
from agents.outgoing import alias_wire_bytes
from agents.pacing import Pacing, run_paced
from agents.sensor import EPOCH_LEAD_S
from agents.sources import FrameBatch
from agents.sources.images import BadImageError, frame_pixels
from agents.sources.replay import replay, replay_indices
from models.architectures import fashion_mnist_spec
from models.data import LABELS, load_split
from models.store import WEIGHTS_DIR
from models.variants import FAMILY_NAME
from models.vp import Vote, check_k, fuse, topk
from models.vp_training import LoadedVariant, load_family, softmax_outputs
from schemas import (
    CONTENT_TYPE_JSON,
    Birth,
    ClassScore,
    Frame,
    ModelRef,
    Result,
    Status,
    TopK,
    VpBirth,
    WireError,
)
from schemas import decode as wire_decode
from schemas import encode as wire_encode
from schemas.lean import LeanContext, decode_lean, encode_lean
from schemas.topics import TopicTree

log = get_logger("nairbus.vp")
FRAME_SIDE = 28
VP_SPEC = fashion_mnist_spec()
"""What the variants take: 28x28 grey (each variant resizes to its own resolution inside)."""
MAX_PENDING_FRAMES: Final = 1024
"""Most frames an MQTT-source sensor holds between rounds; beyond that the oldest are skipped."""
SENSOR_COUNTERS: Final = ("frames", "published", "frames_skipped", "wire_bytes", "payload_bytes",
                          "dropped_outgoing", "frames_rejected")
"""What a VP sensor counts (and ``nairbus sensor --mode vp`` prints at the end). ``frames`` is every frame taken
from the source; each is published, skipped (stale) or dropped by the outgoing queue."""


class VpConfigError(RuntimeError):
    """A VP agent was configured with something the shipped family does not have (variant, k)."""


def topk_message_bytes(k: int, n_classes: int = len(LABELS)) -> int:
    """Wire bytes of one real lean :class:`TopK` publish with ``k`` classes, as a sensor sends it.

    The whole MQTT PUBLISH under an established topic alias (fixed header, alias property, payload) of a message
    with typical counters: sequence number 123 456, frame id 9 999, captured an hour into the session.
    """
    n = min(k, n_classes)
    ctx = LeanContext("vp-w44r28", "0123456789ab", epoch_ts=1_700_000_000.0, expiry_s=10.0)
    capture = ctx.epoch_ts + 3600.0
    message = TopK(sensor_id=ctx.sensor_id, session=ctx.session, seq=123456, frame_id=9999, capture_ts=capture,
                   expires_ts=capture + ctx.expiry_s, classes=tuple(range(n)),
                   scores=tuple(0.1234567 for _ in range(n)))
    return alias_wire_bytes(len(encode_lean(message, ctx)))


class ClassifyCost:
    """How long a sensor takes to classify and publish frames: ``per_batch_s + n * per_frame_s`` for a batch of n.

    Fitted online by least squares with exponential forgetting over the batches the sensor ran (their sizes vary
    with the backlog, which separates the two terms); while the sizes do not vary, the whole time is charged per
    frame (pessimistic for a large backlog, which batches better). Zero until the first batch is measured.
    """

    def __init__(self, per_frame_s: float = 0.0, per_batch_s: float = 0.0, forget: float = 0.95) -> None:
        self.per_frame_s = per_frame_s
        self.per_batch_s = per_batch_s
        self.forget = forget
        self._sums = (0.0, 0.0, 0.0, 0.0, 0.0)  # weight, n, t, n*n, n*t

    def note(self, frames: int, seconds: float) -> None:
        """Learn from one batch of ``frames`` frames that took ``seconds``."""
        if frames < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        n, t, k = float(frames), seconds, self.forget
        w, sn, st, snn, snt = (k * x for x in self._sums)
        w, sn, st, snn, snt = w + 1, sn + n, st + t, snn + n * n, snt + n * t
        self._sums = (w, sn, st, snn, snt)
        det = w * snn - sn * sn
        slope = (w * snt - sn * st) / det if det > 1e-6 * w * snn else -1.0
        intercept = (st - slope * sn) / w
        if slope < 0 or intercept < 0:  # sizes too alike (or noise): charge it all per frame
            slope, intercept = st / sn, 0.0
        self.per_frame_s, self.per_batch_s = slope, intercept

    def seconds(self, frames: int, batch: int) -> float:
        """Estimated seconds to classify ``frames`` frames in batches of at most ``batch``."""
        return math.ceil(frames / max(1, batch)) * self.per_batch_s + frames * self.per_frame_s


def choose_young(frames: Sequence[Frame], now: float, deadline_s: float, cost: Callable[[int], float],
                 epoch_ts: float = 0.0) -> tuple[list[Frame], list[Frame]]:
    """Split waiting frames into those to classify (newest first) and those too stale to be worth it.

    Newest first, a frame is chosen if classifying it with every frame chosen before it (``cost(n)``: seconds for
    the first n) still finishes by its deadline (``capture_ts + deadline_s``), it has not expired, and it was
    captured after the session's epoch (so its capture time fits the lean wire). Older frames have earlier
    deadlines, so once the sensor is behind it keeps the newest frames and skips the rest (latest frame wins).
    """
    chosen: list[Frame] = []
    stale: list[Frame] = []
    for frame in sorted(frames, key=lambda f: (f.capture_ts, f.frame_id), reverse=True):
        finish = now + cost(len(chosen) + 1)
        if frame.capture_ts >= epoch_ts and frame.expires_ts > now and finish <= frame.capture_ts + deadline_s:
            chosen.append(frame)
        else:
            stale.append(frame)
    return chosen, stale


# ===================================================================================================================
# sensor
# ===================================================================================================================
class VpSensorAgent:
    """Runs one variant and publishes its top-k for every frame it can still classify in time."""

    def __init__(self, config: AgentConfig, variant: LoadedVariant | None = None,
                 weights_dir: Path = WEIGHTS_DIR) -> None:
        self.config = config
        self.settings = s = config.sensor
        if s.variant is None:
            raise VpConfigError("a VP sensor needs a variant (--variant)")
        if variant is None:
            _family, variants = load_family(weights_dir)
            if s.variant not in variants:
                raise VpConfigError(f"unknown variant {s.variant!r}; the family has {', '.join(variants)}")
            variant = variants[s.variant]
        self.variant = variant
        self.labels: tuple[str, ...] = tuple(variant.manifest.get("labels") or LABELS)
        try:
            self.k = check_k(s.k, len(self.labels))
        except ValueError as exc:
            raise VpConfigError(str(exc)) from exc
        self.topics = TopicTree(config.topics.root, config.topics.site)
        self.stop_event = threading.Event()
        self.counters = dict.fromkeys(SENSOR_COUNTERS, 0)
        self.comm = Communicator(config.broker, f"nairbus-sensor-{s.sensor_id}", self.topics.sensor_status(s.sensor_id),
                                 self._status_payload)
        if s.source == "mqtt":
            self.comm.subscribe(self.topics.frames(s.frame_stream or s.stream), qos=1)
        self.epoch_ts = float(int(time.time() - EPOCH_LEAD_S))
        self.ctx = LeanContext(s.sensor_id, self.comm.session, self.epoch_ts, s.expiry_s)
        self.topk_topic = self.topics.sensor_topk(s.sensor_id)
        self.cost = ClassifyCost()
        """Measured time of classifying and publishing a batch (judges which waiting frames are still in time)."""
        self._seq = 0

    def _status_payload(self, state: str) -> bytes:
        return wire_encode(Status(agent_id=self.settings.sensor_id, role="sensor", state=state,  # type: ignore[arg-type]
                                  session=self.comm.session, ts=time.time()))

    def birth(self) -> Birth:
        """Retained description: variant, fusion weight, k, model hash, labels, and the lean wire's epoch/expiry."""
        s, m = self.settings, self.variant.manifest
        return Birth(sensor_id=s.sensor_id, session=self.comm.session, ts=time.time(), mode="vp", stream_id=s.stream,
                     labels=self.labels, model=ModelRef(name=m["name"], sha256=m["sha256"]),
                     vp=VpBirth(variant=self.variant.name, weight=self.variant.weight, k=self.k),
                     deadline_ms=s.deadline_ms, epoch_ts=self.epoch_ts,
                     expiry_ms=max(1, round(s.expiry_s * 1000)))

    def start(self) -> None:
        """Connect, subscribe (mqtt source) and publish the retained birth."""
        self.comm.start()
        topic = self.topics.sensor_birth(self.settings.sensor_id)
        self.comm.announce(topic, wire_encode(self.birth()), content_type=CONTENT_TYPE_JSON)
        self.comm.wait_published()
        log.info("vp_sensor_started", sensor=self.settings.sensor_id, variant=self.variant.name, k=self.k,
                 source=self.settings.source, qos=self.settings.qos, session=self.comm.session)

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
        self._seq += 1
        message = TopK(sensor_id=s.sensor_id, session=self.comm.session, seq=self._seq, frame_id=frame_id,
                       capture_ts=capture_ts, expires_ts=capture_ts + s.expiry_s,
                       classes=tuple(int(c) for c in classes), scores=tuple(float(x) for x in scores))
        payload = encode_lean(message, self.ctx)
        if self.comm.publish(self.topk_topic, payload, qos=s.qos, content_type=None,
                             expiry_s=s.expiry_s if s.qos else None, alias=True):
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

        The one paced loop of every agent (:func:`agents.pacing.run_paced`): with ``fps`` the data set is a camera,
        frame ``i`` captured at its slot ``i / fps`` after the start; the sensor classifies the frames due when it is
        free and skips those whose slot passed more than one period ago — a slow variant loses frames, not latency,
        and never bursts to catch up. Without ``fps`` it classifies whole batches as fast as it can.
        """
        s = self.settings
        data = load_split(s.split, s.data_dir)
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
        stream = s.frame_stream or s.stream
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

    def stop(self) -> None:
        """Publish offline and disconnect."""
        self.stop_event.set()
        self.comm.stop()
        log.info("vp_sensor_stopped", sensor=self.settings.sensor_id, **self.counters)


def run_vp_sensor(config: AgentConfig, on_signals: Callable[[threading.Event], None] | None = None) -> dict[str, int]:
    """Run a VP sensor as a process: signals stop it cleanly (it publishes ``offline``); returns its counters."""
    configure_logging(config.log)
    agent = VpSensorAgent(config)
    if on_signals is not None:
        on_signals(agent.stop_event)
    agent.start()
    try:
        # Under systemd (Type=notify): READY=1 once connected with the birth sent. A VP sensor may wait for
        # frames from a capture agent for any length of time, so its watchdog holds while the process runs.
        with systemd_service(f"vp sensor {config.sensor.sensor_id}", lambda: not agent.stop_event.is_set()):
            return agent.run()
    finally:
        agent.stop()


# ===================================================================================================================
# fusion
# ===================================================================================================================
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
    """Per-frame vote buffers: pure, clock passed in, bounded, with deadlines; stragglers are counted as late.

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
        self.max_frames = max_frames
        self.max_frames_per_sensor = max_frames_per_sensor
        self.remember_decided = remember_decided
        self._pending: OrderedDict[tuple[str, int], PendingVotes] = OrderedDict()
        self._opened: dict[str, OrderedDict[tuple[str, int], None]] = {}
        self._decided: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._forced: list[PendingVotes] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, stream_id: str, frame_id: int, sensor_id: str, vote: Vote, nbytes: int, capture_ts: float,
            online: set[str], now: float, wire_bytes: int = 0) -> str:
        """Offer a vote of ``nbytes`` payload (``wire_bytes`` on the wire); ``online`` is the stream's online sensors
        (used when the frame opens). Returns the outcome: ``added``, ``duplicate`` or ``late``."""
        key = (stream_id, frame_id)
        if key in self._decided:
            return "late"
        frame = self._pending.get(key)
        if frame is None:
            if len(self._opened.get(sensor_id, ())) >= self.max_frames_per_sensor:
                self._evict(next(iter(self._opened[sensor_id])))
            if len(self._pending) >= self.max_frames:
                busiest = max(self._opened, key=lambda s: len(self._opened[s]))
                self._evict(next(iter(self._opened[busiest])))
            waiting = set(online) | {sensor_id}
            frame = PendingVotes(stream_id, frame_id, capture_ts, now + self.deadline_s, waiting, len(waiting),
                                 opened_by=sensor_id)
            self._pending[key] = frame
            self._opened.setdefault(sensor_id, OrderedDict())[key] = None
        if sensor_id in frame.votes:
            return "duplicate"
        frame.votes[sensor_id] = vote
        frame.waiting_for.discard(sensor_id)
        frame.nbytes += nbytes
        frame.wire_bytes += wire_bytes
        return "added"

    def sensor_gone(self, sensor_id: str) -> None:
        """Stop waiting for a sensor that went offline (frames it already voted on keep its vote)."""
        for frame in self._pending.values():
            frame.waiting_for.discard(sensor_id)

    def pop_ready(self, now: float) -> list[PendingVotes]:
        """Frames every expected sensor voted on, frames past their deadline, and frames forced out by the bound."""
        ready, self._forced = self._forced, []
        for key, frame in list(self._pending.items()):
            if not frame.waiting_for or frame.deadline <= now:
                ready.append(self._pop(key))
                self._remember(*key)
        return ready

    def pending_of(self, sensor_id: str) -> int:
        """Frames open that ``sensor_id``'s vote opened."""
        return len(self._opened.get(sensor_id, ()))

    def _pop(self, key: tuple[str, int]) -> PendingVotes:
        frame = self._pending.pop(key)
        opened = self._opened.get(frame.opened_by)
        if opened is not None:
            opened.pop(key, None)
            if not opened:
                del self._opened[frame.opened_by]
        return frame

    def _evict(self, key: tuple[str, int]) -> None:
        frame = self._pop(key)
        frame.evicted = True
        self._forced.append(frame)
        self._remember(frame.stream_id, frame.frame_id)

    def next_deadline(self) -> float | None:
        """Earliest deadline among pending frames (they open in deadline order)."""
        for frame in self._pending.values():
            return frame.deadline
        return None

    def flush(self) -> list[PendingVotes]:
        """Everything pending, e.g. at shutdown."""
        ready = self._forced + list(self._pending.values())
        for key in list(self._pending):
            self._remember(*key)
        self._pending.clear()
        self._opened.clear()
        self._forced = []
        return ready

    def _remember(self, stream_id: str, frame_id: int) -> None:
        self._decided[(stream_id, frame_id)] = None
        while len(self._decided) > self.remember_decided:
            self._decided.popitem(last=False)


def read_family_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The committed family manifest (fusion needs only hashes and labels from it, no weights)."""
    path = weights_dir / f"{FAMILY_NAME}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no variant family manifest {path}; train it with 'nairbus train variants'")
    return dict(json.loads(path.read_text()))


class VpFusionAgent(FusionBase):
    """Fuses the top-k of variant-parallel sensors into one result per frame and stream."""

    event_prefix = "vp_fusion"
    received_counter = "votes"
    buffer: VoteBuffer
    sensors: dict[str, VpSensor]

    def __init__(self, config: AgentConfig, family: dict[str, Any] | None = None,
                 weights_dir: Path = WEIGHTS_DIR) -> None:
        family = family if family is not None else read_family_manifest(weights_dir)
        self.labels: tuple[str, ...] = tuple(family.get("labels") or LABELS)
        self.hashes = {v["weights_name"]: v["sha256"] for v in family["variants"]}
        self.buffer = VoteBuffer(config.fusion.deadline_ms / 1000.0, config.fusion.max_frames,
                                 max_frames_per_sensor=config.fusion.max_frames_per_sensor)
        self.sensors = {}
        self.online: dict[str, set[str]] = {}
        """Online VP sensors per stream."""
        super().__init__(config, ("birth", "status", "topk"))

    # ----- input ----------------------------------------------------------------------------------------------
    def handle(self, message: InboundMessage, now: float) -> None:
        """Route one inbound message."""
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            self.reject("unknown_topic", message.topic)
        elif parsed.kind == "sensor_birth":
            self.on_birth(parsed.ident, message)
        elif parsed.kind == "sensor_status":
            self.on_status(parsed.ident, message)
        elif parsed.kind == "sensor_topk":
            self.on_topk(parsed.ident, message, now)
        else:
            self.reject("unknown_topic", message.topic)

    def on_birth(self, sensor_id: str, message: InboundMessage) -> None:
        """Learn (or forget) a VP sensor from its retained birth; refuse models not in the committed family."""
        if not message.payload:
            self._forget(sensor_id)
            return
        try:
            birth = wire_decode(message.payload, Birth)
        except WireError as exc:
            self.reject(f"birth_{exc.reason}", message.topic, str(exc))
            return
        if birth.sensor_id != sensor_id:
            self.reject("birth_topic_mismatch", message.topic, birth.sensor_id)
            return
        if birth.mode != "vp" or birth.vp is None:
            self.counts["ignored_non_vp_births"] += 1
            return
        if not owns_sensor(birth.stream_id, self.settings.partition):
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
                 k=birth.vp.k, stream=birth.stream_id, session=birth.session)

    def _forget(self, sensor_id: str) -> None:
        known = self.sensors.pop(sensor_id, None)
        if known is not None:
            self.online.get(known.stream_id, set()).discard(sensor_id)
            self.buffer.sensor_gone(sensor_id)

    def on_status(self, sensor_id: str, message: InboundMessage) -> None:
        """An ``offline`` status (clean stop or last will) means: stop waiting for this sensor."""
        known = self.sensors.get(sensor_id)
        if known is None or not message.payload:
            return
        try:
            status = wire_decode(message.payload, Status)
        except WireError as exc:
            self.reject(f"status_{exc.reason}", message.topic, str(exc))
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
            self.reject("unknown_sensor", message.topic)
            return
        try:
            msg = decode_lean(message.payload, TopK, sensor.ctx)
        except WireError as exc:
            self.reject(exc.reason, message.topic, str(exc))
            return
        if msg.expires_ts < time.time():
            self.reject("expired", message.topic)
            return
        if len(msg.classes) > sensor.k or max(msg.classes) >= len(self.labels):
            self.reject("shape", message.topic, f"{len(msg.classes)} classes (k={sensor.k}), max id "
                                                f"{max(msg.classes)}")
            return
        if any(s < 0 or s > 1 for s in msg.scores):
            self.reject("shape", message.topic, "scores must be probabilities in [0, 1]")
            return
        self.track_seq(sensor_id, msg.session, msg.seq)
        vote = Vote(sensor.variant, tuple(msg.classes), tuple(msg.scores), sensor.weight)
        nbytes, wire = len(message.payload), alias_wire_bytes(len(message.payload))
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
        for frame in frames:
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
        self.comm.publish(self.topics.result(frame.stream_id), wire_encode(result), qos=1,
                          content_type=CONTENT_TYPE_JSON)
        self.note_decided(latency, complete, frame.evicted)

    def start_fields(self) -> dict[str, object]:
        return {"variants": sorted(self.hashes)}


def run_vp_fusion(config: AgentConfig, on_signals: Callable[[threading.Event], None] | None = None) -> None:
    """Run a VP fusion agent until SIGTERM/SIGINT."""
    configure_logging(config.log)
    agent = VpFusionAgent(config)
    if on_signals is not None:
        on_signals(agent.stop_event)
    agent.start()
    try:
        with systemd_service(f"vp fusion {config.fusion.fusion_id}", lambda: not agent.stop_event.is_set()):
            agent.run()
    finally:
        agent.close()
