"""What a sender reads of its own TCP connection: the kernel's minimum round trip, and no Nagle delay."""

from __future__ import annotations

import socket
import threading

import structlog

from nairbus.agents.runtime.linkprobe import tcp_min_rtt, tune_socket


def test_a_loopback_connection_reports_a_small_round_trip_and_sends_at_once() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    client = socket.create_connection(server.getsockname(), timeout=5)
    try:
        thread.join(timeout=5)
        client.sendall(b"x" * 1000)
        accepted[0].recv(4096)
        rtt = tcp_min_rtt(client)
        assert 0.0 < rtt < 0.05  # measured by the kernel, in seconds
        tune_socket(client, 128, structlog.get_logger())
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        client.close()
        for sock in accepted:
            sock.close()
        server.close()


def test_no_socket_is_no_round_trip() -> None:
    assert tcp_min_rtt(None) == 0.0
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert tcp_min_rtt(udp) == 0.0  # not TCP: the kernel refuses TCP_INFO
    finally:
        udp.close()
