"""Image codecs (nairbus.models.image.codec) and the image baseline's wire-byte policy
(nairbus.models.evaluation.image).

Round trips (lossless exact, bit depth within half a level, lossy at a sane PSNR), strict spec parsing, hostile
decode input that may only ever raise ImageCodecError, deterministic sizes, and the per-frame wire-cap policy.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nairbus.models.evaluation import image as image_eval
from nairbus.models.evaluation.image import (
    FAMILY_LADDERS,
    FRAME_INTERVAL_MS,
    SpecResult,
    cap_choice,
    cap_outcome,
    encode_within_cap,
    frame_counters,
    image_choice_at,
    table_from_results,
    wire_bytes,
)
from nairbus.models.evaluation.stats import wilson_interval
from nairbus.models.image import codec as imagecodec
from nairbus.models.image.codec import (
    ImageCodec,
    ImageCodecError,
    get_image_codec,
    image_codec_names,
    max_encoded_len,
    register_image_codec,
)
from nairbus.schemas.wire import ALIAS_PROPERTIES_LEN, lean_image_payload_len, publish_size
from tests.manifests import in_memory_manifest

LOSSLESS = ("raw", "png", "webp-lossless", "grey8+deflate", "grey8+zstd")
EVERY_LADDER_SPEC = tuple(spec for ladder in FAMILY_LADDERS.values() for spec in ladder)
HOSTILE_SPECS = ("raw", "png", "webp-lossless", "webp:q50", "jpeg:q50", "jpeg-shared:q50", "grey1+deflate",
                 "grey4+deflate", "grey8+deflate", "grey1+zstd", "grey4+zstd", "grey8+zstd", "down14:grey4+zstd",
                 "down7:grey2+zstd", "down20:jpeg-shared:q50")


def _frames() -> list[np.ndarray]:
    """Synthetic grey frames: a garment-like blob, noise, flat black and white, a ramp, odd shapes."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:28, 0:28]
    blob = np.clip(255 * np.exp(-((yy - 14) ** 2 / 60 + (xx - 14) ** 2 / 25)) + rng.normal(0, 8, (28, 28)), 0, 255)
    return [
        blob.astype(np.uint8),
        rng.integers(0, 256, (28, 28), dtype=np.uint8),
        np.zeros((28, 28), np.uint8),
        np.full((28, 28), 255, np.uint8),
        np.arange(256, dtype=np.uint8).reshape(16, 16),
        rng.integers(0, 256, (5, 37), dtype=np.uint8),
        np.array([[200]], dtype=np.uint8),
    ]


FRAMES = _frames()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _pillow(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


# --- round trips ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", LOSSLESS)
def test_lossless_codecs_round_trip_exactly(spec: str) -> None:
    codec = get_image_codec(spec)
    assert codec.lossless
    for frame in FRAMES:
        out = codec.decode(codec.encode(frame), frame.shape)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, frame)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("entropy", ["deflate", "zstd"])
def test_grey_levels_are_within_half_a_level_and_keep_black_and_white(bits: int, entropy: str) -> None:
    codec = get_image_codec(f"grey{bits}+{entropy}")
    half_level = 255 / (2 * ((1 << bits) - 1))
    every_value = FRAMES[4]
    for frame in FRAMES:
        out = codec.decode(codec.encode(frame), frame.shape)
        assert np.abs(out.astype(int) - frame).max() <= half_level
    out = codec.decode(codec.encode(every_value), every_value.shape).reshape(-1)
    assert out[0] == 0
    assert out[255] == 255
    assert len(np.unique(out)) == 1 << bits  # every level is used, no more
    assert np.all(np.diff(out.astype(int)) >= 0)  # monotone


@pytest.mark.parametrize("bits", range(1, 8))
def test_grey_deflate_decodes_both_level_layouts(bits: int) -> None:
    # The encoder sends bit-packed or one-level-per-byte levels, whichever deflates smaller; both must decode.
    frame = FRAMES[0]
    levels = imagecodec.quantise_levels(frame, bits)
    expected = imagecodec.level_values(levels, bits)
    codec = get_image_codec(f"grey{bits}+deflate")
    for raw in (imagecodec._pack(levels, bits), levels.tobytes()):
        np.testing.assert_array_equal(codec.decode(imagecodec._deflate(raw), frame.shape), expected)
    sent = codec.encode(frame)
    both = (imagecodec._deflate(imagecodec._pack(levels, bits)), imagecodec._deflate(levels.tobytes()))
    assert len(sent) == min(len(b) for b in both)


