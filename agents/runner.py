"""Run a sensor or fusion agent as a long-lived process: signals, clean shutdown, exit codes."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from agents.config import AgentConfig
from agents.fusion import FusionAgent
from agents.logging import configure_logging, get_logger
from agents.sensor import SensorAgent

log = get_logger("nairbus.runner")


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_sensor(config: AgentConfig) -> dict[str, int]:
    """Replay the configured frames through a sensor agent; returns its counters."""
    configure_logging(config.log)
    agent = SensorAgent(config)
    _on_signals(agent.stop_event)
    agent.start()
    try:
        return agent.run_replay()
    finally:
        agent.stop()


def run_fusion(config: AgentConfig) -> None:
    """Run a fusion agent until SIGTERM/SIGINT."""
    configure_logging(config.log)
    agent = FusionAgent(config)
    _on_signals(agent.stop_event)
    agent.start()
    try:
        agent.run()
    finally:
        agent.close()
