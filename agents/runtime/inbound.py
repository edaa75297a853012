"""Routing of incoming messages: to a handler on the network thread, or to the bounded inbox.

paho's network thread only enqueues (dropping and counting when the inbox is full); the agent takes messages with
``get`` on its own thread, so model work never runs on the network thread. A few exact topics (a sensor's commands)
go to a handler instead, called on the network thread, so they are answered while the agent's thread is busy; so do
the topics of a filter with one ``+`` level (the statuses of a fusion fleet's members, read in the order the broker
sent them, before any message that came after).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from structlog.typing import FilteringBoundLogger

from nairbus.agents.runtime.counters import DROP_LOG_INTERVAL_S, Counters, RateLimitedCounter
from nairbus.agents.runtime.inbox import FairInbox
from nairbus.agents.runtime.settings import BrokerSettings

__all__ = ["InboundMessage", "InboundRouter"]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message taken from the inbox. ``retain`` is true for a stored message delivered on subscribe."""

    topic: str
    payload: bytes
    content_type: str | None
    retain: bool
    received_ts: float
    """Wall-clock time (``time.time()``) at which the network thread received it."""


class InboundRouter:
    """Takes every received message on the network thread: to its topic's handler, else into the inbox.

    Received messages wait in one queue per sender (``inbox_key(topic)``) served in turn: a flooding sender overflows
    only its own queue. Without a key, one FIFO bounded by ``inbox_size``.
    """

    def __init__(self, broker: BrokerSettings, inbox_key: Callable[[str], str] | None, counters: Counters,
                 log: FilteringBoundLogger) -> None:
        self._broker = broker
        self._inbox_key = inbox_key or (lambda _topic: "")
        self._inbox: FairInbox[InboundMessage] = FairInbox(
            broker.inbox_per_key if inbox_key else broker.inbox_size, broker.inbox_size, broker.inbox_bytes,
            size=lambda m: len(m.payload) + len(m.topic))
        self._lock = threading.Lock()
        self._routes: dict[str, Callable[[InboundMessage], None]] = {}
        self._wild: list[tuple[str, str, Callable[[InboundMessage], None]]] = []
        """(head, tail, handler) of the routed filters ``head+tail`` (one ``+`` level)."""
        self._counters = counters
        self._log = log
        self._drops = RateLimitedCounter(DROP_LOG_INTERVAL_S)

    def route(self, topic: str, handler: Callable[[InboundMessage], None]) -> None:
        """Messages on exactly ``topic`` — or on a filter with one ``+`` level, ``a/+/b`` — go to ``handler`` on the
        network thread, not to the inbox."""
        if "#" in topic or topic.count("+") > 1:
            raise ValueError(f"a routed topic is exact or has one '+' level, not {topic!r}")
        with self._lock:
            if "+" not in topic:
                self._routes[topic] = handler
                return
            head, _, tail = topic.partition("+")
            if (head and not head.endswith("/")) or (tail and not tail.startswith("/")):
                raise ValueError(f"'+' must be a whole level of {topic!r}")
            self._wild.append((head, tail, handler))

    def _handler(self, topic: str) -> Callable[[InboundMessage], None] | None:
        handler = self._routes.get(topic)
        if handler is not None or not self._wild:
            return handler
        for head, tail, wild in self._wild:
            if (topic.startswith(head) and topic.endswith(tail) and len(topic) > len(head) + len(tail)
                    and "/" not in topic[len(head):len(topic) - len(tail)]):
                return wild
        return None

    def get(self, timeout: float | None = None) -> InboundMessage | None:
        """The next message of the inbox; ``None`` if none arrives within ``timeout`` (``None``: wait forever)."""
        return self._inbox.get(timeout=timeout)

    def deliver(self, message: mqtt.MQTTMessage) -> None:
        """Count a message paho received and hand it to its handler or the inbox (on the network thread)."""
        props = message.properties
        content_type = getattr(props, "ContentType", None) if props is not None else None
        inbound = InboundMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            content_type=content_type,
            retain=bool(message.retain),
            received_ts=time.time(),
        )
        self._counters.add("received")
        handler = self._handler(inbound.topic)
        if handler is not None:
            try:
                handler(inbound)
            except Exception:
                self._log.exception("mqtt.route_handler_error", topic=inbound.topic)
            return
        dropped = self._inbox.put(self._inbox_key(inbound.topic), inbound)
        if dropped:
            self._counters.add("inbox_dropped", dropped)
            if due := self._drops.hit():
                self._log.warning(
                    "mqtt.inbox_full", dropped=due, inbox_size=self._broker.inbox_size, topic=inbound.topic
                )
