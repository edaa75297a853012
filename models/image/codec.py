"""Image codecs for uint8 grey frames ``(H, W)``: the input-compression baseline that NAIR is measured against.

A sensor in ``image`` mode compresses the whole frame and the hub runs the whole mature model on what it decodes.
This module is the codec seam for that, in the style of sc2bench's codec registry: every codec is an
:class:`ImageCodec` named by a *spec* string, made by a factory registered with :func:`register_image_codec` and
looked up with :func:`get_image_codec`. The specs:

``raw``
    the pixels as they are, ``H * W`` bytes (the uncompressed reference).
``png``
    PNG, 8-bit grey, zlib level 9 (``optimize=True``), no ancillary chunks.
``webp-lossless``
    lossless WebP (VP8L), maximum effort (``quality=100, method=6``).
``webp:q<0-100>``
    lossy WebP (VP8), ``method=6``.
``jpeg:q<1-95>``
    baseline JPEG, grey, optimised Huffman tables, the JFIF APP0 segment stripped (JFIF is optional; 18 bytes).
``jpeg-shared:q<1-95>``
    baseline JPEG with the *header shared*: standard (Annex K) Huffman tables and the IJG quantisation table of the
    quality, so every frame of one shape and quality has the same bytes from SOI to the end of the SOS segment
    (about 300 of them); both ends derive that header from ``(quality, shape)`` and only the entropy-coded scan is
    sent, with its EOI marker (which tells a truncated scan from a whole one): the "abbreviated" JPEG of the
    standard, with its tables agreed out of band.
``grey<1-8>+deflate``
    bit-depth reduction to N bits (rounding to the nearest of ``2**N`` evenly spaced levels, so black and white stay
    exact), the level indices in row-major order, then raw deflate at zlib level 9 (no zlib header or checksum; the
    smallest of a few deflate strategies). The levels are bit-packed MSB first *or* left one per byte, whichever
    deflates smaller for the frame: deflate matches bytes, so for N >= 3 unpacked levels usually win (by 7-17 % on
    Fashion-MNIST). No flag is sent; the inflated length tells the two apart (``ceil(H*W*N/8)`` or ``H*W``).
    Decoding maps level ``k`` back to ``round(k * 255 / (2**N - 1))``. ``grey8+deflate`` is lossless.
``grey<1-8>+zstd``
    the same levels, packed or one per byte (whichever is smaller), compressed by zstd set for payloads of tens of
    bytes: level 22, a *magicless* frame (no 4-byte magic number) without checksum, content size or dictionary id,
    and a 1 KiB window, so its 2-byte frame header is the same for every frame and is not sent either (both ends
    know it, :data:`ZSTD_HEADER`): what travels is the frame's blocks. Where zstd is not shorter than the packed
    levels, the packed levels go as they are ("stored"): exactly ``ceil(H*W*N/8)`` bytes is stored (so any payload of
    that length decodes, as any ``H*W`` bytes do for ``raw``), fewer is zstd, more is refused. Against
    ``grey+deflate`` it saves 4-7 % at 1-3 bits on Fashion-MNIST (validation split). ``grey8+zstd`` is lossless.
``down<1-4096>:<codec>``
    any of the specs above sent at a smaller size: each side of the frame scaled down to at most the given side
    (Pillow, box filter: the mean of the pixels each new pixel covers), coded with ``<codec>`` at that size, and
    scaled back to the frame's shape at the hub by repeating pixels (nearest neighbour), e.g. ``down14:grey4+zstd``:
    a 28x28 frame sent as 14x14 at 4 bits in about 75 bytes. Nearest neighbour rather than bilinear or Lanczos
    because the mature model, trained on sharp frames, is more accurate on blocky ones than on blurred ones (chosen
    on 3000 frames of the validation split: 85.8 % against 68.5 % bilinear and 80.0 % Lanczos at ``down14:grey4``).
    Never marked lossless; ``down`` does not nest.

The PNG, WebP and JPEG bytes are standard files any decoder reads, so they carry their containers (PNG: 57 bytes
of signature and chunk framing plus 6 of zlib framing; WebP: a 20-byte RIFF header; JPEG: markers, one 8-bit
quantisation table and the Huffman tables). ``raw``, ``grey<N>+deflate`` and ``grey<N>+zstd`` carry nothing but
data: the receiver knows the shape from the sensor's birth message (and a ``down`` codec's smaller shape from it
and the spec).

``decode`` takes untrusted bytes: anything it cannot vouch for (garbage, truncation, a wrong size or shape, colour,
alpha, animation, progressive JPEG, unexpected PNG chunks, trailing bytes, more data than ``H * W`` pixels' worth)
raises :class:`ImageCodecError` (a :class:`ValueError`) with a message that says what was wrong, never another
exception. Headers are checked before any pixel is decoded (PNG's and WebP's by this module, before Pillow sees
them), and deflate and zstd output is bounded before it is produced, so decompressed output is bounded by the frame
size (a ``down`` codec's smaller frame never has more pixels than the frame).
"""

