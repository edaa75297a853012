"""The lean wire (nairbus.schemas.lean): round trips of fragments, top-k and images, envelope bytes, and hostile
payloads that must always end in a WireError with the right reason and nothing else."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import FrozenInstanceError
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nairbus.schemas.codec import WIRE_REASONS, WireError
from nairbus.schemas.lean import LEAN_TYPES, MAX_LEAN_BYTES, LeanContext, LeanMessage, decode_lean, encode_lean
from nairbus.schemas.messages import (
    LEAN_VERSION,
    MAX_FRAGMENT_DATA,
    MAX_TOPK,
    U64_MAX,
    Fragment,
    Frame,
    ImageFrame,
    Status,
    TopK,
)
from nairbus.schemas.wire import ALIAS_PROPERTIES_LEN, lean_fragment_payload_len, lean_image_payload_len, publish_size
from tests.schemas.strategies import (
    births,
    fragments,
    image_frames,
    lean_contexts,
    lean_messages,
    lean_values,
    msgpack_values,
    sessions,
    topks,
)
from tests.schemas.test_messages import fragment, image_frame, topk

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEAN_CLASSES: list[type[LeanMessage]] = [Fragment, TopK, ImageFrame]
CTX = LeanContext("cam-01", "s", epoch_ts=10.0, expiry_s=0.5)  # the helpers' messages: captured at 10.0, expire 10.5
ARITY = {Fragment: 9, TopK: 7, ImageFrame: 7}
SEQ, FRAME_ID, CAPTURE_MS = 2, 3, 4
BODY = {Fragment: {"start": 5, "end": 6, "frame_end": 7, "data": 8}, TopK: {"classes": 5, "scores": 6},
        ImageFrame: {"codec": 5, "data": 6}}


def example(cls: type[LeanMessage], **over: Any) -> LeanMessage:
    build = {Fragment: fragment, TopK: topk, ImageFrame: image_frame}[cls]
    return build(**over)  # type: ignore[no-any-return]


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def elements(cls: type[LeanMessage], **over: Any) -> list[Any]:
    """The positional array of a valid example message, to be tampered with."""
    return list(msgpack.unpackb(encode_lean(example(cls, **over), CTX), raw=False))


def outcome(payload: object, cls: type[LeanMessage], ctx: LeanContext = CTX) -> LeanMessage | str:
    """The decoded message, or the WireError's reason (any other exception propagates and fails the test)."""
    try:
        return decode_lean(payload, cls, ctx)  # type: ignore[arg-type]
    except WireError as err:
        reason, detail = err.reason, err.detail
    assert reason in WIRE_REASONS
    assert len(detail) <= 300
    return reason


def reason_of(payload: object, cls: type[LeanMessage], ctx: LeanContext = CTX) -> str:
    out = outcome(payload, cls, ctx)
    assert isinstance(out, str), f"decoded {out!r}"
    return out


def tampered(cls: type[LeanMessage], position: int, value: object) -> bytes:
    arr = elements(cls)
    arr[position] = value
    return pack(arr)


def assert_finite(msg: LeanMessage) -> None:
    for value in msg.model_dump().values():
        for x in value if isinstance(value, tuple) else (value,):
            assert not isinstance(x, float) or math.isfinite(x)


# -- round trips ----------------------------------------------------------------------------------------------------
@FUZZ
@given(pair=lean_messages())
def test_round_trip_every_lean_kind(pair: tuple[LeanMessage, LeanContext]) -> None:
    msg, ctx = pair
    payload = encode_lean(msg, ctx)
    assert len(payload) <= MAX_LEAN_BYTES
    assert decode_lean(payload, type(msg), ctx) == msg
    assert decode_lean(bytearray(payload), type(msg), ctx) == msg
    assert decode_lean(memoryview(payload), type(msg), ctx) == msg
    assert encode_lean(decode_lean(payload, type(msg), ctx), ctx) == payload
    arr = msgpack.unpackb(payload, raw=False)
    assert arr[:2] == [LEAN_VERSION, ctx.tag]
    assert len(arr) == ARITY[type(msg)]


