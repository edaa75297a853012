"""The outgoing queues: publishes paho has not finished with, bounded so that ``publish`` never blocks.

At most ``max_outgoing`` QoS 0 packets wait for the socket and at most ``max_outgoing`` QoS 1/2 messages wait for
their acknowledgement (paho's own queue, ``max_queued_messages_set``); beyond that ``Communicator.publish`` returns
``False`` and counts the drop. The QoS 1/2 publishes are kept until acknowledged, for :meth:`wait_acknowledged`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt

__all__ = ["OutgoingQueues", "is_done"]


def is_done(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether paho is finished with a publish (sent, acknowledged, or given up)."""
    try:
        return info.is_published()
    except (ValueError, RuntimeError):  # paho raises for failed publishes: nothing left to wait for
        return True


class OutgoingQueues:
    """QoS 0 publishes waiting for the socket and QoS 1/2 publishes waiting for their acknowledgement; thread-safe."""

    def __init__(self, max_outgoing: int) -> None:
        self.max_outgoing = max_outgoing
        self._lock = threading.Lock()
        self._qos0: deque[mqtt.MQTTMessageInfo] = deque()
        self._acked: deque[mqtt.MQTTMessageInfo] = deque()

    def qos0_full(self) -> bool:
        """Whether ``max_outgoing`` QoS 0 publishes still wait for the socket (those written are let go first)."""
        with self._lock:
            while self._qos0 and is_done(self._qos0[0]):
                self._qos0.popleft()
            return len(self._qos0) >= self.max_outgoing

    def add_qos0(self, info: mqtt.MQTTMessageInfo) -> None:
        """A QoS 0 publish handed to paho."""
        with self._lock:
            self._qos0.append(info)

    def add_acked(self, info: mqtt.MQTTMessageInfo, *, compact: bool = False) -> None:
        """A QoS 1/2 publish handed to paho; ``compact``: let the finished ones go once more than twice
        ``max_outgoing`` are kept."""
        with self._lock:
            self._acked.append(info)
            if compact and len(self._acked) > 2 * self.max_outgoing:
                self._acked = deque(i for i in self._acked if not is_done(i))

    def wait_acknowledged(self, timeout: float) -> bool:
        """Wait until every QoS 1/2 publish made so far is acknowledged; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            waiting = [info for info in self._acked if not is_done(info)]
        for info in waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(ValueError, RuntimeError):  # failed: nothing left to wait for
                info.wait_for_publish(remaining)
        done = all(is_done(info) for info in waiting)
        with self._lock:
            while self._acked and is_done(self._acked[0]):
                self._acked.popleft()
        return done