from __future__ import annotations

import functools
import io
import re
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # PEP 784's module as a backport: one 1.3 MB libzstd binding (zstandard ships two of 12 MB each)
    from backports import zstd

__all__ = [
    "DOWN_FORM",
    "MAX_SIDE",
    "ImageCodec",
    "ImageCodecError",
    "down_shape",
    "get_image_codec",
    "image_codec_names",
    "max_encoded_len",
    "register_image_codec",
]

MAX_SIDE: Final = 4096
"""Largest frame side a codec accepts (encode and decode)."""
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
DOWN_FORM: Final = f"down<1-{MAX_SIDE}>:<codec>"
"""The down-sampling form: any other spec (not itself down-sampled) sent at a smaller size."""
_DEFLATE_STRATEGIES: Final = (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_RLE)

Shape = tuple[int, int]
EncodeFn = Callable[[np.ndarray], bytes]
DecodeFn = Callable[[bytes, Shape], np.ndarray]
CodecFactory = Callable[[int | None], "ImageCodec"]


def _given(value: int | None) -> int:
    """The integer of a spec whose form has a range (the registry always passes one)."""
    if value is None:
        raise ValueError("this codec form takes a number")
    return value


class ImageCodecError(ValueError):
    """Bytes that do not decode to a grey frame of the expected shape (or a frame a codec cannot encode)."""


def max_encoded_len(shape: Shape) -> int:
    """The most bytes :meth:`ImageCodec.decode` reads for a frame of ``shape``; longer input is refused unread."""
    return 4 * shape[0] * shape[1] + 1024


