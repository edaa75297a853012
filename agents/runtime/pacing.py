"""The one paced loop every agent that takes frames from a source runs: NAIR sensor, VP sensor, capture agent.

A source yields :class:`~.frames.FrameBatch` es; :func:`run_paced` delivers their frames as a camera would: frame ``i``
of the run is captured at its slot ``i / fps`` after the start (that is its capture time). Whenever the agent is free it
takes the frames captured so far, skips and counts those whose slot passed more than ``slack_s`` ago (latest frame wins:
a slow agent loses frames, not latency, and never bursts to catch up), runs its batch work on the rest together (the
head of the model, a variant's classification, nothing for a capture agent) and hands them over. A batch of files that
must all be classified (``skip_late=False``) loses nothing; time the source spends producing frames (reading files,
waiting for a camera) does not make frames late (``source_paced``). Without a rate the source's batches are worked on as
fast as the work allows. A batch that carries its frames' own capture times (``FrameBatch.capture_ts``: frames a
capture agent timed) hands those on in place of the slot's or the batch's time.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from nairbus.agents.runtime.frames import FrameBatch

__all__ = ["Pacing", "run_paced"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pacing(Generic[T]):
    """How frames are handed over: ``fps`` (None or 0: as fast as the work allows), how late a frame may be before
    it is skipped (``slack_s``; at least one period), whether late frames are skipped at all, whether the source's
    own time is excluded (``source_paced``), and the most frames worked on together (``max_batch``)."""

    fps: float | None
    slack_s: float = 0.0
    skip_late: bool = True
    source_paced: bool = False
    max_batch: int = 64

    @property
    def period(self) -> float:
        return 1.0 / self.fps if self.fps else 0.0


def run_paced(
    batches: Iterable[FrameBatch],
    pacing: Pacing[T],
    stop: threading.Event,
    work: Callable[[FrameBatch], Sequence[T] | np.ndarray | None],
    emit: Callable[[int, np.ndarray, T | None, float], None],
    skip: Callable[[int], None],
) -> None:
    """Deliver the source's frames: ``work`` on each group of frames due together, then ``emit(frame_id, image,
    result, capture_ts)`` for each; ``skip(frame_id)`` for a frame captured more than ``pacing.slack_s`` (and a
    period) before the agent got to it. Ends when ``stop`` is set or the source is exhausted."""
    if not pacing.period:
        _unpaced(batches, stop, work, emit)
        return
    period = pacing.period
    slack = max(period, pacing.slack_s)
    source = _frames(batches)
    pending: deque[tuple[int, int, np.ndarray, float | None]] = deque()  # (slot, frame id, image, capture time)
    slot = 0
    exhausted = False
    start_mono, start_wall = time.monotonic(), time.time()
    while not stop.is_set():
        captured = math.floor((time.monotonic() - start_mono) / period + 1e-9)
        while not exhausted and slot <= captured:
            pulled = time.monotonic()
            frame = next(source, None)
            if frame is None:
                exhausted = True
                break
            if pacing.source_paced:  # the source's own time does not count against the frames
                waited = time.monotonic() - pulled
                start_mono += waited
                start_wall += waited
                captured = math.floor((time.monotonic() - start_mono) / period + 1e-9)
            pending.append((slot, *frame))
            slot += 1
        if not pending:
            if exhausted:
                return
            stop.wait(max(0.0, start_mono + slot * period - time.monotonic()))
            continue
        now = time.monotonic() - start_mono
        if pacing.skip_late:
            while pending and now - pending[0][0] * period > slack:
                skip(pending.popleft()[1])
        group = [pending.popleft() for _ in range(min(len(pending), pacing.max_batch))]
        if not group:
            continue
        batch = FrameBatch(np.array([g[1] for g in group], dtype=np.int64), np.stack([g[2] for g in group]))
        results = work(batch)
        for row, (s, frame_id, image, captured_ts) in enumerate(group):
            if stop.is_set():
                return
            emit(frame_id, image, None if results is None else results[row],
                 start_wall + s * period if captured_ts is None else captured_ts)


def _frames(batches: Iterable[FrameBatch]) -> Iterator[tuple[int, np.ndarray, float | None]]:
    for batch in batches:
        times = None if batch.capture_ts is None else batch.capture_ts.tolist()
        for row, frame_id in enumerate(batch.frame_ids.tolist()):
            yield int(frame_id), batch.images[row], None if times is None else float(times[row])


def _unpaced(batches: Iterable[FrameBatch], stop: threading.Event,
             work: Callable[[FrameBatch], Sequence[T] | np.ndarray | None],
             emit: Callable[[int, np.ndarray, T | None, float], None]) -> None:
    for batch in batches:
        if stop.is_set():
            return
        captured = time.time()
        times = None if batch.capture_ts is None else batch.capture_ts.tolist()
        results = work(batch)
        for row, frame_id in enumerate(batch.frame_ids.tolist()):
            if stop.is_set():
                return
            emit(int(frame_id), batch.images[row], None if results is None else results[row],
                 captured if times is None else float(times[row]))
