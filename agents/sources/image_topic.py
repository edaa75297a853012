"""Encoded images on an MQTT topic as a frame source: JPEG/PNG snapshots the way Frigate publishes them and Home
Assistant's MQTT camera reads them. Each message is a frame (frame id = arrival order from 0); when messages come
faster than the sensor takes them the newest wins (the others are counted ``skipped_stale``); a payload that is not
a usable image is counted by reason and logged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from nairbus.agents.runtime.frames import FrameBatch, SourceContext, SourceSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.sources.images import MAX_PIXELS, BadImageError, decode_image_bytes
from nairbus.models.architectures.spec import InputSpec

__all__ = ["ImageTopicSettings", "ImageTopicSource"]

log = get_logger("nairbus.sources")

_NEEDS_TOPIC = "an image topic (--image-topic TOPIC)"


class ImageTopicSettings(SourceSettings):
    """``source="image-topic"``: what the image-topic source reads of a sensor's source options (and ``count``)."""

    needs: ClassVar[dict[str, str]] = {"image_topic": _NEEDS_TOPIC}

    image_topic: str = Field(min_length=1, max_length=1024, description=(
        "An MQTT topic (filter) carrying encoded images — JPEG/PNG bytes, the way Frigate publishes snapshots and "
        "Home Assistant's MQTT camera reads them. Each message is a frame (frame id = arrival order from 0); when "
        "messages come faster than the sensor sends, the newest wins. The sensor's account needs read access to it "
        "(the sensor subscribes to it)."))
    count: int | None = Field(default=None, ge=1, description="Stop after this many frames (None: until stopped).")
    max_pixels: int | None = Field(default=None, ge=1, le=MAX_PIXELS, description=(
        "The largest image (width x height) taken; bigger ones are refused as too_large. Default: what the model's "
        "input calls for — 256 times its pixels, and never less than a 4K frame (8.3 Mpx)."))


UHD_PIXELS = 3840 * 2160


def default_max_pixels(spec: InputSpec) -> int:
    """The image-topic pixel cap for a model of ``spec``: 256 times its input's pixels, at least a 4K frame.

    >>> from nairbus.models.architectures.registry import fashion_mnist_spec
    >>> default_max_pixels(fashion_mnist_spec())
    8294400
    """
    return min(MAX_PIXELS, max(UHD_PIXELS, 256 * spec.height * spec.width))


@dataclass
class ImageTopicSource:
    """Frames from the messages the agent's communicator receives on its image topic subscription."""

    comm: Any
    ctx: SourceContext
    count: int | None = None
    max_pixels: int = MAX_PIXELS
    counters: Counter[str] = field(default_factory=Counter)
    skip_late: bool = True
    source_paced: bool = True
    last_received_ts: float = 0.0

    @classmethod
    def from_settings(cls, s: ImageTopicSettings, ctx: SourceContext) -> ImageTopicSource:
        if ctx.comm is None:  # the agent's communicator, subscribed to s.image_topic
            raise ValueError(f"source 'image-topic' needs {_NEEDS_TOPIC}")
        return cls(ctx.comm, ctx, s.count, s.max_pixels or default_max_pixels(ctx.spec))

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        """One frame per batch, as each usable message arrives, until stopped or ``count`` frames."""
        del batch
        frame_id = 0
        while not self.ctx.stop.is_set() and (self.count is None or frame_id < self.count):
            message = self.comm.get(timeout=0.2)
            if message is None:
                continue
            while (newer := self.comm.get(timeout=0)) is not None:  # the sensor fell behind: newest wins
                self.counters["skipped_stale"] += 1
                message = newer
            try:
                image = decode_image_bytes(message.payload, self.ctx.spec, message.topic, self.max_pixels)
            except BadImageError as exc:
                self.counters[f"bad_{exc.reason}"] += 1
                log.warning("image_refused", topic=message.topic[:200], reason=exc.reason, detail=str(exc)[:200])
                continue
            self.last_received_ts = message.received_ts
            self.counters["frames"] += 1
            yield FrameBatch(np.array([frame_id], dtype=np.int64), image[None])
            frame_id += 1
