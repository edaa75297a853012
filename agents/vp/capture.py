"""The capture agent: publishes each frame once, for every variant-parallel sensor of a stream.

Variant Parallelism needs the same frame on every variant device. A capture agent (the camera's device) publishes
each frame as a msgpack :class:`~nairbus.schemas.messages.Frame` on ``<prefix>/frames/<stream_id>``; every VP sensor of
the stream (``nairbus sensor --mode vp --source mqtt``) subscribes to it, so all variants classify the same pixels
under the same frame id. Here the frames come from the data set (standing in for a camera: frame id = data-set
index, so results can be scored), or from a folder of image files or a camera (the same registered sources a
sensor opens, converted to the shipped family's 28x28 grey input at the edge; each VP sensor converts the frames it
receives to its own variant's input again).

Like every agent it has a retained status with a last will (as role ``sensor``, under ``sensors/<capture_id>``).

It paces itself like a camera (:func:`nairbus.agents.runtime.pacing.run_paced`, the loop every agent shares): frame
``i`` is due at its slot ``i / fps``; a frame whose slot passed more than one period ago (the publisher was held up) is
skipped and counted, never sent in a burst to catch up.

The frame stays a self-describing msgpack map (hub LAN, one message per frame for all variants; about 920 bytes
for a 28x28 frame, 784 of them pixels) rather than a lean array: the per-sensor uplink is where bytes count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nairbus.agents.runtime.agent import DeviceAgent
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.sources import SourceContext, open_source
from nairbus.agents.vp.common import VP_SPEC
from nairbus.schemas import CONTENT_TYPE_MSGPACK, Frame
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.ids import ID_FIELD_PATTERN

log = get_logger("nairbus.capture")


class CaptureSettings(BaseModel):
    """What a capture agent publishes and how fast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capture_id: str | None = Field(default=None, pattern=ID_FIELD_PATTERN)
    """Agent id for the status topic (default ``capture-<stream_id>``)."""
    stream_id: str = Field(default="cam-1", pattern=ID_FIELD_PATTERN)
    split: Literal["train", "test"] = "test"
    data_dir: Path | None = None
    start: int = Field(default=0, ge=0)
    count: int | None = Field(default=None, ge=1)
    fps: float = Field(default=50.0, gt=0)
    qos: Literal[0, 1] = 1
    expiry_s: float = Field(default=10.0, gt=0)
    source: Literal["replay", "folder", "camera"] = "replay"
    """Where the frames come from (a registered source of :mod:`nairbus.agents.sources`): the data set, a folder of
    image files, or a camera (the ``camera`` extra)."""
    folder: Path | None = None
    watch: bool = False
    camera: str | None = None

    def source_settings(self) -> SensorSettings:
        """The same source as a sensor would open it."""
        options: dict[str, dict[str, object]] = {"folder": {"folder": self.folder, "watch": self.watch},
                                                 "camera": {"camera": self.camera}}
        given = {k: v for k, v in options.get(self.source, {}).items() if v is not None}
        return SensorSettings(source=self.source, source_options=given, split=self.split, data_dir=self.data_dir,
                              start=self.start, count=self.count)

    @property
    def agent_id(self) -> str:
        return self.capture_id or f"capture-{self.stream_id}"[:64]


class CaptureAgent(DeviceAgent):
    """Publishes frames on the stream's frame topic at a fixed rate."""

    role = "capture"
    event_prefix = "capture"

    def __init__(self, config: AgentConfig, settings: CaptureSettings, bus: Bus | None = None) -> None:
        self.settings = settings
        super().__init__(config, settings.agent_id, f"nairbus-capture-{settings.agent_id}", bus)
        self.topic = self.topics.frames(settings.stream_id)
        self.sent = 0
        self.dropped = 0
        self.skipped = 0
        """Frames not published because their slot passed more than one period ago (latest frame wins)."""

    def start_fields(self) -> dict[str, object]:
        return {"stream": self.settings.stream_id, "topic": self.topic, "fps": self.settings.fps}

    def publish(self, frame_id: int, pixels: bytes, height: int = 28, width: int = 28,
                capture_ts: float | None = None) -> bool:
        """Publish one frame now (captured at ``capture_ts``, default now)."""
        s = self.settings
        now = time.time() if capture_ts is None else capture_ts
        message = Frame(stream_id=s.stream_id, session=self.comm.session, seq=self.sent + self.dropped + 1,
                        frame_id=frame_id, capture_ts=now, expires_ts=now + s.expiry_s, height=height, width=width,
                        pixels=pixels)
        ok = self.comm.publish(self.topic, wire_encode(message), qos=s.qos, content_type=CONTENT_TYPE_MSGPACK,
                               expiry_s=s.expiry_s)
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        return ok

    def run(self, on_frame: Callable[[int, int, float], None] | None = None) -> dict[str, int]:
        """Publish the configured frames at ``fps``, skipping any whose slot passed more than one period ago.

        ``on_frame(sent, frame_id, capture_ts)`` is called after each frame handed to the broker connection (for
        orchestration). Returns ``sent``, ``dropped`` (refused by the outgoing queue) and ``skipped``.
        """
        s = self.settings
        source = open_source(s.source_settings(), SourceContext(VP_SPEC, self.stop_event))

        def emit(frame_id: int, image: np.ndarray, _result: None, capture_ts: float) -> None:
            if (self.publish(frame_id, image.tobytes(), image.shape[0], image.shape[1], capture_ts)
                    and on_frame is not None):
                on_frame(self.sent, frame_id, capture_ts)

        def late(_frame_id: int) -> None:
            self.skipped += 1

        pacing: Pacing[None] = Pacing(s.fps, skip_late=source.skip_late, source_paced=source.source_paced)
        run_paced(source.batches(256), pacing, self.stop_event, lambda _batch: None, emit, late)
        self.comm.wait_published(timeout=30.0)
        return {"sent": self.sent, "dropped": self.dropped, "skipped": self.skipped}

    def stop_fields(self) -> dict[str, object]:
        return {"stream": self.settings.stream_id, "sent": self.sent, "dropped": self.dropped,
                "skipped": self.skipped}
