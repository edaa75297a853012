"""NAIR as a registered method: feature fragments (``nair``), a compressed image (``image``), per frame the better
of the two (``auto``), or the whole model's decision (``decision``), reassembled and decided by one fusion agent
(the model's tail for fragments, the whole model for images, the sensor's top-k for decisions)."""

from __future__ import annotations

from nairbus.agents.nair.modes import BIRTH_SECTIONS, DATA_LEAVES, SENSOR_MODES
from nairbus.agents.nair.settings import NairSettings
from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.methods import Method
from nairbus.agents.sources import source_settings

__all__ = ["NAIR"]


def check_sensor(settings: SensorSettings) -> None:
    """What a NAIR, image, decision or auto sensor needs of its settings."""
    if settings.source == "mqtt":
        raise ValueError("source 'mqtt' is for VP sensors; a NAIR sensor takes 'replay', 'folder', 'image-topic' "
                         "or 'camera'")
    source_settings(settings)  # the source is registered and its options are what it takes


def _run_fusion(config: AgentConfig) -> None:
    from nairbus.agents.nair.service import run_fusion  # the hub's side (torch) only when a fusion agent runs

    run_fusion(config)


def _run_sensor(config: AgentConfig) -> dict[str, int]:
    from nairbus.agents.nair.service import run_sensor  # imports no torch: a light sensor starts without it

    return run_sensor(config)


NAIR = Method(
    name="nair",
    summary="NAIR feature fragments, a compressed image, per frame the better of the two, or the device's decision",
    sensor_modes=SENSOR_MODES,
    birth_sections=BIRTH_SECTIONS,
    data_leaves=DATA_LEAVES,
    run_sensor=_run_sensor,
    run_fusion=_run_fusion,
    settings=NairSettings,
    check_sensor=check_sensor,
)
