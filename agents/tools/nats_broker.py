"""A private NATS server with its MQTT listener on free loopback ports, for the tests of MQTT 3.1.1 mode.

NATS speaks MQTT 3.1.1 (not 5) on top of JetStream: ``PrivateNats`` writes a configuration into a temporary
directory (JetStream's store there too), starts ``nats-server`` (the Debian package ``nats-server``) and waits until
the MQTT listener accepts connections. It never touches a system NATS::

    with PrivateNats() as nats:
        settings = BrokerSettings(host=nats.host, port=nats.mqtt_port, protocol="3.1.1")
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from nairbus.agents.runtime.mosquitto import LOOPBACK, free_port

__all__ = ["NatsError", "PrivateNats", "PrivateNatsCluster", "find_nats"]


class NatsError(RuntimeError):
    """The private NATS server could not be started."""


def find_nats() -> str:
    """Path of ``nats-server``, or a clear error saying how to install it."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise NatsError("nats-server is not installed; install it with `sudo apt-get install nats-server`")
    return found


def nats_config(name: str, client_port: int, mqtt_port: int, store: Path, host: str = LOOPBACK,
                cluster_port: int | None = None, routes: tuple[int, ...] = ()) -> str:
    """A NATS server configuration with JetStream (in ``store``) and an MQTT listener, bound to ``host``; with
    ``cluster_port``, a node of the cluster whose other nodes listen on ``routes``."""
    lines = [
        f"server_name: {name}",
        f"listen: {host}:{client_port}",
        f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 256MB }}',
    ]
    if cluster_port is None:
        lines.append(f"mqtt {{ listen: {host}:{mqtt_port} }}")
    else:
        # Sessions and retained messages on every node: a cluster that loses one of three keeps its quorum.
        lines.append(f"mqtt {{ listen: {host}:{mqtt_port}; stream_replicas: {len(routes) + 1} }}")
        peers = ", ".join(f"nats-route://{host}:{port}" for port in routes)
        lines.append(f"cluster {{ name: nairbus; listen: {host}:{cluster_port}; routes: [{peers}] }}")
    return "\n".join([*lines, ""])


class PrivateNats:
    """A ``nats-server`` of our own with an MQTT listener on a free loopback port; a context manager."""

    def __init__(self, start_timeout: float = 15.0, *, cluster_port: int | None = None,
                 routes: tuple[int, ...] = (), directory: Path | None = None) -> None:
        self.host = LOOPBACK
        self.start_timeout = start_timeout
        self.client_port, self.mqtt_port = free_port(), free_port()
        self._tmp = directory or Path(tempfile.mkdtemp(prefix="nairbus-nats-"))
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = self._tmp / "nats.conf"
        self.config_path.write_text(nats_config(f"nb-{uuid.uuid4().hex[:8]}", self.client_port, self.mqtt_port,
                                                self._tmp / "jetstream", self.host, cluster_port, routes))
        self.log_path = self._tmp / "nats.log"
        self._binary = find_nats()
        self._proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def start(self) -> Self:
        """Start the server and wait until its MQTT listener accepts TCP connections."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([self._binary, "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise NatsError(f"nats-server exited with status {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.mqtt_port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise NatsError(f"nats-server's MQTT listener did not come up within {self.start_timeout:g} s:"
                                    f"\n{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, grace: float = 3.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash or a power cut would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)


class PrivateNatsCluster:
    """``size`` NATS servers routed into one cluster, each with JetStream and an MQTT listener; a context manager.
    Ready once an MQTT client can connect to every node (JetStream has elected its leader)."""

    def __init__(self, size: int = 3, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self._tmp = Path(tempfile.mkdtemp(prefix="nairbus-nats-cluster-"))
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [PrivateNats(start_timeout, cluster_port=port,
                                  routes=tuple(p for p in cluster_ports if p != port), directory=self._tmp / f"n{i}")
                      for i, port in enumerate(cluster_ports)]

    def start(self) -> Self:
        """Start every node and wait until each accepts MQTT connections."""
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + self.start_timeout
        for node in self.nodes:
            while not _mqtt_accepts(node.host, node.mqtt_port):
                if time.monotonic() > deadline:
                    self.stop()
                    raise NatsError(f"the NATS cluster did not accept MQTT clients within {self.start_timeout:g} s:"
                                    f"\n{node.log_tail()}")
                time.sleep(0.25)
        return self

    def stop(self) -> None:
        """Stop every node; idempotent."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _mqtt_accepts(host: str, port: int) -> bool:
    """Whether an MQTT 3.1.1 CONNECT to ``host:port`` gets a CONNACK accepting it within 2 s."""
    connect = bytes([0x10, 16, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 4]) + b"ping"
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.sendall(connect)
            ack = sock.recv(4)
    except OSError:
        return False
    return len(ack) == 4 and ack[0] == 0x20 and ack[3] == 0
