"""Frame sources for sensor agents: data-set replay with stable frame ids, and a folder of image files.

A source yields :class:`FrameBatch` es of uint8 images in the model's input spec (grey ``(H, W)`` or RGB
``(H, W, 3)``). Replay takes the data set's
frames (frame id = data-set index). :class:`FolderSource` reads PNG/JPEG/WebP/BMP files — a user's own camera
snapshots — in name order, converts each to the model's channels and size at the edge
(:meth:`models.split.InputSpec.convert_image`), and with ``watch``
keeps taking new files as they appear (a motion-triggered camera writing into a directory). The same conversion
serves encoded snapshots arriving on an MQTT topic (:func:`decode_image_bytes`). A file that cannot be used
(unreadable, corrupt, empty, too large, a decompression bomb) is counted by reason and logged, never raised: one bad
file costs only itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.logging import get_logger
from models.architectures import fashion_mnist_spec
from models.data import Dataset
from models.split import InputSpec

__all__ = ["BadImageError", "FolderSource", "FrameBatch", "decode_image_bytes", "frame_pixels", "image_to_input",
           "read_image_file", "replay", "replay_indices"]

log = get_logger("nairbus.sources")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""File name endings a folder source reads (case-insensitive); anything else in the folder is ignored."""
MAX_FILE_BYTES = 20 * 1024 * 1024
"""Image files larger than this are refused unread."""
MAX_PIXELS = 40_000_000
"""Images with more pixels than this are refused before they are decoded (a small file can decode to gigabytes)."""


class BadImageError(ValueError):
    """An image file that cannot be used; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Frames read together: ids ``(B,)``, uint8 images ``(B, H, W)`` (grey) or ``(B, H, W, 3)`` (RGB)."""

    frame_ids: np.ndarray
    images: np.ndarray


def replay_indices(total: int, start: int = 0, count: int | None = None,
                   shard: tuple[int, int] | None = None) -> np.ndarray:
    """Data-set indices a replaying sensor sends: ``[start, start+count)``, then every n-th from i for shard (i, n)."""
    if start >= total:
        raise ValueError(f"start {start} is past the end of a data set of {total} frames")
    stop = total if count is None else min(total, start + count)
    indices = np.arange(start, stop)
    if shard is not None:
        i, n = shard
        indices = indices[i::n]
    return indices


def replay(data: Dataset, indices: np.ndarray, batch: int) -> Iterator[FrameBatch]:
    """Yield the frames at ``indices`` in batches; the frame id is the data-set index."""
    for pos in range(0, len(indices), batch):
        ids = indices[pos : pos + batch]
        yield FrameBatch(ids, data.images[ids])


def image_to_input(image: object, spec: InputSpec) -> np.ndarray:
    """A decoded Pillow image as the model's input (its spec's channels and size), uint8."""
    return spec.convert_image(image)


def decode_image_bytes(data: bytes, spec: InputSpec, what: str = "message") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, WebP, BMP — a camera's snapshot on an MQTT topic) as model input;
    :class:`BadImageError` when they cannot be used."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImageError("empty", what)
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError("too_large", f"{what}: {len(data)} B > {MAX_FILE_BYTES} B")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise BadImageError("too_large", f"{what}: {image.width}x{image.height} pixels")
            image.load()
            return image_to_input(image, spec)
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError("too_large", f"{what}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise BadImageError("not_an_image", f"{what}: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError("corrupt", f"{what}: {exc}") from exc


def frame_pixels(pixels: bytes, height: int, width: int, channels: int, encoding: str, spec: InputSpec) -> np.ndarray:
    """A captured frame's pixels (raw ``height × width × channels`` bytes, or an encoded file) as the input of a model
    of ``spec``, converted like any other frame; :class:`BadImageError` when they cannot be used."""
    if encoding != "raw":
        return decode_image_bytes(pixels, spec, f"{encoding} frame")
    if len(pixels) != height * width * channels:
        raise BadImageError("corrupt", f"{len(pixels)} bytes for a {height}x{width}x{channels} frame")
    array = np.frombuffer(pixels, dtype=np.uint8).reshape((height, width) if channels == 1 else (height, width, 3))
    return spec.convert(array[None])[0] if array.shape != spec.pixel_shape else array.copy()


def read_image_file(path: Path, spec: InputSpec) -> np.ndarray:
    """One image file as model input; :class:`BadImageError` (with the reason to count) when it cannot be used."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:  # refused unread
            raise BadImageError("too_large", f"{path}: {size} B > {MAX_FILE_BYTES} B")
        data = path.read_bytes()
    except OSError as exc:
        raise BadImageError("unreadable", str(exc)) from exc
    return decode_image_bytes(data, spec, str(path))


@dataclass
class FolderSource:
    """Image files of a folder, in name order; frame id = position in that order (from 0).

    ``watch``: after the files present at start, keep polling every ``poll_s`` for new ones until ``stop`` is set.
    ``counters``: files read, and files refused by reason.
    """

    folder: Path
    spec: InputSpec = field(default_factory=fashion_mnist_spec)
    watch: bool = False
    poll_s: float = 0.2
    stop: threading.Event = field(default_factory=threading.Event)
    counters: Counter[str] = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)
    _next_id: int = 0

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder {self.folder} does not exist or is not a directory")

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

