"""A folder of image files as a frame source: a user's own camera snapshots (PNG, JPEG, WebP, BMP) in name order,
converted to the model's input at the edge; with ``watch`` it keeps taking new files as they appear (a
motion-triggered camera writing into a directory). A file that cannot be used is counted by reason and logged."""

from __future__ import annotations

import threading
import time
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
from nairbus.models.architectures.spec import InputSpec

__all__ = ["FolderSettings", "FolderSource"]

log = get_logger("nairbus.sources")


def _data_set_spec() -> InputSpec:
    """The default data set's own input spec (28x28 grey Fashion-MNIST), without the architectures' torch."""
    from nairbus.models.data.registry import DEFAULT_DATASET, get_dataset

    return get_dataset(DEFAULT_DATASET).spec


class FolderSettings(SourceSettings):
    """``source="folder"``: what the folder source reads of a sensor's source options."""

    needs: ClassVar[dict[str, str]] = {"folder": "a folder (--folder DIR)"}

    folder: Path = Field(description="The directory of image files.")
    watch: bool = Field(default=False, description="After the files present at start, keep taking new ones as they "
                                                   "appear, until stopped.")
    count: int | None = Field(default=None, ge=1, description="Stop after this many files (in name order).")


@dataclass
class _Seen:
    """A file met but not yet taken: its size and modification time when last looked at."""

    size: int
    mtime_ns: int
    refused: BadImageError | None = None
    """Why it could not be read when it was still changing (retried once it has changed or settled)."""


@dataclass
class FolderSource:
    """Image files of a folder, in name order; frame id = position in the order files are taken (from 0).

    Every file is decided, watched or not (a folder holds items, not a live view): the sensor queues them and sends
    each when the link carries it. A file is taken once complete: unchanged for ``settle_s`` (a camera, an FTP
    upload or ``cp`` writing it in place); a file that fails to read while it was modified within ``retry_s`` is
    retried when it changes or settles, and refused only then. Writing to a temporary name and renaming into the
    folder (names starting with ``.`` are ignored) is still the safest way to hand a file over.
    ``watch``: after the files present at start, keep polling every ``poll_s`` for new ones until ``stop`` is set
    (or ``count`` files were taken).
    ``counters``: files read, and files refused by reason (``bad_<reason>``).
    """

    folder: Path
    spec: InputSpec = field(default_factory=_data_set_spec)
    watch: bool = False
    poll_s: float = 0.2
    count: int | None = None
    settle_s: float = 0.5
    retry_s: float = 5.0
    stop: threading.Event = field(default_factory=threading.Event)
    counters: Counter[str] = field(default_factory=Counter)
    _done: set[str] = field(default_factory=set)
    _pending: dict[str, _Seen] = field(default_factory=dict)
    _names: dict[int, str] = field(default_factory=dict)
    """Frame id → file name, for the frames handed over and not yet sent (:meth:`item_name`)."""
    _next_id: int = 0
    source_paced: bool = True
    skip_late: bool = False

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist or is not a directory")

    @classmethod
    def from_settings(cls, s: FolderSettings, ctx: SourceContext) -> FolderSource:
        return cls(s.folder, spec=ctx.spec, watch=s.watch, stop=ctx.stop, count=s.count)

    def _candidates(self) -> list[Path]:
        """Image files not yet taken or refused, in name order."""
        try:
            return sorted(p for p in self.folder.iterdir()
                          if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in self._done and not
                          p.name.startswith("."))
        except OSError as exc:
            log.warning("folder_unreadable", folder=str(self.folder), error=str(exc))
            return []

    def _ready(self, path: Path, now_ns: int) -> bool:
        """Whether ``path`` is complete enough to read now: unchanged for ``settle_s``, and, if it failed to read
        before, changed since or settled for ``retry_s``."""
        try:
            st = path.stat()
        except OSError:  # gone (renamed or deleted) since the listing
            self._pending.pop(path.name, None)
            return False
        seen = self._pending.get(path.name)
        changed = seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns)
        if changed:
            self._pending[path.name] = _Seen(st.st_size, st.st_mtime_ns)
        age_s = (now_ns - st.st_mtime_ns) / 1e9
        if age_s < self.settle_s:
            return False
        retry_later = seen is not None and seen.refused is not None and not changed and age_s < self.retry_s
        return not retry_later

    def _take(self, path: Path) -> np.ndarray | None:
        """The file as model input; None when it is refused (counted) or waits to be retried."""
        try:
            image = read_image_file(path, self.spec)
        except BadImageError as exc:
            seen = self._pending.get(path.name)
            try:
                age_s = time.time() - path.stat().st_mtime
            except OSError:
                age_s = float("inf")
            if seen is not None and age_s < self.retry_s:  # maybe still being written: look again later
                seen.refused = exc
                return None
            self._pending.pop(path.name, None)
            self._done.add(path.name)
            self.counters[f"bad_{exc.reason}"] += 1
            log.warning("image_refused", file=str(path), reason=exc.reason, detail=str(exc)[:200])
            return None
        self._pending.pop(path.name, None)
        self._done.add(path.name)
        return image

    def files(self) -> Iterator[tuple[int, Path, np.ndarray]]:
        """(frame id, path, model input) for every usable file, as each is complete."""
        while not self.stop.is_set() and (self.count is None or self._next_id < self.count):
            now_ns = time.time_ns()
            waiting = False
            for path in self._candidates():
                if self.stop.is_set() or (self.count is not None and self._next_id >= self.count):
                    return
                if not self._ready(path, now_ns):
                    waiting = waiting or path.name in self._pending
                    continue
                image = self._take(path)
                if image is None:
                    waiting = waiting or path.name in self._pending
                    continue
                frame_id, self._next_id = self._next_id, self._next_id + 1
                self.counters["files"] += 1
                self._names[frame_id] = path.name
                log.debug("image_read", file=str(path), frame_id=frame_id)
                yield frame_id, path, image
            if not self.watch and not waiting:
                return
            self.stop.wait(self.poll_s if self.watch else min(self.poll_s, 0.05))

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

    def item_name(self, frame_id: int) -> str | None:
        """The file a frame was read from (its name in the folder), asked once when the frame is sent."""
        return self._names.pop(frame_id, None)

    def _pending_quickly(self) -> bool:
        """Whether more files are already complete and waiting (a watching source sends a lone new file at once)."""
        now_ns = time.time_ns()
        return any(self._ready(p, now_ns) for p in self._candidates())

