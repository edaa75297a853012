"""Run the VP sensor, fusion and capture agents as services: signals, systemd readiness and watchdog."""

from __future__ import annotations

from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.logging import configure_logging
from nairbus.agents.runtime.service import SignalHook, on_signals, serve
from nairbus.agents.vp.capture import CaptureAgent, CaptureSettings
from nairbus.agents.vp.fusion import VpFusionAgent
from nairbus.agents.vp.sensor import VpSensorAgent

__all__ = ["run_capture", "run_vp_fusion", "run_vp_sensor"]


def run_vp_sensor(config: AgentConfig, signals: SignalHook | None = None) -> dict[str, int]:
    """Run a VP sensor as a process: signals stop it cleanly (it publishes ``offline``); returns its counters."""
    from nairbus.agents.vp.settings import vp_settings
    from nairbus.models.device import device_threads

    configure_logging(config.log)
    # torch's pool on the sensor's threads; ONNX Runtime takes them per session (and torch is not imported)
    with device_threads(vp_settings(config.sensor).runtime, config.sensor.threads):
        agent = VpSensorAgent(config)
        # Under systemd (Type=notify): READY=1 once connected with the birth sent. A VP sensor may wait for frames
        # from a capture agent for any length of time, so its watchdog holds while the process runs.
        return serve(agent, f"vp sensor {config.sensor.sensor_id}", lambda: not agent.stop_event.is_set(),
                     agent.run, agent.stop, signals)


def run_vp_fusion(config: AgentConfig, signals: SignalHook | None = None) -> None:
    """Run a VP fusion agent until SIGTERM/SIGINT."""
    configure_logging(config.log)
    agent = VpFusionAgent(config)
    serve(agent, f"vp fusion {config.fusion.fusion_id}", lambda: not agent.stop_event.is_set(), agent.run,
          agent.close, signals)


def run_capture(config: AgentConfig, settings: CaptureSettings) -> dict[str, int]:
    """Run a capture agent as a process (SIGTERM/SIGINT stop it cleanly); returns what it sent."""
    configure_logging(config.log)
    agent = CaptureAgent(config, settings)
    on_signals(agent.stop_event)
    agent.start()
    try:
        return agent.run()
    finally:
        agent.stop()
