"""Run an agent as a long-lived process: signal handling shared by every agent's service runner.

Each method's runners (``nairbus.agents.<method>.service``) start its agents under systemd with these."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from nairbus.agents.runtime.logging import get_logger

__all__ = ["SignalHook", "on_signals"]

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
