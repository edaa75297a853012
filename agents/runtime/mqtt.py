"""The one MQTT communicator of nairbus, over paho-mqtt 2.x (callback API version 2, MQTT 5).

Every agent talks to the broker through a ``Communicator``; nothing else in nairbus imports paho (but the modules
it is made of, listed below).
It follows Frigate's communicator and aiomqtt's client:

- a retained status topic: ``status_payload("online")`` on every (re)connect, ``status_payload("offline")``
  as the last will and on clean shutdown;
- subscriptions are registered once and (re)made in ``on_connect``, so they survive reconnects; the session is
  started clean each time unless ``session_expiry_s`` asks for a persistent MQTT 5 session (``clean_start=False``
  and a session expiry: the broker keeps the subscriptions and queues what arrives while the client is away — the
  fusion agent's, so a restart or an outage loses nothing that is still worth deciding);
- a sender may ask for a replay window (``replay_s``): the QoS 0 messages it published in the last ``replay_s``
  seconds before a connection was lost are published again after the reconnect (a broker killed mid-stream takes
  the messages in its socket buffers with it; a receiver that already has a frame counts the copy as late);
- paho reconnects by itself with exponential backoff between ``reconnect_min_s`` and ``reconnect_max_s``;
- outgoing traffic is bounded: at most ``max_outgoing`` QoS 0 packets waiting for the socket and at
  most ``max_outgoing`` QoS 1/2 messages waiting for their acknowledgement; beyond that ``publish``
  returns ``False`` and counts the drop, it never blocks;
- the high-rate topics may use MQTT 5 topic aliases (``publish(..., alias=True)``): the first message on a
  connection carries the topic and the alias, later ones only the two-byte alias; the table starts anew on every
  connection and is never used for QoS 1/2 (paho would resend those after a reconnect, where the alias is gone);
- bytes are counted as the wire sees them (``wire_bytes``: whole PUBLISH packets), and a sender can see its own
  backlog: bytes handed to paho that it has not written yet (:meth:`Communicator.pending_bytes`) and bytes the
  kernel holds unacknowledged (:meth:`Communicator.socket_outq`); ``TCP_NOTSENT_LOWAT`` keeps the kernel from
  soaking up a backlog out of sight;
- incoming messages go to a bounded inbox; paho's network thread only enqueues (dropping and
  counting when the inbox is full), the agent takes messages with ``get`` on its own thread, so
  model work never runs on the network thread;
- ``start`` raises a typed ``ConnectionError`` (:mod:`nairbus.agents.runtime.errors`) carrying the broker's reason
  code and whether retrying can help.

``Communicator`` composes one piece per concern, each in its own module of this package:
:mod:`~nairbus.agents.runtime.connection` (the paho client, its settings, the gate ``start`` waits at),
:mod:`~nairbus.agents.runtime.subscriptions`, :mod:`~nairbus.agents.runtime.session` (announcements, lost
sessions), :mod:`~nairbus.agents.runtime.outgoing` (the bounded queues), :mod:`~nairbus.agents.runtime.properties`,
:mod:`~nairbus.agents.runtime.aliases` (the topic-alias table), :mod:`~nairbus.agents.runtime.replay` (the replay
window), :mod:`~nairbus.agents.runtime.linkprobe` (backlog and socket measurements),
:mod:`~nairbus.agents.runtime.inbound` (routing of incoming messages) and :mod:`~nairbus.agents.runtime.counters`.
What the agents use of it is the :class:`~nairbus.agents.runtime.bus.Bus` protocol.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from structlog.typing import FilteringBoundLogger

from nairbus.agents.runtime.aliases import TopicAliases
from nairbus.agents.runtime.connection import UNREACHABLE, StartGate, configure_client, new_client, timeout_message
from nairbus.agents.runtime.counters import COUNTER_NAMES, DROP_LOG_INTERVAL_S, Counters, RateLimitedCounter
from nairbus.agents.runtime.errors import (
    MqttConnectError,
    MqttError,
    MqttSubscribeError,
    MqttTimeoutError,
    MqttUnreachableError,
)
from nairbus.agents.runtime.inbound import InboundMessage, InboundRouter
from nairbus.agents.runtime.linkprobe import (
    TCP_NOTSENT_LOWAT,
    TcpInfo,
    UnwrittenBytes,
    describe_unreachable,
    socket_outq,
    tcp_info,
    tcp_min_rtt,
    tune_socket,
)
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.outgoing import OutgoingQueues
from nairbus.agents.runtime.properties import (
    JSON_CONTENT_TYPE,
    connect_properties,
    properties_len,
    publish_properties,
)
from nairbus.agents.runtime.replay import REPLAY_KEEP_S, ReplayWindow
from nairbus.agents.runtime.session import Announcements, SessionTracker
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.agents.runtime.subscriptions import Subscriptions
from nairbus.schemas.wire import publish_size

if TYPE_CHECKING:
    from nairbus.agents.runtime.bus import Bus

__all__ = [
    "COUNTER_NAMES",
    "JSON_CONTENT_TYPE",
    "REPLAY_KEEP_S",
    "SESSION_EXPIRY_MAX",
    "TCP_NOTSENT_LOWAT",
    "Communicator",
    "InboundMessage",
]

SESSION_EXPIRY_MAX: Final = 2**32 - 1
"""MQTT 5's largest session expiry interval in seconds (it means: never expires)."""


