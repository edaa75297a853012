"""Messages of sensors whose birth has not arrived yet, held until it does — bounded by time and by bytes.

After a fusion restart with a persistent session the broker delivers the frames it queued before the retained
births, and a rebirth request takes a round trip: those frames are held here (:class:`Parking`), released in order
when the birth comes, and dropped (returned, so the caller counts them) when they waited longer than ``hold_s`` or
did not fit. The bounds are in bytes, per sensor and in all, not in messages: a few large frames and many small ones
cost the same memory. Pure: the clock is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

__all__ = ["PARK_BYTES", "PARK_BYTES_PER_SENSOR", "PARK_S", "PARK_SENSORS", "Parking", "Sized"]

PARK_S: Final = 5.0
"""How long a message waits for its sensor's birth (a fusion agent that restarts loads its models first)."""
PARK_BYTES_PER_SENSOR: Final = 4 * 1024 * 1024
"""Bytes (topic + payload) one sensor may have waiting: ~20 s of a 20 fps sensor sending whole 10 kB frames."""
PARK_BYTES: Final = 64 * 1024 * 1024
"""Bytes all sensors may have waiting together."""
PARK_SENSORS: Final = 4096
"""Sensors that may have messages waiting at once (each also bounded by bytes)."""


class Sized(Protocol):
    """A held message: its topic and payload count towards the bounds."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


T = TypeVar("T", bound=Sized)


def _size(message: Sized) -> int:
    return len(message.topic) + len(message.payload)


@dataclass
class Parking(Generic[T]):
    """Held messages by sensor id, oldest first, within ``hold_s`` seconds and the byte bounds."""

    hold_s: float = PARK_S
    bytes_per_sensor: int = PARK_BYTES_PER_SENSOR
    total_bytes: int = PARK_BYTES
    max_sensors: int = PARK_SENSORS
    _held: dict[str, deque[tuple[float, T]]] = field(default_factory=dict)
    _bytes: dict[str, int] = field(default_factory=dict)
    held_bytes: int = 0
    """Bytes held now, in all."""

    def __len__(self) -> int:
        return sum(len(q) for q in self._held.values())

    def park(self, sensor_id: str, message: T, now: float) -> list[T]:
        """Hold ``message``; what had to go to make room for it (or the message itself when it cannot be held)."""
        size = _size(message)
        if size > self.bytes_per_sensor or (sensor_id not in self._held and len(self._held) >= self.max_sensors):
            return [message]
        dropped: list[T] = []
        while self._bytes.get(sensor_id, 0) + size > self.bytes_per_sensor:
            dropped.append(self._pop(sensor_id))
        while self.held_bytes + size > self.total_bytes and self._bytes:
            dropped.append(self._pop(max(self._bytes, key=self._bytes.__getitem__)))  # the biggest holder pays
        self._held.setdefault(sensor_id, deque()).append((now, message))
        self._bytes[sensor_id] = self._bytes.get(sensor_id, 0) + size
        self.held_bytes += size
        return dropped

    def release(self, sensor_id: str) -> list[T]:
        """The sensor's birth came: its held messages, oldest first (none held any more)."""
        queue = self._held.pop(sensor_id, None)
        self.held_bytes -= self._bytes.pop(sensor_id, 0)
        return [message for _at, message in queue] if queue else []

    def expire(self, now: float) -> list[T]:
        """Drop and return what waited longer than ``hold_s``."""
        dropped: list[T] = []
        for sensor_id in list(self._held):
            queue = self._held[sensor_id]
            while queue and now - queue[0][0] > self.hold_s:
                dropped.append(self._pop(sensor_id))
        return dropped

    def _pop(self, sensor_id: str) -> T:
        """Take the oldest held message of a sensor, forgetting the sensor once it has none left."""
        queue = self._held[sensor_id]
        _at, message = queue.popleft()
        size = _size(message)
        self._bytes[sensor_id] -= size
        self.held_bytes -= size
        if not queue:
            del self._held[sensor_id]
            del self._bytes[sensor_id]
        return message
