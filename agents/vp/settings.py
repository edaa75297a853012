"""A VP sensor's own settings: the variant it runs, the classes it reports, the capture stream it follows."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nairbus.agents.runtime.config import SensorSettings
from nairbus.agents.runtime.methods import MethodSettings, method_settings
from nairbus.schemas.ids import ID_PATTERN

__all__ = ["VpSettings", "vp_settings"]


class VpSettings(MethodSettings):
    """What a ``vp`` sensor reads of its ``method_options`` (``--variant``, ``--k``, ``--frame-stream``)."""

    needs: ClassVar[dict[str, str]] = {"variant": "a variant (e.g. --variant w44r28)"}

    variant: str = Field(description="The variant of the shipped family this sensor runs "
                                     "(``models/weights/variants.json``).")
    k: int = Field(default=5, ge=1, description="Classes reported per frame (1 <= k <= classes/2).")
    frame_stream: str | None = Field(default=None, pattern=ID_PATTERN, description=(
        "With ``source='mqtt'``: the capture stream to follow (default: this sensor's stream id)."))


def vp_settings(settings: SensorSettings) -> VpSettings:
    """A VP sensor's ``method_options`` as its checked settings (a ``ValueError`` naming the mode and the option)."""
    return method_settings(VpSettings, settings)
