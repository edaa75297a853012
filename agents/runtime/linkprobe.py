"""What a sender can see of its link to the broker: its backlog, the kernel's, and whether the broker is reachable.

Bytes are counted as the wire sees them. A sender sees its own backlog in two places: bytes handed to paho that its
network thread has not written yet (:class:`UnwrittenBytes`) and bytes the kernel holds unacknowledged
(:func:`socket_outq`, ``TIOCOUTQ``). ``TCP_NOTSENT_LOWAT`` (:func:`tune_socket`) keeps the kernel from soaking up a
backlog out of sight. :func:`describe_unreachable` probes the broker's port to say why no MQTT connection came up.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from structlog.typing import FilteringBoundLogger

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

__all__ = [
    "TCP_NOTSENT_LOWAT",
    "TcpInfo",
    "UnwrittenBytes",
    "describe_unreachable",
    "set_congestion",
    "socket_outq",
    "tcp_info",
    "tcp_min_rtt",
    "tune_socket",
]

TCP_NOTSENT_LOWAT: Final = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
"""Linux socket option: the kernel reports the socket writable only while fewer unsent bytes than this wait."""
TCP_INFO: Final = getattr(socket, "TCP_INFO", 11)
"""Linux socket option: the connection's ``struct tcp_info``."""
TCP_CONGESTION: Final = getattr(socket, "TCP_CONGESTION", 13)
"""Linux socket option: the connection's congestion control algorithm, by name."""
_TCPI_MIN_RTT_OFFSET: Final = 148
"""Offset of ``tcpi_min_rtt`` (microseconds, ``__u32``) in ``struct tcp_info`` (linux/tcp.h; Linux 4.6 and later)."""


_TCP_INFO_LAYOUT: Final = struct.Struct("=7xBI4xI4x4I20x6I16xI40xII8xQ")
"""The fields of ``struct tcp_info`` (linux/tcp.h) :class:`TcpInfo` reads, up to ``tcpi_delivery_rate`` (Linux 4.9)."""


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """What the kernel says of a TCP connection's path (``TCP_INFO``), in bytes and seconds."""

    app_limited: bool
    """The last delivery-rate sample was taken while the sender had less to send than the path carries."""
    mss: int
    unacked_segments: int
    lost_segments: int
    retrans_segments: int
    total_retrans: int
    """Segments retransmitted over the connection's life."""
    rto: float
    """The retransmission timeout."""
    rtt: float
    """Smoothed round trip."""
    rttvar: float
    ssthresh: int
    cwnd: int
    """Congestion window, segments."""
    notsent_bytes: int
    """Bytes in the send buffer not yet sent (queued in the sender's kernel, behind the congestion window)."""
    min_rtt: float
    delivery_rate: float
    """The kernel's latest delivery-rate sample, bytes per second."""

    @property
    def in_flight(self) -> int:
        """Bytes sent and not acknowledged (segments × MSS, an upper bound)."""
        return self.unacked_segments * self.mss


def tcp_info(sock: SocketLike | None) -> TcpInfo | None:
    """The connection's ``TCP_INFO`` (None: no socket, not TCP, or a kernel older than 4.9)."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, _TCP_INFO_LAYOUT.size)  # type: ignore[attr-defined]
    except (OSError, AttributeError, ValueError):
        return None
    if not isinstance(raw, bytes) or len(raw) < _TCP_INFO_LAYOUT.size:
        return None
    (flags, rto, mss, unacked, _sacked, lost, retrans, _pmtu, _rcv_ssthresh, rtt, rttvar, ssthresh, cwnd,
     total_retrans, notsent, min_rtt, delivery_rate) = _TCP_INFO_LAYOUT.unpack_from(raw)
    return TcpInfo(bool(flags & 1), mss, unacked, lost, retrans, total_retrans, rto / 1e6, rtt / 1e6, rttvar / 1e6,
                   ssthresh, cwnd, notsent, 0.0 if min_rtt in (0, 0xFFFFFFFF) else min_rtt / 1e6,
                   float(delivery_rate))


class UnwrittenBytes:
    """Wire bytes of QoS 0 publishes handed to paho that its network thread has not written (message id -> bytes).

    The publisher holds :attr:`lock` across paho's ``publish`` and :meth:`add`, so that ``on_publish`` (which calls
    :meth:`written`) cannot run before the message id is recorded.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._by_mid: dict[int, int] = {}
        self._total = 0

    @property
    def total(self) -> int:
        """Bytes handed to paho and not written yet."""
        with self.lock:
            return self._total

    def add(self, mid: int, size: int) -> None:
        """Record a publish of ``size`` bytes handed to paho; the caller holds :attr:`lock`."""
        self._by_mid[mid] = size
        self._total += size

    def written(self, mid: int) -> None:
        """Paho is done with the publish ``mid`` (written, or not to be written)."""
        with self.lock:
            self._total -= self._by_mid.pop(mid, 0)

    def reset(self) -> None:
        """A connection began or ended: nothing of the last one is waiting any more."""
        with self.lock:
            self._by_mid.clear()
            self._total = 0