@FUZZ
@given(pair=lean_messages())
def test_decoding_as_another_kind_or_session_fails(pair: tuple[LeanMessage, LeanContext]) -> None:
    msg, ctx = pair
    payload = encode_lean(msg, ctx)
    for cls in LEAN_CLASSES:
        if cls is not type(msg):
            # frag has 9 elements, topk and image 7 each: arity, else the body's types tell them apart.
            assert reason_of(payload, cls, ctx) in {"malformed", "invalid"}
    other = LeanContext(ctx.sensor_id, ctx.session + "'", ctx.epoch_ts, ctx.expiry_s)
    if other.tag != ctx.tag:
        assert reason_of(payload, type(msg), other) == "session"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_layout(cls: type[LeanMessage]) -> None:
    msg = example(cls, seq=300, frame_id=70_000, capture_ts=10.25, expires_ts=10.75)
    arr = msgpack.unpackb(encode_lean(msg, CTX), raw=False)
    head = [2, zlib.crc32(b"s") % 128, 300, 70_000, 250]
    body = {Fragment: [0, 10, 20, bytes(5)], TopK: [[3, 1], [0.75, 0.25]], ImageFrame: [1, b"\x89PNG"]}[cls]
    assert arr == head + body


def test_scores_travel_as_float32() -> None:
    payload = encode_lean(topk(scores=(0.75, 0.1)), CTX)
    assert payload.endswith(b"\x92\xca" + struct.pack(">f", 0.75) + b"\xca" + struct.pack(">f", 0.1))
    decoded = decode_lean(payload, TopK, CTX)
    assert decoded.scores == (0.75, struct.unpack(">f", struct.pack(">f", 0.1))[0])  # 0.1 rounds to float32
    assert decoded.scores[1] != 0.1
    biggest = struct.unpack(">f", struct.pack(">f", 3.4028234663852886e38))[0]
    assert decode_lean(encode_lean(topk(scores=(biggest, -biggest)), CTX), TopK, CTX).scores == (biggest, -biggest)


def test_times_come_from_the_context() -> None:
    # capture_ms counts milliseconds from the epoch (rounded); the receiver's expiry is always the birth's.
    msg = fragment(capture_ts=12.3456, expires_ts=99.0)
    decoded = decode_lean(encode_lean(msg, CTX), Fragment, CTX)
    assert msgpack.unpackb(encode_lean(msg, CTX))[CAPTURE_MS] == 2346
    assert decoded.capture_ts == 10.0 + 2.346
    assert decoded.expires_ts == decoded.capture_ts + 0.5
    assert decode_lean(encode_lean(fragment(capture_ts=10.0004, expires_ts=11.0), CTX), Fragment, CTX).capture_ts == 10
    # The sensor id and session are the context's (the topic's and the birth's), not the payload's.
    elsewhere = LeanContext("cam-02", "s", epoch_ts=0.0, expiry_s=1.0)
    moved = decode_lean(encode_lean(fragment(), CTX), Fragment, elsewhere)
    assert (moved.sensor_id, moved.capture_ts, moved.expires_ts) == ("cam-02", 0.0, 1.0)


@settings(deadline=None)
@given(birth=births())
def test_context_from_birth(birth: Any) -> None:
    ctx = LeanContext.from_birth(birth)
    assert (ctx.sensor_id, ctx.session, ctx.epoch_ts) == (birth.sensor_id, birth.session, birth.epoch_ts)
    assert ctx.expiry_s == birth.expiry_ms / 1000
    assert 0 <= ctx.tag < 128


@given(session=sessions)
def test_tag_is_a_7_bit_digest_of_the_session(session: str) -> None:
    ctx = LeanContext("cam", session, 0.0, 1.0)
    assert ctx.tag == zlib.crc32(session.encode()) % 128
    assert ctx.tag == LeanContext("other", session, 5.0, 2.0).tag  # only the session counts
    assert len(pack(ctx.tag)) == 1


def test_context_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        CTX.session = "t"  # type: ignore[misc]
    assert frozenset(LEAN_CLASSES) == LEAN_TYPES


# -- bytes on the wire -------------------------------------------------------------------------------------------------
@settings(deadline=None)
@given(seq=st.integers(0, 65_535), frame_id=st.integers(0, 65_535), capture_ms=st.integers(0, 2**32 - 1),
       end=st.integers(1, 8 * 300), more=st.integers(0, 65_535 - 8 * 300), data=st.binary(min_size=300, max_size=300))
