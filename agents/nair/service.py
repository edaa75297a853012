"""Run the NAIR sensor and fusion agents as services: signals, systemd readiness and watchdog."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.nair.settings import nair_settings
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.logging import configure_logging
from nairbus.agents.runtime.notify import progress
from nairbus.agents.runtime.service import serve
from nairbus.models.device import DevicePipeline, device_threads

if TYPE_CHECKING:
    from nairbus.models.nair.pipeline import NairPipeline

__all__ = ["FUSION_STALL_S", "SENSOR_STALL_S", "run_fusion", "run_sensor"]

SENSOR_STALL_S = 60.0
"""A sensor whose frame counter has not moved for this long stops feeding the systemd watchdog."""
FUSION_STALL_S = 10.0
"""A fusion agent whose worker loop has not gone round for this long stops feeding the systemd watchdog."""


def run_sensor(config: AgentConfig, pipeline: DevicePipeline | None = None) -> dict[str, int]:
    """Replay the configured frames through a sensor agent; returns its counters.

    The model work runs on ``config.sensor.threads`` threads of its runtime (``--runtime onnx`` imports no torch:
    its sessions get the count). Under systemd (``Type=notify``) it reports ``READY=1`` once the model is loaded, the
    broker accepted the connection and the retained birth is acknowledged, then feeds the watchdog while frames keep
    flowing.
    """
    configure_logging(config.log)
    with device_threads(nair_settings(config.sensor).runtime, config.sensor.threads):
        agent = SensorAgent(config, pipeline)
        return serve(agent, f"sensor {config.sensor.sensor_id}: publishing to {agent.comm.endpoint}",
                     progress(lambda: agent.counters["frames"], SENSOR_STALL_S), agent.run_replay, agent.stop)


def run_fusion(config: AgentConfig, pipeline: NairPipeline | None = None) -> None:
    """Run a fusion agent until SIGTERM/SIGINT.

    Under systemd (``Type=notify``) it reports ``READY=1`` once the model is loaded, the broker accepted the
    connection and granted every subscription, then feeds the watchdog while the worker loop goes round.
    """
    from nairbus.agents.nair.fusion import FusionAgent  # torch: the hub's side, imported when it runs

    configure_logging(config.log)
    agent = FusionAgent(config, pipeline)
    serve(agent, f"fusion {config.fusion.fusion_id}: subscribed at {agent.comm.endpoint}",
          lambda: time.monotonic() - agent.heartbeat < FUSION_STALL_S, agent.run, agent.close)
