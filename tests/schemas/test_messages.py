"""Message models: strictness, immutability and the cross-field rules."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nairbus.schemas.messages import (
    LEAN_VERSION,
    MAX_FRAGMENT_DATA,
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    U64_MAX,
    Birth,
    BitBand,
    ClassScore,
    Fragment,
    Frame,
    ImageBirth,
    ImageFrame,
    ModelRef,
    NairBirth,
    Result,
    Stats,
    Status,
    TopK,
    VpBirth,
    packed_size,
)
from tests.schemas.strategies import MODES, births, bit_bands, fragments, image_frames, results, topks

SHA = "ab" * 32
LEAN_KINDS = {"frag", "topk", "image"}


def status(**over: Any) -> Status:
    fields: dict[str, Any] = {"agent_id": "cam-01", "role": "sensor", "state": "online", "session": "s", "ts": 1.0}
    return Status(**(fields | over))


def nair(**over: Any) -> NairBirth:
    fields: dict[str, Any] = {
        "artifact_sha256": SHA,
        "split": "layer2",
        "ir_shape": (64, 8, 8),
        "n_components": 100,
        "bit_bands": (BitBand(end=10, bits=8), BitBand(end=100, bits=4)),
    }
    return NairBirth(**(fields | over))


def image(**over: Any) -> ImageBirth:
    fields: dict[str, Any] = {"codecs": ("png", "webp:q80"), "height": 32, "width": 32}
    return ImageBirth(**(fields | over))


def vp(**over: Any) -> VpBirth:
    fields: dict[str, Any] = {"variant": "r18", "weight": 1.0, "k": 3}
    return VpBirth(**(fields | over))


def birth(**over: Any) -> Birth:
    fields: dict[str, Any] = {
        "sensor_id": "cam-01",
        "session": "s",
        "ts": 1.0,
        "mode": "nair",
        "stream_id": "main",
        "labels": ("a", "b", "c"),
        "model": ModelRef(name="resnet18", sha256=SHA),
        "nair": nair(),
        "deadline_ms": 50.0,
        "epoch_ts": 1.0,
        "expiry_ms": 500,
    }
    return Birth(**(fields | over))


def fragment(**over: Any) -> Fragment:
    fields: dict[str, Any] = {
        "sensor_id": "cam-01",
        "session": "s",
        "seq": 0,
        "frame_id": 7,
        "capture_ts": 10.0,
        "expires_ts": 10.5,
        "start": 0,
        "end": 10,
        "frame_end": 20,
        "data": bytes(5),
    }
    return Fragment(**(fields | over))


def topk(**over: Any) -> TopK:
    fields: dict[str, Any] = {
        "sensor_id": "cam-01",
        "session": "s",
        "seq": 0,
        "frame_id": 7,
        "capture_ts": 10.0,
        "expires_ts": 10.5,
        "classes": (3, 1),
        "scores": (0.75, 0.25),
    }
    return TopK(**(fields | over))


def image_frame(**over: Any) -> ImageFrame:
    fields: dict[str, Any] = {
        "sensor_id": "cam-01",
        "session": "s",
        "seq": 0,
        "frame_id": 7,
        "capture_ts": 10.0,
        "expires_ts": 10.5,
        "codec": 1,
        "data": b"\x89PNG",
    }
    return ImageFrame(**(fields | over))


def frame(**over: Any) -> Frame:
    fields: dict[str, Any] = {
        "stream_id": "main",
        "session": "s",
        "seq": 0,
        "frame_id": 7,
        "capture_ts": 10.0,
        "expires_ts": 10.5,
        "height": 2,
        "width": 3,
        "pixels": bytes(range(6)),
    }
    return Frame(**(fields | over))


def result(**over: Any) -> Result:
    fields: dict[str, Any] = {
        "stream_id": "main",
        "fusion_id": "fusion-1",
        "frame_id": 7,
        "label": "b",
        "class_index": 1,
        "confidence": 0.9,
        "topk": (ClassScore(class_index=1, label="b", score=0.9), ClassScore(class_index=0, label="a", score=0.1)),
        "fraction_received": 0.5,
        "bytes_received": 100,
        "fragments_received": 1,
        "sensors": ("cam-01",),
        "capture_ts": 10.0,
        "decided_ts": 10.02,
        "latency_ms": 20.0,
        "complete": False,
    }
    return Result(**(fields | over))


def test_kinds_and_versions() -> None:
    assert SCHEMA_VERSION == 1
    assert LEAN_VERSION == 2
    for kind, cls in MESSAGE_TYPES.items():
        assert cls.model_fields["kind"].default == kind
        assert cls.model_fields["v"].default == (LEAN_VERSION if kind in LEAN_KINDS else SCHEMA_VERSION)
    assert set(MESSAGE_TYPES) == {"status", "birth", "frag", "topk", "image", "item", "result", "stats", "frame",
                                  "command", "command_response", "controls", "stream_state", "stream_metrics"}


def test_valid_examples_build() -> None:
    assert status().kind == "status"
    assert birth().nair is not None
    assert birth(mode="vp", nair=None, vp=vp()).vp is not None
    assert birth(mode="image", nair=None, image=image()).image is not None
    assert birth(mode="auto", image=image()).mode == "auto"
    assert fragment().data == bytes(5)
    assert topk().classes == (3, 1)
    assert image_frame().codec == 1
    assert frame().pixels == bytes(range(6))
    assert result().complete is False
    stats = Stats(
        fusion_id="f",
        session="s",
        ts=1.0,
        uptime_s=2.0,
        frames_decided=1,
        frames_complete=1,
        frames_partial=0,
        frames_in_flight=0,
        frames_evicted=0,
        fragments_received=2,
        bytes_received=10,
    )
    assert stats.rejected == {}
    assert stats.latency_p50_ms is None


@settings(deadline=None)
@given(msg=births() | fragments() | topks() | image_frames() | results())
def test_strategies_build_valid_messages(msg: Birth | Fragment | TopK | ImageFrame | Result) -> None:
    # Re-validating the dump of every generated message proves the strategies honour every cross-field rule.
    assert type(msg).model_validate(msg.model_dump()) == msg


def test_frozen_and_no_extra_fields() -> None:
    msg = status()
    with pytest.raises(ValidationError):
        msg.ts = 2.0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        status(extra=1)
    for removed in ({"index": 0}, {"bits": 4}, {"frame_fragments": 1}):
        with pytest.raises(ValidationError, match="extra"):
            fragment(**removed)
    for removed in ({"bits": 8}, {"fragments": ()}):
        with pytest.raises(ValidationError, match="extra"):
            nair(**removed)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "1.0"),  # str for float
        ("ts", True),  # bool for float
        ("agent_id", 1),  # int for str
        ("role", "hub"),
        ("state", "ONLINE"),
        ("session", ""),
        ("session", "x" * 65),
        ("ts", float("nan")),
        ("ts", float("inf")),
        ("ts", -1.0),
        ("v", 2),
        ("kind", "birth"),
        ("agent_id", "a/b"),
        ("agent_id", "+"),
        ("agent_id", "#"),
        ("agent_id", ""),
        ("agent_id", "x" * 65),
        ("agent_id", "a\n"),
    ],
)
def test_status_strictness(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        status(**{field: value})


def test_int_accepted_for_float() -> None:
    # Strict mode still takes an int where a float is expected (JSON has no separate int/float syntax).
    assert status(ts=5).ts == 5.0


def test_lists_are_not_tuples_in_python_mode() -> None:
    with pytest.raises(ValidationError, match="tuple"):
        topk(classes=[3, 1])


def test_lean_messages_are_version_2_only() -> None:
    for build in (fragment, topk, image_frame):
        assert build().v == LEAN_VERSION
        with pytest.raises(ValidationError):
            build(v=1)


# -- NAIR birth: bit bands --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bands",
    [
        ((100, 8),),  # one band
        ((1, 1), (2, 16), (100, 3)),
        (*((i + 1, 1 + i % 16) for i in range(63)), (100, 2)),  # 64 bands, the most
    ],
)
def test_bit_bands_that_tile(bands: tuple[tuple[int, int], ...]) -> None:
    assert nair(bit_bands=tuple(BitBand(end=e, bits=b) for e, b in bands)).bit_bands[-1].end == 100


@pytest.mark.parametrize(
    "bands",
    [
        ((10, 8), (10, 4), (100, 4)),  # empty band (end not after the previous one)
        ((50, 8), (10, 4), (100, 4)),  # out of order
        ((10, 8), (99, 4)),  # ends short of n_components
        ((10, 8), (101, 4)),  # runs past n_components
        ((200, 8),),  # one band past n_components
    ],
)
def test_bit_bands_must_tile_components(bands: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValidationError, match="bit band"):
        nair(bit_bands=tuple(BitBand(end=e, bits=b) for e, b in bands))


@pytest.mark.parametrize(
    "over",
    [{"end": 0, "bits": 8}, {"end": -1, "bits": 8}, {"end": 2**64, "bits": 8}, {"end": 5, "bits": 0},
     {"end": 5, "bits": 17}, {"end": 5, "bits": True}, {"end": 5.0, "bits": 8}, {"end": 5}, {"bits": 8},
     {"end": 5, "bits": 8, "start": 0}],
)
def test_bit_band_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BitBand(**over)


@pytest.mark.parametrize(
    "over",
    [
        {"bit_bands": ()},
        {"bit_bands": tuple(BitBand(end=i + 1, bits=8) for i in range(65)), "n_components": 65},  # > 64 bands
        {"bit_bands": [BitBand(end=100, bits=8)]},  # list, not tuple
        {"n_components": 0},
        {"n_components": 99},
        {"ir_shape": (64, 0, 8)},
        {"ir_shape": (64, 8)},
        {"artifact_sha256": "AB" * 32},
        {"artifact_sha256": "ab" * 31},
        {"split": ""},
    ],
)
def test_nair_birth_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        nair(**over)


def brute_force_packed_bytes(section: NairBirth, start: int, end: int) -> int:
    """Bits of every component in ``[start, end)`` one by one (0 outside the bands), rounded up to bytes."""
    bits_of = []
    lo = 0
    for band in section.bit_bands:
        bits_of.extend([band.bits] * (band.end - lo))
        lo = band.end
    return (sum(bits_of[i] if i < len(bits_of) else 0 for i in range(start, end)) + 7) // 8


@given(plan=bit_bands(max_bands=8, max_width=300), data=st.data())
def test_packed_bytes_against_brute_force(plan: tuple[int, tuple[BitBand, ...]], data: st.DataObject) -> None:
    n, bands = plan
    section = nair(n_components=n, bit_bands=bands)
    start = data.draw(st.integers(min_value=0, max_value=n + 5))
    end = data.draw(st.integers(min_value=0, max_value=n + 5))
    assert section.packed_bytes(start, end) == brute_force_packed_bytes(section, start, end)
    whole_bits = sum((band.end - lo) * band.bits for band, lo in zip(bands, (0, *(b.end for b in bands[:-1])),
                                                                        strict=True))
    assert section.packed_bytes(0, n) == (whole_bits + 7) // 8
    # Splitting a range costs at most the rounding of one byte per piece.
    lo, hi = min(start, end), max(start, end)
    mid = data.draw(st.integers(min_value=lo, max_value=hi))
    halves = section.packed_bytes(lo, mid) + section.packed_bytes(mid, hi)
    assert halves - 1 <= section.packed_bytes(lo, hi) <= halves


def test_packed_bytes_examples() -> None:
    section = nair()  # 10 components at 8 bits, 90 at 4
    assert section.packed_bytes(0, 10) == 10
    assert section.packed_bytes(0, 11) == 11  # 84 bits
    assert section.packed_bytes(0, 100) == 10 + 45
    assert section.packed_bytes(9, 12) == 2  # 8 + 4 + 4 bits
    assert section.packed_bytes(10, 11) == 1
    assert section.packed_bytes(5, 5) == 0
    assert section.packed_bytes(7, 3) == 0
    assert section.packed_bytes(100, 200) == 0  # past the plan
    assert section.packed_bytes(0, 2**64) == 55
    single = nair(n_components=3, bit_bands=(BitBand(end=3, bits=1),))
    assert single.packed_bytes(0, 3) == packed_size(3, 1) == 1


# -- image birth -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over",
    [
        {"codecs": ()},
        {"codecs": ("png",) * 65},
        {"codecs": ("",)},
        {"codecs": ("x" * 129,)},
        {"codecs": ["png"]},
        {"codecs": "png"},
        {"height": 0},
        {"height": 1025},
        {"width": 0},
        {"width": 1025},
        {"width": 32.0},
        {"height": True},
    ],
)
def test_image_birth_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        image(**over)


def test_image_birth_limits() -> None:
    assert len(image(codecs=("png",) * 64).codecs) == 64
    assert image(height=1024, width=1).height == 1024


# -- birth: modes and their sections -------------------------------------------------------------------------------
SECTIONS = ("nair", "vp", "image")
WANTED = {"nair": {"nair"}, "vp": {"vp"}, "image": {"image"}, "auto": {"nair", "image"}}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("present", [set(c) for r in range(4) for c in combinations(SECTIONS, r)],
                         ids=lambda present: "+".join(sorted(present)) or "none")  # the same ids in every process
def test_birth_mode_needs_exactly_its_sections(mode: str, present: set[str]) -> None:
    made = {"nair": nair(), "vp": vp(), "image": image()}
    over: dict[str, Any] = {"mode": mode} | {name: made[name] if name in present else None for name in SECTIONS}
    if present == WANTED[mode]:
        assert birth(**over).mode == mode
    else:
        with pytest.raises(ValidationError, match=f"mode '{mode}' needs"):
            birth(**over)


@pytest.mark.parametrize(
    "over",
    [
        {"mode": "vp", "nair": None, "vp": vp(k=4)},  # k > labels
        {"labels": ()},
        {"labels": ("",)},
        {"labels": ("a",) * 1001},
        {"deadline_ms": 0.0},
        {"budget_bytes": 0},
        {"mode": "other"},
        {"mode": "NAIR"},
        {"mode": None},
        {"epoch_ts": -1.0},
        {"epoch_ts": float("nan")},
        {"epoch_ts": float("inf")},
        {"epoch_ts": "1.0"},
        {"expiry_ms": 0},
        {"expiry_ms": -5},
        {"expiry_ms": 86_400_001},
        {"expiry_ms": 500.0},
        {"expiry_ms": True},
        {"device": {"runtime": "tflite"}},
        {"device": {"runtime": "onnx", "parts": ["0" * 63]}},
        {"device": {"runtime": "onnx", "parts": ["a" * 64] * 5}},
        {"device": {"runtime": "onnx", "extra": 1}},
    ],
)
def test_birth_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        birth(**over)


@pytest.mark.parametrize("missing", ["epoch_ts", "expiry_ms", "deadline_ms", "mode"])
def test_birth_requires(missing: str) -> None:
    fields = birth().model_dump()
    del fields[missing]
    with pytest.raises(ValidationError, match="Field required"):
        Birth.model_validate(fields, strict=False)


def test_birth_limits() -> None:
    assert birth(expiry_ms=1).expiry_ms == 1
    assert birth(expiry_ms=86_400_000).expiry_ms == 86_400_000
    assert birth(epoch_ts=0.0).epoch_ts == 0.0
    assert birth(mode="vp", nair=None, vp=vp(k=3)).vp is not None  # k == labels


@pytest.mark.parametrize("bad", [{"weight": 0.0}, {"k": 0}, {"k": 501}, {"variant": ""}])
def test_vp_birth_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        vp(**bad)


# -- fragments -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("count", "bits"), [(1, 1), (7, 1), (8, 1), (9, 1), (10, 4), (3, 12), (5, 16), (100, 3)])
def test_fragment_data_bounds_the_range(count: int, bits: int) -> None:
    # The model checks only that the data could hold the range at one bit per component; the birth's bands say more.
    need = packed_size(count, bits)
    assert need == -(-count * bits // 8)
    assert fragment(end=count, frame_end=count, data=bytes(need)).data == bytes(need)
    floor = packed_size(count, 1)
    assert fragment(end=count, frame_end=count, data=bytes(floor)).end == count
    if floor > 1:
        with pytest.raises(ValidationError, match="cannot carry"):
            fragment(end=count, frame_end=count, data=bytes(floor - 1))


@pytest.mark.parametrize("length", [1, 2, 300, MAX_FRAGMENT_DATA])
def test_fragment_range_at_exactly_one_bit_per_component(length: int) -> None:
    start = U64_MAX - 8 * length
    assert fragment(start=start, end=start + 8 * length, frame_end=U64_MAX, data=bytes(length)).end == U64_MAX
    with pytest.raises(ValidationError, match="cannot carry"):
        fragment(start=start - 1, end=start + 8 * length, frame_end=U64_MAX, data=bytes(length))


def test_fragment_frame_end() -> None:
    assert fragment(end=10, frame_end=10).frame_end == 10
    assert fragment(frame_end=U64_MAX).frame_end == U64_MAX
    with pytest.raises(ValidationError, match="frame_end"):
        fragment(end=10, frame_end=9)
    with pytest.raises(ValidationError, match="frame_end"):
        fragment(start=5, end=10, frame_end=0)


@pytest.mark.parametrize(
    "over",
    [
        {"expires_ts": 10.0},  # not after capture
        {"expires_ts": 9.0},
        {"end": 0},
        {"start": 11, "end": 10},
        {"start": 10, "end": 10},
        {"frame_end": -1},
        {"frame_end": 2**64},
        {"frame_end": 20.0},
        {"frame_end": True},
        {"seq": -1},
        {"seq": 2**64},
        {"frame_id": True},
        {"capture_ts": float("nan")},
        {"expires_ts": float("inf")},
        {"data": b""},
        {"data": "00000"},  # str for bytes
        {"data": bytearray(5)},
        {"data": bytes(MAX_FRAGMENT_DATA + 1)},
        {"start": 0, "end": MAX_FRAGMENT_DATA * 8 + 8, "frame_end": 2**20, "data": bytes(MAX_FRAGMENT_DATA + 1)},
        {"start": 0, "end": 2**63, "frame_end": 2**63, "data": bytes(8)},  # a huge range costs nothing to refuse
        {"start": 0, "end": U64_MAX, "frame_end": U64_MAX, "data": bytes(MAX_FRAGMENT_DATA)},
    ],
)
def test_fragment_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        fragment(**over)


@pytest.mark.parametrize("missing", ["frame_end", "start", "end", "data", "seq", "expires_ts"])
def test_fragment_requires(missing: str) -> None:
    fields = fragment().model_dump()
    del fields[missing]
    with pytest.raises(ValidationError, match="Field required"):
        Fragment.model_validate(fields)


# -- top-k and images ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "over",
    [
        {"classes": (1, 1), "scores": (0.5, 0.5)},
        {"classes": (1,), "scores": (0.5, 0.5)},
        {"classes": (), "scores": ()},
        {"classes": (-1,), "scores": (0.5,)},
        {"classes": (True,), "scores": (0.5,)},
        {"classes": tuple(range(501)), "scores": (0.0,) * 501},
        {"scores": (float("nan"), 0.1)},
        {"scores": (float("inf"), 0.1)},
        {"scores": (0.5, "0.1")},
        {"expires_ts": 1.0},
    ],
)
def test_topk_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        topk(**over)


@pytest.mark.parametrize(
    "over",
    [
        {"codec": -1},
        {"codec": 64},
        {"codec": True},
        {"codec": 1.0},
        {"codec": None},
        {"data": b""},
        {"data": bytes(MAX_FRAGMENT_DATA + 1)},
        {"data": "png"},
        {"expires_ts": 10.0},
        {"expires_ts": 9.99},
        {"capture_ts": -1.0},
        {"frame_id": 2**64},
        {"session": ""},
        {"sensor_id": "a/b"},
        {"start": 0},  # a fragment's field
    ],
)
def test_image_frame_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        image_frame(**over)


def test_image_frame_limits() -> None:
    assert image_frame(codec=0).codec == 0
    assert image_frame(codec=63).codec == 63
    assert len(image_frame(data=bytes(MAX_FRAGMENT_DATA)).data) == MAX_FRAGMENT_DATA


@pytest.mark.parametrize(
    "over",
    [
        {"height": 2, "width": 2},  # pixels no longer match
        {"pixels": b""},
        {"height": 0, "width": 3, "pixels": b""},
        {"height": 1025},
        {"expires_ts": 10.0},
    ],
)
def test_frame_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        frame(**over)


# -- results -------------------------------------------------------------------------------------------------------
def test_result_new_fields_default() -> None:
    made = result()
    assert made.representation == "nair"
    assert made.components_received == 0
    assert made.codec is None
    assert made.wire_bytes == 0
    assert made.variants == ()


@settings(deadline=None)
@given(made=results())
def test_result_new_fields_round_trip_through_json(made: Result) -> None:
    assert Result.model_validate_json(made.model_dump_json()) == made


def test_result_new_fields_accept() -> None:
    made = result(representation="image", codec="webp:q80", wire_bytes=U64_MAX, components_received=0)
    assert (made.representation, made.codec, made.wire_bytes) == ("image", "webp:q80", U64_MAX)
    assert result(representation="vp", variants=("r18", "r34")).variants == ("r18", "r34")
    assert result(components_received=U64_MAX).components_received == U64_MAX


@pytest.mark.parametrize(
    "over",
    [
        {"confidence": 1.01},
        {"confidence": -0.1},
        {"fraction_received": 1.5},
        {"latency_ms": -1.0},
        {"complete": 1},
        {"topk": (ClassScore(class_index=1, label="b", score=0.5),) * 2},
        {"fusion_id": "f/1"},
        {"representation": "auto"},
        {"representation": "NAIR"},
        {"representation": None},
        {"components_received": -1},
        {"components_received": 2**64},
        {"components_received": 1.0},
        {"components_received": True},
        {"codec": ""},
        {"codec": "x" * 129},
        {"codec": 3},
        {"wire_bytes": -1},
        {"wire_bytes": 2**64},
        {"wire_bytes": False},
        {"wire_bytes": 10.0},
    ],
)
def test_result_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        result(**over)


def test_an_item_name_is_printable_and_bounded() -> None:
    from nairbus.schemas import Item

    name = "2026/cam 1/snap-01.jpg"
    assert Item(sensor_id="cam", session="s", frame_id=3, name=name).name == name
    for bad in ("", "a\nb", "x\x00.png", "\x1b[31mred", "n" * 256):
        with pytest.raises(ValidationError):
            Item(sensor_id="cam", session="s", frame_id=3, name=bad)
