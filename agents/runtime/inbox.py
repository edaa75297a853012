"""A bounded inbox that serves its senders in turn, so one that floods overflows only its own queue.

The MQTT network thread puts every received message here and the agent's worker takes them out. With one FIFO, a
device publishing thousands of messages a second fills the queue and everyone else's messages are dropped or wait
behind the flood. :class:`FairInbox` keeps one queue per key (for the fusion agent: the sensor a topic belongs to),
takes from the keys round-robin, and bounds memory three ways: messages per key, messages in all and bytes in all.
When a bound is hit, the message dropped is the oldest of the key holding the most — the flooder's, not a quiet
device's. Thread-safe; the clock is the caller's (``timeout``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FairInbox"]

T = TypeVar("T")


class FairInbox(Generic[T]):
    """Per-key FIFO queues served round-robin, bounded per key, in count and in bytes."""

    def __init__(self, per_key: int, total: int, max_bytes: int, size: Callable[[T], int] = lambda _item: 0) -> None:
        if min(per_key, total, max_bytes) < 1:
            raise ValueError("per_key, total and max_bytes must be >= 1")
        self.per_key, self.total, self.max_bytes = per_key, total, max_bytes
        self._size = size
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._count = 0
        self._bytes = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held (as ``size`` counts them)."""
        with self._cond:
            return self._bytes

    def put(self, key: str, item: T) -> int:
        """Queue ``item`` under ``key``; returns how many messages were dropped to keep the bounds (0: none).

        A key at its own bound loses its oldest message; when the inbox as a whole is full (count or bytes), the
        key holding the most loses its oldest, until the new message fits. A message larger than ``max_bytes``
        on its own is refused (counted as one drop).
        """
        nbytes = self._size(item)
        if nbytes > self.max_bytes:
            return 1
        dropped = 0
        with self._cond:
            mine = self._queues.get(key)
            if mine is not None and len(mine) >= self.per_key:
                self._drop_oldest(key)
                dropped += 1
            while self._count and (self._count >= self.total or self._bytes + nbytes > self.max_bytes):
                self._drop_oldest(max(self._queues, key=lambda k: len(self._queues[k])))
                dropped += 1
            self._queues.setdefault(key, deque()).append(item)
            self._count += 1
            self._bytes += nbytes
            self._cond.notify()
        return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The next message, taking keys in turn; ``None`` if none arrives within ``timeout`` (None: wait)."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._count:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            key, queue = next(iter(self._queues.items()))
            item = queue.popleft()
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            self._count -= 1
            self._bytes -= self._size(item)
            return item

    def _drop_oldest(self, key: str) -> None:
        queue = self._queues[key]
        item = queue.popleft()
        if not queue:
            del self._queues[key]
        self._count -= 1
        self._bytes -= self._size(item)