def test_one_message_nair_frame_envelope(seq: int, frame_id: int, capture_ms: int, end: int, more: int,
                                         data: bytes) -> None:
    """A frame sent whole as one fragment (seq, frame id and components below 2**16, capture within 49 days)."""
    ctx = LeanContext("cam-01", "a1b2c3", epoch_ts=1_700_000_000.0, expiry_s=10.0)
    capture = ctx.epoch_ts + capture_ms / 1000
    msg = Fragment(sensor_id="cam-01", session="a1b2c3", seq=seq, frame_id=frame_id, capture_ts=capture,
                   expires_ts=capture + 10.0, start=0, end=end, frame_end=end + more, data=data)
    payload = encode_lean(msg, ctx)
    assert decode_lean(payload, Fragment, ctx) == msg
    assert len(payload) - len(data) <= 25
    assert publish_size(0, len(payload), properties_len=ALIAS_PROPERTIES_LEN) - len(payload) <= 9


def test_envelope_against_the_map_it_replaces() -> None:
    msg = fragment(seq=1234, frame_id=999, capture_ts=10.0 + 3600.0, expires_ts=10.5 + 3600.0, end=600,
                   frame_end=600, data=bytes(300))
    lean = len(encode_lean(msg, CTX)) - 300
    as_map = len(pack(msg.model_dump())) - 300
    assert lean <= 25
    assert lean * 5 < as_map


BOUNDARY_UINTS = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**40 - 1, 2**64 - 1]
uints = st.sampled_from(BOUNDARY_UINTS) | st.integers(0, U64_MAX)
data_lens = st.sampled_from([1, 255, 256, MAX_FRAGMENT_DATA]) | st.integers(1, MAX_FRAGMENT_DATA)


@settings(deadline=None)
@given(seq=uints, frame_id=uints, capture_ms=st.sampled_from(BOUNDARY_UINTS[:11]) | st.integers(0, 2**40 - 1),
       start=uints, width=st.integers(1, 8), extra=uints, data_len=data_lens)
def test_lean_fragment_payload_len(seq: int, frame_id: int, capture_ms: int, start: int, width: int, extra: int,
                                   data_len: int) -> None:
    start = min(start, U64_MAX - width)
    end = start + width
    frame_end = end + min(extra, U64_MAX - end)
    capture = CTX.epoch_ts + capture_ms / 1000
    msg = fragment(seq=seq, frame_id=frame_id, capture_ts=capture, expires_ts=capture + CTX.expiry_s, start=start,
                   end=end, frame_end=frame_end, data=bytes(data_len))
    payload = encode_lean(msg, CTX)
    assert msgpack.unpackb(payload)[CAPTURE_MS] == capture_ms
    assert lean_fragment_payload_len(data_len, seq, frame_id, capture_ms, start, end, frame_end) == len(payload)


@settings(deadline=None)
@given(seq=uints, frame_id=uints, capture_ms=st.sampled_from(BOUNDARY_UINTS[:11]) | st.integers(0, 2**40 - 1),
       codec=st.integers(0, 63), data_len=data_lens)
def test_lean_image_payload_len(seq: int, frame_id: int, capture_ms: int, codec: int, data_len: int) -> None:
    capture = CTX.epoch_ts + capture_ms / 1000
    msg = image_frame(seq=seq, frame_id=frame_id, capture_ts=capture, expires_ts=capture + CTX.expiry_s, codec=codec,
                      data=bytes(data_len))
    payload = encode_lean(msg, CTX)
    assert lean_image_payload_len(data_len, seq, frame_id, capture_ms, codec) == len(payload)
    if codec == 0:
        assert lean_image_payload_len(data_len, seq, frame_id, capture_ms) == len(payload)


@FUZZ
@given(data=st.data())
def test_payload_len_helpers_match_generated_messages(data: st.DataObject) -> None:
    ctx = data.draw(lean_contexts())
    frag = data.draw(fragments(ctx))
    payload = encode_lean(frag, ctx)
    ms = msgpack.unpackb(payload)[CAPTURE_MS]
    assert lean_fragment_payload_len(len(frag.data), frag.seq, frag.frame_id, ms, frag.start, frag.end,
                                     frag.frame_end) == len(payload)
    img = data.draw(image_frames(ctx))
    payload = encode_lean(img, ctx)
    ms = msgpack.unpackb(payload)[CAPTURE_MS]
    assert lean_image_payload_len(len(img.data), img.seq, img.frame_id, ms, img.codec) == len(payload)