def _check_shape(shape: object) -> Shape:
    """``shape`` as a valid ``(H, W)`` pair, or :class:`ImageCodecError`."""
    if (not isinstance(shape, tuple) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise ImageCodecError(f"shape must be a pair of ints (H, W), not {shape!r}")
    h, w = shape
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ImageCodecError(f"shape {shape} is outside 1..{MAX_SIDE} on a side")
    return (h, w)


def _check_image(image: object) -> np.ndarray:
    """``image`` as a C-contiguous uint8 ``(H, W)`` array, or :class:`ImageCodecError`."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageCodecError(f"a frame must be a uint8 array (H, W), not {got}")
    _check_shape((int(image.shape[0]), int(image.shape[1])))
    return np.ascontiguousarray(image)


@dataclass(frozen=True, slots=True)
class ImageCodec:
    """One codec at one setting: ``decode(encode(x), x.shape)`` is ``x`` (lossless) or an approximation of it.

    ``family`` groups the settings of one codec (``"jpeg"`` for every ``jpeg:q<n>``) and ``level`` orders them
    (higher is better quality; ``None`` for a codec with a single setting).
    """

    name: str
    family: str
    level: int | None
    lossless: bool
    encode_frame: EncodeFn
    decode_frame: DecodeFn

    def encode(self, image: np.ndarray) -> bytes:
        """Compress a uint8 grey frame ``(H, W)``."""
        return self.encode_frame(_check_image(image))

    def decode(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        """Decompress untrusted ``data`` to a uint8 frame of ``shape``; :class:`ImageCodecError` if it cannot."""
        shape = _check_shape(shape)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ImageCodecError(f"{self.name}: data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) > max_encoded_len(shape):
            raise ImageCodecError(f"{self.name}: {len(data)} bytes is more than {max_encoded_len(shape)}, the most "
                                  f"a {shape[0]}x{shape[1]} frame may take")
        try:
            out = self.decode_frame(data, shape)
        except ImageCodecError:
            raise
        except Exception as exc:  # a hostile input may trip anything inside Pillow or zlib
            raise ImageCodecError(f"{self.name}: cannot decode {len(data)} bytes: {type(exc).__name__}: {exc}") \
                from exc
        if out.dtype != np.uint8 or out.shape != shape:
            raise ImageCodecError(f"{self.name}: decoded {out.dtype} {out.shape}, expected uint8 {shape}")
        return out


# --- registry -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Form:
    """A registered spec form such as ``jpeg:q<1-95>``: literal prefix, optional integer range, literal suffix."""

    form: str
    prefix: str
    suffix: str
    bounds: tuple[int, int] | None
    factory: CodecFactory

    def match(self, spec: str) -> tuple[bool, int | None]:
        """Whether ``spec`` has this form, and its integer (``None`` for a form without one).

        Raises :class:`ValueError` when ``spec`` has the form's shape but its number is out of range or not written
        plainly (leading zeros).
        """
        if self.bounds is None:
            return spec == self.prefix, None
        found = re.fullmatch(re.escape(self.prefix) + r"([0-9]{1,6})" + re.escape(self.suffix), spec)
        if not found:
            return False, None
        digits, (lo, hi) = found.group(1), self.bounds
        if digits != str(int(digits)) or not lo <= int(digits) <= hi:
            raise ValueError(f"image codec spec {spec!r}: the number must be a plain integer in {lo}..{hi} "
                             f"(form {self.form!r}); valid forms: {', '.join(image_codec_names())}")
        return True, int(digits)


_FORMS: dict[str, _Form] = {}


def _parse_form(form: str, factory: CodecFactory) -> _Form:
    """Split ``form`` into literal text around at most one ``<lo-hi>`` range."""
    found = re.fullmatch(r"([a-z0-9:+-]+?)(?:<([0-9]+)-([0-9]+)>([a-z0-9:+-]*))?", form)
    if not found:
        raise ValueError(f"bad image codec form {form!r}: expected text with at most one <lo-hi> range")
    prefix, lo, hi, suffix = found.groups()
    bounds = (int(lo), int(hi)) if lo is not None else None
    return _Form(form, prefix, suffix or "", bounds, factory)


def register_image_codec(form: str) -> Callable[[CodecFactory], CodecFactory]:
    """Register a codec factory for the specs of ``form`` (``"png"``, ``"jpeg:q<1-95>"``); use as a decorator.

    The factory receives the spec's integer (``None`` for a form without a range) and returns the
    :class:`ImageCodec`.
    """

    def decorate(factory: CodecFactory) -> CodecFactory:
        parsed = _parse_form(form, factory)
        if form in _FORMS:
            raise ValueError(f"image codec form {form!r} is already registered")
        _FORMS[form] = parsed
        return factory

    return decorate


def image_codec_names() -> tuple[str, ...]:
    """The spec forms: the registered ones, e.g. ``("raw", "png", ..., "grey<1-8>+deflate")``, then
    :data:`DOWN_FORM`."""
    return (*_FORMS, DOWN_FORM)


def get_image_codec(spec: str) -> ImageCodec:
    """The codec a spec names; :class:`ValueError` listing the valid forms for anything else."""
    if isinstance(spec, str):
        down = _down_codec(spec)
        if down is not None:
            return down
        for parsed in _FORMS.values():
            matched, value = parsed.match(spec)
            if matched:
                return parsed.factory(value)
    raise ValueError(f"unknown image codec spec {spec!r}; valid forms: {', '.join(image_codec_names())}")


# --- Pillow helpers -------------------------------------------------------------------------------------------------


def _pillow_save(image: np.ndarray, fmt: str, **options: object) -> bytes:
    """Encode a grey frame with Pillow and return the file's bytes."""
    from PIL import Image  # on first use: a sensor sending grey+zstd or decisions never loads Pillow (2.6 MB)

    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, fmt, **options)
    return out.getvalue()


def _pillow_open(data: bytes, fmt: str, shape: Shape) -> Image.Image:
    """Open ``data`` as ``fmt`` (header only), checking its size and frame count before any pixel is decoded."""
    from PIL import Image

    im = Image.open(io.BytesIO(data), formats=[fmt])
    h, w = shape
    if im.size != (w, h):
        raise ImageCodecError(f"{fmt} frame is {im.size[1]}x{im.size[0]}, expected {h}x{w}")
    if getattr(im, "n_frames", 1) != 1:
        raise ImageCodecError(f"{fmt} holds {getattr(im, 'n_frames', '?')} frames, expected one")
    return im


