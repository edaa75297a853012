"""What the paced loop and every frame source share: :class:`FrameBatch`, the :class:`FrameSource` protocol, the
:class:`SourceContext` a source is opened with and :class:`SourceSettings`, the base of each source's own settings.
The concrete sources (and their settings models) live above the runtime, in :mod:`nairbus.agents.sources`, and
register there."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from nairbus.models.architectures.spec import InputSpec

__all__ = ["FrameBatch", "FrameSource", "NamedItems", "SourceContext", "SourceSettings"]


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Frames read together: ids ``(B,)``, uint8 images ``(B, H, W)`` (grey) or ``(B, H, W, 3)`` (RGB), and, from a
    source that knows when each frame was captured (a capture agent's frames), their wall-clock capture times ``(B,)``
    — the paced loop hands those on instead of each frame's slot time."""

    frame_ids: np.ndarray
    images: np.ndarray
    capture_ts: np.ndarray | None = None


class FrameSource(Protocol):
    """What every source offers the paced loop."""

    @property
    def skip_late(self) -> bool: ...

    @property
    def source_paced(self) -> bool: ...

    @property
    def counters(self) -> Counter[str]: ...

    def batches(self, batch: int) -> Iterator[FrameBatch]: ...


@runtime_checkable
class NamedItems(Protocol):
    """A source whose frames are named items (a folder's files): the name of a frame it has handed over, asked for
    once, when the frame is sent (then forgotten, so that the names held stay bounded)."""

    def item_name(self, frame_id: int) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source may need from the agent that runs it: the model's input spec, the stop event, and (for
    sources that arrive over MQTT) the agent's communicator, already subscribed."""

    spec: InputSpec
    stop: threading.Event
    comm: Any = None


class SourceSettings(BaseModel):
    """The base of every frame source's own settings (a sensor's ``source_options``, checked by the model its source
    registers): frozen, and an option the source does not take is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    needs: ClassVar[dict[str, str]] = {}
    """For a required option, what the error says the source needs when it is missing (e.g. ``"a folder (--folder
    DIR)"``); an option not named here is reported by its name."""