@pytest.mark.parametrize("bits", range(1, 9))
def test_grey_zstd_decodes_every_layout_and_sends_the_shortest(bits: int) -> None:
    # zstd of the packed levels, zstd of one level per byte, or the packed levels stored: the length tells.
    frame = FRAMES[0]
    levels = imagecodec.quantise_levels(frame, bits)
    expected = imagecodec.level_values(levels, bits)
    codec = get_image_codec(f"grey{bits}+zstd")
    packed = imagecodec._pack(levels, bits)
    layouts = (imagecodec._zstd(packed), imagecodec._zstd(levels.tobytes()), packed)
    for data in layouts:
        if data is packed or len(data) < len(packed):
            np.testing.assert_array_equal(codec.decode(data, frame.shape), expected)
    assert len(codec.encode(frame)) == min(len(data) for data in layouts)


def test_grey_zstd_sends_no_magic_no_header_and_reads_as_a_standard_magicless_frame() -> None:
    import zstandard

    frame = FRAMES[0]
    data = get_image_codec("grey3+zstd").encode(frame)
    levels = imagecodec.quantise_levels(frame, 3)
    assert len(data) < len(imagecodec._pack(levels, 3))  # a zstd frame, not stored
    assert not data.startswith(b"\x28\xb5\x2f\xfd")  # no zstd magic number
    standard = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    raw = standard.decompress(imagecodec.ZSTD_HEADER + data, max_output_size=frame.size)
    assert raw in (imagecodec._pack(levels, 3), levels.tobytes())
    with pytest.raises(zstandard.ZstdError):  # the dropped header is needed: what is sent is not a frame alone
        standard.decompress(data, max_output_size=frame.size)


def test_grey_zstd_frames_are_the_zstandard_frames_they_were() -> None:
    # The wire format did not change with the binding (backports.zstd / compression.zstd for zstandard): each frame is
    # zstandard's magicless level-22 frame with source-size parameters, less the shared header, byte for byte.
    import zstandard

    def before(raw: bytes) -> bytes:
        params = zstandard.ZstdCompressionParameters.from_level(
            imagecodec.ZSTD_LEVEL, source_size=len(raw), format=zstandard.FORMAT_ZSTD1_MAGICLESS,
            write_checksum=False, write_content_size=False, write_dict_id=False, window_log=imagecodec.ZSTD_WINDOW_LOG)
        return zstandard.ZstdCompressor(compression_params=params).compress(raw)[len(imagecodec.ZSTD_HEADER) :]

    rng = np.random.default_rng(7)
    raws = [rng.integers(0, 4, size, dtype=np.uint8).tobytes() for size in (1, 3, 17, 100, 500, 2000, 5000)]
    for frame in FRAMES:
        for bits in (1, 2, 3, 4, 6, 8):
            levels = imagecodec.quantise_levels(frame, bits)
            raws += [imagecodec._pack(levels, bits), levels.tobytes()]
    for raw in raws:
        assert imagecodec._zstd(raw) == before(raw)


def test_grey_zstd_refuses_a_frame_cut_inside_its_last_block() -> None:
    data = get_image_codec("grey3+zstd").encode(FRAMES[0])
    with pytest.raises(ImageCodecError):
        get_image_codec("grey3+zstd").decode(data[:-1], FRAMES[0].shape)


@pytest.mark.parametrize(("shape", "bits"), [((1, 1), 1), ((1, 1), 8), ((7, 7), 1), ((7, 7), 2), ((3, 5), 3)])
def test_grey_zstd_stores_tiny_frames_in_their_packed_length(shape: tuple[int, int], bits: int) -> None:
    # zstd's block header alone costs 3 bytes: a frame this small goes stored, at its packed size, no more.
    frame = np.random.default_rng(bits).integers(0, 256, shape, dtype=np.uint8)
    codec = get_image_codec(f"grey{bits}+zstd")
    data = codec.encode(frame)
    assert len(data) <= (frame.size * bits + 7) // 8
    out = codec.decode(data, shape)
    assert np.abs(out.astype(int) - frame).max() <= 255 / (2 * ((1 << bits) - 1))


