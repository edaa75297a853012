"""The replay window of a sender: its recent QoS 0 publishes, to be published again after a loss.

A broker killed mid-stream takes the messages in its socket buffers with it. A sender that asks for a replay window
(``replay_s``) keeps what it published with ``replay=True``; after a reconnect, the messages of the last ``replay_s``
seconds before the connection was lost are published again (a receiver that already has a frame counts the copy as
late), and a receiver whose session the broker lost may ask for the last seconds itself (``replay_since``). A
message goes out again on request at most once (a copy reaches every receiver subscribed at the time), so a flood of
requests costs no more than one request and the messages published meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final

__all__ = ["REPLAY_KEEP_S", "ReplayWindow"]

REPLAY_KEEP_S: Final = 10.0
"""Replayable publishes are held this long (at least ``replay_s``), for a ``replay_since`` asked after a reconnect."""


class ReplayWindow:
    """Replayable publishes, newest last: bounded by ``replay_max`` messages and held ``keep_s`` seconds.

    Appended by the publishing thread, read by the network thread (a copy is taken before reading).
    """

    def __init__(self, replay_s: float, replay_max: int) -> None:
        if replay_s < 0 or replay_max < 1:
            raise ValueError("replay_s must be >= 0 and replay_max >= 1")
        self.replay_s = replay_s
        """Seconds before a loss whose messages are published again after the reconnect (0: no replay window)."""
        self.keep_s = max(replay_s, REPLAY_KEEP_S)
        """How long a message is held: ``replay_s``, at least ``REPLAY_KEEP_S``."""
        # (monotonic time, topic, payload)
        self._messages: deque[tuple[float, str, bytes]] = deque(maxlen=replay_max)
        self._requested_upto = float("-inf")
        """Time of the newest message already published again on request (each goes out again once)."""
        self._request_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether the sender asked for a replay window at all."""
        return self.replay_s > 0

    def record(self, topic: str, payload: bytes) -> None:
        """Keep a message just published, dropping those too old to be replayed after any later loss or request."""
        now = time.monotonic()
        while self._messages and self._messages[0][0] < now - self.keep_s:
            self._messages.popleft()
        self._messages.append((now, topic, payload))

    def before_loss(self, lost_at: float) -> list[tuple[str, bytes]]:
        """The messages of the last ``replay_s`` before ``lost_at`` (monotonic), oldest first."""
        if not self._messages:
            return []
        since = lost_at - self.replay_s
        return [(topic, payload) for ts, topic, payload in list(self._messages) if since <= ts <= lost_at]

    def since(self, seconds: float) -> list[tuple[str, bytes]]:
        """The messages of the last ``seconds`` (at most ``keep_s``), oldest first."""
        since = time.monotonic() - min(seconds, self.keep_s)
        return [(topic, payload) for ts, topic, payload in list(self._messages) if ts >= since]

    def requested(self, seconds: float) -> list[tuple[str, bytes]]:
        """For a receiver's request: the messages of the last ``seconds`` (at most ``keep_s``) that no earlier
        request sent again, oldest first; they count as sent again from now on."""
        since = time.monotonic() - min(seconds, self.keep_s)
        with self._request_lock:
            picked = [(ts, topic, payload) for ts, topic, payload in list(self._messages)
                      if ts >= since and ts > self._requested_upto]
            if picked:
                self._requested_upto = picked[-1][0]
        return [(topic, payload) for _ts, topic, payload in picked]