# -- encode refuses what no receiver would take -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_encode_refuses_another_sensor_or_session(cls: type[LeanMessage]) -> None:
    with pytest.raises(ValueError, match="context"):
        encode_lean(example(cls, sensor_id="cam-02"), CTX)
    with pytest.raises(ValueError, match="context"):
        encode_lean(example(cls, session="t"), CTX)


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_encode_refuses_times_outside_the_session(cls: type[LeanMessage]) -> None:
    with pytest.raises(ValueError, match="before the session epoch"):
        encode_lean(example(cls, capture_ts=9.999, expires_ts=10.5), CTX)
    with pytest.raises(ValueError, match="before the session epoch"):
        encode_lean(example(cls, capture_ts=0.0, expires_ts=10.5), CTX)
    last = CTX.epoch_ts + (2**40 - 1) / 1000
    assert decode_lean(encode_lean(example(cls, capture_ts=last, expires_ts=last + 0.5), CTX), cls, CTX).capture_ts \
        == last
    for late in (CTX.epoch_ts + 2**40 / 1000, 1e300):  # past what decode_lean accepts; 1e300 s overflows to inf ms
        with pytest.raises(ValueError, match="after the session epoch"):
            encode_lean(example(cls, capture_ts=late, expires_ts=late * 2), CTX)


def test_encode_refuses_scores_beyond_float32() -> None:
    for score in (1e39, -1e39, 1.7e308):
        with pytest.raises(ValueError, match="lean wire"):
            encode_lean(topk(scores=(score, 0.5)), CTX)


# -- hostile payloads ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_decode_refuses_non_lean_classes(cls: type[LeanMessage]) -> None:
    payload = encode_lean(example(cls), CTX)
    for other in (Status, Frame):
        with pytest.raises(TypeError, match="lean"):
            decode_lean(payload, other, CTX)  # type: ignore[type-var]


@pytest.mark.parametrize("payload", [None, "payload", 5, [1, 2], object(), bytearray])
@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_non_bytes_payload_is_malformed(payload: object, cls: type[LeanMessage]) -> None:
    assert reason_of(payload, cls) == "malformed"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_truncated_at_every_byte_is_malformed(cls: type[LeanMessage]) -> None:
    payload = encode_lean(example(cls, seq=2**40, data=bytes(300)) if cls is not TopK else example(cls), CTX)
    for cut in range(len(payload)):
        assert reason_of(payload[:cut], cls) == "malformed"
        assert reason_of(bytearray(payload[:cut]), cls) == "malformed"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("tail", [b"\x00", b"\xc0", b"\x90", b"\xc1", b"\xff" * 3])
def test_trailing_bytes_are_malformed(cls: type[LeanMessage], tail: bytes) -> None:
    payload = encode_lean(example(cls), CTX)
    assert reason_of(payload + tail, cls) == "malformed"
    assert reason_of(payload + payload, cls) == "malformed"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_wrong_arity_is_malformed(cls: type[LeanMessage]) -> None:
    arr = elements(cls)
    for wrong in (arr[:-1], [*arr, 0], [*arr, arr[-1]], arr[:5], [2], [2, CTX.tag], arr * 2):
        assert reason_of(pack(wrong), cls) == "malformed"
    assert reason_of(pack([]), cls) == "malformed"
    assert reason_of(pack([2] + [0] * 999), cls) == "malformed"  # within msgpack's array limit
    assert reason_of(pack([2] + [0] * 1000), cls) == "malformed"  # past it


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("version", [1, 3, 0, -1, -(2**63), 2**64 - 1, True, False, 2.0, None, b"\x02", (2,), [[2]]])
def test_wrong_version(cls: type[LeanMessage], version: object) -> None:
    assert reason_of(tampered(cls, 0, version), cls) == "version"
    # The version is checked first: another version's array of any shape is "version", never "malformed".
    assert reason_of(pack([version]), cls) == "version"
    assert reason_of(pack([version, -1, None]), cls) == "version"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_strings_anywhere_are_malformed(cls: type[LeanMessage]) -> None:
    # The lean wire carries no strings: msgpack refuses them before any check, a version "2" included.
    for position in range(ARITY[cls]):
        assert reason_of(tampered(cls, position, "2"), cls) == "malformed"
    assert reason_of(pack("x"), cls) == "malformed"
    assert reason_of(pack(""), cls) == "malformed"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_maps_instead_of_arrays_are_malformed(cls: type[LeanMessage]) -> None:
    msg = example(cls)
    for payload in (pack(msg.model_dump()), pack({}), pack({1: 2}), pack({b"v": 2}), pack({2: [2]})):
        assert reason_of(payload, cls) == "malformed"
    assert reason_of(pack([{}]), cls) == "version"  # an empty map parses, and is not the version
    for position in range(ARITY[cls]):
        assert reason_of(tampered(cls, position, {b"k": 1}), cls) == "malformed"
    assert reason_of(tampered(cls, 2, {}), cls) in {"invalid"}  # an empty map parses: not an int


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_ext_types_are_malformed(cls: type[LeanMessage]) -> None:
    for ext in (msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0), msgpack.ExtType(127, b"12345678")):
        assert reason_of(pack(ext), cls) == "malformed"
        assert reason_of(tampered(cls, CAPTURE_MS, ext), cls) == "malformed"
    assert reason_of(b"\xd6\xff" + bytes(4), cls) == "malformed"  # a raw timestamp ext (type -1)
    # A zero-length ext gets past msgpack's limit as ExtType(code, b""), a tuple subclass: never a lean array,
    # whatever its code, and never a value of any field.
    assert reason_of(pack(msgpack.ExtType(LEAN_VERSION, b"")), cls) == "malformed"
    assert reason_of(pack(msgpack.ExtType(127, b"")), cls) == "malformed"
    empty = msgpack.ExtType(CTX.tag, b"")
    assert reason_of(tampered(cls, 0, empty), cls) == "version"
    assert reason_of(tampered(cls, 1, empty), cls) == "session"
    for position in range(2, ARITY[cls]):
        assert reason_of(tampered(cls, position, empty), cls) == "invalid"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("tag", ["other", -1, 128, 255, 2**64 - 1, True, False, 1.0, None, b"", (1,)])
