"""The subscriptions of a communicator: registered once, made again on every connection, and their SUBACKs.

A filter is registered with its QoS whenever the agent likes; on every (re)connect the whole set goes out in one
SUBSCRIBE, so subscriptions survive reconnects whether or not the broker kept the session. Each SUBSCRIBE packet
waits here, by message id, for its SUBACK; ``Communicator.start`` returns once none waits.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.subscribeoptions import SubscribeOptions

__all__ = ["Subscriptions"]


class Subscriptions:
    """Filter -> QoS, and the SUBSCRIBE packets awaiting their SUBACK (message id -> filters); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}
        self._pending: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def add(self, topic_filter: str, qos: int) -> None:
        """Register ``topic_filter`` at ``qos`` (again: with the new QoS)."""
        with self._lock:
            self._filters[topic_filter] = qos

    def for_new_connection(self) -> list[tuple[str, int]]:
        """Every registered filter with its QoS, for a connection just made (no SUBACK of an older one is awaited)."""
        with self._lock:
            self._pending.clear()
            return list(self._filters.items())

    def send(self, client: mqtt.Client, entries: list[tuple[str, int]], *, mqtt5: bool = True) -> MQTTErrorCode:
        """Send one SUBSCRIBE for ``entries`` through ``client`` and await its SUBACK; paho's result code
        (``mqtt5=False``: an MQTT 3.1.1 SUBSCRIBE, a bare QoS per filter).

        The lock is held across paho's ``subscribe`` so the SUBACK cannot be handled before the message id is known.
        """
        with self._lock:
            if mqtt5:
                rc, mid = client.subscribe([(f, SubscribeOptions(qos=q)) for f, q in entries])
            else:
                rc, mid = client.subscribe(list(entries))
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._pending[mid] = [f for f, _ in entries]
        return rc

    def acknowledged(self, mid: int) -> tuple[list[str] | None, int]:
        """The filters of the SUBSCRIBE ``mid`` whose SUBACK came (None: not one this connection awaits), and how many
        SUBSCRIBE packets still await theirs."""
        with self._lock:
            filters = self._pending.pop(mid, None)
            return filters, len(self._pending)