def test_grey_zstd_refuses_bombs_long_payloads_and_bytes_after_the_frame() -> None:
    codec = get_image_codec("grey4+zstd")
    bomb = imagecodec._zstd(b"\x00" * 20_000)  # some 80 bytes that would decompress to 20 kB
    assert len(bomb) < 392
    with pytest.raises(ImageCodecError, match="at most 784 bytes"):
        codec.decode(bomb, (28, 28))
    with pytest.raises(ImageCodecError, match="more than the 392"):
        codec.decode(b"\x00" * 393, (28, 28))  # longer than the stored levels: neither layout
    small = codec.encode(np.zeros((28, 28), np.uint8))
    assert len(small) + 1 < 392
    for tail in (b"\x00", b"\x01\x00\x00", small):  # zstd's own decoder stops at the frame's end and says nothing
        with pytest.raises(ImageCodecError, match="after the zstd frame"):
            codec.decode(small + tail, (28, 28))
    for cut in range(1, len(small)):
        with pytest.raises(ImageCodecError, match="truncated"):
            codec.decode(small[:cut], (28, 28))
    with pytest.raises(ImageCodecError, match="reserved"):
        codec.decode(b"\x07\x00\x00", (28, 28))
    above = imagecodec._zstd(bytes([16]) * 784)  # one level per byte, 16 > 15
    with pytest.raises(ImageCodecError, match="level above"):
        codec.decode(above, (28, 28))
    odd = imagecodec._zstd(b"\x01" * 500)  # neither 392 (packed) nor 784 (one per byte)
    with pytest.raises(ImageCodecError, match="decompresses to 500 bytes"):
        codec.decode(odd, (28, 28))


@pytest.mark.parametrize("spec", ["down14:grey4+zstd", "down7:grey1+zstd", "down20:jpeg-shared:q50", "down10:raw"])
def test_down_sampled_codecs_send_the_box_filtered_frame_and_repeat_its_pixels(spec: str) -> None:
    head, inner_spec = spec.split(":", 1)
    side = int(head.removeprefix("down"))
    codec, inner = get_image_codec(spec), get_image_codec(inner_spec)
    assert codec.name == spec
    assert codec.family == f"down{side}:{inner.family}"
    assert not codec.lossless
    frame = FRAMES[0]
    small = np.asarray(Image.fromarray(frame).resize((side, side), Image.Resampling.BOX))
    data = codec.encode(frame)
    assert data == inner.encode(small)  # the inner codec's bytes for the smaller frame, nothing added
    out = codec.decode(data, frame.shape)
    back = inner.decode(data, (side, side))
    nearest = np.floor((np.arange(28) + 0.5) * side / 28).astype(int)  # the source pixel under each centre
    np.testing.assert_array_equal(out, back[np.ix_(nearest, nearest)])  # each pixel repeated, none blended


def test_down_sampling_never_grows_a_frame_and_keeps_a_small_one_as_it_is() -> None:
    assert imagecodec.down_shape(14, (28, 28)) == (14, 14)
    assert imagecodec.down_shape(14, (5, 37)) == (5, 14)
    assert imagecodec.down_shape(40, (28, 28)) == (28, 28)
    frame = FRAMES[4]  # 16x16
    for spec in ("down16:grey8+zstd", "down4096:raw"):
        np.testing.assert_array_equal(get_image_codec(spec).decode(get_image_codec(spec).encode(frame), (16, 16)),
                                      frame)
    sizes = [len(get_image_codec(f"down{side}:grey4+zstd").encode(FRAMES[0])) for side in (7, 14, 28)]
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1] / 4