def test_wrong_session_tag(cls: type[LeanMessage], tag: object) -> None:
    if tag == "other":  # a real straggler: another session's message
        other = LeanContext(CTX.sensor_id, "t", CTX.epoch_ts, CTX.expiry_s)
        assert other.tag != CTX.tag
        payload = encode_lean(example(cls, session="t"), other)
        assert reason_of(payload, cls) == "session"
        assert decode_lean(payload, cls, other) == example(cls, session="t")
        return
    if isinstance(tag, float):
        tag = float(CTX.tag)
    assert reason_of(tampered(cls, 1, tag), cls) == "session"
    # The tag is checked before the rest of the body: a broken straggler still counts as "session".
    arr = elements(cls)
    arr[1] = tag
    arr[CAPTURE_MS] = -1
    arr[-1] = None
    assert reason_of(pack(arr), cls) == "session"


def test_every_other_tag_is_refused() -> None:
    arr = elements(Fragment)
    for tag in range(128):
        arr[1] = tag
        out = outcome(pack(arr), Fragment)
        assert (out == "session") == (tag != CTX.tag)


# (position, value, what decode_lean must answer) for the fields every lean message has; "ok" decodes.
HEAD_CASES: list[tuple[int, object, str]] = [
    (SEQ, -1, "invalid"), (SEQ, -(2**63), "invalid"), (SEQ, True, "invalid"), (SEQ, False, "invalid"),
    (SEQ, 1.0, "invalid"), (SEQ, float("nan"), "invalid"), (SEQ, None, "invalid"), (SEQ, b"1", "invalid"),
    (SEQ, (1,), "invalid"), (SEQ, 2**64 - 1, "ok"), (SEQ, 0, "ok"),
    (FRAME_ID, -1, "invalid"), (FRAME_ID, True, "invalid"), (FRAME_ID, 7.0, "invalid"),
    (FRAME_ID, float("inf"), "invalid"), (FRAME_ID, 2**64 - 1, "ok"),
    (CAPTURE_MS, -1, "invalid"), (CAPTURE_MS, -(2**63), "invalid"), (CAPTURE_MS, True, "invalid"),
    (CAPTURE_MS, False, "invalid"), (CAPTURE_MS, 0.0, "invalid"), (CAPTURE_MS, 1.5, "invalid"),
    (CAPTURE_MS, float("nan"), "invalid"), (CAPTURE_MS, float("inf"), "invalid"),
    (CAPTURE_MS, float("-inf"), "invalid"), (CAPTURE_MS, None, "invalid"), (CAPTURE_MS, (0,), "invalid"),
    (CAPTURE_MS, 2**40, "invalid"), (CAPTURE_MS, 2**63, "invalid"), (CAPTURE_MS, 2**64 - 1, "invalid"),
    (CAPTURE_MS, 2**40 - 1, "ok"), (CAPTURE_MS, 0, "ok"),
]


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("position", "value", "expected"), HEAD_CASES)
def test_head_fields(cls: type[LeanMessage], position: int, value: object, expected: str) -> None:
    out = outcome(tampered(cls, position, value), cls)
    if expected == "ok":
        assert isinstance(out, cls)
        if position == CAPTURE_MS:
            assert out.capture_ts == CTX.epoch_ts + value / 1000  # type: ignore[operator]
    else:
        assert out == expected


