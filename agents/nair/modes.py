"""What the NAIR method serves, as data: its sensor modes, the Birth sections its sensors fill and the topic leaves
their frames arrive on. The registration (:mod:`nairbus.agents.nair.method`), the sensor and the fusion agent all
read them from here, so the method is declared once."""

from __future__ import annotations

from typing import Final, Literal

from nairbus.schemas.topics import SensorLeaf

__all__ = ["BIRTH_SECTIONS", "DATA_LEAVES", "SENSOR_MODES", "NairMode"]

NairMode = Literal["nair", "image", "auto", "decision"]
"""A sensor mode NAIR runs: feature fragments, a compressed image, per frame the better of the two, or the whole
model's decision (a birth's ``mode``)."""

SENSOR_MODES: Final[tuple[NairMode, ...]] = ("nair", "image", "auto", "decision")
"""The ``sensor.mode`` values NAIR's sensor runs and its fusion agent decides."""

BIRTH_SECTIONS: Final[tuple[str, ...]] = ("nair", "image", "decision")
"""The :class:`~nairbus.schemas.Birth` sections a NAIR sensor fills (which ones follows from its mode)."""

DATA_LEAVES: Final[tuple[SensorLeaf, ...]] = ("frag", "image", "topk")
"""The sensor topic leaves NAIR frames arrive on: fragments, images, decisions."""
