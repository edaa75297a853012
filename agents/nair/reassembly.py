"""Per-frame reassembly buffers for the fusion agent: pure, clock passed in, bounded in memory.

A frame is keyed by ``(sensor_id, session, frame_id)``. Each part covers some units of the frame (NAIR: the
components of a run; an image or a vote: one). It is ready when the units its sensor announced have arrived, or
when its deadline (measured from the first part's arrival on the fusion node's own clock) has passed.

Memory is bounded per sensor and in all by the fusion agents' one deadline buffer
(:class:`nairbus.agents.runtime.deadline.DeadlineBuffer`): a sensor that floods evicts only its own frames, never
another's; decided frames are remembered (bounded) so that a straggler is counted as late instead of opening a new
frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from nairbus.agents.runtime.deadline import DeadlineBuffer

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


class Reassembler(Generic[P]):
    """Pending NAIR frames with deadlines, in the fusion agents' one deadline buffer (owner: the sensor)."""

    def __init__(self, deadline_s: float, max_frames: int = 4096, remember_decided: int = 65536,
                 max_per_sensor: int | None = None) -> None:
        per_sensor = max_frames if max_per_sensor is None else max_per_sensor
        if deadline_s <= 0 or max_frames < 1 or per_sensor < 1:
            raise ValueError("deadline_s must be > 0, max_frames and max_per_sensor >= 1")
        self.deadline_s = deadline_s
        self.frames: DeadlineBuffer[FrameKey, PendingFrame[P]] = DeadlineBuffer(max_frames, per_sensor,
                                                                                 remember_decided)

    def is_pending(self, key: FrameKey) -> bool:
        """Whether a frame is being reassembled (its next part opens nothing new)."""
        return self.frames.get(key) is not None

    def pending_of(self, sensor_id: str) -> int:
        """Frames of one sensor being reassembled."""
        return self.frames.pending_of(sensor_id)

    def __len__(self) -> int:
        return len(self.frames)

    def add(
        self, key: FrameKey, index: int, part: P, nbytes: int, expected: int, capture_ts: float, now: float,
        units: int = 1, wire_bytes: int = 0,
    ) -> AddOutcome:
        """Offer part ``index`` (covering ``units``) of frame ``key``; ``expected`` is the units the sensor sends."""
        if self.frames.is_decided(key):
            return AddOutcome.LATE
        frame = self.frames.get(key)
        if frame is None:
            frame = self.frames.open(key, key[0], PendingFrame(key, capture_ts, expected, now, now + self.deadline_s))
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
        return self.frames.pop_ready(now, lambda frame: frame.complete)

    def next_deadline(self) -> float | None:
        """Earliest deadline among pending frames."""
        return self.frames.next_deadline()

    def take_sensor(self, sensor_id: str) -> list[PendingFrame[P]]:
        """Every frame of ``sensor_id`` being reassembled (and any forced out by the bound), to decide now."""
        return self.frames.take_owner(sensor_id)

    def flush(self) -> list[PendingFrame[P]]:
        """Everything pending, e.g. at shutdown."""
        return self.frames.flush()