BIG = U64_MAX
BODY_CASES: list[tuple[type[LeanMessage], dict[str, object], str]] = [
    # fragments: range, frame_end and data
    (Fragment, {"start": -1}, "invalid"),
    (Fragment, {"start": True}, "invalid"),
    (Fragment, {"start": 0.0}, "invalid"),
    (Fragment, {"start": float("nan")}, "invalid"),
    (Fragment, {"start": 10}, "invalid"),  # start == end
    (Fragment, {"start": 11}, "invalid"),  # start > end
    (Fragment, {"end": 0}, "invalid"),
    (Fragment, {"end": 2**63}, "invalid"),  # frame_end before end, and far more than 5 bytes can carry
    (Fragment, {"end": 41, "frame_end": 41}, "invalid"),  # 41 components in 5 bytes
    (Fragment, {"end": 40, "frame_end": 40}, "ok"),  # 40 components, one bit each
    (Fragment, {"start": BIG - 40, "end": BIG, "frame_end": BIG}, "ok"),
    (Fragment, {"start": 0, "end": BIG, "frame_end": BIG}, "invalid"),
    (Fragment, {"frame_end": 9}, "invalid"),
    (Fragment, {"frame_end": 10}, "ok"),
    (Fragment, {"frame_end": -1}, "invalid"),
    (Fragment, {"frame_end": False}, "invalid"),
    (Fragment, {"frame_end": 20.0}, "invalid"),
    (Fragment, {"data": b""}, "invalid"),
    (Fragment, {"data": None}, "invalid"),
    (Fragment, {"data": 5}, "invalid"),
    (Fragment, {"data": (0, 0, 0, 0, 0)}, "invalid"),
    (Fragment, {"data": 1.5}, "invalid"),
    (Fragment, {"data": bytes(MAX_FRAGMENT_DATA)}, "ok"),
    (Fragment, {"data": bytes(MAX_FRAGMENT_DATA + 1)}, "invalid"),
    (Fragment, {"data": bytes(MAX_LEAN_BYTES - 100)}, "invalid"),
    # top-k: classes and scores
    (TopK, {"classes": (-1, 2)}, "invalid"),
    (TopK, {"classes": (True, 2)}, "invalid"),
    (TopK, {"classes": (1.0, 2)}, "invalid"),
    (TopK, {"classes": (1, 1)}, "invalid"),
    (TopK, {"classes": (1,)}, "invalid"),
    (TopK, {"classes": ()}, "invalid"),
    (TopK, {"classes": 3}, "invalid"),
    (TopK, {"classes": b"\x03\x01"}, "invalid"),
    (TopK, {"classes": ((3,), (1,))}, "invalid"),
    (TopK, {"classes": (BIG, 0)}, "ok"),
    (TopK, {"classes": tuple(range(MAX_TOPK + 1)), "scores": (0.0,) * (MAX_TOPK + 1)}, "invalid"),
    (TopK, {"classes": tuple(range(MAX_TOPK)), "scores": (0.0,) * MAX_TOPK}, "ok"),
    (TopK, {"scores": (float("nan"), 0.25)}, "invalid"),
    (TopK, {"scores": (0.75, float("inf"))}, "invalid"),
    (TopK, {"scores": (float("-inf"), 0.25)}, "invalid"),
    (TopK, {"scores": (0.75,)}, "invalid"),
    (TopK, {"scores": (True, 0.25)}, "invalid"),
    (TopK, {"scores": (None, 0.25)}, "invalid"),
    (TopK, {"scores": 0.75}, "invalid"),
    (TopK, {"scores": (1, 0)}, "ok"),  # an int is a float (as in JSON)
    (TopK, {"scores": (1e308, -1e308)}, "ok"),  # a float64 sent by someone else is taken as it is
    # images: codec index and data
    (ImageFrame, {"codec": -1}, "invalid"),
    (ImageFrame, {"codec": 64}, "invalid"),
    (ImageFrame, {"codec": BIG}, "invalid"),
    (ImageFrame, {"codec": True}, "invalid"),
    (ImageFrame, {"codec": 1.0}, "invalid"),
    (ImageFrame, {"codec": float("nan")}, "invalid"),
    (ImageFrame, {"codec": 63}, "ok"),
    (ImageFrame, {"codec": 0}, "ok"),
    (ImageFrame, {"data": b""}, "invalid"),
    (ImageFrame, {"data": None}, "invalid"),
    (ImageFrame, {"data": (1, 2)}, "invalid"),
    (ImageFrame, {"data": bytes(MAX_FRAGMENT_DATA + 1)}, "invalid"),
]