def socket_outq(sock: SocketLike | None) -> int:
    """Bytes the kernel holds for ``sock``, sent but unacknowledged or not sent yet (0: no socket).

    ``TIOCOUTQ`` on a TCP socket: what the link has not yet delivered (plus one round trip of acknowledgement).
    """
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    value: int = struct.unpack("i", raw)[0]
    return max(0, value)


def tcp_min_rtt(sock: SocketLike | None) -> float:
    """The connection's minimum round trip in seconds, as the kernel measured it (``TCP_INFO``'s ``tcpi_min_rtt``);
    0.0 without a socket, on a system that does not say, or before a round trip was measured."""
    if sock is None:
        return 0.0
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, _TCPI_MIN_RTT_OFFSET + 4)  # type: ignore[attr-defined]
    except (OSError, AttributeError, ValueError):
        return 0.0
    if not isinstance(raw, bytes) or len(raw) < _TCPI_MIN_RTT_OFFSET + 4:
        return 0.0
    micros: int = struct.unpack_from("I", raw, _TCPI_MIN_RTT_OFFSET)[0]
    return 0.0 if micros in (0, 0xFFFFFFFF) else micros / 1e6


def tune_socket(sock: SocketLike | None, lowat: int | None, log: FilteringBoundLogger,
                congestion: tuple[str, ...] = ()) -> None:
    """``TCP_NODELAY`` (a small message goes now, not after the previous segment's acknowledgement: Nagle would
    hold each frame for up to a round trip), a small ``TCP_NOTSENT_LOWAT`` (``lowat``), so the kernel does not
    take a backlog the sender cannot see or drop, and the first congestion control of ``congestion`` the kernel
    allows (:func:`set_congestion`); nothing without a socket, and a log line where the system does not support an
    option."""
    if sock is None:
        return
    if congestion:
        set_congestion(sock, congestion, log)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (OSError, AttributeError) as err:
        log.info("mqtt.nodelay_unsupported", error=str(err))
    if lowat is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, lowat)  # type: ignore[attr-defined]
    except (OSError, AttributeError) as err:
        log.info("mqtt.notsent_lowat_unsupported", error=str(err))


def set_congestion(sock: SocketLike, names: tuple[str, ...], log: FilteringBoundLogger) -> str | None:
    """Switch the connection to the first congestion control of ``names`` the kernel has and lets this process use
    (``TCP_CONGESTION``); which one, or None (the system's default stays, and a log line says so)."""
    for name in names:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode())  # type: ignore[attr-defined]
        except (OSError, AttributeError):
            continue
        return name
    log.info("mqtt.congestion_default", tried=list(names))
    return None


def describe_unreachable(host: str, port: int) -> str:
    """Why no MQTT connection to ``host:port`` came up: nothing accepts TCP there, or something does but no MQTT."""
    endpoint = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as err:
        return f"broker unreachable at {endpoint}: {err.strerror or err}"
    return (
        f"could not establish an MQTT connection to {endpoint} although it accepts TCP "
        "connections (TLS settings, or not an MQTT listener?)"
    )
