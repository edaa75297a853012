"""The one deadline buffer both fusion agents hold frames in (NAIR frames being reassembled, VP votes being
collected): pure, clock passed in, bounded in memory per owner and in all.

A frame is opened by an owner (the sensor whose message opened it) and waits until it is done (all its parts, all
its votes) or its deadline passes. Memory is bounded per owner and in all: an owner holds at most
``max_per_owner`` open frames, and a new one beyond that forces *its own* oldest frame out early (decided on what it
has); when all owners together hold ``max_frames``, the oldest frame of the owner holding the most goes. A device
that floods therefore evicts only its own frames, never another's. Decided keys are remembered (bounded) so that a
straggler is counted as late instead of opening a new frame.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = ["DeadlineBuffer", "Deadlined"]


class Deadlined(Protocol):
    """What the buffer needs of a frame: when it is due, and a flag it sets when a bound forces the frame out."""

    deadline: float
    evicted: bool


K = TypeVar("K", bound=Hashable)
F = TypeVar("F", bound=Deadlined)


@dataclass(slots=True)
class DeadlineBuffer(Generic[K, F]):
    """Open frames by key, in opening (and so deadline) order, with their owners."""

    max_frames: int = 4096
    max_per_owner: int = 512
    remember_decided: int = 65536
    _pending: OrderedDict[K, F] = field(default_factory=OrderedDict)
    _owner: dict[K, str] = field(default_factory=dict)
    _by_owner: dict[str, OrderedDict[K, None]] = field(default_factory=dict)
    _decided: OrderedDict[K, None] = field(default_factory=OrderedDict)
    _forced: list[F] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.max_per_owner < 1:
            raise ValueError("max_frames and max_per_owner must be >= 1")

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, key: K) -> F | None:
        """The open frame of ``key`` (None when there is none)."""
        return self._pending.get(key)

    def is_decided(self, key: K) -> bool:
        """Whether ``key`` was decided already (a part arriving now is late)."""
        return key in self._decided

    def pending_of(self, owner: str) -> int:
        """Frames ``owner`` opened that are still open."""
        keys = self._by_owner.get(owner)
        return len(keys) if keys else 0

    def frames(self) -> Iterator[F]:
        """The open frames, oldest first."""
        return iter(self._pending.values())

    def open(self, key: K, owner: str, frame: F) -> F:
        """Open ``frame`` under ``key`` for ``owner``, first making room within the bounds."""
        if self.pending_of(owner) >= self.max_per_owner:
            self._evict(next(iter(self._by_owner[owner])))
        if len(self._pending) >= self.max_frames:
            busiest = max(self._by_owner, key=lambda o: len(self._by_owner[o]))
            self._evict(next(iter(self._by_owner[busiest])))
        self._pending[key] = frame
        self._owner[key] = owner
        self._by_owner.setdefault(owner, OrderedDict())[key] = None
        return frame

    def pop_ready(self, now: float, done: Callable[[F], bool]) -> list[F]:
        """Frames forced out by a bound, frames that are ``done``, and frames past their deadline."""
        ready, self._forced = self._forced, []
        for key, frame in list(self._pending.items()):
            if done(frame) or frame.deadline <= now:
                ready.append(self._take(key))
        return ready

    def next_deadline(self) -> float | None:
        """Earliest deadline among open frames (they open in deadline order, so the first is earliest)."""
        for frame in self._pending.values():
            return frame.deadline
        return None

    def flush(self) -> list[F]:
        """Everything open, e.g. at shutdown."""
        ready = self._forced + list(self._pending.values())
        for key in self._pending:
            self._remember(key)
        self._pending.clear()
        self._owner.clear()
        self._by_owner.clear()
        self._forced = []
        return ready

    def take_owner(self, owner: str) -> list[F]:
        """Frames forced out by a bound and every frame ``owner`` opened, to be decided now (``owner`` left)."""
        ready, self._forced = self._forced, []
        for key in list(self._by_owner.get(owner, ())):
            ready.append(self._take(key))
        return ready

    def _take(self, key: K) -> F:
        """Remove an open frame (it is being decided) and remember its key as decided."""
        frame = self._pending.pop(key)
        owner = self._owner.pop(key)
        keys = self._by_owner[owner]
        del keys[key]
        if not keys:
            del self._by_owner[owner]
        self._remember(key)
        return frame

    def _evict(self, key: K) -> None:
        """Force a frame out early, to be decided on what it has."""
        frame = self._take(key)
        frame.evicted = True
        self._forced.append(frame)

    def _remember(self, key: K) -> None:
        self._decided[key] = None
        while len(self._decided) > self.remember_decided:
            self._decided.popitem(last=False)