@pytest.mark.parametrize(("cls", "over", "expected"), BODY_CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(BODY_CASES)])
def test_body_fields(cls: type[LeanMessage], over: dict[str, object], expected: str) -> None:
    arr = elements(cls)
    for name, value in over.items():
        arr[BODY[cls][name]] = value
    out = outcome(msgpack.packb(arr, use_bin_type=True, use_single_float=False), cls)
    if expected == "ok":
        assert isinstance(out, cls)
        assert_finite(out)
        for name, value in over.items():
            assert getattr(out, name) == value
    else:
        assert out == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_inf_scores_in_float32_are_invalid(bad: float) -> None:
    arr = elements(TopK)
    scores = b"\x92\xca" + struct.pack(">f", bad) + b"\xca" + struct.pack(">f", 0.25)
    payload = bytes([0x90 | ARITY[TopK]]) + pack(arr[:-1])[1:] + scores
    assert reason_of(payload, TopK) == "invalid"


def test_oversize() -> None:
    for cls in LEAN_CLASSES:
        assert reason_of(bytes(MAX_LEAN_BYTES + 1), cls) == "oversize"
        assert reason_of(bytearray(MAX_LEAN_BYTES + 1), cls) == "oversize"
        assert reason_of(memoryview(bytes(MAX_LEAN_BYTES + 1)), cls) == "oversize"
        assert reason_of(b"\xc1" * (10 * MAX_LEAN_BYTES), cls) == "oversize"  # checked before parsing
        # A valid message padded past the limit is oversize too, though it would otherwise be malformed.
        payload = encode_lean(example(cls), CTX)
        assert reason_of(payload + bytes(MAX_LEAN_BYTES + 1 - len(payload)), cls) == "oversize"
    # Exactly at the limit it is parsed: an image whose data is too long for the model is invalid, not oversize.
    arr = elements(ImageFrame)
    head = pack(arr[:-1])[1:]
    data_len = MAX_LEAN_BYTES - 1 - len(head) - 3
    payload = bytes([0x97]) + head + b"\xc5" + struct.pack(">H", data_len) + bytes(data_len)
    assert len(payload) == MAX_LEAN_BYTES
    assert reason_of(payload, ImageFrame) == "invalid"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_bin_longer_than_the_payload_is_malformed(cls: type[LeanMessage]) -> None:
    arr = elements(cls)
    lie = bytes([0x90 | ARITY[cls]]) + pack(arr[:-1])[1:] + b"\xc6\xff\xff\xff\xff" + b"x"
    assert reason_of(lie, cls) == "malformed"


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("depth", [2, 10, 500, 1000, 1023, 1024, 5_000, 10_000])
def test_deep_nesting(cls: type[LeanMessage], depth: int) -> None:
    # msgpack parses nesting up to its own stack limit; the decoder must then refuse it without recursing.
    nested = b"\x91" * depth + b"\xc0"
    assert reason_of(nested, cls) in {"malformed", "version"}
    assert reason_of(b"\x92\x02" + nested, cls) in {"malformed"}  # arity
    head = pack(elements(cls))
    arity = bytes([0x90 | ARITY[cls]])
    body = head[1:]
    as_tag = arity + b"\x02" + nested + body[2:]
    assert reason_of(as_tag, cls) in {"malformed", "session"}
    as_capture = arity + body[:4] + nested + body[5:]  # 2, tag, seq 0, frame_id 7 are one byte each
    assert msgpack.unpackb(head)[CAPTURE_MS] == 0
    assert reason_of(as_capture, cls) in {"malformed", "invalid"}
    as_last = arity + pack(elements(cls)[:-1])[1:] + nested
    assert reason_of(as_last, cls) in {"malformed", "invalid"}


