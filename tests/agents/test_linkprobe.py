"""What a sender reads of its own TCP connection (the kernel's minimum round trip, its ``TCP_INFO``) and how it tunes it
(no Nagle delay, a congestion control that does not stall a long path every ten seconds)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from nairbus.agents.runtime.linkprobe import TCP_CONGESTION, set_congestion, tcp_info, tcp_min_rtt, tune_socket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection: (client, the server's end)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    client = socket.create_connection(server.getsockname(), timeout=5)
    try:
        thread.join(timeout=5)
        yield client, accepted[0]
    finally:
        client.close()
        for sock in accepted:
            sock.close()
        server.close()


def test_a_loopback_connection_reports_a_small_round_trip_and_sends_at_once(
        pair: tuple[socket.socket, socket.socket]) -> None:
    client, peer = pair
    client.sendall(b"x" * 1000)
    peer.recv(4096)
    rtt = tcp_min_rtt(client)
    assert 0.0 < rtt < 0.05  # measured by the kernel, in seconds
    tune_socket(client, 128, structlog.get_logger())
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_no_socket_is_no_round_trip() -> None:
    assert tcp_min_rtt(None) == 0.0
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert tcp_min_rtt(udp) == 0.0  # not TCP: the kernel refuses TCP_INFO
    finally:
        udp.close()


def test_tcp_info_reads_the_kernels_view_of_a_loopback_connection(pair: tuple[socket.socket, socket.socket]) -> None:
    client, peer = pair
    client.sendall(b"x" * 20000)
    got = 0
    while got < 20000:
        got += len(peer.recv(65536))
    info = tcp_info(client)
    assert info is not None
    assert info.mss > 0
    assert info.cwnd > 0
    assert 0.0 < info.min_rtt <= info.rtt < 0.05
    assert info.delivery_rate > 0  # bytes per second: the kernel saw the 20 kB acknowledged
    assert info.notsent_bytes == 0
    assert info.lost_segments == 0
    assert 0.2 <= info.rto < 5.0
    assert tcp_info(None) is None
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert tcp_info(udp) is None
    finally:
        udp.close()


def test_the_connection_takes_the_first_congestion_control_the_kernel_allows() -> None:
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        log = structlog.get_logger()
        assert set_congestion(sock, ("no-such-algorithm",), log) is None
        chosen = set_congestion(sock, ("no-such-algorithm", "cubic", "reno"), log)
        assert chosen in available
        assert (chosen in allowed or os.geteuid() == 0)
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).rstrip(b"\0").decode() == chosen
    finally:
        sock.close()
