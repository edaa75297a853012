"""Run an agent as a long-lived process: signal handling shared by every agent's service runner.

Each method's runners (``nairbus.agents.<method>.service``) start its agents under systemd with these."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol, TypeVar

from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.notify import systemd_service

__all__ = ["ServedAgent", "SignalHook", "on_signals", "serve"]

T = TypeVar("T")

log = get_logger("nairbus.runner")

SignalHook = Callable[[threading.Event], None]
"""What a runner calls with its agent's stop event so that SIGTERM/SIGINT stop the agent cleanly."""


def on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (the agent then stops cleanly and publishes ``offline``)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class ServedAgent(Protocol):
    """What :func:`serve` needs of an agent: the event that stops it, and a start that connects it."""

    @property
    def stop_event(self) -> threading.Event: ...

    def start(self) -> None: ...


def serve(agent: ServedAgent, describe: str, healthy: Callable[[], bool], run: Callable[[], T],
          finish: Callable[[], None], signals: SignalHook | None = on_signals) -> T:
    """Run a built agent as a service: ``signals`` stop it, it starts, it tells systemd it is ready (``describe``)
    and feeds the watchdog while ``healthy``, ``run`` does its work; ``finish`` (stop or close) runs whatever
    happens."""
    if signals is not None:
        signals(agent.stop_event)
    agent.start()
    try:
        with systemd_service(describe, healthy):
            return run()
    finally:
        finish()
