"""The ``Bus`` protocol: what an agent uses of its connection to the broker.

The agents (the NAIR and VP sensors and fusion agents, the capture agent, :class:`~nairbus.agents.runtime.agent.
DeviceAgent`, :class:`~nairbus.agents.runtime.fusion_base.FusionBase`, the sensor commands) need a handful of things
from the bus: its life cycle (``start``/``stop``), publishing (with the wire size of what was sent and the backlog
behind it), subscriptions and the messages they bring (``get``, or a handler on the network thread via ``route``),
the retained announcements, and the replay after a lost session. :class:`~nairbus.agents.runtime.mqtt.Communicator`
is the one implementation over MQTT; the protocol lets an agent be given anything else shaped the same (an
in-process bus for a test, a recording wrapper) and lets a type checker say what such a thing lacks.

``Communicator`` satisfies it structurally (it does not subclass it); mypy checks that in ``mqtt.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from nairbus.agents.runtime.inbound import InboundMessage
from nairbus.agents.runtime.linkprobe import TcpInfo

__all__ = ["Bus"]


@runtime_checkable
class Bus(Protocol):
    """An agent's connection to the broker, as the agents use it (see :class:`~nairbus.agents.runtime.mqtt.
    Communicator` for the MQTT meaning of each member)."""

    @property
    def session(self) -> str:
        """An id of this connection's life, new for every process (agents put it in their statuses and births)."""

    @property
    def connected(self) -> threading.Event:
        """Set while connected to the broker."""

    @property
    def endpoint(self) -> str:
        """``host:port`` of the broker."""

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the bus's counters (published, dropped, received, reconnects, ...)."""

    @property
    def wire_bytes(self) -> int:
        """Wire bytes of every publish accepted so far."""

    @property
    def last_wire_bytes(self) -> int:
        """Wire bytes of the last accepted publish."""

    def start(self, timeout: float = 10.0) -> None:
        """Connect, announce ``online`` and subscribe; ``ConnectionError`` when that fails within ``timeout``."""

    def stop(self, timeout: float = 5.0, *, withdraw: bool = False) -> None:
        """Announce ``offline`` (``withdraw``: clear the retained status instead — the agent is gone for good) and
        disconnect cleanly; idempotent."""

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Register a subscription, made now if connected and again on every reconnect."""

    def route(self, topic: str, handler: Callable[[InboundMessage], None], qos: int = 1) -> None:
        """Subscribe to one exact topic (or a filter with one ``+`` level) whose messages ``handler`` takes on the
        network thread, not the inbox."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        content_type: str | None,
        expiry_s: float | None = None,
        alias: bool = False,
        replay: bool = False,
    ) -> bool:
        """Queue a publish without blocking; ``False`` when it will not be sent (counted)."""

    def announce(self, topic: str, payload: bytes, *, content_type: str | None) -> bool:
        """Publish a retained message now and again after every reconnect (``b""``: clear it, stop)."""

    def get(self, timeout: float | None = None) -> InboundMessage | None:
        """The next received message; ``None`` if none arrives within ``timeout`` (``None``: wait forever)."""

    def wait_published(self, timeout: float = 5.0) -> bool:
        """Wait until every QoS 1/2 publish made so far is acknowledged; ``False`` on timeout."""

    def on_session_lost(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(down_s)`` when a reconnection found that the broker had lost this client's session."""

    def replay_since(self, seconds: float) -> int:
        """Publish again the replayable messages of the last ``seconds``; how many were sent."""

    def pending_bytes(self) -> int:
        """Wire bytes handed to the client library that it has not written to the socket yet."""

    def socket_outq(self) -> int:
        """Bytes the kernel holds for the broker connection, not yet delivered."""

    def min_rtt(self) -> float:
        """The broker connection's minimum round trip in seconds, as the kernel measured it (0.0: unknown)."""

    def tcp_info(self) -> TcpInfo | None:
        """What the kernel says of the broker connection's path (None: no TCP connection, or not said)."""

    def alias_extra_bytes(self, topic: str, payload_len: int) -> int:
        """Wire bytes the next aliased QoS 0 publish on ``topic`` takes beyond one under an established alias."""
