"""The one MQTT communicator of nairbus, over paho-mqtt 2.x (callback API version 2, MQTT 5).

Every agent talks to the broker through a ``Communicator`` and nothing else in nairbus imports paho.
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
  model work never runs on the network thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import os
import socket
import struct
import termios
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from structlog.typing import FilteringBoundLogger

from nairbus.agents.runtime.inbox import FairInbox
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.schemas.wire import publish_size, varint_len

JSON_CONTENT_TYPE: Final = "application/json"
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
TCP_NOTSENT_LOWAT: Final = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
"""Linux socket option: the kernel reports the socket writable only while fewer unsent bytes than this wait."""
_DROP_LOG_INTERVAL_S: Final = 5.0
SESSION_EXPIRY_MAX: Final = 2**32 - 1
"""MQTT 5's largest session expiry interval in seconds (it means: never expires)."""
REPLAY_KEEP_S: Final = 10.0
"""Replayable publishes are held this long (at least ``replay_s``), for a ``replay_since`` asked after a reconnect."""
_UNREACHABLE: Final = "unreachable"
# CONNACK reason codes that mean "fix your credentials / ACL", with a hint for the error message.
_REFUSAL_HINTS: Final = {
    134: "bad user name or password",
    135: "not authorised",
    138: "banned",
    140: "bad authentication method",
}


class _PahoNoiseFilter(logging.Filter):
    """Drops paho 2.2's ERROR "Client is not connected" that its loop logs on every clean disconnect."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_PAHO_LOGGER = logging.getLogger("paho.mqtt.client")
_PAHO_LOGGER.addFilter(_PahoNoiseFilter())


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message taken from the inbox. ``retain`` is true for a stored message delivered on subscribe."""

    topic: str
    payload: bytes
    content_type: str | None
    retain: bool
    received_ts: float
    """Wall-clock time (``time.time()``) at which the network thread received it."""


