"""A VP sensor's own settings: the variant it runs, the classes it reports, the capture stream it follows (which
the frame-stream source takes as its own option, :func:`with_frame_stream`)."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field

from nairbus.agents.runtime.config import SensorSettings
from nairbus.agents.runtime.methods import MethodSettings, method_settings
from nairbus.agents.sources.frame_stream import FRAME_STREAM
from nairbus.models.device import Runtime
from nairbus.schemas.ids import ID_FIELD_PATTERN
from nairbus.schemas.topics import SensorLeaf

__all__ = ["VP_LEAVES", "VP_MODES", "VpSettings", "vp_settings", "with_frame_stream"]

VP_MODES: Final[tuple[str, ...]] = ("vp",)
"""The ``sensor.mode`` a VP sensor runs and its fusion agent decides (a birth's ``mode``)."""
VP_LEAVES: Final[tuple[SensorLeaf, ...]] = ("topk",)
"""The sensor topic leaf VP votes arrive on."""


class VpSettings(MethodSettings):
    """What a ``vp`` sensor reads of its ``method_options`` (``--variant``, ``--k``, ``--frame-stream``)."""

    needs: ClassVar[dict[str, str]] = {"variant": "a variant (e.g. --variant w44r28)"}

    variant: str = Field(description="The variant of the shipped family this sensor runs "
                                     "(``models/weights/variants.json``).")
    k: int = Field(default=5, ge=1, description="Classes reported per frame (1 <= k <= classes/2).")
    runtime: Runtime = Field(default="torch", description=(
        "What runs the variant: ``torch`` (its weights) or ``onnx`` (the whole variant 'nairbus export-onnx "
        "--variants' wrote beside its manifest, in ONNX Runtime: no torch on the device)."))
    frame_stream: str | None = Field(default=None, pattern=ID_FIELD_PATTERN, description=(
        "With ``source='mqtt'``: the capture stream to follow (default: this sensor's stream id); handed to the "
        "frame-stream source as its ``frame_stream`` option unless ``source_options`` name one."))


def vp_settings(settings: SensorSettings) -> VpSettings:
    """A VP sensor's ``method_options`` as its checked settings (a ``ValueError`` naming the mode and the option)."""
    return method_settings(VpSettings, settings)


def with_frame_stream(settings: SensorSettings, options: VpSettings) -> SensorSettings:
    """The sensor's settings with the capture stream to follow among the ``mqtt`` source's options: the one they name,
    else ``--frame-stream`` (VP's method option of before, so older flags and config files work), else the sensor's
    stream id. Settings of another source are returned as they are."""
    if settings.source != FRAME_STREAM or "frame_stream" in settings.source_options:
        return settings
    stream = options.frame_stream or settings.stream
    return settings.model_copy(update={"source_options": {**settings.source_options, "frame_stream": stream}})