class Communicator:
    """An MQTT 5 client for one agent: status with last will, subscriptions, bounded queues.

    ``status_payload(state)`` builds the retained JSON status for ``"online"`` / ``"offline"``. A read-only client
    (``nairbus watch``) passes ``status_topic=None``: no status, no last will.
    """

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        status_topic: str | None,
        status_payload: Callable[[str], bytes],
        *,
        logger: FilteringBoundLogger | None = None,
        inbox_key: Callable[[str], str] | None = None,
        session_expiry_s: int = 0,
        replay_s: float = 0.0,
        replay_max: int = 4096,
    ) -> None:
        if not 0 <= session_expiry_s <= SESSION_EXPIRY_MAX:
            raise ValueError(f"session_expiry_s must be 0 ... {SESSION_EXPIRY_MAX}, not {session_expiry_s}")
        # QoS 0 publishes made with replay=True, bounded by count and held for REPLAY_KEEP_S (at least replay_s).
        self._replay = ReplayWindow(replay_s, replay_max)
        self.broker = broker
        self.session_expiry_s = session_expiry_s
        """0: a clean session on every connection; otherwise the broker keeps this client's session (subscriptions,
        queued messages) this many seconds after it disconnects."""
        self.replay_s = replay_s
        self.client_id = client_id
        self.status_topic = status_topic
        self.status_payload = status_payload
        self.session: str = uuid.uuid4().hex[:12]
        self.connected = threading.Event()
        self._log = (logger or get_logger("nairbus.mqtt")).bind(client_id=client_id, session=self.session)
        self._counters = Counters()
        self._outgoing_drops = RateLimitedCounter(DROP_LOG_INTERVAL_S)
        self._inbound = InboundRouter(broker, inbox_key, self._counters, self._log)
        self._subscriptions = Subscriptions()
        self._session_tracker = SessionTracker()
        self._announcements = Announcements()
        self._outgoing = OutgoingQueues(broker.max_outgoing)
        self._max_packet_size: int | None = None
        self._aliases = TopicAliases()
        self._unwritten = UnwrittenBytes()
        self._gate = StartGate()
        self._started = False
        self._stopping = False
        self._stopped = False
        self._addresses = broker.addresses()
        self._address_index = 0
        self._failed_in_a_row = 0
        """Connection attempts that failed since the last success (with fallbacks, each tries the next node)."""
        self.mqtt5 = broker.protocol == "5"
        """MQTT 5 (properties, topic aliases, session expiry) or 3.1.1 (none of them)."""
        self._client = new_client(client_id, broker.protocol, persistent=bool(session_expiry_s))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # ------------------------------------------------------------------ public API

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (see ``COUNTER_NAMES``)."""
        return self._counters.snapshot()

    @property
    def wire_bytes(self) -> int:
        """Wire bytes of every publish accepted so far (one counter, without copying them all)."""
        return self._counters.value("wire_bytes")

    @property
    def endpoint(self) -> str:
        """``host:port`` of the broker node in use (or tried last)."""
        host, port = self._addresses[self._address_index]
        return f"{host}:{port}"

    def _next_node(self) -> None:
        """With fallbacks: the next node of the cluster for the next connection attempt (network thread, after an
        attempt failed, when no socket is open: a node that dropped the connection is tried once more, refuses, and
        the attempt after goes to the next one)."""
        if len(self._addresses) < 2:
            return
        self._address_index = (self._address_index + 1) % len(self._addresses)
        host, port = self._addresses[self._address_index]
        # paho 2's host/port setters refuse while it is between reconnect attempts (its state is "connection lost",
        # not "closed"), though no socket is open then; its reconnect reads these two fields.
        self._client._host, self._client._port = host, port

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Register a subscription; it is made on every (re)connect, and at once if connected now.

        A filter whose retained messages the client needs on every connection (births, statuses, discovery configs)
        is best subscribed at QoS 0 by a client with a persistent session: Mosquitto 2.0 does not send the retained
        messages again for a QoS 1 subscription of a resumed session that has messages queued (a restarted fusion
        agent would never learn its sensors); at QoS 0 it does.
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
        self._subscriptions.add(topic_filter, qos)
        if self.connected.is_set():
            self._send_subscribe([(topic_filter, qos)])

    def route(self, topic: str, handler: Callable[[InboundMessage], None], qos: int = 1) -> None:
        """Subscribe to one exact topic whose (rare, small) messages ``handler`` takes on the network thread, not
        the inbox: a sensor's commands, which must be answered while its own thread is busy with frames. The
        handler must be quick; whatever it raises is logged and swallowed."""
        self._inbound.route(topic, handler)
        self.subscribe(topic, qos)

    def start(self, timeout: float = 10.0) -> None:
        """Connect, publish ``online`` and subscribe; block until every subscription is granted.

        Raises ``ConnectionError`` with the reason (refused, unreachable, timeout) otherwise — an
        :class:`~nairbus.agents.runtime.errors.MqttError` saying which, with the broker's reason code if it sent one.
        """
        if self._started:
            raise RuntimeError("Communicator.start() called twice")
        self._started = True
        settings = self.broker
        configure_client(self._client, settings, self.status_topic, self.status_payload, timeout)
        self._log.info(
            "mqtt.connecting",
            broker=self.endpoint,
            tls=settings.tls_enabled,
            username=settings.username,
            subscriptions=len(self._subscriptions),
        )
        if self.mqtt5:
            self._client.connect_async(settings.host, settings.port, keepalive=settings.keepalive,
                                       clean_start=not self.session_expiry_s,
                                       properties=connect_properties(self.session_expiry_s))
        else:  # 3.1.1: the session's persistence was set on the client (clean_session), no properties
            self._client.connect_async(settings.host, settings.port, keepalive=settings.keepalive)
        self._client.loop_start()
        ready, failure = self._gate.wait(timeout)
        if ready:
            return
        if isinstance(failure, MqttError):  # refused by the broker
            error = failure
        elif failure == UNREACHABLE:
            error = MqttUnreachableError(describe_unreachable(settings.host, settings.port))
        else:
            error = MqttTimeoutError(timeout_message(
                self.endpoint, timeout, connected=self.connected.is_set(), tls=settings.tls_enabled))
        self._shutdown_client()
        self._log.error("mqtt.start_failed", broker=self.endpoint, reason=str(error))
        raise error

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
        """Queue a publish with its MQTT 5 content type (and message expiry); never blocks.

        ``content_type=None`` sends none (the lean topics: the birth says what they carry). ``alias=True`` uses a
        topic alias for a QoS 0 publish when the broker grants any. Returns ``False`` (and counts why) when the
        message will not be sent: the outgoing queue is full, QoS 0 while disconnected, larger than the broker
        accepts, or after ``stop()``. QoS 1/2 messages published while disconnected are queued and sent after the
        reconnect. ``replay=True`` (QoS 0, no content type) keeps the message for the replay window (see
        ``replay_s``). :attr:`last_wire_bytes` is the PUBLISH packet's size of the last accepted publish.
        """
        if self._stopped:
            self._counters.add("outgoing_dropped")
            return False
        expiry = None if expiry_s is None else max(1, math.ceil(expiry_s))
        wire_topic, alias_id = topic, None
        if alias and qos == 0 and not retain:
            wire_topic, alias_id = self._aliases.assign(topic)
        props = publish_properties(content_type, expiry, alias_id) if self.mqtt5 else None
        size = publish_size(len(wire_topic.encode()), len(payload), qos=qos,
                            properties_len=properties_len(props) if props is not None else 0, mqtt5=self.mqtt5)
        if not self._fits(topic, len(payload), size):
            sent = False
        elif qos != 0:
            return self._publish_acked(topic, payload, qos, retain, props, size)
        else:
            sent = self._publish_qos0(topic, wire_topic, payload, retain, props, size, replay=replay)
        if not sent and alias_id is not None and wire_topic != "":
            # An alias assigned by this call: the publish did not go out, so the broker never learnt it.
            self._aliases.forget(topic)
        return sent

    last_wire_bytes: int = 0

    def alias_extra_bytes(self, topic: str, payload_len: int) -> int:
        """Wire bytes the next QoS 0 ``publish(topic, payload, alias=True)`` of ``payload_len`` bytes takes beyond
        :func:`nairbus.schemas.wire.alias_wire_bytes`: the topic itself on the first publish of a connection (which
        teaches the broker the alias), 0 once the alias is set."""
        return self._aliases.extra_bytes(topic, payload_len)

    def announce(self, topic: str, payload: bytes, *, content_type: str | None) -> bool:
        """Publish a retained QoS 1 message now, and again after every reconnect.

        For what others need to know about this client whenever they (re)join — a sensor's birth: a broker restarted
        without persistence has forgotten its retained messages, and a fusion agent started after that would
        otherwise never learn the sensor. ``payload=b""`` clears the retained message and stops re-publishing it.
        """
        self._announcements.set(topic, payload, content_type)
        return self.publish(topic, payload, qos=1, retain=True, content_type=content_type)

    def replay_since(self, seconds: float) -> int:
        """Publish again the replayable messages of the last ``seconds`` (at most the last ``REPLAY_KEEP_S`` or
        ``replay_s``, whichever is longer) that no earlier request sent again — asked by a receiver whose session the
        broker lost; how many were sent."""
        return self._resend(self._replay.requested(seconds), window_s=seconds, why="request")

    def on_session_lost(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(down_s)`` on the network thread when a reconnection found no session at the broker (a
        broker restarted without persistence), once every subscription is made again; ``down_s``: seconds since
        the connection was lost. What others published to this client in between is gone; the callback may ask
        them for it (a fusion agent asks its sensors to replay)."""
        self._session_tracker.on_lost(callback)

    def pending_bytes(self) -> int:
        """Wire bytes of QoS 0 publishes handed to paho that its network thread has not written to the socket."""
        return self._unwritten.total

    def socket_outq(self) -> int:
        """Bytes the kernel holds for the broker connection, sent but unacknowledged or not sent yet (0: no socket).

        ``TIOCOUTQ`` on a TCP socket: what the link has not yet delivered (plus one round trip of acknowledgement).
        """
        return socket_outq(self._client.socket())

    def min_rtt(self) -> float:
        """The broker connection's minimum round trip in seconds (``TCP_INFO``; 0.0: no socket or not measured)."""
        return tcp_min_rtt(self._client.socket())

    def tcp_info(self) -> TcpInfo | None:
        """The broker connection's ``TCP_INFO`` (:func:`~nairbus.agents.runtime.linkprobe.tcp_info`)."""
        return tcp_info(self._client.socket())

    def get(self, timeout: float | None = None) -> InboundMessage | None:
        """The next received message; ``None`` if none arrives within ``timeout`` (``None``: wait forever)."""
        return self._inbound.get(timeout=timeout)

    def wait_published(self, timeout: float = 5.0) -> bool:
        """Wait until every QoS 1/2 publish made so far is acknowledged; ``False`` on timeout."""
        return self._outgoing.wait_acknowledged(timeout)

    def stop(self, timeout: float = 5.0, *, withdraw: bool = False) -> None:
        """Publish ``offline`` (retained, QoS 1), wait for it, disconnect cleanly; idempotent. ``withdraw``: clear
        the retained status instead (an agent that is gone for good: a one-shot run that ended).

        The clean DISCONNECT tells the broker not to send the last will.
        """
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            return
        self._stopping = True
        if self.connected.is_set():
            self._publish_status(None if withdraw else "offline")
            if not self.wait_published(timeout):
                self._log.warning("mqtt.stop_unacknowledged", timeout_s=timeout)
        self._shutdown_client()
        self._log.info("mqtt.stopped", counters=self.counters)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    @property
    def _ready(self) -> bool:
        """Connected and every subscription granted (at least once)."""
        return self._gate.ready

    def _count(self, name: str, n: int = 1) -> None:
        self._counters.add(name, n)

    def _fits(self, topic: str, payload_len: int, size: int) -> bool:
        """Whether a PUBLISH of ``size`` bytes is within the broker's maximum packet size (else counted, logged)."""
        if self._max_packet_size is None or size <= self._max_packet_size:
            return True
        self._count("oversize_dropped")
        self._log.warning(
            "mqtt.publish_oversize", topic=topic, payload_bytes=payload_len, max_packet=self._max_packet_size
        )
        return False

    def _publish_qos0(self, topic: str, wire_topic: str, payload: bytes, retain: bool, props: Properties | None,
                      size: int,
                      *, replay: bool) -> bool:
        """Hand a QoS 0 publish to paho unless the queue is full or there is no connection (counted); ``replay``:
        keep it for the replay window."""
        if self._outgoing.qos0_full():
            return self._drop_outgoing(topic, 0)
        # Held across paho's publish so on_publish cannot run before the mid is recorded. A QoS 0 publish takes
        # none of paho's locks, so on_publish (called under paho's locks) cannot deadlock with this.
        with self._unwritten.lock:
            info = self._client.publish(wire_topic, payload, qos=0, retain=retain, properties=props)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._unwritten.add(info.mid, size)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return self._drop_outgoing(topic, 0)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._count("offline_dropped")
            return False
        self._outgoing.add_qos0(info)
        if replay and self._replay.enabled:
            self._replay.record(topic, payload)
        self._count("wire_bytes", size)
        self.last_wire_bytes = size
        return True

    def _publish_acked(self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties | None,
                       size: int) -> bool:
        """Hand a QoS 1/2 publish to paho (queued for the reconnect while disconnected) unless its queue is full."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return self._drop_outgoing(topic, qos)
        self._count("wire_bytes", size)
        self.last_wire_bytes = size
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # Queued for the reconnect. paho leaves rc at NO_CONN even after it is delivered, which
            # would make wait_for_publish() raise; the message is in flight as far as we care.
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._outgoing.add_acked(info, compact=True)
        return True

    def _drop_outgoing(self, topic: str, qos: int) -> bool:
        self._count("outgoing_dropped")
        if due := self._outgoing_drops.hit():
            self._log.warning(
                "mqtt.outgoing_full", dropped=due, topic=topic, qos=qos, max_outgoing=self.broker.max_outgoing
            )
        return False

    def _publish_status(self, state: str | None) -> None:
        """The retained status (``None``: cleared)."""
        if self.status_topic is None:
            return
        props = publish_properties(JSON_CONTENT_TYPE, None) if self.mqtt5 else None
        payload = b"" if state is None else self.status_payload(state)
        info = self._client.publish(self.status_topic, payload, qos=1, retain=True, properties=props)
        self._outgoing.add_acked(info)

    def _republish_announcements(self) -> None:
        announcements = self._announcements.items()
        for topic, (payload, content_type) in announcements:
            props = publish_properties(content_type, None) if self.mqtt5 else None
            info = self._client.publish(topic, payload, qos=1, retain=True, properties=props)
            self._outgoing.add_acked(info)
        if announcements:
            self._log.info("mqtt.announced_again", topics=len(announcements))

    def _replay_recent(self) -> None:
        """After a reconnect: publish again the replayable messages of the last ``replay_s`` before the loss."""
        lost_at = self._session_tracker.take_lost_at()
        if lost_at is None:
            return
        self._resend(self._replay.before_loss(lost_at), window_s=self.replay_s, why="reconnect")

    def _resend(self, messages: list[tuple[str, bytes]], window_s: float, why: str) -> int:
        sent = sum(self.publish(topic, payload, qos=0, content_type=None, alias=True) for topic, payload in messages)
        if messages:
            self._count("replayed", sent)
            self._log.info("mqtt.replayed", messages=sent, window_s=window_s, why=why)
        return sent

    def _send_subscribe(self, entries: list[tuple[str, int]]) -> None:
        rc = self._subscriptions.send(self._client, entries, mqtt5=self.mqtt5)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._log.warning("mqtt.subscribe_not_sent", filters=[f for f, _ in entries], rc=mqtt.error_string(rc))

    def _new_connection_state(self, alias_max: int) -> None:
        """A connection began (``alias_max``: the broker's topic alias maximum) or ended (0)."""
        self._aliases.reset(alias_max)
        self._unwritten.reset()

    def _shutdown_client(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def _set_ready(self) -> None:
        self._gate.set_ready()
        self._session_tracker.tell_if_lost(self._log)

    # ------------------------------------------------------------------ paho callbacks (network thread)
    # An exception escaping a callback would end paho's network thread (suppress_exceptions is
    # False), so each callback logs and swallows its own errors.

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            if reason_code.is_failure:
                error = MqttConnectError.from_connack(self.endpoint, reason_code)
                self._log.error("mqtt.connect_refused", broker=self.endpoint, reason_code=str(reason_code))
                self._gate.connect_refused(error)
                return
            self._connected(flags, reason_code, properties)
        except Exception:
            self._log.exception("mqtt.on_connect_error")

    def _connected(self, flags: mqtt.ConnectFlags, reason_code: ReasonCode, properties: Properties | None) -> None:
        """A CONNACK accepting the connection: subscribe, announce, replay (on the network thread)."""
        self._gate.connections += 1
        self._failed_in_a_row = 0
        reconnect = self._gate.connections > 1
        if reconnect:
            self._count("reconnects")
            if not flags.session_present:
                self._session_tracker.no_session_found()
        self._max_packet_size = getattr(properties, "MaximumPacketSize", None) if properties else None
        self._new_connection_state(int(getattr(properties, "TopicAliasMaximum", 0) or 0) if properties else 0)
        tune_socket(self._client.socket(), self.broker.notsent_lowat, self._log, self.broker.tcp_congestion)
        self._log.info(
            "mqtt.connected",
            broker=self.endpoint,
            reason_code=str(reason_code),
            session_present=flags.session_present,
            reconnect=reconnect,
            max_packet_size=self._max_packet_size,
        )
        self.connected.set()
        # SUBSCRIBE goes out before anything this client publishes: the broker handles a connection's packets in
        # order, so whoever reacts to this client's status or birth (a fusion agent asking a returning sensor
        # to replay) reaches a subscription that is already there.
        entries = self._subscriptions.for_new_connection()
        if entries:
            self._send_subscribe(entries)
        self._publish_status("online")
        if reconnect:
            self._republish_announcements()
            self._replay_recent()
        if not entries:
            self._set_ready()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            self._failed_in_a_row += 1
            self._next_node()
            if self._failed_in_a_row < len(self._addresses) and not self._gate.ready:
                return  # another node of the cluster is still to be tried before the start gives up
            first = self._gate.connect_failed()
            if not first and not self._stopping:
                self._log.warning("mqtt.reconnect_failed", broker=self.endpoint)
        except Exception:
            self._log.exception("mqtt.on_connect_fail_error")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            was_connected = self.connected.is_set()
            self.connected.clear()
            self._new_connection_state(0)
            if self._stopping:
                self._log.info("mqtt.disconnected", broker=self.endpoint, reason_code=str(reason_code))
                return
            if was_connected:
                self._count("disconnects")
                self._session_tracker.connection_lost()
            self._log.warning(
                "mqtt.connection_lost",
                broker=self.endpoint,
                reason_code=str(reason_code),
                from_broker=flags.is_disconnect_packet_from_server,
            )
        except Exception:
            self._log.exception("mqtt.on_disconnect_error")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code_list: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            filters, remaining = self._subscriptions.acknowledged(mid)
            if filters is None:
                return
            refused = [(f, rc) for f, rc in zip(filters, reason_code_list, strict=False) if rc.is_failure]
            if refused:
                self._log.error("mqtt.subscribe_refused", refused=[(f, str(rc)) for f, rc in refused])
                self._gate.subscription_refused(MqttSubscribeError.from_suback(self.endpoint, refused))
                return
            self._log.info("mqtt.subscribed", filters=filters, granted_qos=[rc.value for rc in reason_code_list])
            if remaining == 0:
                self._set_ready()
        except Exception:
            self._log.exception("mqtt.on_subscribe_error")

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        try:
            self._unwritten.written(mid)
            if reason_code.is_failure:
                self._count("publish_rejected")
                self._log.warning("mqtt.publish_rejected", mid=mid, reason_code=str(reason_code))
            else:
                self._count("published")
        except Exception:
            self._log.exception("mqtt.on_publish_error")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._inbound.deliver(message)
        except Exception:
            self._log.exception("mqtt.on_message_error")


if TYPE_CHECKING:

    def _a_communicator_is_a_bus(communicator: Communicator) -> Bus:
        """Checked by mypy, never run: ``Communicator`` satisfies the :class:`~nairbus.agents.runtime.bus.Bus`
        protocol that the agents use."""
        return communicator
