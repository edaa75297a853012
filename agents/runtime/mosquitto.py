"""A private Mosquitto broker on a free loopback port, for the tests and the demo.

``PrivateMosquitto`` derives a temporary configuration from one of the project's own broker configs
(``broker/mosquitto.dev.conf`` by default), so tests run against the same limits as development,
and never touches a system broker on port 1883::

    with PrivateMosquitto() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from nairbus.broker import BROKER_DIR

DEFAULT_CONFIG = BROKER_DIR / "mosquitto.dev.conf"
LOOPBACK = "127.0.0.1"

# Options that would make a private broker write outside its temporary directory.
_DROPPED_OPTIONS = frozenset(
    {"log_dest", "pid_file", "persistence", "persistence_file", "persistence_location", "autosave_interval"}
)


class MosquittoError(RuntimeError):
    """The private broker could not be started."""


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` binary, or a clear error saying how to install it."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        raise MosquittoError(
            "the Mosquitto broker is not installed (no 'mosquitto' on PATH or in /usr/sbin); "
            "install it with `sudo apt-get install mosquitto` (the system service can stay disabled)"
        )
    return found


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def derive_config(source: str, ports: list[int], host: str = LOOPBACK, persistence_dir: Path | None = None) -> str:
    """``source`` with its ``listener`` lines bound to ``ports`` on ``host`` and logging sent to stderr.

    The n-th listener keeps its own options (they follow it in the file) and gets ``ports[n]``; a
    config without a listener gets one. Persistence, pid file and log destinations are dropped — or, with
    ``persistence_dir``, persistence is on and kept there (saved on every change, so a kill -9 loses nothing).
    """
    out: list[str] = []
    listeners = 0
    for line in source.splitlines():
        words = line.split()
        option = words[0] if words else ""
        if option == "listener":
            if listeners >= len(ports):
                raise ValueError(f"the config has more than {len(ports)} listener(s)")
            out.append(f"listener {ports[listeners]} {host}")
            listeners += 1
        elif option == "port":
            raise ValueError("the config uses the deprecated 'port' option; use 'listener' instead")
        elif option in _DROPPED_OPTIONS:
            out.append(f"# (PrivateMosquitto) {line}")
        else:
            out.append(line)
    if listeners == 0:
        out.insert(0, f"listener {ports[0]} {host}")
        listeners = 1
    if listeners != len(ports):
        raise ValueError(f"the config has {listeners} listener(s) but {len(ports)} port(s) were given")
    keep = (["persistence true", f"persistence_location {persistence_dir}/", "autosave_interval 1",
             "autosave_on_changes true"] if persistence_dir is not None else ["persistence false"])
    out += ["", "# Added by PrivateMosquitto.", *keep, "log_dest stderr", ""]
    return "\n".join(out)


def count_listeners(source: str) -> int:
    """How many ``listener`` lines a Mosquitto config has (at least one is always used)."""
    return max(1, sum(1 for line in source.splitlines() if line.split()[:1] == ["listener"]))


class PrivateMosquitto:
    """A Mosquitto process of our own on free loopback port(s); a context manager.

    ``port`` is the first listener's port (``ports`` lists all of them). ``restart()`` stops the
    process and starts a new one on the same ports, which is how tests exercise reconnection.
    """

    def __init__(self, config: Path | str = DEFAULT_CONFIG, *, start_timeout: float = 10.0,
                 persistence: bool = False) -> None:
        self.config_source = Path(config)
        self.start_timeout = start_timeout
        self.host = LOOPBACK
        text = self.config_source.read_text(encoding="utf-8")
        self.ports: list[int] = [free_port() for _ in range(count_listeners(text))]
        self.port = self.ports[0]
        self._tmp = Path(tempfile.mkdtemp(prefix="nairbus-mosquitto-"))
        self.config_path = self._tmp / "mosquitto.conf"
        store = self._tmp / "store" if persistence else None
        if store is not None:
            store.mkdir()
            store.chmod(0o777)  # written by the 'mosquitto' user the broker drops to
        self.config_path.write_text(derive_config(text, self.ports, self.host, store), encoding="utf-8")
        # Mosquitto drops root privileges to the 'mosquitto' user; let it still read its config.
        self._tmp.chmod(0o755)
        self.config_path.chmod(0o644)
        self.log_path = self._tmp / "mosquitto.log"
        self._binary = find_mosquitto()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the broker's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> Self:
        """Start the broker and wait until every listener accepts TCP connections."""
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        for port in self.ports:
            while True:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    raise MosquittoError(
                        f"mosquitto exited with status {code} during start-up "
                        f"(config {self.config_path}):\n{self.log_tail()}"
                    )
                try:
                    with socket.create_connection((self.host, port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise MosquittoError(
                            f"mosquitto did not accept connections on {self.host}:{port} within "
                            f"{self.start_timeout:g} s:\n{self.log_tail()}"
                        ) from None
                    time.sleep(0.02)
        return self

    def stop(self, grace: float = 3.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``grace`` seconds); idempotent."""
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
        """SIGKILL the broker, as a crash or a power cut would (no clean shutdown, no final save)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop the broker and start a fresh process on the same ports (retained messages are lost)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and delete its temporary directory."""
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self._tmp)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrivateMosquitto(host={self.host!r}, ports={self.ports}, running={self.running})"
