"""Images entering the system, whatever their source: decoding (PNG, JPEG, WebP, BMP), limits, and the conversion
to a model's input spec at the edge.

A file or message that cannot be used (unreadable, corrupt, empty, too large, a decompression bomb) raises
:class:`BadImageError` with the reason it is counted under; sources count and log it, never crash on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nairbus.models.architectures.spec import InputSpec

__all__ = ["IMAGE_SUFFIXES", "MAX_FILE_BYTES", "MAX_PIXELS", "BadImageError", "decode_image_bytes", "frame_pixels",
           "image_to_input", "read_image_file"]

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


def image_to_input(image: object, spec: InputSpec) -> np.ndarray:
    """A decoded Pillow image as the model's input (its spec's channels and size), uint8."""
    return spec.convert_image(image)


def decode_image_bytes(data: bytes, spec: InputSpec, what: str = "message",
                       max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, WebP, BMP — a camera's snapshot on an MQTT topic) as model input;
    :class:`BadImageError` when they cannot be used (``too_large`` beyond ``max_pixels``)."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImageError("empty", what)
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError("too_large", f"{what}: {len(data)} B > {MAX_FILE_BYTES} B")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > min(max_pixels, MAX_PIXELS):
                raise BadImageError("too_large", f"{what}: {image.width}x{image.height} pixels, more than "
                                                 f"{min(max_pixels, MAX_PIXELS)}")
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