def _as_array(im: Image.Image, shape: Shape) -> np.ndarray:
    """Decode the pixels of an opened grey image into a uint8 array of ``shape``."""
    im.load()
    if im.mode != "L":
        raise ImageCodecError(f"decoded mode {im.mode}, expected L (grey)")
    return np.asarray(im, dtype=np.uint8).reshape(shape).copy()


# --- raw ------------------------------------------------------------------------------------------------------------


@register_image_codec("raw")
def _raw(_value: int | None) -> ImageCodec:
    def encode(image: np.ndarray) -> bytes:
        return image.tobytes()

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        if len(data) != shape[0] * shape[1]:
            raise ImageCodecError(f"raw: {len(data)} bytes, expected {shape[0] * shape[1]}")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()

    return ImageCodec("raw", "raw", None, True, encode, decode)


# --- PNG ------------------------------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(type, body)`` chunks of a PNG, CRCs checked; :class:`ImageCodecError` on any framing fault."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageCodecError("png: no PNG signature")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise ImageCodecError("png: truncated chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ImageCodecError(f"png: chunk {kind!r} runs past the end of the data")
        body = data[pos + 8 : pos + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise ImageCodecError(f"png: bad CRC in chunk {kind!r}")
        chunks.append((kind, body))
        pos = end
        if kind == b"IEND":
            break
    if pos != len(data):
        raise ImageCodecError(f"png: {len(data) - pos} bytes after IEND")
    return chunks


def _check_png(data: bytes, shape: Shape) -> None:
    """Only ``IHDR``, ``IDAT``... and ``IEND``, an 8-bit grey non-interlaced header of ``shape``."""
    chunks = _png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    if len(kinds) < 3 or kinds[0] != b"IHDR" or kinds[-1] != b"IEND" or set(kinds[1:-1]) != {b"IDAT"}:
        raise ImageCodecError(f"png: chunks {[k.decode('latin-1') for k in kinds]}, expected IHDR, IDAT..., IEND")
    ihdr = chunks[0][1]
    if len(ihdr) != 13:
        raise ImageCodecError(f"png: IHDR of {len(ihdr)} bytes")
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(">IIBBBBB", ihdr)
    if (height, width) != shape:
        raise ImageCodecError(f"png: frame is {height}x{width}, expected {shape[0]}x{shape[1]}")
    if (depth, colour, interlace) != (8, 0, 0):
        raise ImageCodecError(f"png: bit depth {depth}, colour type {colour}, interlace {interlace}; "
                              "expected 8-bit grey (0), not interlaced")


@register_image_codec("png")
def _png(_value: int | None) -> ImageCodec:
    def encode(image: np.ndarray) -> bytes:
        return _pillow_save(image, "PNG", optimize=True)

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        _check_png(data, shape)
        return _as_array(_pillow_open(data, "PNG", shape), shape)

    return ImageCodec("png", "png", None, True, encode, decode)


# --- WebP -----------------------------------------------------------------------------------------------------------


def _check_webp(data: bytes, shape: Shape) -> None:
    """A simple-format WebP (one ``VP8 `` or ``VP8L`` chunk filling the RIFF exactly) of ``shape``.

    The frame size is read from the bitstream header here, before Pillow (whose WebP decoder allocates the whole
    canvas as soon as it opens a file) sees the data. The extended format (``VP8X``: alpha, animation, metadata) is
    refused: nairbus never writes it.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ImageCodecError("webp: no RIFF/WEBP header")
    riff_size, kind, chunk_size = struct.unpack("<I", data[4:8])[0], data[12:16], struct.unpack("<I", data[16:20])[0]
    if riff_size + 8 != len(data):
        raise ImageCodecError(f"webp: RIFF size {riff_size} does not match {len(data)} bytes")
    if kind not in (b"VP8L", b"VP8 "):
        raise ImageCodecError(f"webp: chunk {kind!r}; only the simple format (VP8 or VP8L, no VP8X) is accepted")
    if 20 + chunk_size + chunk_size % 2 != len(data):
        raise ImageCodecError(f"webp: {kind!r} chunk of {chunk_size} bytes does not fill the file")
    if kind == b"VP8L":
        if data[20] != 0x2F:
            raise ImageCodecError("webp: bad VP8L signature")
        bits = struct.unpack("<I", data[21:25])[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageCodecError("webp: bad VP8 start code")
        width, height = (struct.unpack("<H", data[26:28])[0] & 0x3FFF, struct.unpack("<H", data[28:30])[0] & 0x3FFF)
    if (height, width) != shape:
        raise ImageCodecError(f"webp: frame is {height}x{width}, expected {shape[0]}x{shape[1]}")


def _webp_grey(data: bytes, shape: Shape, exact: bool) -> np.ndarray:
    """Decode a WebP that nairbus wrote from a grey frame (RGB with equal channels) back to grey."""
    _check_webp(data, shape)
    im = _pillow_open(data, "WEBP", shape)
    im.load()
    if im.mode != "RGB":
        raise ImageCodecError(f"webp: decoded mode {im.mode}, expected RGB without alpha")
    rgb = np.asarray(im, dtype=np.uint8)
    if exact and not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        raise ImageCodecError("webp: not a grey image (channels differ)")
    return np.asarray(im.convert("L"), dtype=np.uint8).reshape(shape).copy()


@register_image_codec("webp-lossless")
def _webp_lossless(_value: int | None) -> ImageCodec:
    def encode(image: np.ndarray) -> bytes:
        return _pillow_save(image, "WEBP", lossless=True, quality=100, method=6)

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        return _webp_grey(data, shape, exact=True)

    return ImageCodec("webp-lossless", "webp-lossless", None, True, encode, decode)


@register_image_codec("webp:q<0-100>")
def _webp_lossy(value: int | None) -> ImageCodec:
    quality = _given(value)

    def encode(image: np.ndarray) -> bytes:
        return _pillow_save(image, "WEBP", quality=quality, method=6)

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        return _webp_grey(data, shape, exact=False)

    return ImageCodec(f"webp:q{quality}", "webp", quality, False, encode, decode)


# --- JPEG -----------------------------------------------------------------------------------------------------------


def _strip_jfif(data: bytes) -> bytes:
    """Drop a leading JFIF APP0 segment (optional in JPEG; 18 bytes of density fields nobody here reads)."""
    if data[:4] == b"\xff\xd8\xff\xe0":
        length = struct.unpack(">H", data[4:6])[0]
        return data[:2] + data[4 + length :]
    return data


@register_image_codec("jpeg:q<1-95>")
def _jpeg(value: int | None) -> ImageCodec:
    quality = _given(value)

    def encode(image: np.ndarray) -> bytes:
        return _strip_jfif(_pillow_save(image, "JPEG", quality=quality, optimize=True, progressive=False))

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        if not data.startswith(b"\xff\xd8\xff"):
            raise ImageCodecError("jpeg: no JPEG start-of-image marker")
        if not data.endswith(b"\xff\xd9"):
            raise ImageCodecError("jpeg: no end-of-image marker at the end (truncated or trailing bytes)")
        im = _pillow_open(data, "JPEG", shape)
        if im.info.get("progressive") or im.info.get("progression"):
            raise ImageCodecError("jpeg: progressive JPEG refused (only baseline is sent)")
        return _as_array(im, shape)

    return ImageCodec(f"jpeg:q{quality}", "jpeg", quality, False, encode, decode)


def _scan_start(data: bytes) -> int:
    """Offset of the entropy-coded data of a baseline JPEG: just after its (single) SOS segment."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageCodecError("jpeg-shared: malformed marker stream")
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 2 + length
        if marker == 0xDA:
            return pos
    raise ImageCodecError("jpeg-shared: no start-of-scan segment")


@functools.lru_cache(maxsize=256)
def shared_jpeg_header(quality: int, shape: Shape) -> bytes:
    """The header every ``jpeg-shared:q<quality>`` frame of ``shape`` shares (SOI through the SOS segment)."""
    data = _strip_jfif(_pillow_save(np.zeros(shape, dtype=np.uint8), "JPEG", quality=quality, optimize=False,
                                    progressive=False))
    return data[: _scan_start(data)]


@register_image_codec("jpeg-shared:q<1-95>")
def _jpeg_shared(value: int | None) -> ImageCodec:
    quality = _given(value)

    def encode(image: np.ndarray) -> bytes:
        data = _strip_jfif(_pillow_save(image, "JPEG", quality=quality, optimize=False, progressive=False))
        header = shared_jpeg_header(quality, (int(image.shape[0]), int(image.shape[1])))
        if not data.startswith(header) or not data.endswith(b"\xff\xd9"):
            raise ImageCodecError("jpeg-shared: this JPEG encoder wrote a header other than the shared one")
        return data[len(header) :]

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        if not data.endswith(b"\xff\xd9") or len(data) < 3:
            raise ImageCodecError("jpeg-shared: no end-of-image marker at the end (truncated or trailing bytes)")
        return _as_array(_pillow_open(shared_jpeg_header(quality, shape) + data, "JPEG", shape), shape)

    return ImageCodec(f"jpeg-shared:q{quality}", "jpeg-shared", quality, False, encode, decode)


# --- bit depth + deflate --------------------------------------------------------------------------------------------


def quantise_levels(image: np.ndarray, bits: int) -> np.ndarray:
    """Nearest of ``2**bits`` evenly spaced levels over 0..255, as level indices (uint8)."""
    top = (1 << bits) - 1
    return np.floor(image.astype(np.float64) * top / 255.0 + 0.5).astype(np.uint8)


def level_values(levels: np.ndarray, bits: int) -> np.ndarray:
    """Level indices back to grey values: level ``k`` is ``round(k * 255 / (2**bits - 1))``."""
    top = (1 << bits) - 1
    return np.floor(levels.astype(np.float64) * 255.0 / top + 0.5).astype(np.uint8)


def _pack(levels: np.ndarray, bits: int) -> bytes:
    """``bits`` per level, MSB first, row-major, zero-padded to a whole byte."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    planes = (levels.reshape(-1, 1) >> shifts) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1)).tobytes()


def _unpack(packed: bytes, bits: int, count: int, name: str = "grey+deflate") -> np.ndarray:
    """Inverse of :func:`_pack`; :class:`ImageCodecError` if the padding bits are not zero."""
    flat = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))
    if flat[count * bits :].any():
        raise ImageCodecError(f"{name}: non-zero padding bits")
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (flat[: count * bits].reshape(count, bits).astype(np.uint16) @ weights).astype(np.uint8)


def _deflate(raw: bytes) -> bytes:
    """Raw deflate at level 9; the shortest of a few strategies (any of them inflates the same way)."""
    outs = []
    for strategy in _DEFLATE_STRATEGIES:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, strategy)
        outs.append(comp.compress(raw) + comp.flush())
    return min(outs, key=len)


def _inflate(data: bytes, limit: int) -> bytes:
    """Raw inflate of at most ``limit`` bytes, ending exactly with the data (no trailing input)."""
    inflater = zlib.decompressobj(-15)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise ImageCodecError(f"grey+deflate: inflates to more than {limit} bytes")
    if not inflater.eof:
        raise ImageCodecError("grey+deflate: truncated deflate stream")
    if inflater.unused_data:
        raise ImageCodecError(f"grey+deflate: {len(inflater.unused_data)} bytes after the deflate stream")
    return out


def _encode_levels(levels: np.ndarray, bits: int) -> bytes:
    """Deflate the levels bit-packed or one per byte, whichever is shorter (packed on a tie)."""
    packed = _deflate(_pack(levels, bits))
    if (levels.size * bits + 7) // 8 == levels.size:  # 8 bits, or a frame too small for the lengths to differ
        return packed
    unpacked = _deflate(levels.tobytes())
    return unpacked if len(unpacked) < len(packed) else packed


def _levels_from(raw: bytes, bits: int, count: int, name: str) -> np.ndarray:
    """Level indices from decompressed bytes, telling bit-packed from one level per byte by their length."""
    packed_len = (count * bits + 7) // 8
    if len(raw) == packed_len:
        return _unpack(raw, bits, count, name)
    if len(raw) == count:
        levels = np.frombuffer(raw, dtype=np.uint8)
        if int(levels.max(initial=0)) >> bits:
            raise ImageCodecError(f"{name}: a level above {(1 << bits) - 1}")
        return levels
    raise ImageCodecError(f"{name}: decompresses to {len(raw)} bytes, expected {packed_len} (packed) or "
                          f"{count} (one level per byte)")


def _decode_levels(data: bytes, bits: int, count: int) -> np.ndarray:
    """Level indices from :func:`_encode_levels` output, telling the layout by the inflated length."""
    return _levels_from(_inflate(data, count), bits, count, "grey+deflate")


@register_image_codec("grey<1-8>+deflate")
def _grey_deflate(value: int | None) -> ImageCodec:
    bits = _given(value)

    def encode(image: np.ndarray) -> bytes:
        return _encode_levels(quantise_levels(image, bits), bits)

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        return level_values(_decode_levels(data, bits, shape[0] * shape[1]), bits).reshape(shape)

    return ImageCodec(f"grey{bits}+deflate", "grey+deflate", bits, bits == 8, encode, decode)


# --- bit depth + zstd -----------------------------------------------------------------------------------------------

ZSTD_LEVEL: Final = 22
"""zstd's highest level: a frame is a few hundred bytes, so even this level costs well under a millisecond."""
ZSTD_WINDOW_LOG: Final = 10
"""zstd's smallest window (1 KiB), fixed: a larger one buys nothing on frames this small, and a fixed one makes the
frame header the same for every frame (:data:`ZSTD_HEADER`)."""
ZSTD_HEADER: Final = b"\x00\x00"
"""The frame header every ``grey+zstd`` frame has (descriptor: no content size, checksum or dictionary id, not single
segment; window descriptor: 1 KiB), so it is not sent: both ends know it."""


ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
"""zstd's frame magic number: what a standard frame has before its header and a magicless frame has not."""
ZSTD_OPTIONS: Final[dict[int, int]] = {zstd.CompressionParameter.compression_level: ZSTD_LEVEL,
                                       zstd.CompressionParameter.window_log: ZSTD_WINDOW_LOG,
                                       zstd.CompressionParameter.checksum_flag: 0,
                                       zstd.CompressionParameter.content_size_flag: 0,
                                       zstd.CompressionParameter.dict_id_flag: 0}
"""Level 22 (libzstd sizes its match tables to the input, given whole), a 1 KiB window, no checksum, content size or
dictionary id: the frames of ``zstandard``'s magicless level-22 ``from_level(source_size=...)`` parameters, byte for
byte (libzstd 1.5.7 both; tests/models/test_imagecodec.py compares them)."""


def _zstd(raw: bytes) -> bytes:
    """``raw`` as a zstd frame without its magic number and its (constant) :data:`ZSTD_HEADER`."""
    frame = zstd.ZstdCompressor(options=ZSTD_OPTIONS).compress(raw, mode=zstd.ZstdCompressor.FLUSH_FRAME)
    head = ZSTD_MAGIC + ZSTD_HEADER
    if not frame.startswith(head):
        raise ImageCodecError(f"grey+zstd: this zstd wrote the frame header {frame[4:6].hex()}, not the shared one")
    return frame[len(head) :]


def _zstd_frame_len(data: bytes) -> int:
    """The length of the header-less zstd frame that starts ``data``: its blocks, up to the one marked last.

    zstd's decoder stops at the end of a frame without saying whether bytes follow it, so the block headers (3 bytes:
    last-block bit, type, size) are walked here: :class:`ImageCodecError` for a reserved block type or a frame that
    runs past the data.
    """
    pos = 0
    while True:
        if pos + 3 > len(data):
            raise ImageCodecError("grey+zstd: truncated zstd frame (a block header runs past the data)")
        header = int.from_bytes(data[pos : pos + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        if kind == 3:
            raise ImageCodecError("grey+zstd: reserved zstd block type")
        pos += 3 + (1 if kind == 1 else size)  # an RLE block holds one byte, repeated ``size`` times
        if pos > len(data):
            raise ImageCodecError("grey+zstd: truncated zstd frame (a block runs past the data)")
        if header & 1:
            return pos


def _unzstd(data: bytes, limit: int) -> bytes:
    """Decompress a header-less zstd frame to at most ``limit`` bytes; the frame must end exactly with the data."""
    end = _zstd_frame_len(data)
    if end != len(data):
        raise ImageCodecError(f"grey+zstd: {len(data) - end} bytes after the zstd frame")
    decompressor = zstd.ZstdDecompressor()
    try:
        out = decompressor.decompress(ZSTD_MAGIC + ZSTD_HEADER + data, max_length=limit + 1)
    except zstd.ZstdError as exc:
        raise ImageCodecError(f"grey+zstd: not a zstd frame that decompresses to at most {limit} bytes (corrupt "
                              f"or too large): {exc}") from exc
    if len(out) > limit:
        raise ImageCodecError(f"grey+zstd: not a zstd frame that decompresses to at most {limit} bytes (too large)")
    if not decompressor.eof:
        raise ImageCodecError("grey+zstd: the zstd frame ends before its last block does")
    return out


def _encode_levels_zstd(levels: np.ndarray, bits: int) -> bytes:
    """zstd of the levels bit-packed or one per byte, whichever is shorter; the packed levels as they are (stored)
    unless that is longer than they are, so a zstd frame is always shorter than the stored levels."""
    packed = _pack(levels, bits)
    candidates = [_zstd(packed)]
    if len(packed) != levels.size:
        candidates.append(_zstd(levels.tobytes()))
    best = min(candidates, key=len)
    return best if len(best) < len(packed) else packed


def _decode_levels_zstd(data: bytes, bits: int, count: int) -> np.ndarray:
    """Level indices from :func:`_encode_levels_zstd` output: exactly the packed length is stored, shorter is zstd."""
    packed_len = (count * bits + 7) // 8
    if len(data) == packed_len:
        return _unpack(data, bits, count, "grey+zstd")
    if len(data) > packed_len:
        raise ImageCodecError(f"grey+zstd: {len(data)} bytes, more than the {packed_len} of the stored levels")
    return _levels_from(_unzstd(data, count), bits, count, "grey+zstd")


@register_image_codec("grey<1-8>+zstd")
def _grey_zstd(value: int | None) -> ImageCodec:
    bits = _given(value)

    def encode(image: np.ndarray) -> bytes:
        return _encode_levels_zstd(quantise_levels(image, bits), bits)

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        return level_values(_decode_levels_zstd(data, bits, shape[0] * shape[1]), bits).reshape(shape)

    return ImageCodec(f"grey{bits}+zstd", "grey+zstd", bits, bits == 8, encode, decode)


# --- down-sampling --------------------------------------------------------------------------------------------------


def down_shape(side: int, shape: Shape) -> Shape:
    """The shape a ``down<side>:`` codec sends a frame of ``shape`` at: each side at most ``side``."""
    return (min(side, shape[0]), min(side, shape[1]))


def _resize(image: np.ndarray, shape: Shape, resample: str) -> np.ndarray:
    """``image`` resized to ``shape`` with Pillow (``(H, W)``; Pillow takes ``(W, H)``); ``resample``: the name of a
    Pillow filter (``BOX``, ``NEAREST``)."""
    if image.shape == shape:
        return image
    from PIL import Image

    resized = Image.fromarray(image, mode="L").resize((shape[1], shape[0]), Image.Resampling[resample])
    return np.asarray(resized, dtype=np.uint8).reshape(shape).copy()


def _down(side: int, inner: ImageCodec) -> ImageCodec:
    """The codec ``down<side>:<inner>``: area-average to :func:`down_shape`, ``inner`` there, pixels repeated back."""

    def encode(image: np.ndarray) -> bytes:
        shape = (int(image.shape[0]), int(image.shape[1]))
        return inner.encode(_resize(image, down_shape(side, shape), "BOX"))

    def decode(data: bytes, shape: Shape) -> np.ndarray:
        return _resize(inner.decode(data, down_shape(side, shape)), shape, "NEAREST")

    return ImageCodec(f"down{side}:{inner.name}", f"down{side}:{inner.family}", inner.level, False, encode, decode)


def _down_codec(spec: str) -> ImageCodec | None:
    """The codec of a ``down<side>:<codec>`` spec; ``None`` for a spec of another form."""
    found = re.fullmatch(r"down([0-9]{1,6}):(.*)", spec, flags=re.DOTALL)
    if not found:
        return None
    digits, inner = found.groups()
    if digits != str(int(digits)) or not 1 <= int(digits) <= MAX_SIDE:
        raise ValueError(f"image codec spec {spec!r}: the side must be a plain integer in 1..{MAX_SIDE} "
                         f"(form {DOWN_FORM!r}); valid forms: {', '.join(image_codec_names())}")
    if inner.startswith("down"):
        raise ValueError(f"image codec spec {spec!r}: down-sampling does not nest (form {DOWN_FORM!r}); valid "
                         f"forms: {', '.join(image_codec_names())}")
    return _down(int(digits), get_image_codec(inner))