def _is_done(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether paho is finished with a publish (sent, acknowledged, or given up)."""
    try:
        return info.is_published()
    except (ValueError, RuntimeError):  # paho raises for failed publishes: nothing left to wait for
        return True


def _properties(packet_type: int, content_type: str) -> Properties:
    props = Properties(packet_type)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    return props


class _PackedProperties(Properties):
    """PUBLISH properties that never change once made, packed once.

    paho builds and packs a ``Properties`` for every publish; at hundreds of fragments a second that was a
    fifth of a sensor's time. The bus only ever sends a handful of (content type, expiry) pairs, so each is
    built once, packed once, and shared (paho only reads it).
    """

    _packed: bytes

    def pack(self) -> bytes:
        return self._packed


@functools.lru_cache(maxsize=256)
def _publish_properties(content_type: str | None, expiry_s: int | None, alias: int | None = None) -> Properties:
    props = _PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type is not None:
        props.ContentType = content_type
    if expiry_s is not None:
        props.MessageExpiryInterval = expiry_s
    if alias is not None:
        props.TopicAlias = alias
    packed = Properties.pack(props)  # type: ignore[no-untyped-call]
    object.__setattr__(props, "_packed", packed)
    return props


def _properties_len(props: Properties) -> int:
    """Bytes of the properties themselves (the packed form starts with their variable-length length)."""
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return len(packed) - varint_len(max(0, len(packed) - 1))


def _check_tls_files(settings: BrokerSettings) -> None:
    """Raise ``ConnectionError`` naming any configured TLS file that cannot be read (paho's own error does not)."""
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise ConnectionError(f"broker.{name} {path} does not exist or is not readable")


class _RateLimitedCounter:
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
        if replay_s < 0 or replay_max < 1:
            raise ValueError("replay_s must be >= 0 and replay_max >= 1")
        self.broker = broker
        self.session_expiry_s = session_expiry_s
        """0: a clean session on every connection; otherwise the broker keeps this client's session (subscriptions,
        queued messages) this many seconds after it disconnects."""
        self.replay_s = replay_s
        # QoS 0 publishes made with replay=True, newest last: (monotonic time, topic, payload), bounded by count
        # and held for _replay_keep_s.
        self._replay: deque[tuple[float, str, bytes]] = deque(maxlen=replay_max)
        self._replay_keep_s = max(replay_s, REPLAY_KEEP_S)
        self._lost_at: float | None = None
        # A reconnection the broker had no session for: the monotonic time its connection was lost, until the
        # subscriptions are made again and the session_lost callbacks are told.
        self._fresh_session_after: float | None = None
        self._session_lost_callbacks: list[Callable[[float], None]] = []
        self.client_id = client_id
        self.status_topic = status_topic
        self.status_payload = status_payload
        self.session: str = uuid.uuid4().hex[:12]
        self.connected = threading.Event()
        self._log = (logger or get_logger("nairbus.mqtt")).bind(client_id=client_id, session=self.session)
        # Received messages, one queue per sender (inbox_key(topic)) served in turn: a flooding sender overflows
        # only its own queue. Without a key, one FIFO bounded by inbox_size.
        self._inbox_key = inbox_key or (lambda _topic: "")
        self._inbox: FairInbox[InboundMessage] = FairInbox(
            broker.inbox_per_key if inbox_key else broker.inbox_size, broker.inbox_size, broker.inbox_bytes,
            size=lambda m: len(m.payload) + len(m.topic))
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._counter_lock = threading.Lock()
        self._inbox_drops = _RateLimitedCounter(_DROP_LOG_INTERVAL_S)
        self._outgoing_drops = _RateLimitedCounter(_DROP_LOG_INTERVAL_S)

        # Subscriptions: filter -> QoS; SUBSCRIBE packets awaiting their SUBACK: mid -> filters.
        self._sub_lock = threading.Lock()
        self._subscriptions: dict[str, int] = {}
        self._pending_subs: dict[int, list[str]] = {}

        # Topics whose messages go to a handler on the network thread instead of the inbox (see route()).
        self._routes: dict[str, Callable[[InboundMessage], None]] = {}

        # Retained messages re-published on every reconnect (see announce()): topic -> (payload, content type).
        self._announcements: dict[str, tuple[bytes, str | None]] = {}

        # Outgoing publishes paho has not finished with (see publish()).
        self._out_lock = threading.Lock()
        self._qos0_out: deque[mqtt.MQTTMessageInfo] = deque()
        self._acked_out: deque[mqtt.MQTTMessageInfo] = deque()
        self._max_packet_size: int | None = None
        # Topic aliases of this connection (topic -> alias) and QoS 0 bytes paho has not written yet (mid -> bytes).
        self._alias_max = 0
        self._aliases: dict[str, int] = {}
        self._unwritten: dict[int, int] = {}
        self._unwritten_bytes = 0
        self._unwritten_lock = threading.Lock()

        # start() waits on this for "connected and subscribed" or a failure.
        self._cond = threading.Condition()
        self._ready = False
        self._failure: str | None = None
        self._connections = 0
        self._started = False
        self._stopping = False
        self._stopped = False

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
        )
        self._client.enable_logger(_PAHO_LOGGER)
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
        with self._counter_lock:
            return dict(self._counters)

    @property
    def wire_bytes(self) -> int:
        """Wire bytes of every publish accepted so far (one counter, without copying them all)."""
        with self._counter_lock:
            return self._counters["wire_bytes"]

    @property
    def endpoint(self) -> str:
        """``host:port`` of the broker."""
        return f"{self.broker.host}:{self.broker.port}"

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Register a subscription; it is made on every (re)connect, and at once if connected now.

        A filter whose retained messages the client needs on every connection (births, statuses, discovery configs)
        is best subscribed at QoS 0 by a client with a persistent session: Mosquitto 2.0 does not send the retained
        messages again for a QoS 1 subscription of a resumed session that has messages queued (a restarted fusion
        agent would never learn its sensors); at QoS 0 it does.
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
        with self._sub_lock:
            self._subscriptions[topic_filter] = qos
        if self.connected.is_set():
            self._send_subscribe([(topic_filter, qos)])

    def route(self, topic: str, handler: Callable[[InboundMessage], None], qos: int = 1) -> None:
        """Subscribe to one exact topic whose (rare, small) messages ``handler`` takes on the network thread, not
        the inbox: a sensor's commands, which must be answered while its own thread is busy with frames. The
        handler must be quick; whatever it raises is logged and swallowed."""
        with self._sub_lock:
            self._routes[topic] = handler
        self.subscribe(topic, qos)

    def start(self, timeout: float = 10.0) -> None:
        """Connect, publish ``online`` and subscribe; block until every subscription is granted.

        Raises ``ConnectionError`` with the reason (refused, unreachable, timeout) otherwise.
        """
        if self._started:
            raise RuntimeError("Communicator.start() called twice")
        self._started = True
        settings = self.broker
        client = self._client
        if settings.username is not None:
            try:
                password = settings.password_value()
            except ValueError as exc:
                raise ConnectionError(str(exc)) from None
            client.username_pw_set(settings.username, password)
        if settings.tls_enabled:
            _check_tls_files(settings)
            client.tls_set(
                ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
                certfile=str(settings.tls_cert) if settings.tls_cert else None,
                keyfile=str(settings.tls_key) if settings.tls_key else None,
            )
            client.tls_insecure_set(settings.tls_insecure)
        will = _properties(PacketTypes.WILLMESSAGE, JSON_CONTENT_TYPE)
        if self.status_topic is not None:
            client.will_set(self.status_topic, self.status_payload("offline"), qos=1, retain=True, properties=will)
        # paho's type hints say int, but the delays are used as floats (time.sleep).
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(settings.max_outgoing)
        client.connect_timeout = min(5.0, max(timeout, 0.1))

        self._log.info(
            "mqtt.connecting",
            broker=self.endpoint,
            tls=settings.tls_enabled,
            username=settings.username,
            subscriptions=len(self._subscriptions),
        )
        connect_props = None
        if self.session_expiry_s:
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = self.session_expiry_s
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive,
                             clean_start=not self.session_expiry_s, properties=connect_props)
        client.loop_start()

        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready and self._failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            ready, failure = self._ready, self._failure
        if ready:
            return
        if failure is None:
            what = "subscriptions not granted" if self.connected.is_set() else "no CONNACK"
            failure = f"timeout: {what} from the broker at {self.endpoint} within {timeout:g} s"
            if settings.tls_enabled and not self.connected.is_set():
                failure += " (TLS: a listener that requires a client certificate drops clients without an accepted one;"
                failure += " the broker's log says why)"
        elif failure == _UNREACHABLE:
            failure = self._describe_unreachable()
        self._shutdown_client()
        self._log.error("mqtt.start_failed", broker=self.endpoint, reason=failure)
        raise ConnectionError(failure)

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
            self._count("outgoing_dropped")
            return False
        expiry = None if expiry_s is None else max(1, math.ceil(expiry_s))
        wire_topic, alias_id = topic, None
        if alias and qos == 0 and not retain:
            wire_topic, alias_id = self._alias_for(topic)
        props = _publish_properties(content_type, expiry, alias_id)
        size = publish_size(len(wire_topic.encode()), len(payload), qos=qos, properties_len=_properties_len(props))
        fresh_alias = alias_id is not None and wire_topic != ""
        # An alias assigned by this call: if the publish does not go out, the broker never learns it.
        if self._max_packet_size is not None and size > self._max_packet_size:
            if fresh_alias:
                self._forget_alias(topic)
            self._count("oversize_dropped")
            self._log.warning(
                "mqtt.publish_oversize", topic=topic, payload_bytes=len(payload), max_packet=self._max_packet_size
            )
            return False
        if qos == 0:
            with self._out_lock:
                while self._qos0_out and _is_done(self._qos0_out[0]):
                    self._qos0_out.popleft()
                full = len(self._qos0_out) >= self.broker.max_outgoing
            if full:
                if fresh_alias:
                    self._forget_alias(topic)
                return self._drop_outgoing(topic, qos)
        if qos == 0:
            # Held across paho's publish so on_publish cannot run before the mid is recorded. A QoS 0 publish takes
            # none of paho's locks, so on_publish (called under paho's locks) cannot deadlock with this.
            with self._unwritten_lock:
                info = self._client.publish(wire_topic, payload, qos=qos, retain=retain, properties=props)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._unwritten[info.mid] = size
                    self._unwritten_bytes += size
        else:
            info = self._client.publish(wire_topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            if fresh_alias:
                self._forget_alias(topic)
            return self._drop_outgoing(topic, qos)
        if qos == 0:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                if fresh_alias:
                    self._forget_alias(topic)
                self._count("offline_dropped")
                return False
            with self._out_lock:
                self._qos0_out.append(info)
            if replay and self.replay_s > 0:
                now = time.monotonic()
                while self._replay and self._replay[0][0] < now - self._replay_keep_s:
                    self._replay.popleft()  # too old to be replayed after any later loss or request
                self._replay.append((now, topic, payload))
            self._count("wire_bytes", size)
            self.last_wire_bytes = size
            return True
        self._count("wire_bytes", size)
        self.last_wire_bytes = size
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # Queued for the reconnect. paho leaves rc at NO_CONN even after it is delivered, which
            # would make wait_for_publish() raise; the message is in flight as far as we care.
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        with self._out_lock:
            self._acked_out.append(info)
            if len(self._acked_out) > 2 * self.broker.max_outgoing:
                self._acked_out = deque(i for i in self._acked_out if not _is_done(i))
        return True

    last_wire_bytes: int = 0

    def announce(self, topic: str, payload: bytes, *, content_type: str | None) -> bool:
        """Publish a retained QoS 1 message now, and again after every reconnect.

        For what others need to know about this client whenever they (re)join — a sensor's birth: a broker restarted
        without persistence has forgotten its retained messages, and a fusion agent started after that would
        otherwise never learn the sensor. ``payload=b""`` clears the retained message and stops re-publishing it.
        """
        with self._sub_lock:
            if payload:
                self._announcements[topic] = (payload, content_type)
            else:
                self._announcements.pop(topic, None)
        return self.publish(topic, payload, qos=1, retain=True, content_type=content_type)

    def _republish_announcements(self) -> None:
        with self._sub_lock:
            announcements = list(self._announcements.items())
        for topic, (payload, content_type) in announcements:
            props = _publish_properties(content_type, None)
            info = self._client.publish(topic, payload, qos=1, retain=True, properties=props)
            with self._out_lock:
                self._acked_out.append(info)
        if announcements:
            self._log.info("mqtt.announced_again", topics=len(announcements))

    def _replay_recent(self) -> None:
        """After a reconnect: publish again the replayable messages of the last ``replay_s`` before the loss."""
        lost_at, self._lost_at = self._lost_at, None
        if lost_at is None or not self._replay:
            return
        since = lost_at - self.replay_s
        recent = [(topic, payload) for ts, topic, payload in list(self._replay) if since <= ts <= lost_at]
        self._resend(recent, window_s=self.replay_s, why="reconnect")

    def replay_since(self, seconds: float) -> int:
        """Publish again the replayable messages of the last ``seconds`` (at most the last ``REPLAY_KEEP_S`` or
        ``replay_s``, whichever is longer) — asked by a receiver whose session the broker lost; how many were sent."""
        since = time.monotonic() - min(seconds, self._replay_keep_s)
        return self._resend([(topic, payload) for ts, topic, payload in list(self._replay) if ts >= since],
                            window_s=seconds, why="request")

    def _resend(self, messages: list[tuple[str, bytes]], window_s: float, why: str) -> int:
        sent = sum(self.publish(topic, payload, qos=0, content_type=None, alias=True) for topic, payload in messages)
        if messages:
            self._count("replayed", sent)
            self._log.info("mqtt.replayed", messages=sent, window_s=window_s, why=why)
        return sent

    def on_session_lost(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(down_s)`` on the network thread when a reconnection found no session at the broker (a
        broker restarted without persistence), once every subscription is made again; ``down_s``: seconds since
        the connection was lost. What others published to this client in between is gone; the callback may ask
        them for it (a fusion agent asks its sensors to replay)."""
        self._session_lost_callbacks.append(callback)

    def pending_bytes(self) -> int:
        """Wire bytes of QoS 0 publishes handed to paho that its network thread has not written to the socket."""
        with self._unwritten_lock:
            return self._unwritten_bytes

    def socket_outq(self) -> int:
        """Bytes the kernel holds for the broker connection, sent but unacknowledged or not sent yet (0: no socket).

        ``TIOCOUTQ`` on a TCP socket: what the link has not yet delivered (plus one round trip of acknowledgement).
        """
        sock = self._client.socket()
        if sock is None:
            return 0
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        value: int = struct.unpack("i", raw)[0]
        return max(0, value)

    def get(self, timeout: float | None = None) -> InboundMessage | None:
        """The next received message; ``None`` if none arrives within ``timeout`` (``None``: wait forever)."""
        return self._inbox.get(timeout=timeout)

    def wait_published(self, timeout: float = 5.0) -> bool:
        """Wait until every QoS 1/2 publish made so far is acknowledged; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._out_lock:
            waiting = [info for info in self._acked_out if not _is_done(info)]
        for info in waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(ValueError, RuntimeError):  # failed: nothing left to wait for
                info.wait_for_publish(remaining)
        done = all(_is_done(info) for info in waiting)
        with self._out_lock:
            while self._acked_out and _is_done(self._acked_out[0]):
                self._acked_out.popleft()
        return done

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (retained, QoS 1), wait for it, disconnect cleanly; idempotent.

        The clean DISCONNECT tells the broker not to send the last will.
        """
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            return
        self._stopping = True
        if self.connected.is_set():
            self._publish_status("offline")
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

    def _count(self, name: str, n: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += n

    def _alias_for(self, topic: str) -> tuple[str, int | None]:
        """The topic to send and the alias to carry: ``("", n)`` once ``n`` stands for ``topic``."""
        with self._out_lock:
            known = self._aliases.get(topic)
            if known is not None:
                return "", known
            if len(self._aliases) >= self._alias_max:
                return topic, None
            alias = len(self._aliases) + 1
            self._aliases[topic] = alias
            return topic, alias

    def _forget_alias(self, topic: str) -> None:
        with self._out_lock:
            self._aliases.pop(topic, None)

    def _reset_aliases(self, alias_max: int) -> None:
        with self._out_lock:
            self._aliases.clear()
            self._alias_max = alias_max
        with self._unwritten_lock:
            self._unwritten.clear()
            self._unwritten_bytes = 0

    def _tune_socket(self) -> None:
        """A small ``TCP_NOTSENT_LOWAT``, so the kernel does not take a backlog the sender cannot see or drop."""
        lowat = self.broker.notsent_lowat
        sock = self._client.socket()
        if lowat is None or sock is None:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, lowat)  # type: ignore[attr-defined]
        except (OSError, AttributeError) as err:
            self._log.info("mqtt.notsent_lowat_unsupported", error=str(err))

    def _drop_outgoing(self, topic: str, qos: int) -> bool:
        self._count("outgoing_dropped")
        if due := self._outgoing_drops.hit():
            self._log.warning(
                "mqtt.outgoing_full", dropped=due, topic=topic, qos=qos, max_outgoing=self.broker.max_outgoing
            )
        return False

    def _publish_status(self, state: str) -> None:
        if self.status_topic is None:
            return
        props = _publish_properties(JSON_CONTENT_TYPE, None)
        info = self._client.publish(self.status_topic, self.status_payload(state), qos=1, retain=True, properties=props)
        with self._out_lock:
            self._acked_out.append(info)

    def _send_subscribe(self, entries: list[tuple[str, int]]) -> None:
        with self._sub_lock:
            rc, mid = self._client.subscribe([(f, SubscribeOptions(qos=q)) for f, q in entries])
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._pending_subs[mid] = [f for f, _ in entries]
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._log.warning("mqtt.subscribe_not_sent", filters=[f for f, _ in entries], rc=mqtt.error_string(rc))

    def _describe_unreachable(self) -> str:
        try:
            with socket.create_connection((self.broker.host, self.broker.port), timeout=2.0):
                pass
        except OSError as err:
            return f"broker unreachable at {self.endpoint}: {err.strerror or err}"
        return (
            f"could not establish an MQTT connection to {self.endpoint} although it accepts TCP "
            "connections (TLS settings, or not an MQTT listener?)"
        )

    def _shutdown_client(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

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
                hint = _REFUSAL_HINTS.get(reason_code.value, "")
                reason = f"refused by the broker at {self.endpoint}: {reason_code}" + (
                    f" ({hint}: check the username, password and ACL)" if hint else ""
                )
                self._log.error("mqtt.connect_refused", broker=self.endpoint, reason_code=str(reason_code))
                with self._cond:
                    if not self._ready and self._failure is None and self._connections == 0:
                        self._failure = reason
                    self._cond.notify_all()
                return
            self._connections += 1
            if self._connections > 1:
                self._count("reconnects")
                if not flags.session_present:
                    self._fresh_session_after = self._lost_at if self._lost_at is not None else time.monotonic()
            self._max_packet_size = getattr(properties, "MaximumPacketSize", None) if properties else None
            self._reset_aliases(int(getattr(properties, "TopicAliasMaximum", 0) or 0) if properties else 0)
            self._tune_socket()
            self._log.info(
                "mqtt.connected",
                broker=self.endpoint,
                reason_code=str(reason_code),
                session_present=flags.session_present,
                reconnect=self._connections > 1,
                max_packet_size=self._max_packet_size,
            )
            self.connected.set()
            # SUBSCRIBE goes out before anything this client publishes: the broker handles a connection's packets in
            # order, so whoever reacts to this client's status or birth (a fusion agent asking a returning sensor
            # to replay) reaches a subscription that is already there.
            with self._sub_lock:
                self._pending_subs.clear()
                entries = list(self._subscriptions.items())
            if entries:
                self._send_subscribe(entries)
            self._publish_status("online")
            if self._connections > 1:
                self._republish_announcements()
                self._replay_recent()
            if not entries:
                self._set_ready()
        except Exception:
            self._log.exception("mqtt.on_connect_error")

    def _set_ready(self) -> None:
        with self._cond:
            self._ready = True
            self._cond.notify_all()
        lost_at, self._fresh_session_after = self._fresh_session_after, None
        if lost_at is not None:
            down_s = time.monotonic() - lost_at
            for callback in self._session_lost_callbacks:
                try:
                    callback(down_s)
                except Exception:
                    self._log.exception("mqtt.session_lost_callback_error")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        try:
            with self._cond:
                first = self._connections == 0 and not self._ready
                if first and self._failure is None:
                    self._failure = _UNREACHABLE
                self._cond.notify_all()
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
            self._reset_aliases(0)
            if self._stopping:
                self._log.info("mqtt.disconnected", broker=self.endpoint, reason_code=str(reason_code))
                return
            if was_connected:
                self._count("disconnects")
                self._lost_at = time.monotonic()
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
            with self._sub_lock:
                filters = self._pending_subs.pop(mid, None)
                remaining = len(self._pending_subs)
            if filters is None:
                return
            refused = [(f, str(rc)) for f, rc in zip(filters, reason_code_list, strict=False) if rc.is_failure]
            if refused:
                self._log.error("mqtt.subscribe_refused", refused=refused)
                with self._cond:
                    if not self._ready and self._failure is None:
                        self._failure = "; ".join(
                            f"subscription to {f!r} refused by the broker at {self.endpoint}: {rc}" for f, rc in refused
                        )
                    self._cond.notify_all()
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
            with self._unwritten_lock:
                self._unwritten_bytes -= self._unwritten.pop(mid, 0)
            if reason_code.is_failure:
                self._count("publish_rejected")
                self._log.warning("mqtt.publish_rejected", mid=mid, reason_code=str(reason_code))
            else:
                self._count("published")
        except Exception:
            self._log.exception("mqtt.on_publish_error")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            props = message.properties
            content_type = getattr(props, "ContentType", None) if props is not None else None
            inbound = InboundMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                content_type=content_type,
                retain=bool(message.retain),
                received_ts=time.time(),
            )
            self._count("received")
            handler = self._routes.get(inbound.topic)
            if handler is not None:
                try:
                    handler(inbound)
                except Exception:
                    self._log.exception("mqtt.route_handler_error", topic=inbound.topic)
                return
            dropped = self._inbox.put(self._inbox_key(inbound.topic), inbound)
            if dropped:
                self._count("inbox_dropped", dropped)
                if due := self._inbox_drops.hit():
                    self._log.warning(
                        "mqtt.inbox_full", dropped=due, inbox_size=self.broker.inbox_size, topic=inbound.topic
                    )
        except Exception:
            self._log.exception("mqtt.on_message_error")
