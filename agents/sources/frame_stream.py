"""A capture agent's frame stream as a frame source (``source="mqtt"``): the msgpack
:class:`~nairbus.schemas.messages.Frame` s a capture agent (``nairbus capture``) publishes once on
``<prefix>/frames/<stream>`` for every sensor of the stream, so that every variant of a VP family classifies the same
pixels under the same frame id.

The agent subscribes its bus to the stream before it connects (:func:`frame_stream_topics`, the registry's
``subscriptions`` hook) and hands the bus in its :class:`SourceContext`; the source drains that bus's inbox. A sensor
that falls behind does not queue: every round the source takes every frame waiting, skips (``skipped_stale``) those
that can no longer be classified by their deadline — capture time + ``deadline_ms``, judged with what the agent took
for the batches it was given before (:class:`ClassifyCost`, :func:`choose_young`) — and hands over the newest of the
rest (latest frame wins), older ones still in time waiting for the next round. Each frame keeps its capture time
(``FrameBatch.capture_ts``), so every variant reports it the same. A frame that cannot be used (not a frame, another
stream's, pixels that are no image) is counted by reason (``bad_<reason>``) and logged, never raised; frames of any
size, grey or colour, raw or encoded, are converted to the model's input spec at the edge.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol, TypeVar

import numpy as np
from pydantic import Field

from nairbus.agents.runtime.frames import FrameBatch, SourceContext, SourceSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.sources.images import BadImageError, frame_pixels
from nairbus.schemas import Frame, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.ids import ID_FIELD_PATTERN
from nairbus.schemas.topics import TopicTree

__all__ = ["FRAME_STREAM", "MAX_PENDING_FRAMES", "ClassifyCost", "FrameStreamSettings", "FrameStreamSource",
           "choose_young", "frame_stream_topics"]

log = get_logger("nairbus.sources")

FRAME_STREAM: Final = "mqtt"
"""The name the frame-stream source is registered under (``--source mqtt``)."""
MAX_PENDING_FRAMES: Final = 1024
"""Most frames the source holds between rounds; beyond that the oldest are skipped."""
_NEEDS_STREAM = "a capture stream (--frame-stream STREAM)"


class FrameStreamSettings(SourceSettings):
    """``source="mqtt"``: what the frame-stream source reads (``count``, ``deadline_ms``: the sensor's by default)."""

    needs: ClassVar[dict[str, str]] = {"frame_stream": _NEEDS_STREAM}

    frame_stream: str = Field(pattern=ID_FIELD_PATTERN, description=(
        "The capture stream to follow: the frames a capture agent publishes on ``<prefix>/frames/<frame_stream>``. "
        "A VP sensor gives it from ``--frame-stream`` (its method option of before), else its own stream id."))
    count: int | None = Field(default=None, ge=1, description="Stop after taking this many frames (None: until "
                                                              "stopped).")
    deadline_ms: float = Field(default=1000.0, gt=0, description=(
        "A frame's deadline after its capture: a frame that cannot be classified by then is skipped, not queued."))


def frame_stream_topics(settings: FrameStreamSettings, topics: TopicTree) -> tuple[tuple[str, int], ...]:
    """The subscription the agent's bus needs before it connects: the stream's frame topic, QoS 1 (what capture
    agents publish at)."""
    return ((topics.frames(settings.frame_stream), 1),)


class Timed(Protocol):
    """What :func:`choose_young` reads of a waiting frame."""

    @property
    def frame_id(self) -> int: ...

    @property
    def capture_ts(self) -> float: ...

    @property
    def expires_ts(self) -> float: ...


T = TypeVar("T", bound=Timed)


def choose_young(frames: Sequence[T], now: float, deadline_s: float, cost: Callable[[int], float],
                 epoch_ts: float = 0.0) -> tuple[list[T], list[T]]:
    """Split waiting frames into those to classify (newest first) and those too stale to be worth it.

    Newest first, a frame is chosen if classifying it with every frame chosen before it (``cost(n)``: seconds for
    the first n) still finishes by its deadline (``capture_ts + deadline_s``), it has not expired, and it was
    captured after ``epoch_ts`` (so its capture time fits the lean wire). Older frames have earlier deadlines, so
    once the sensor is behind it keeps the newest frames and skips the rest (latest frame wins).
    """
    chosen: list[T] = []
    stale: list[T] = []
    for frame in sorted(frames, key=lambda f: (f.capture_ts, f.frame_id), reverse=True):
        finish = now + cost(len(chosen) + 1)
        if frame.capture_ts >= epoch_ts and frame.expires_ts > now and finish <= frame.capture_ts + deadline_s:
            chosen.append(frame)
        else:
            stale.append(frame)
    return chosen, stale


class ClassifyCost:
    """How long an agent takes with frames: ``per_batch_s + n * per_frame_s`` for a batch of n.

    Fitted online by least squares with exponential forgetting over the batches it ran (their sizes vary with the
    backlog, which separates the two terms); while the sizes do not vary, the whole time is charged per frame
    (pessimistic for a large backlog, which batches better). Zero until the first batch is measured.
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


@dataclass(frozen=True, slots=True)
class Waiting:
    """A frame taken from the stream, converted to the model's input, waiting to be handed over."""

    frame_id: int
    capture_ts: float
    expires_ts: float
    image: np.ndarray


@dataclass
class FrameStreamSource:
    """Frames of one capture stream from the agent's bus (already subscribed), the newest still in time first.

    ``cost``: what the agent took for the batches handed to it (measured from one hand-over to the agent asking for
    the next); ``counters``: ``frames`` taken, ``skipped_stale`` (taken, never handed over: past their deadline,
    beyond :data:`MAX_PENDING_FRAMES`, or still waiting when the agent stopped), ``bad_<reason>`` refused.
    """

    comm: Any
    ctx: SourceContext
    stream: str
    deadline_s: float = 1.0
    count: int | None = None
    cost: ClassifyCost = field(default_factory=ClassifyCost)
    counters: Counter[str] = field(default_factory=Counter)
    clock: Callable[[], float] = time.time
    skip_late: bool = True
    source_paced: bool = True

    @classmethod
    def from_settings(cls, s: FrameStreamSettings, ctx: SourceContext) -> FrameStreamSource:
        if ctx.comm is None:  # the agent's bus, subscribed to frame_stream_topics(s, ...)
            raise ValueError(f"source 'mqtt' needs the agent's bus, subscribed to {_NEEDS_STREAM}")
        return cls(ctx.comm, ctx, s.frame_stream, s.deadline_ms / 1000.0, s.count)

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        """Up to ``batch`` frames at a time, the newest still in time, until stopped or ``count`` frames taken."""
        pending: list[Waiting] = []
        try:
            while not self.ctx.stop.is_set():
                counted_out = self.count is not None and self.counters["frames"] >= self.count
                if counted_out and not pending:
                    return
                if not counted_out:
                    left = None if self.count is None else self.count - self.counters["frames"]
                    pending.extend(self._drain(0.0 if pending else 0.2, left))
                chosen, pending = self._choose(pending, batch)
                if not chosen:
                    continue
                chosen.sort(key=lambda f: (f.capture_ts, f.frame_id))
                handed = time.perf_counter()
                yield FrameBatch(np.array([f.frame_id for f in chosen], dtype=np.int64),
                                 np.stack([f.image for f in chosen]),
                                 np.array([f.capture_ts for f in chosen], dtype=np.float64))
                self.cost.note(len(chosen), time.perf_counter() - handed)
        finally:
            self.counters["skipped_stale"] += len(pending)  # stopped with frames still waiting: never handed over

    def _choose(self, pending: list[Waiting], batch: int) -> tuple[list[Waiting], list[Waiting]]:
        """The frames to hand over now (the newest ``batch`` still in time) and those to keep; the stale are
        counted and dropped."""
        if not pending:
            return [], []
        chosen, stale = choose_young(pending, self.clock(), self.deadline_s, lambda n: self.cost.seconds(n, batch))
        if len(chosen) > MAX_PENDING_FRAMES:
            chosen, stale = chosen[:MAX_PENDING_FRAMES], stale + chosen[MAX_PENDING_FRAMES:]
        self.counters["skipped_stale"] += len(stale)
        return chosen[:batch], chosen[batch:]

    def _drain(self, timeout: float, limit: int | None) -> list[Waiting]:
        """Every usable frame waiting on the bus (waiting up to ``timeout`` for the first), counted as taken."""
        frames: list[Waiting] = []
        cap = MAX_PENDING_FRAMES if limit is None else min(limit, MAX_PENDING_FRAMES)
        message = self.comm.get(timeout=timeout)
        while message is not None:
            frame = self._frame(message.payload, message.topic)
            if frame is not None:
                frames.append(frame)
                self.counters["frames"] += 1
                if len(frames) >= cap:
                    break
            message = self.comm.get(timeout=0)
        return frames

    def _frame(self, payload: bytes, topic: str) -> Waiting | None:
        """One message as a waiting frame in the model's input, or None (counted and logged) when it is no use."""
        try:
            frame = wire_decode(payload, Frame)
        except WireError as exc:
            self._refuse(exc.reason, topic)
            return None
        if frame.stream_id != self.stream:
            self._refuse("topic_mismatch", topic)
            return None
        try:  # any size, colour, or an encoded file: converted to the model's input like any frame
            image = frame_pixels(frame.pixels, frame.height, frame.width, frame.channels, frame.encoding,
                                 self.ctx.spec)
        except BadImageError as exc:
            self._refuse(exc.reason, topic, str(exc)[:200])
            return None
        return Waiting(frame.frame_id, frame.capture_ts, frame.expires_ts, image)

    def _refuse(self, reason: str, topic: str, detail: str = "") -> None:
        """Count a refused message by reason (``bad_<reason>``) and log it (the first 20, then every 1000th)."""
        self.counters[f"bad_{reason}"] += 1
        refused = sum(n for key, n in self.counters.items() if key.startswith("bad_"))
        if refused <= 20 or refused % 1000 == 0:
            log.warning("frame_rejected", reason=reason, topic=topic[:200], detail=detail, count=refused)
