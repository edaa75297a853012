"""Per-frame reassembly buffers for the fusion agent: pure, clock passed in, bounded in memory.

A frame is keyed by ``(sensor_id, session, frame_id)``. Each part covers some units of the frame (NAIR: the
components of a run; an image or a vote: one). It is ready when the units its sensor announced have arrived, or
when its deadline (measured from the first part's arrival on the fusion node's own clock) has passed. At most
``max_frames`` frames are held: a new frame beyond that forces the oldest one out early, decided on what it has.
Decided frames are remembered (bounded) so that a straggler is counted as late instead of opening a new frame.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

P = TypeVar("P")
FrameKey = tuple[str, str, int]


class AddOutcome(Enum):
    """What happened to a fragment offered to the reassembler."""

    ADDED = "added"
    DUPLICATE = "duplicate"
    LATE = "late"
    INCONSISTENT = "inconsistent"


@dataclass(slots=True)
class PendingFrame(Generic[P]):
    """A frame being reassembled."""

    key: FrameKey
    capture_ts: float
    expected: int
    first_seen: float
    deadline: float
    parts: dict[int, P] = field(default_factory=dict)
    nbytes: int = 0
    wire_bytes: int = 0
    units: int = 0
    evicted: bool = False

    @property
    def complete(self) -> bool:
        return self.units >= self.expected


@dataclass(slots=True)
class Reassembler(Generic[P]):
    """Bounded set of pending frames with deadlines."""

    deadline_s: float
    max_frames: int = 4096
    remember_decided: int = 65536
    _pending: OrderedDict[FrameKey, PendingFrame[P]] = field(default_factory=OrderedDict)
    _decided: OrderedDict[FrameKey, None] = field(default_factory=OrderedDict)
    _forced: list[PendingFrame[P]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.deadline_s <= 0 or self.max_frames < 1:
            raise ValueError("deadline_s must be > 0 and max_frames >= 1")

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, key: FrameKey, index: int, part: P, nbytes: int, expected: int, capture_ts: float, now: float,
        units: int = 1, wire_bytes: int = 0,
    ) -> AddOutcome:
        """Offer part ``index`` (covering ``units``) of frame ``key``; ``expected`` is the units the sensor sends."""
        if key in self._decided:
            return AddOutcome.LATE
        frame = self._pending.get(key)
        if frame is None:
            if len(self._pending) >= self.max_frames:
                _, oldest = self._pending.popitem(last=False)
                oldest.evicted = True
                self._forced.append(oldest)
                self._remember(oldest.key)
            frame = PendingFrame(key, capture_ts, expected, now, now + self.deadline_s)
            self._pending[key] = frame
        elif frame.expected != expected:
            return AddOutcome.INCONSISTENT
        if index in frame.parts:
            return AddOutcome.DUPLICATE
        frame.parts[index] = part
        frame.nbytes += nbytes
        frame.wire_bytes += wire_bytes
        frame.units += units
        return AddOutcome.ADDED

    def pop_ready(self, now: float) -> list[PendingFrame[P]]:
        """Frames that are complete, past their deadline, or forced out by the memory bound."""
        ready, self._forced = self._forced, []
        for key, frame in list(self._pending.items()):
            if frame.complete or frame.deadline <= now:
                ready.append(self._pending.pop(key))
                self._remember(key)
        return ready

    def next_deadline(self) -> float | None:
        """Earliest deadline among pending frames (frames arrive in deadline order, so the first is earliest)."""
        for frame in self._pending.values():
            return frame.deadline
        return None

    def flush(self) -> list[PendingFrame[P]]:
        """Everything pending, e.g. at shutdown."""
        ready = self._forced + list(self._pending.values())
        for key in self._pending:
            self._remember(key)
        self._pending.clear()
        self._forced = []
        return ready

    def _remember(self, key: FrameKey) -> None:
        self._decided[key] = None
        while len(self._decided) > self.remember_decided:
            self._decided.popitem(last=False)