# -- fuzzing ----------------------------------------------------------------------------------------------------------
def assert_lean_outcome(payload: bytes, ctx: LeanContext = CTX) -> None:
    for cls in LEAN_CLASSES:
        out = outcome(payload, cls, ctx)
        if not isinstance(out, str):
            assert isinstance(out, cls)
            assert_finite(out)


@FUZZ
@given(payload=st.binary(max_size=400))
def test_random_bytes(payload: bytes) -> None:
    assert_lean_outcome(payload)


@FUZZ
@given(obj=msgpack_values | lean_values)
def test_random_msgpack_objects(obj: object) -> None:
    assert_lean_outcome(pack(obj))


@FUZZ
@given(rest=st.lists(lean_values, max_size=10))
def test_random_arrays_with_a_valid_head(rest: list[Any]) -> None:
    """Past version and tag checks, any array of lean-carriable values ends in a message or a WireError."""
    payload = pack([LEAN_VERSION, CTX.tag, *rest])
    for cls in LEAN_CLASSES:
        out = outcome(payload, cls)
        if isinstance(out, str):
            assert out in ({"malformed"} if len(rest) + 2 != ARITY[cls] else {"invalid"})
        else:
            assert_finite(out)


def expected_for(position: int, value: object) -> set[str]:
    """What a lean array with ``value`` at ``position`` (else valid, no strings or maps) may decode to."""
    is_int = type(value) is int
    if position == 0:
        return {"ok"} if is_int and value == LEAN_VERSION else {"version"}
    if position == 1:
        return {"ok"} if is_int and value == CTX.tag else {"session"}
    return {"ok", "invalid"}


@FUZZ
@given(pair=lean_messages(), data=st.data())
def test_mutated_messages(pair: tuple[LeanMessage, LeanContext], data: st.DataObject) -> None:
    """A valid lean array with one element replaced, dropped or added: the reason the position implies."""
    msg, _ = pair
    msg = msg.model_copy(update={"sensor_id": CTX.sensor_id, "session": CTX.session, "capture_ts": CTX.epoch_ts,
                                 "expires_ts": CTX.epoch_ts + CTX.expiry_s})
    arr = list(msgpack.unpackb(encode_lean(msg, CTX), raw=False))
    action = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if action == "replace":
        position = data.draw(st.integers(0, len(arr) - 1))
        arr[position] = data.draw(lean_values)
        expected = expected_for(position, arr[position])
    elif action == "drop":
        del arr[data.draw(st.integers(1, len(arr) - 1))]
        expected = {"malformed"}
    else:
        arr.insert(data.draw(st.integers(1, len(arr))), data.draw(lean_values))
        expected = {"malformed"}
    payload = pack(arr)
    assume(len(payload) <= MAX_LEAN_BYTES)
    out = outcome(payload, type(msg))
    assert ("ok" if isinstance(out, type(msg)) else out) in expected


@FUZZ
@given(pair=lean_messages(), data=st.data())
def test_truncated_and_flipped_payloads(pair: tuple[LeanMessage, LeanContext], data: st.DataObject) -> None:
    msg, ctx = pair
    payload = bytearray(encode_lean(msg, ctx))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255)), max_size=3))
    for pos, byte in flips:
        payload[pos] = byte
    assert_lean_outcome(bytes(payload[:cut]), ctx)
    assert_lean_outcome(bytes(payload), ctx)


@pytest.mark.parametrize("cls", LEAN_CLASSES, ids=lambda c: c.__name__)
def test_hostile_context_is_invalid_not_a_crash(cls: type[LeanMessage]) -> None:
    # A birth may announce any finite epoch: one so large that the expiry vanishes in rounding is refused cleanly.
    huge = LeanContext("cam-01", "s", epoch_ts=1e300, expiry_s=0.001)
    arr = elements(cls)
    arr[CAPTURE_MS] = 2**40 - 1
    assert reason_of(pack(arr), cls, huge) == "invalid"


@settings(deadline=None)
@given(ctx=lean_contexts(), msg=st.data())
def test_generated_messages_fit_their_context(ctx: LeanContext, msg: st.DataObject) -> None:
    made = msg.draw(st.one_of(fragments(ctx), topks(ctx), image_frames(ctx)))
    assert (made.sensor_id, made.session) == (ctx.sensor_id, ctx.session)
    assert made.expires_ts == made.capture_ts + ctx.expiry_s
    assert decode_lean(encode_lean(made, ctx), type(made), ctx) == made
