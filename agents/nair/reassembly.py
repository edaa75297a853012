"""Per-frame reassembly buffers for the fusion agent: pure, clock passed in, bounded in memory.

A frame is keyed by ``(sensor_id, session, frame_id)``. Each part covers some units of the frame (NAIR: the
components of a run; an image or a vote: one). It is ready when the units its sensor announced have arrived, or
when its deadline (measured from the first part's arrival on the fusion node's own clock) has passed.

Memory is bounded per sensor and in all: a sensor holds at most ``max_per_sensor`` pending frames, and a new frame
beyond that forces *its own* oldest frame out early (decided on what it has); when all sensors together hold
``max_frames``, the oldest frame of the sensor holding the most goes. A device that floods therefore evicts only its
own frames, never another's. Decided frames are remembered (bounded) so that a straggler is counted as late instead
of opening a new frame.
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
    max_per_sensor: int | None = None
    """Pending frames one sensor may hold (None: ``max_frames``)."""
    _pending: OrderedDict[FrameKey, PendingFrame[P]] = field(default_factory=OrderedDict)
    _by_sensor: dict[str, OrderedDict[FrameKey, None]] = field(default_factory=dict)
    _decided: OrderedDict[FrameKey, None] = field(default_factory=OrderedDict)
    _forced: list[PendingFrame[P]] = field(default_factory=list)

    def __post_init__(self) -> None:
        per_sensor = self.max_frames if self.max_per_sensor is None else self.max_per_sensor
        if self.deadline_s <= 0 or self.max_frames < 1 or per_sensor < 1:
            raise ValueError("deadline_s must be > 0, max_frames and max_per_sensor >= 1")

    def is_pending(self, key: FrameKey) -> bool:
        """Whether a frame is being reassembled (its next part opens nothing new)."""
        return key in self._pending

    def pending_of(self, sensor_id: str) -> int:
        """Frames of one sensor being reassembled."""
        keys = self._by_sensor.get(sensor_id)
        return len(keys) if keys else 0

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
            sensor = key[0]
            cap = self.max_frames if self.max_per_sensor is None else self.max_per_sensor
            if self.pending_of(sensor) >= cap:
                self._evict_oldest_of(sensor)
            elif len(self._pending) >= self.max_frames:
                self._evict_oldest_of(max(self._by_sensor, key=lambda s: len(self._by_sensor[s])))
            frame = PendingFrame(key, capture_ts, expected, now, now + self.deadline_s)
            self._pending[key] = frame
            self._by_sensor.setdefault(sensor, OrderedDict())[key] = None
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
                ready.append(self._take(key))
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
        self._by_sensor.clear()
        self._forced = []
        return ready

    def _take(self, key: FrameKey) -> PendingFrame[P]:
        """Remove a pending frame (it is being decided) and remember it as decided."""
        frame = self._pending.pop(key)
        keys = self._by_sensor[key[0]]
        del keys[key]
        if not keys:
            del self._by_sensor[key[0]]
        self._remember(key)
        return frame

    def _evict_oldest_of(self, sensor_id: str) -> None:
        """Force a sensor's oldest pending frame out early, to be decided on what it has."""
        oldest = self._take(next(iter(self._by_sensor[sensor_id])))
        oldest.evicted = True
        self._forced.append(oldest)

    def _remember(self, key: FrameKey) -> None:
        self._decided[key] = None
        while len(self._decided) > self.remember_decided:
            self._decided.popitem(last=False)
