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

__all__ = ["NatsError", "PrivateNats", "find_nats"]


class NatsError(RuntimeError):
    """The private NATS server could not be started."""


def find_nats() -> str:
    """Path of ``nats-server``, or a clear error saying how to install it."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise NatsError("nats-server is not installed; install it with `sudo apt-get install nats-server`")
    return found


def nats_config(name: str, client_port: int, mqtt_port: int, store: Path, host: str = LOOPBACK) -> str:
    """A NATS server configuration with JetStream (in ``store``) and an MQTT listener, bound to ``host``."""
    return "\n".join([
        f"server_name: {name}",
        f"listen: {host}:{client_port}",
        f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 256MB }}',
        f"mqtt {{ listen: {host}:{mqtt_port} }}",
        "",
    ])


class PrivateNats:
    """A ``nats-server`` of our own with an MQTT listener on a free loopback port; a context manager."""

    def __init__(self, start_timeout: float = 15.0) -> None:
        self.host = LOOPBACK
        self.start_timeout = start_timeout
        self.client_port, self.mqtt_port = free_port(), free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="nairbus-nats-"))
        self.config_path = self._tmp / "nats.conf"
        self.config_path.write_text(nats_config(f"nb-{uuid.uuid4().hex[:8]}", self.client_port, self.mqtt_port,
                                                self._tmp / "jetstream", self.host))
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)
