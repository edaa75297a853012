"""What outlives one connection: the retained announcements, and the sessions the broker lost.

The session is started clean on every connection unless ``session_expiry_s`` asks for a persistent MQTT 5 session
(``clean_start=False`` and a session expiry: the broker keeps the subscriptions and queues what arrives while the
client is away). A broker restarted without persistence forgets both the session and the retained messages; the
communicator then publishes its announcements again (:class:`Announcements`) and tells whoever asked
(:class:`SessionTracker`) how long it was away, so they may ask their senders to replay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

__all__ = ["Announcements", "SessionTracker"]


class Announcements:
    """Retained messages re-published on every reconnect: topic -> (payload, content type); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, tuple[bytes, str | None]] = {}

    def set(self, topic: str, payload: bytes, content_type: str | None) -> None:
        """Announce ``payload`` on ``topic`` from now on; ``b""`` (clearing the retained message) stops it."""
        with self._lock:
            if payload:
                self._messages[topic] = (payload, content_type)
            else:
                self._messages.pop(topic, None)

    def items(self) -> list[tuple[str, tuple[bytes, str | None]]]:
        """A copy of every announcement."""
        with self._lock:
            return list(self._messages.items())


class SessionTracker:
    """When the connection was lost, and whether the broker had a session for the reconnection.

    Used on paho's network thread only (its connect and disconnect callbacks).
    """

    def __init__(self) -> None:
        self._lost_at: float | None = None
        # A reconnection the broker had no session for: the monotonic time its connection was lost, until the
        # subscriptions are made again and the session_lost callbacks are told.
        self._fresh_session_after: float | None = None
        self._callbacks: list[Callable[[float], None]] = []

    def on_lost(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(down_s)`` from :meth:`tell_if_lost` after a reconnection that found no session."""
        self._callbacks.append(callback)

    def connection_lost(self) -> None:
        """The connection was lost now (not by a clean stop)."""
        self._lost_at = time.monotonic()

    def no_session_found(self) -> None:
        """A reconnection the broker had no session for (its CONNACK's ``session_present`` is false)."""
        self._fresh_session_after = self._lost_at if self._lost_at is not None else time.monotonic()

    def take_lost_at(self) -> float | None:
        """When the last connection was lost (monotonic; None: not lost since last asked), and forget it."""
        lost_at, self._lost_at = self._lost_at, None
        return lost_at

    def tell_if_lost(self, log: FilteringBoundLogger) -> None:
        """Every subscription is made again: tell the callbacks how long ago the connection was lost, if the broker
        had no session for the reconnection. A callback's exception is logged and swallowed."""
        lost_at, self._fresh_session_after = self._fresh_session_after, None
        if lost_at is None:
            return
        down_s = time.monotonic() - lost_at
        for callback in self._callbacks:
            try:
                callback(down_s)
            except Exception:
                log.exception("mqtt.session_lost_callback_error")
