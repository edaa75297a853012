"""Variant Parallelism as a registered method: each sensor runs one light variant and publishes its top-k; a fusion
agent sums the votes of whichever variants reported."""

from __future__ import annotations

from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.methods import Method
from nairbus.agents.runtime.service import on_signals
from nairbus.agents.sources import source_settings
from nairbus.agents.vp.settings import VP_LEAVES, VP_MODES, VpSettings, vp_settings, with_frame_stream

__all__ = ["VP"]


def check_sensor(settings: SensorSettings) -> None:
    """What a VP sensor needs of its settings beyond its own options (:class:`VpSettings`, a variant among them): a
    registered source with the options it takes. Any source will do — every frame is converted to the variant's input
    at the edge; ``replay`` and ``mqtt`` (a capture agent's frames, the stream ``--frame-stream`` or the sensor's
    stream id) give every variant of a family the same frames."""
    source_settings(with_frame_stream(settings, vp_settings(settings)))


def _run_sensor(config: AgentConfig) -> dict[str, int]:
    from nairbus.agents.vp.service import run_vp_sensor  # its model runtime: imported when one runs

    return run_vp_sensor(config, on_signals)


def _run_fusion(config: AgentConfig) -> None:
    from nairbus.agents.vp.service import run_vp_fusion

    run_vp_fusion(config, on_signals)


VP = Method(
    name="vp",
    summary="Variant Parallelism: one light variant per sensor, top-k votes summed at the hub",
    sensor_modes=VP_MODES,
    birth_sections=("vp",),
    data_leaves=VP_LEAVES,
    run_sensor=_run_sensor,
    run_fusion=_run_fusion,
    settings=VpSettings,
    check_sensor=check_sensor,
)
