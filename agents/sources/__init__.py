"""Frame sources: where a sensor's frames come from, behind one interface, and the registry that names them.

A source yields :class:`FrameBatch` es of uint8 images already in the model's input spec (grey ``(H, W)`` or
RGB ``(H, W, 3)``, converted at the edge by :mod:`nairbus.agents.sources.images`), with a frame id each; the agent's
one paced loop (:mod:`nairbus.agents.runtime.pacing`) delivers them. A source says how it wants to be paced:
``skip_late`` (a live camera: late frames are dropped, latest frame wins; a folder of files: every one is classified)
and ``source_paced`` (time spent waiting for the source does not make frames late). Bad input is counted in the
source's ``counters`` by reason (``bad_<reason>``), never raised.

A source declares its own settings: a :class:`SourceSettings` model in its module, holding exactly the options it
reads. A sensor's ``source_options`` are checked with the chosen source's model when it opens (a field the model
shares with :class:`SensorSettings` — ``count``, ``split``, ``data_dir``, ``start``, ``shard`` — takes the sensor's
value unless the options give one). A source whose frames arrive over MQTT (``image-topic``, ``mqtt``) also names the
subscriptions it needs (:func:`source_subscriptions`), which the agent makes on its bus before it connects and hands
in the :class:`SourceContext`. A new source is one module here plus one line in :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import ValidationError

from nairbus.agents.runtime.frames import FrameBatch, FrameSource, SourceContext, SourceSettings
from nairbus.agents.sources.camera import CameraSettings, CameraSource
from nairbus.agents.sources.folder import FolderSettings, FolderSource
from nairbus.agents.sources.frame_stream import (
    FRAME_STREAM,
    FrameStreamSettings,
    FrameStreamSource,
    frame_stream_topics,
)
from nairbus.agents.sources.image_topic import ImageTopicSettings, ImageTopicSource
from nairbus.agents.sources.replay import ReplaySettings, ReplaySource

if TYPE_CHECKING:
    from nairbus.agents.runtime.bus import Bus
    from nairbus.agents.runtime.config import SensorSettings
    from nairbus.schemas.topics import TopicTree

__all__ = ["SOURCES", "FrameBatch", "FrameSource", "RegisteredSource", "SourceContext", "SourceSettings",
           "open_source", "source_settings", "source_subscriptions", "subscribe_source"]

S = TypeVar("S", bound=SourceSettings)


@dataclass(frozen=True, slots=True)
class RegisteredSource(Generic[S]):
    """A frame source as :data:`SOURCES` holds it: the model of its settings, and the factory that opens it with
    them (and the agent's :class:`SourceContext`), and for a source that arrives over MQTT the topic filters (with
    their QoS) the agent's bus must subscribe to, given the agent's topic tree."""

    settings: type[S]
    open: Callable[[S, SourceContext], FrameSource]
    subscriptions: Callable[[S, TopicTree], tuple[tuple[str, int], ...]] | None = None


def _image_topic(s: ImageTopicSettings, _topics: TopicTree) -> tuple[tuple[str, int], ...]:
    return ((s.image_topic, 0),)


SOURCES: dict[str, RegisteredSource[Any]] = {
    "replay": RegisteredSource(ReplaySettings, ReplaySource.from_settings),
    "folder": RegisteredSource(FolderSettings, FolderSource.from_settings),
    "image-topic": RegisteredSource(ImageTopicSettings, ImageTopicSource.from_settings, _image_topic),
    "camera": RegisteredSource(CameraSettings, CameraSource.from_settings),
    FRAME_STREAM: RegisteredSource(FrameStreamSettings, FrameStreamSource.from_settings, frame_stream_topics),
}
"""Every frame source a sensor can run, by the name ``--source`` takes (``mqtt``: a capture agent's frames)."""


def _registered(name: str) -> RegisteredSource[Any]:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown frame source {name!r}; registered: {', '.join(SOURCES)}") from None


def _problem(model: type[SourceSettings], error: Any) -> str:
    """One validation error of a source's options, in words that name the option."""
    field = ".".join(str(part) for part in error["loc"])
    if not field:
        return str(error["msg"])
    if error["type"] == "missing":
        return f"needs {model.needs.get(field, f'the option {field!r}')}"
    if error["type"] == "extra_forbidden":
        return f"takes no option {field!r} (its options: {', '.join(model.model_fields) or 'none'})"
    return f"option {field!r}: {error['msg']}"


def source_settings(settings: SensorSettings) -> SourceSettings:
    """The options of the source ``settings.source`` names, checked with that source's model; a ``ValueError``
    naming the source and the option for an unknown source, an unknown option, a missing or a bad one."""
    model: type[SourceSettings] = _registered(settings.source).settings
    shared = {name: getattr(settings, name) for name in model.model_fields
              if name in type(settings).model_fields and name not in settings.source_options}
    try:
        return model.model_validate({**shared, **settings.source_options})
    except ValidationError as exc:
        problems = "; ".join(_problem(model, error) for error in exc.errors())
        raise ValueError(f"source {settings.source!r} {problems}") from None


def source_subscriptions(settings: SensorSettings, topics: TopicTree) -> tuple[tuple[str, int], ...]:
    """The topic filters (with QoS) the source ``settings.source`` names needs its agent's bus subscribed to (none
    for a source that does not arrive over MQTT); checks the options like :func:`source_settings`."""
    registered = _registered(settings.source)
    options = source_settings(settings)
    return () if registered.subscriptions is None else registered.subscriptions(options, topics)


def subscribe_source(settings: SensorSettings, bus: Bus, topics: TopicTree) -> None:
    """Subscribe ``bus`` to what the source needs (:func:`source_subscriptions`); before it connects, so that no
    frame published once the agent is online is missed."""
    for topic_filter, qos in source_subscriptions(settings, topics):
        bus.subscribe(topic_filter, qos=qos)


def open_source(settings: SensorSettings, ctx: SourceContext) -> FrameSource:
    """The source ``settings.source`` names, opened with its checked options (see :func:`source_settings`)."""
    return _registered(settings.source).open(source_settings(settings), ctx)
