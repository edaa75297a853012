"""A camera as a frame source (the optional ``camera`` extra: ``pip install 'nairbus[camera]'``, OpenCV).

Anything OpenCV's ``VideoCapture`` opens: a device index (``0`` for ``/dev/video0``), an RTSP/HTTP stream URL, or a
video file. Frames are converted from OpenCV's BGR to the model's input spec at the edge; frame id = frame count
from 0. A frame that cannot be read is counted (``bad_read``); after ``max_failures`` in a row the source ends with
a clear log line rather than spinning. Without OpenCV installed the source refuses with the command to install it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from nairbus.agents.runtime.frames import FrameBatch, SourceContext, SourceSettings
from nairbus.agents.runtime.logging import get_logger

__all__ = ["CameraSettings", "CameraSource", "CameraUnavailableError", "open_capture"]

log = get_logger("nairbus.sources")


class CameraSettings(SourceSettings):
    """``source="camera"``: what the camera source reads of a sensor's source options (and ``count``)."""

    needs: ClassVar[dict[str, str]] = {"camera": "a camera (--camera 0, a stream URL or a video file)"}

    camera: str = Field(min_length=1, max_length=1024, description=(
        "What OpenCV opens — a device index (``0``), a stream URL or a video file (needs the ``camera`` extra)."))
    count: int | None = Field(default=None, ge=1, description="Stop after this many frames (None: until stopped).")


class CameraUnavailableError(RuntimeError):
    """OpenCV is not installed, or the camera cannot be opened."""


def open_capture(device: str) -> Any:
    """An opened ``cv2.VideoCapture`` for ``device`` (an index like ``0``, a URL or a file)."""
    try:
        import cv2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise CameraUnavailableError("the camera source needs OpenCV: pip install 'nairbus[camera]'") from None
    capture = cv2.VideoCapture(int(device) if device.isdigit() else device)
    if not capture.isOpened():
        raise CameraUnavailableError(f"camera {device!r} cannot be opened")
    return capture


@dataclass
class CameraSource:
    """Frames read from an OpenCV capture, converted to the model's input spec; a live source (late frames are
    skipped, waiting for the camera does not count against them)."""

    device: str
    ctx: SourceContext
    count: int | None = None
    max_failures: int = 50
    counters: Counter[str] = field(default_factory=Counter)
    skip_late: bool = True
    source_paced: bool = True
    capture: Any = None
    """The opened capture (opened by :meth:`from_settings`, so that a camera that cannot open fails the sensor before
    it connects; released when :meth:`batches` ends)."""

    @classmethod
    def from_settings(cls, s: CameraSettings, ctx: SourceContext) -> CameraSource:
        return cls(s.camera, ctx, s.count, capture=open_capture(s.camera))

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        """One frame per batch, as the camera delivers them, until stopped, ``count`` frames, or the end."""
        del batch
        from PIL import Image

        capture = self.capture if self.capture is not None else open_capture(self.device)
        self.capture = None
        from_file = Path(self.device).is_file()  # a video file ends; a camera or stream may hiccup
        frame_id, failures = 0, 0
        try:
            while not self.ctx.stop.is_set() and (self.count is None or frame_id < self.count):
                ok, bgr = capture.read()
                if not ok and from_file:
                    return
                if not ok or bgr is None or bgr.ndim != 3:
                    failures += 1
                    self.counters["bad_read"] += 1
                    if failures >= self.max_failures:
                        log.warning("camera_ended", device=self.device, failures=failures, frames=frame_id)
                        return
                    continue
                failures = 0
                rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
                self.counters["frames"] += 1
                yield FrameBatch(np.array([frame_id], dtype=np.int64), self.ctx.spec.convert_image(rgb)[None])
                frame_id += 1
        finally:
            capture.release()
