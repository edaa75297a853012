"""Frame sources: where a sensor's frames come from, behind one interface, and the registry that names them.

A source yields :class:`FrameBatch` es of uint8 images already in the model's input spec (grey ``(H, W)`` or
RGB ``(H, W, 3)``, converted at the edge by :mod:`nairbus.agents.sources.images`), with a frame id each; the agent's
one paced loop (:mod:`nairbus.agents.runtime.pacing`) delivers them. A source says how it wants to be paced:
``skip_late`` (a live camera: late frames are dropped, latest frame wins; a folder of files: every one is classified)
and ``source_paced`` (time spent waiting for the source does not make frames late). Bad input is counted in the
source's ``counters`` by reason (``bad_<reason>``), never raised.

A new source is one module here plus one line in :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nairbus.agents.runtime.frames import FrameBatch, FrameSource, SourceContext

if TYPE_CHECKING:
    from nairbus.agents.runtime.config import SensorSettings

__all__ = ["SOURCES", "FrameBatch", "FrameSource", "SourceContext", "open_source"]


SourceFactory = Callable[["SensorSettings", SourceContext], FrameSource]


def _replay(s: SensorSettings, ctx: SourceContext) -> FrameSource:
    from nairbus.agents.sources.replay import ReplaySource

    return ReplaySource.from_settings(s, ctx)


def _folder(s: SensorSettings, ctx: SourceContext) -> FrameSource:
    from nairbus.agents.sources.folder import FolderSource

    return FolderSource.from_settings(s, ctx)


def _image_topic(s: SensorSettings, ctx: SourceContext) -> FrameSource:
    from nairbus.agents.sources.image_topic import ImageTopicSource

    return ImageTopicSource.from_settings(s, ctx)


def _camera(s: SensorSettings, ctx: SourceContext) -> FrameSource:
    from nairbus.agents.sources.camera import CameraSource

    return CameraSource.from_settings(s, ctx)


SOURCES: dict[str, SourceFactory] = {
    "replay": _replay,
    "folder": _folder,
    "image-topic": _image_topic,
    "camera": _camera,
}
"""Every frame source a NAIR/image/auto sensor can run, by the name ``--source`` takes."""


def open_source(settings: SensorSettings, ctx: SourceContext) -> FrameSource:
    """The source ``settings.source`` names; a clear error for one that is not registered."""
    try:
        factory = SOURCES[settings.source]
    except KeyError:
        raise ValueError(f"unknown frame source {settings.source!r}; registered: {', '.join(SOURCES)}") from None
    return factory(settings, ctx)
