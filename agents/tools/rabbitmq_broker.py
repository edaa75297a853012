"""A private RabbitMQ node with its MQTT plugin on free loopback ports, for the tests of MQTT 3.1.1 mode.

RabbitMQ's MQTT plugin (3.10 in Debian 12) speaks MQTT 3.1.1. ``PrivateRabbitMq`` writes a node configuration and an
enabled-plugins file into a temporary directory, starts ``rabbitmq-server`` (the Debian package) under its own node
name, AMQP, distribution and MQTT ports, with its database and logs there too, and waits until the MQTT listener
accepts connections (an Erlang node takes 10-30 s to boot). It never touches the system's RabbitMQ::

    with PrivateRabbitMq() as rabbit:
        settings = BrokerSettings(host=rabbit.host, port=rabbit.mqtt_port, protocol="3.1.1")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from nairbus.agents.runtime.mosquitto import LOOPBACK, free_port

__all__ = ["PrivateRabbitMq", "RabbitMqError", "find_rabbitmq"]


class RabbitMqError(RuntimeError):
    """The private RabbitMQ node could not be started."""


def find_rabbitmq() -> str:
    """Path of ``rabbitmq-server``, or a clear error saying how to install it."""
    found = shutil.which("rabbitmq-server") or shutil.which("rabbitmq-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RabbitMqError("rabbitmq-server is not installed; install it with `sudo apt-get install rabbitmq-server`")
    return found


class PrivateRabbitMq:
    """A RabbitMQ node of our own with the MQTT plugin on a free loopback port; a context manager."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.host = LOOPBACK
        self.start_timeout = start_timeout
        self.amqp_port, self.dist_port, self.mqtt_port = free_port(), free_port(), free_port()
        self.node = f"nairbus-{uuid.uuid4().hex[:8]}@localhost"
        self._tmp = Path(tempfile.mkdtemp(prefix="nairbus-rabbitmq-"))
        self._tmp.chmod(0o777)  # the Debian wrapper runs the node as the 'rabbitmq' user
        (self._tmp / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self._tmp / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.default = {self.host}:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = {self.host}:{self.mqtt_port}",
            "mqtt.allow_anonymous = true",
            "loopback_users = none",
            "",
        ]))
        for path in self._tmp.iterdir():
            path.chmod(0o666)
        self.log_path = self._tmp / "server.log"
        self._binary = find_rabbitmq()
        self._proc: subprocess.Popen[bytes] | None = None

    def _environment(self) -> dict[str, str]:
        return {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": self.host,
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_CONFIG_FILE": str(self._tmp / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._tmp / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(self._tmp / "mnesia"), "RABBITMQ_LOG_BASE": str(self._tmp / "log"),
                "RABBITMQ_PID_FILE": str(self._tmp / "pid"), "HOME": str(self._tmp)}

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the node's console output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def start(self) -> Self:
        """Boot the node and wait until its MQTT listener accepts TCP connections."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([self._binary], env=self._environment(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RabbitMqError(f"rabbitmq-server exited with status {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.mqtt_port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RabbitMqError(f"RabbitMQ's MQTT listener did not come up within {self.start_timeout:g} s:"
                                        f"\n{self.log_tail()}") from None
                time.sleep(0.2)

    def _node_pids(self) -> list[int]:
        """Every process of this node: the Debian wrapper hands the node to the 'rabbitmq' user in a session of its
        own, so they are found by the node name in their environment, not by process group."""
        marker = f"RABBITMQ_NODENAME={self.node}".encode()
        pids: list[int] = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def stop(self, grace: float = 15.0) -> None:
        """Stop the node and everything it started (SIGTERM, then SIGKILL after ``grace`` s); idempotent."""
        proc, self._proc = self._proc, None
        deadline = time.monotonic() + grace
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._node_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            while self._node_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            deadline = time.monotonic() + 5.0
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)