@pytest.mark.parametrize("family", ["webp", "jpeg", "jpeg-shared"])
def test_lossy_codecs_keep_a_sane_psnr_that_rises_with_quality(family: str) -> None:
    frame = FRAMES[0]
    ladder = FAMILY_LADDERS[family]
    psnrs = []
    for spec in (ladder[len(ladder) // 2], ladder[-1]):
        codec = get_image_codec(spec)
        assert not codec.lossless
        assert codec.family == family
        psnrs.append(_psnr(codec.decode(codec.encode(frame), frame.shape), frame))
    assert psnrs[0] >= 25.0  # mid-ladder quality: a recognisable frame
    assert psnrs[1] > psnrs[0]


@pytest.mark.parametrize("spec", EVERY_LADDER_SPEC)
def test_every_ladder_rung_decodes_what_it_encodes_and_sizes_are_deterministic(spec: str) -> None:
    codec = get_image_codec(spec)
    for frame in FRAMES:
        data = codec.encode(frame)
        assert len(data) <= max_encoded_len(frame.shape)
        assert codec.decode(data, frame.shape).shape == frame.shape
        assert get_image_codec(spec).encode(frame.copy()) == data  # same bytes from a fresh codec and a copy


def test_pillow_files_carry_no_metadata() -> None:
    frame = FRAMES[0]
    png = get_image_codec("png").encode(frame)
    kinds = [kind for kind, _ in imagecodec._png_chunks(png)]
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    assert set(kinds[1:-1]) == {b"IDAT"}
    jpeg = get_image_codec("jpeg:q50").encode(frame)
    assert b"JFIF" not in jpeg
    assert b"\xff\xe0" not in jpeg[:4]
    for spec, chunk in (("webp-lossless", b"VP8L"), ("webp:q50", b"VP8 ")):
        webp = get_image_codec(spec).encode(frame)
        assert webp[12:16] == chunk  # simple format: no VP8X, so no ICC, EXIF or XMP
        assert struct.unpack("<I", webp[4:8])[0] + 8 == len(webp)  # and nothing after the one image chunk
        size = struct.unpack("<I", webp[16:20])[0]
        assert 20 + size + size % 2 == len(webp)


# --- spec parsing ---------------------------------------------------------------------------------------------------


def test_every_documented_form_is_registered() -> None:
    names = image_codec_names()
    for form in ("raw", "png", "webp-lossless", "webp:q<0-100>", "jpeg:q<1-95>", "grey<1-8>+deflate",
                 "grey<1-8>+zstd", "down<1-4096>:<codec>"):
        assert form in names


@pytest.mark.parametrize("spec", ["png", "raw", "webp-lossless", "webp:q0", "webp:q100", "jpeg:q1", "jpeg:q95",
                                  "grey1+deflate", "grey8+deflate", "grey1+zstd", "grey8+zstd", "down1:raw",
                                  "down14:grey4+zstd", "down4096:png", "down20:jpeg-shared:q50"])
def test_valid_specs_name_their_codec(spec: str) -> None:
    codec = get_image_codec(spec)
    assert isinstance(codec, ImageCodec)
    assert codec.name == spec


@pytest.mark.parametrize("spec", ["", "PNG", "png ", " png", "jpeg", "jpeg:q0", "jpeg:q96", "jpeg:q050", "jpeg:q-5",
                                  "jpeg:50", "webp", "webp:q101", "webp:q", "webp:qx", "grey0+deflate",
                                  "grey9+deflate", "grey4", "grey4+zlib", "grey04+deflate", "webp-lossless:q50",
                                  "gif", "jpeg:q1e2", "webp:q１０", "grey0+zstd", "grey9+zstd", "grey4+zstd ",
                                  "down0:raw", "down4097:raw", "down014:raw", "down14:", "down:raw", "down14raw",
                                  "down14:grey9+zstd", "down14:down7:raw", "down-1:raw", "down14:gif"])
def test_invalid_specs_raise_value_error_listing_the_forms(spec: str) -> None:
    with pytest.raises(ValueError, match=r"jpeg:q<1-95>") as caught:
        get_image_codec(spec)
    assert not isinstance(caught.value, ImageCodecError)
    assert "grey<1-8>+deflate" in str(caught.value)
    assert "down<1-4096>:<codec>" in str(caught.value)


def test_a_non_string_spec_raises_value_error() -> None:
    with pytest.raises(ValueError, match="valid forms"):
        get_image_codec(42)  # type: ignore[arg-type]


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    saved = dict(imagecodec._FORMS)
    yield
    imagecodec._FORMS.clear()
    imagecodec._FORMS.update(saved)


@pytest.mark.usefixtures("scratch_registry")
def test_register_a_codec_and_refuse_a_duplicate_form() -> None:
    @register_image_codec("invert<0-1>")
    def _invert(value: int | None) -> ImageCodec:
        def encode(image: np.ndarray) -> bytes:
            return (255 - image).tobytes() if value else image.tobytes()

        def decode(data: bytes, shape: tuple[int, int]) -> np.ndarray:
            flat = np.frombuffer(data, np.uint8).reshape(shape)
            return (255 - flat) if value else flat.copy()

        return ImageCodec(f"invert{value}", "invert", value, True, encode, decode)

    assert "invert<0-1>" in image_codec_names()
    codec = get_image_codec("invert1")
    np.testing.assert_array_equal(codec.decode(codec.encode(FRAMES[0]), (28, 28)), FRAMES[0])
    with pytest.raises(ImageCodecError):  # a custom decoder's own faults are wrapped too
        codec.decode(b"short", (28, 28))
    with pytest.raises(ValueError, match="already registered"):
        register_image_codec("invert<0-1>")(_invert)
    with pytest.raises(ValueError, match="bad image codec form"):
        register_image_codec("two<1-2>ranges<3-4>")(_invert)


# --- hostile input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", HOSTILE_SPECS)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=1200))
def test_random_bytes_raise_only_image_codec_error(spec: str, data: bytes) -> None:
    codec = get_image_codec(spec)
    try:
        out = codec.decode(data, (28, 28))
    except ImageCodecError:
        return
    assert out.dtype == np.uint8
    assert out.shape == (28, 28)


@pytest.mark.parametrize("spec", HOSTILE_SPECS)
@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 8), cut=st.integers(0, 2000))
def test_damaged_valid_frames_raise_only_image_codec_error(spec: str, seed: int, flips: int, cut: int) -> None:
    codec = get_image_codec(spec)
    rng = np.random.default_rng(seed)
    good = bytearray(codec.encode(FRAMES[int(rng.integers(0, 2))]))
    for _ in range(flips):
        good[int(rng.integers(0, len(good)))] ^= 1 << int(rng.integers(0, 8))
    for data in (bytes(good), bytes(good[: cut % (len(good) + 1)]), bytes(good) + b"\x00"):
        try:
            out = codec.decode(data, (28, 28))
        except ImageCodecError:
            continue
        assert out.dtype == np.uint8
        assert out.shape == (28, 28)


