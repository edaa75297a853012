"""A folder of image files as a frame source: a user's own camera snapshots (PNG, JPEG, WebP, BMP) in name order,
converted to the model's input at the edge; with ``watch`` it keeps taking new files as they appear (a
motion-triggered camera writing into a directory). A file that cannot be used is counted by reason and logged."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from nairbus.agents.runtime.frames import FrameBatch, SourceContext, SourceSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.sources.images import IMAGE_SUFFIXES, BadImageError, read_image_file
from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.architectures.split import InputSpec

__all__ = ["FolderSettings", "FolderSource"]

log = get_logger("nairbus.sources")


class FolderSettings(SourceSettings):
    """``source="folder"``: what the folder source reads of a sensor's source options."""

    needs: ClassVar[dict[str, str]] = {"folder": "a folder (--folder DIR)"}

    folder: Path = Field(description="The directory of image files.")
    watch: bool = Field(default=False, description="After the files present at start, keep taking new ones as they "
                                                   "appear, until stopped.")


@dataclass
class FolderSource:
    """Image files of a folder, in name order; frame id = position in that order (from 0).

    ``watch``: after the files present at start, keep polling every ``poll_s`` for new ones until ``stop`` is set
    (then it is a live camera: late frames are skipped; otherwise every file is classified).
    ``counters``: files read, and files refused by reason (``bad_<reason>``).
    """

    folder: Path
    spec: InputSpec = field(default_factory=fashion_mnist_spec)
    watch: bool = False
    poll_s: float = 0.2
    stop: threading.Event = field(default_factory=threading.Event)
    counters: Counter[str] = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)
    _next_id: int = 0
    source_paced: bool = True

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist or is not a directory")

    @property
    def skip_late(self) -> bool:
        return self.watch

    @classmethod
    def from_settings(cls, s: FolderSettings, ctx: SourceContext) -> FolderSource:
        return cls(s.folder, spec=ctx.spec, watch=s.watch, stop=ctx.stop)

    def _new_files(self) -> list[Path]:
        try:
            names = sorted(p for p in self.folder.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in self._seen and not
                           p.name.startswith("."))
        except OSError as exc:
            log.warning("folder_unreadable", folder=str(self.folder), error=str(exc))
            return []
        return names

    def files(self) -> Iterator[tuple[int, Path, np.ndarray]]:
        """(frame id, path, model input) for every usable file, as they are found."""
        while True:
            new = self._new_files()
            for path in new:
                if self.stop.is_set():
                    return
                self._seen.add(path.name)
                try:
                    image = read_image_file(path, self.spec)
                except BadImageError as exc:
                    self.counters[f"bad_{exc.reason}"] += 1
                    log.warning("image_refused", file=str(path), reason=exc.reason, detail=str(exc)[:200])
                    continue
                frame_id, self._next_id = self._next_id, self._next_id + 1
                self.counters["files"] += 1
                log.debug("image_read", file=str(path), frame_id=frame_id)
                yield frame_id, path, image
            if not self.watch or self.stop.is_set():
                return
            if not new:
                self.stop.wait(self.poll_s)

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        """The files' frames in batches of at most ``batch`` (fewer when watching and no more have arrived)."""
        batch = batch if not self.watch else min(batch, 8)
        ids: list[int] = []
        images: list[np.ndarray] = []
        for frame_id, _path, image in self.files():
            ids.append(frame_id)
            images.append(image)
            if len(ids) >= batch or (self.watch and not self._pending_quickly()):
                yield FrameBatch(np.array(ids, dtype=np.int64), np.stack(images))
                ids, images = [], []
        if ids:
            yield FrameBatch(np.array(ids, dtype=np.int64), np.stack(images))

    def _pending_quickly(self) -> bool:
        """Whether more files are already waiting (a watching source sends a lone new file at once)."""
        return bool(self._new_files())

