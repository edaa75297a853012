"""The communicator's counters (thread-safe) and the rate limit of its drop warnings."""

from __future__ import annotations

import threading
import time
from typing import Final

__all__ = ["COUNTER_NAMES", "DROP_LOG_INTERVAL_S", "Counters", "RateLimitedCounter"]

COUNTER_NAMES: Final = (
    "published",  # QoS 0 written to the socket, or QoS 1/2 acknowledged by the broker
    "outgoing_dropped",  # refused by publish(): outgoing queue full
    "offline_dropped",  # QoS 0 refused by publish() while disconnected (QoS 1/2 are queued instead)
    "oversize_dropped",  # refused by publish(): larger than the broker's maximum packet size
    "publish_rejected",  # QoS 1/2 acknowledged with a failure reason code (e.g. not authorised)
    "received",  # every message that arrived, including those dropped from a full inbox
    "inbox_dropped",  # arrived while the inbox was full
    "reconnects",  # successful connections after the first
    "disconnects",  # connections lost (a clean stop() is not counted)
    "replayed",  # QoS 0 messages of the replay window published again after a reconnect
    "wire_bytes",  # MQTT PUBLISH bytes of every publish handed to paho (header, topic or alias, properties, payload)
)
DROP_LOG_INTERVAL_S: Final = 5.0
"""At most one warning per this many seconds about dropped messages (of each kind)."""


class Counters:
    """The counters named in ``COUNTER_NAMES``, updated from any thread."""

    def __init__(self) -> None:
        self._values = dict.fromkeys(COUNTER_NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        with self._lock:
            self._values[name] += n

    def value(self, name: str) -> int:
        """One counter, without copying them all."""
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._values)


class RateLimitedCounter:
    """Counts events and says when a log line is due (at most one per ``interval`` seconds)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.since_log = 0
        self._next_log = 0.0

    def hit(self) -> int:
        """Count one event; return the number to report if a log line is due now, else 0."""
        self.since_log += 1
        now = time.monotonic()
        if now < self._next_log:
            return 0
        self._next_log = now + self.interval
        count, self.since_log = self.since_log, 0
        return count