@pytest.mark.parametrize("spec", HOSTILE_SPECS)
def test_truncations_trailing_bytes_wrong_shapes_and_oversize_are_refused(spec: str) -> None:
    codec = get_image_codec(spec)
    frame = FRAMES[0]
    good = codec.encode(frame)
    for cut in range(len(good)):
        with pytest.raises(ImageCodecError):
            codec.decode(good[:cut], (28, 28))
    with pytest.raises(ImageCodecError):
        codec.decode(good + b"\x00\x00", (28, 28))
    headerless = spec == "raw" or spec.startswith("grey")  # these know only the pixel count, not the shape
    # A shared-header JPEG carries no shape at all (the birth's shape builds its header): nothing to check here. A
    # down-sampled frame knows only its smaller shape: a frame far smaller on one side has another.
    wrong = () if "jpeg-shared" in spec else ((4, 28),) if spec.startswith("down") else \
        ((27, 28), (28, 29)) if headerless else ((27, 28), (28, 29), (14, 56))
    for shape in wrong:
        with pytest.raises(ImageCodecError):
            codec.decode(good, shape)
    bad_shapes: tuple[object, ...] = ((0, 28), (28,), (28, 28, 1), (1 << 20, 28), (28.0, 28), (True, 28), [28, 28])
    for bad in bad_shapes:
        with pytest.raises(ImageCodecError, match="shape"):
            codec.decode(good, bad)  # type: ignore[arg-type]
    with pytest.raises(ImageCodecError, match="more than"):
        codec.decode(b"\x00" * (max_encoded_len((28, 28)) + 1), (28, 28))
    with pytest.raises(ImageCodecError, match="bytes"):
        codec.decode("not bytes", (28, 28))  # type: ignore[arg-type]


def test_encode_refuses_what_is_not_a_grey_uint8_frame() -> None:
    codec = get_image_codec("png")
    for bad in (FRAMES[0].astype(np.float32), np.zeros((28, 28, 3), np.uint8), np.zeros((0, 28), np.uint8),
                [[0, 1], [2, 3]]):
        with pytest.raises(ImageCodecError, match=r"frame|shape"):
            codec.encode(bad)  # type: ignore[arg-type]


