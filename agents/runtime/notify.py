"""systemd service notification for agents: ``READY=1`` when the agent can work, a watchdog, ``STOPPING=1``.

Units of ``Type=notify`` (deploy/systemd/) wait for ``READY=1``, which an agent sends only once its model is loaded,
the broker acknowledged the connection (CONNACK) and granted every subscription (SUBACK) — that is, after the
agent's ``start()`` returned. With ``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and restarts the service
when no ``WATCHDOG=1`` arrives in time; :class:`ServiceNotifier` pings at half that interval, but only while the
agent's liveness check passes, so a hung worker loop gets the process restarted. Outside systemd (no
``NOTIFY_SOCKET``) everything here is a no-op.

The datagrams themselves are sent by the ``sdnotify`` package (the sd_notify protocol in pure Python).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sdnotify  # type: ignore[import-untyped]

from nairbus.agents.runtime.logging import get_logger

log = get_logger("nairbus.notify")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd asks for (half of ``WATCHDOG_USEC``), or ``None`` without a watchdog.

    ``WATCHDOG_PID``, when set, must be this process (systemd's rule, so a child does not ping for its parent).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def progress(counter: Callable[[], int], stall_s: float) -> Callable[[], bool]:
    """A liveness check that holds while ``counter()`` changed within the last ``stall_s`` seconds."""
    last = [counter(), time.monotonic()]

    def alive() -> bool:
        now, value = time.monotonic(), counter()
        if value != last[0]:
            last[0], last[1] = value, now
        return now - float(last[1]) < stall_s

    return alive


class ServiceNotifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; a no-op when the variable is not set."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0

    def send(self, *lines: str) -> None:
        """Send one notification (``KEY=value`` lines)."""
        if self._notifier is not None:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        """Tell systemd that start-up finished (``READY=1``) with a human-readable status line."""
        self.send("READY=1", f"STATUS={status}")
        if self.enabled:
            log.info("systemd.ready", status=status, watchdog_s=watchdog_interval())

    def status(self, status: str) -> None:
        """Update the status line ``systemctl status`` shows."""
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd the service is shutting down; stops the watchdog pings."""
        self._stop.set()
        self.send("STOPPING=1")
        if self._thread is not None:
            self._thread.join(timeout=5)

    def start_watchdog(self, alive: Callable[[], bool]) -> None:
        """Ping ``WATCHDOG=1`` every half watchdog interval while ``alive()`` is true (no-op without a watchdog)."""
        interval = watchdog_interval()
        if not self.enabled or interval is None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    healthy = alive()
                except Exception:  # a broken check must not kill the thread silently; systemd will restart us
                    log.exception("systemd.watchdog_check_failed")
                    healthy = False
                if healthy:
                    self.send("WATCHDOG=1")
                    self.pings += 1
                else:
                    log.error("systemd.watchdog_withheld", reason="liveness check failed", interval_s=interval)

        self._thread = threading.Thread(target=loop, name="nairbus-watchdog", daemon=True)
        self._thread.start()


@contextmanager
def systemd_service(status: str, alive: Callable[[], bool]) -> Iterator[ServiceNotifier]:
    """``READY=1`` and watchdog pings on entry, ``STOPPING=1`` on exit. Enter it only after ``agent.start()``."""
    notifier = ServiceNotifier()
    notifier.ready(status)
    notifier.start_watchdog(alive)
    try:
        yield notifier
    finally:
        notifier.stopping()