def test_colour_alpha_depth_and_extra_chunks_are_refused() -> None:
    frame = FRAMES[0]
    rgb = Image.fromarray(np.stack([frame, frame // 2, frame], axis=-1), "RGB")
    png, jpeg, webp_l = get_image_codec("png"), get_image_codec("jpeg:q50"), get_image_codec("webp-lossless")
    with pytest.raises(ImageCodecError, match="colour type"):
        png.decode(_pillow(rgb, "PNG"), (28, 28))
    with pytest.raises(ImageCodecError, match="bit depth"):
        png.decode(_pillow(Image.fromarray(frame.astype(np.uint16) * 257), "PNG"), (28, 28))
    good = png.encode(frame)
    with_text = good[:33] + _png_chunk(b"tEXt", b"Comment\x00hello") + good[33:]
    with pytest.raises(ImageCodecError, match="chunks"):
        png.decode(with_text, (28, 28))
    with pytest.raises(ImageCodecError, match="mode"):
        jpeg.decode(_pillow(rgb, "JPEG", quality=50), (28, 28))
    with pytest.raises(ImageCodecError, match="progressive"):
        jpeg.decode(_pillow(Image.fromarray(frame), "JPEG", quality=50, progressive=True), (28, 28))
    with pytest.raises(ImageCodecError, match="grey"):
        webp_l.decode(_pillow(rgb, "WEBP", lossless=True), (28, 28))
    rgba = Image.fromarray(np.stack([frame, frame, frame, frame], axis=-1), "RGBA")
    with pytest.raises(ImageCodecError, match=r"mode|VP8X"):
        webp_l.decode(_pillow(rgba, "WEBP", lossless=True), (28, 28))
    two = [Image.fromarray(frame).convert("RGB"), Image.fromarray(255 - frame).convert("RGB")]
    animated = _pillow(two[0], "WEBP", save_all=True, append_images=two[1:], lossless=True)
    with pytest.raises(ImageCodecError, match="VP8X"):
        webp_l.decode(animated, (28, 28))


def test_bombs_are_refused_before_any_pixel_is_decoded() -> None:
    png = get_image_codec("png")
    huge = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9))
    with pytest.raises(ImageCodecError, match="100000x100000"):
        png.decode(imagecodec.PNG_SIGNATURE + huge + idat + _png_chunk(b"IEND", b""), (28, 28))
    jpeg_big = _pillow(Image.new("L", (300, 300)), "JPEG", quality=1)
    assert len(jpeg_big) < max_encoded_len((28, 28))
    with pytest.raises(ImageCodecError, match="300x300"):
        get_image_codec("jpeg:q50").decode(jpeg_big, (28, 28))
    for spec, options in (("webp-lossless", {"lossless": True}), ("webp:q50", {"quality": 50})):
        webp_big = _pillow(Image.new("RGB", (300, 300)), "WEBP", **options)
        with pytest.raises(ImageCodecError, match="300x300"):
            get_image_codec(spec).decode(webp_big, (28, 28))
    # A VP8L header that claims 16384x16384 in a 40-byte file: refused before Pillow would allocate the canvas.
    header = b"\x2f" + struct.pack("<I", 0x3FFF | (0x3FFF << 14)) + b"\x00" * 15
    claim = b"RIFF" + struct.pack("<I", 4 + 8 + len(header)) + b"WEBP" + b"VP8L" + struct.pack("<I", len(header))
    with pytest.raises(ImageCodecError, match="16384x16384"):
        get_image_codec("webp-lossless").decode(claim + header, (28, 28))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = comp.compress(b"\x00" * 1_000_000) + comp.flush()  # about 1 kB that would inflate to 1 MB
    assert len(bomb) < max_encoded_len((28, 28))
    for bits in (1, 4, 8):
        with pytest.raises(ImageCodecError, match="more than"):
            get_image_codec(f"grey{bits}+deflate").decode(bomb, (28, 28))


def test_grey_deflate_refuses_levels_above_its_depth_and_stray_padding() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    above = comp.compress(bytes([16]) * 784) + comp.flush()  # one level per byte, 16 > 15
    with pytest.raises(ImageCodecError, match="level above"):
        get_image_codec("grey4+deflate").decode(above, (28, 28))
    padded = imagecodec._deflate(bytes([0xFF]))  # 1x3 frame at 1 bit: 3 bits of data, 5 bits of padding set
    with pytest.raises(ImageCodecError, match="padding"):
        get_image_codec("grey1+deflate").decode(padded, (1, 3))


# --- wire bytes and the cap policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 126, 127, 300, 9999, 70_000])
def test_wire_bytes_are_the_whole_publish_of_the_lean_image_message(index: int) -> None:
    seq, frame_id, capture_ms = (int(a[-1]) for a in frame_counters(index + 1))
    assert (seq, frame_id, capture_ms) == (index + 1, index + 1, FRAME_INTERVAL_MS * index)
    previous = 0
    for data_len in (0, 31, 200, 255, 256, 784, 70_000):
        payload = lean_image_payload_len(data_len, seq, frame_id, capture_ms)
        wire = wire_bytes(data_len, seq, frame_id, capture_ms)
        assert wire == publish_size(0, payload, properties_len=ALIAS_PROPERTIES_LEN)
        assert payload > data_len
        assert wire > previous
        previous = wire
    np.testing.assert_array_equal(
        image_eval.wire_bytes_all(np.array([200, 300])),
        [wire_bytes(200, 1, 1, 0), wire_bytes(300, 2, 2, FRAME_INTERVAL_MS)])


def _synthetic(spec: str, wire: list[int], correct: list[bool]) -> SpecResult:
    w = np.array(wire, dtype=np.int64)
    return SpecResult(spec, w - 10, w, np.array(correct), np.array(correct), 1.0)


def test_cap_policy_takes_the_highest_rung_that_fits_and_counts_unsent_frames_wrong() -> None:
    rungs = [_synthetic("low", [90, 150, 400], [False, True, True]),
             _synthetic("mid", [120, 140, 500], [True, False, True]),  # frame 1: mid is smaller than low
             _synthetic("high", [180, 260, 600], [True, True, True])]
    np.testing.assert_array_equal(cap_choice(np.stack([r.wire for r in rungs]), 145), [1, 1, -1])
    out = cap_outcome(rungs, 145)
    assert out["share_sent"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(1 / 3)  # frame 0 right (mid), frame 1 wrong (mid), frame 2 unsent
    assert out["chosen"] == {"mid": 2}
    assert out["mean_wire_bytes"] == pytest.approx((120 + 140) / 2)
    assert out["mean_payload_bytes"] == pytest.approx((110 + 130) / 2)
    lo, hi = out["ci95"]
    assert lo < out["accuracy"] < hi
    everything = cap_outcome(rungs, 10_000)
    assert everything["share_sent"] == 1.0
    assert everything["chosen"] == {"high": 3}
    nothing = cap_outcome(rungs, 50)
    assert nothing["share_sent"] == 0.0
    assert nothing["accuracy"] == 0.0
    assert nothing["mean_wire_bytes"] is None


@pytest.mark.parametrize("cap", [80, 150, 230, 320, 2000])
def test_the_sensor_policy_picks_the_rung_the_offline_policy_counts(cap: int) -> None:
    ladder = FAMILY_LADDERS["grey+deflate"]
    frames = [FRAMES[0], FRAMES[1], FRAMES[2]]
    wire = np.array([[wire_bytes(len(get_image_codec(s).encode(f)), i + 1, i + 1, 33 * i)
                      for i, f in enumerate(frames)] for s in ladder])
    expected = cap_choice(wire, cap)
    for i, frame in enumerate(frames):
        got = encode_within_cap(ladder, frame, cap, seq=i + 1, frame_id=i + 1, capture_ms=33 * i)
        if expected[i] < 0:
            assert got is None
        else:
            assert got is not None
            codec, data = got
            assert codec.name == ladder[expected[i]]
            assert wire_bytes(len(data), i + 1, i + 1, 33 * i) <= cap


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (9361, 10000), (1, 1)])
def test_wilson_interval_brackets_the_proportion_and_narrows_with_n(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert lo < hi
    mirror = wilson_interval(n - k, n)
    assert mirror == pytest.approx((1 - hi, 1 - lo))
    lo4, hi4 = wilson_interval(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_the_calibrated_table_is_small_json_and_steps_down_to_a_cap_the_link_allows() -> None:
    results = {"a": [_synthetic("a1", [150, 150, 150], [True, False, False]),
                     _synthetic("a2", [250, 250, 250], [True, True, True])],
               "b": [_synthetic("b1", [120, 120, 120], [True, True, False])]}
    caps = (100, 200, 300)
    table = table_from_results(results, in_memory_manifest("m", "0" * 64), source="synthetic", caps=caps)
    assert json.loads(json.dumps(table)) == table
    assert table["frames"] == 3
    assert table["model"]["sha256"] == "0" * 64
    assert [row["family"] for row in table["best"]] == ["a", "b", "a"]  # at 100 B neither sends: the first
    assert image_choice_at(table, 99) is None
    choice = image_choice_at(table, 299)
    assert choice is not None
    assert choice["family"] == "b"
    assert choice["cap_bytes"] == 200
    assert choice["ladder"] == ["b1"]
    top = image_choice_at(table, 5000)
    assert top is not None
    assert top["family"] == "a"
    assert top["accuracy"] == 1.0
    with pytest.raises(ValueError, match="table"):
        image_choice_at({"kind": "something else"}, 300)


def test_calibrated_table_runs_a_model_on_the_decoded_frames() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    rng = np.random.default_rng(1)
    images = np.stack([np.roll(FRAMES[0], int(s), axis=1) for s in rng.integers(-6, 7, 24)])
    labels = rng.integers(0, 10, 24)
    families = {"grey+deflate": ("grey1+deflate", "grey8+deflate"), "png": ("png",)}
    table = image_eval.calibrated_table(model, in_memory_manifest("tiny", "f" * 64), images, labels,
                                        source="synthetic", families=families, caps=(100, 2000))
    reference = image_eval.mature_predictor(model)(images)
    top = table["families"]["png"]["caps"][-1]
    assert top["share_sent"] == 1.0
    assert top["agreement"] == 1.0
    assert top["accuracy"] == pytest.approx(float((reference == labels).mean()))
    assert table["frames"] == 24
    assert set(table["families"]) == set(families)


def test_the_report_ranks_every_cap_and_measures_a_shared_rung_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    rng = np.random.default_rng(2)
    images = np.stack([np.roll(FRAMES[0], int(s), axis=0) for s in rng.integers(-6, 7, 16)])
    labels = rng.integers(0, 10, 16)
    families = {"grey+zstd": ("grey1+zstd", "grey4+zstd"), "down": ("down7:grey1+zstd", "down14:grey4+zstd"),
                "mixed": ("down7:grey1+zstd", "grey4+zstd")}
    measured: list[str] = []
    real = image_eval.measure_spec

    def counting(codec: ImageCodec, *args: object) -> SpecResult:
        measured.append(codec.name)
        return real(codec, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(image_eval, "measure_spec", counting)
    report = image_eval.evaluate_images(model, in_memory_manifest("tiny", "e" * 64), images, labels, None, None,
                                        validation_source="none", families=families, caps=(40, 60, 2000))
    assert sorted(measured) == sorted({spec for ladder in families.values() for spec in ladder})
    caps = report["settings"]["caps"]
    assert set(image_eval.BAR_CAPS) <= set(caps)
    assert list(report["best"]) == [str(cap) for cap in caps]
    for cap in caps:
        best = report["best"][str(cap)]
        rows = {family: next(r for r in table["caps"] if r["cap_bytes"] == cap)
                for family, table in report["families"].items()}
        assert best["family"] in families
        assert best["accuracy"] == max(row["accuracy"] for row in rows.values())
        assert best["ci95"] == rows[best["family"]]["ci95"]


@pytest.mark.parametrize("quality", [1, 30, 95])
def test_shared_header_jpeg_decodes_like_the_whole_file_and_sends_only_the_scan(quality: int) -> None:
    from nairbus.models.image.codec import shared_jpeg_header

    frame = np.random.default_rng(quality).integers(0, 256, (28, 28), dtype=np.uint8)
    shared = get_image_codec(f"jpeg-shared:q{quality}")
    data = shared.encode(frame)
    header = shared_jpeg_header(quality, (28, 28))
    assert len(header) > 250
    assert not data.startswith(b"\xff\xd8")
    whole = header + data
    with Image.open(io.BytesIO(whole)) as im:
        assert np.array_equal(shared.decode(data, (28, 28)), np.asarray(im.convert("L")))
    # Another shape has another header (its SOF differs), so a frame of the wrong shape does not decode silently.
    assert shared_jpeg_header(quality, (28, 28)) != shared_jpeg_header(quality, (32, 28))
