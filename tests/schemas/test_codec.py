"""Codec: round trips of the JSON messages and the capture Frame, and garbage that must always end in a WireError with
the right reason. The lean messages (fragments, top-k, images) are refused here; tests/schemas/test_lean.py has them."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nairbus.schemas.codec import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_MSGPACK,
    MAX_JSON_BYTES,
    MAX_MSGPACK_BYTES,
    WIRE_REASONS,
    WireError,
    content_type,
    decode,
    decode_any,
    encode,
    max_bytes,
)
from nairbus.schemas.messages import (
    MESSAGE_TYPES,
    Birth,
    Fragment,
    Frame,
    ImageFrame,
    Message,
    ModelRef,
    Result,
    Stats,
    Status,
    TopK,
)
from tests.schemas.strategies import json_values, messages, msgpack_values
from tests.schemas.test_messages import birth, fragment, frame, image, image_frame, nair, result, status, topk, vp

LEAN_CLASSES: list[type[Message]] = [Fragment, TopK, ImageFrame]
MESSAGE_CLASSES = [cls for cls in MESSAGE_TYPES.values() if cls not in LEAN_CLASSES]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reason_of(payload: object, expected: type[Message]) -> str:
    with pytest.raises(WireError) as info:
        decode(payload, expected)  # type: ignore[arg-type]
    assert info.value.reason in WIRE_REASONS
    return info.value.reason


def any_reason_of(payload: bytes, ct: str) -> str:
    with pytest.raises(WireError) as info:
        decode_any(payload, ct)
    assert info.value.reason in WIRE_REASONS
    return info.value.reason


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def dump(msg: Message) -> dict[str, Any]:
    return msg.model_dump(mode="json" if content_type(msg) == CONTENT_TYPE_JSON else "python")


def encode_dict(obj: object, ct: str) -> bytes:
    return pack(obj) if ct == CONTENT_TYPE_MSGPACK else json.dumps(obj).encode()


# -- round trips ----------------------------------------------------------------------------------------------------
@FUZZ
@given(msg=messages())
def test_round_trip_every_kind(msg: Message) -> None:
    payload = encode(msg)
    ct = content_type(msg)
    assert len(payload) <= max_bytes(ct)
    assert decode(payload, type(msg)) == msg
    assert decode_any(payload, ct) == msg
    assert encode(decode(payload, type(msg))) == payload


@pytest.mark.parametrize("mode", ["nair", "vp", "image", "auto"])
def test_birth_of_every_mode_round_trips(mode: str) -> None:
    sections: dict[str, Any] = {"nair": nair() if mode in ("nair", "auto") else None,
                                "vp": vp() if mode == "vp" else None,
                                "image": image() if mode in ("image", "auto") else None}
    made = birth(mode=mode, **sections)
    obj = json.loads(encode(made))
    assert obj["epoch_ts"] == 1.0
    assert obj["expiry_ms"] == 500
    assert decode(encode(made), Birth) == made


def test_content_types() -> None:
    assert content_type(Frame) == content_type(frame()) == CONTENT_TYPE_MSGPACK
    for cls in (Status, Birth, Result, Stats):
        assert content_type(cls) == CONTENT_TYPE_JSON
    assert content_type(status()) == CONTENT_TYPE_JSON
    assert max_bytes(CONTENT_TYPE_MSGPACK) == MAX_MSGPACK_BYTES
    assert max_bytes("application/json; charset=utf-8") == MAX_JSON_BYTES
    with pytest.raises(TypeError):
        content_type(ModelRef)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported"):
        max_bytes("text/plain")


@pytest.mark.parametrize("msg", [fragment(), topk(), image_frame()], ids=lambda m: m.kind)
def test_lean_messages_are_not_the_codecs(msg: Fragment | TopK | ImageFrame) -> None:
    # Fragments, top-k and images travel lean (nairbus.schemas.lean); the map codec refuses them as a programming error.
    with pytest.raises(TypeError, match="lean"):
        content_type(msg)
    with pytest.raises(TypeError, match="lean"):
        content_type(type(msg))
    with pytest.raises(TypeError, match="lean"):
        encode(msg)
    with pytest.raises(TypeError, match="lean"):
        decode(pack(msg.model_dump()), type(msg))


@pytest.mark.parametrize("kind", ["frag", "topk", "image"])
@pytest.mark.parametrize("version", [1, 2])
def test_lean_kinds_as_maps_are_refused(kind: str, version: int) -> None:
    """A map that claims a lean kind, under either content type: never decoded, by version or kind."""
    msg = {"frag": fragment(), "topk": topk(), "image": image_frame()}[kind]
    obj = msg.model_dump() | {"v": version}
    expected = "kind" if version == 1 else "version"
    assert any_reason_of(pack(obj), CONTENT_TYPE_MSGPACK) == expected
    as_json = {k: v.hex() if isinstance(v, bytes) else v for k, v in obj.items()}
    assert any_reason_of(json.dumps(as_json).encode(), CONTENT_TYPE_JSON) == expected


def test_json_is_compact_and_msgpack_binary() -> None:
    payload = encode(status())
    assert b" " not in payload
    assert json.loads(payload)["kind"] == "status"
    obj = msgpack.unpackb(encode(frame()), raw=False)
    assert isinstance(obj["pixels"], bytes)
    assert obj["v"] == 1
    assert obj["kind"] == "frame"


def test_decode_any_ignores_content_type_parameters() -> None:
    assert decode_any(encode(status()), "Application/JSON; charset=utf-8") == status()
    assert decode_any(encode(frame()), " application/MSGPACK ;x=y") == frame()


def test_wire_error_is_readable() -> None:
    err = WireError("invalid", "x" * 1000)
    assert str(err).startswith("invalid: ")
    assert len(err.detail) <= 300
    assert isinstance(err, ValueError)
    assert "session" in WIRE_REASONS
    assert {"oversize", "malformed", "version", "kind", "session", "invalid"} == WIRE_REASONS


# -- targeted rejections --------------------------------------------------------------------------------------------
def test_oversize() -> None:
    assert reason_of(b"\x80" * (MAX_MSGPACK_BYTES + 1), Frame) == "oversize"
    assert reason_of(b" " * (MAX_JSON_BYTES + 1), Status) == "oversize"
    assert reason_of(bytearray(MAX_JSON_BYTES + 1), Status) == "oversize"
    assert reason_of(memoryview(bytes(MAX_MSGPACK_BYTES + 1)), Frame) == "oversize"
    with pytest.raises(WireError) as info:
        decode_any(bytearray(MAX_MSGPACK_BYTES + 1), CONTENT_TYPE_MSGPACK)
    assert info.value.reason == "oversize"
    # A valid msgpack message padded past the limit is still oversize, checked before parsing.
    obj = dump(frame()) | {"pad": b"x" * MAX_MSGPACK_BYTES}
    assert reason_of(pack(obj), Frame) == "oversize"
    # JSON's limit is larger than msgpack's: a msgpack-sized JSON payload is parsed, not refused by size.
    assert reason_of(b" " * (MAX_MSGPACK_BYTES + 1), Status) == "malformed"


def test_encode_refuses_oversize() -> None:
    big = birth(labels=tuple("x" * 256 for _ in range(1000)), nair=nair())
    with pytest.raises(WireError) as info:
        encode(big)
    assert info.value.reason == "oversize"


@pytest.mark.parametrize("payload", [None, "text", 5, [b"x"], bytearray, object()])
def test_non_bytes_payload_is_malformed(payload: object) -> None:
    assert reason_of(payload, Status) == "malformed"
    assert reason_of(payload, Frame) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x91", b"\x81\xa1v", pack([1, 2]), pack("v"), pack(None), pack(b"v"), pack(1),
     pack(msgpack.ExtType(1, b"x")), pack(msgpack.Timestamp(1))],
)
def test_malformed_msgpack(payload: bytes) -> None:
    assert reason_of(payload, Frame) == "malformed"


def test_truncated_msgpack_is_malformed() -> None:
    payload = encode(frame())
    for cut in range(len(payload)):
        assert reason_of(payload[:cut], Frame) == "malformed"
    assert reason_of(payload + b"\x00", Frame) == "malformed"  # trailing data


def test_truncated_json_is_malformed() -> None:
    payload = encode(birth())
    for cut in range(len(payload)):
        assert reason_of(payload[:cut], Birth) == "malformed"
    assert reason_of(payload + b"{}", Birth) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"[]",
        b"1",
        b'"status"',
        b"null",
        b"\xff\xfe{}",
        '{"v": 1}'.encode("utf-16"),
        b'{"v": 1, "v": 1, "kind": "status"}',
        b'{"v": 1, "kind": "status"} x',
        b"[" * 30_000 + b"]" * 30_000,
        b'{"v": 1, "kind": "status", "session": "\\ud800"}',
        b'{"v": 1, "kind": "status", "ts": 1' + b"0" * 5000 + b"}",  # past Python's int digit limit
    ],
)
def test_malformed_json(payload: bytes) -> None:
    assert reason_of(payload, Status) == "malformed"


@pytest.mark.parametrize("depth", [10, 500, 1000, 1023, 5_000, 10_000])
def test_deep_msgpack_nesting(depth: int) -> None:
    # Deep enough for msgpack's own stack limit: malformed. Shallower: parsed, and refused without recursing
    # (the repr of a 1000-deep tuple in an error message would raise RecursionError).
    nested = b"\x91" * depth + b"\xc0"
    assert reason_of(nested, Frame) == "malformed"  # not a map
    assert reason_of(b"\x81\xa1a" * min(depth, 5_000) + b"\xc0", Frame) in {"malformed", "version"}
    as_version = b"\x82\xa1v" + nested + b"\xa4kind\xa5frame"
    as_kind = b"\x82\xa1v\x01\xa4kind" + nested
    as_pixels = pack(dump(frame()))[:-7] + b"\xa6pixels" + nested  # the last key replaced
    assert reason_of(as_version, Frame) in {"malformed", "version"}
    assert any_reason_of(as_version, CONTENT_TYPE_MSGPACK) in {"malformed", "version"}
    assert reason_of(as_kind, Frame) in {"malformed", "kind"}
    assert reason_of(as_pixels, Frame) in {"malformed", "invalid"}


@pytest.mark.parametrize("depth", [10, 500, 900, 990, 5_000])
def test_deep_json_nesting(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    assert reason_of(b'{"v":' + nested + b"}", Status) in {"malformed", "version"}
    assert reason_of(b'{"v":1,"kind":' + nested + b"}", Status) in {"malformed", "kind"}
    assert reason_of(encode(status())[:-1] + b',"x":' + nested + b"}", Status) in {"malformed", "invalid"}


@pytest.mark.parametrize("msg", [status(), birth(), frame(), result()], ids=lambda m: m.kind)
@pytest.mark.parametrize("version", ["missing", 0, 2, "1", 1.0, True, None, [1], {"v": 1}, -1, 2**64 - 1])
def test_wrong_version(msg: Message, version: object) -> None:
    obj = dump(msg)
    if version == "missing":
        del obj["v"]
    else:
        obj["v"] = version
    ct = content_type(msg)
    assert reason_of(encode_dict(obj, ct), type(msg)) == "version"
    assert any_reason_of(encode_dict(obj, ct), ct) == "version"
    # Version is checked before anything else: a broken body of another version is still "version".
    obj["extra"] = float("nan") if ct == CONTENT_TYPE_MSGPACK else "junk"
    obj.pop("kind")
    assert reason_of(encode_dict(obj, ct), type(msg)) == "version"


@pytest.mark.parametrize("msg", [status(), birth(), frame(), result()], ids=lambda m: m.kind)
@pytest.mark.parametrize("kind", ["missing", "nope", 1, None, "STATUS", ["frame"], "frag", "topk", "image"])
def test_wrong_kind(msg: Message, kind: object) -> None:
    obj = dump(msg)
    if kind == "missing":
        del obj["kind"]
    else:
        obj["kind"] = kind
    assert reason_of(encode_dict(obj, content_type(msg)), type(msg)) == "kind"
    assert any_reason_of(encode_dict(obj, content_type(msg)), content_type(msg)) == "kind"


def test_decoding_as_another_kind_is_kind() -> None:
    assert reason_of(encode(result()), Status) == "kind"
    assert reason_of(encode(status()), Birth) == "kind"
    # A JSON kind under the msgpack content type (and the reverse) is a kind error for decode_any.
    with pytest.raises(WireError) as info:
        decode_any(pack(dump(status())), CONTENT_TYPE_MSGPACK)
    assert info.value.reason == "kind"
    with pytest.raises(WireError) as info:
        decode_any(frame().model_dump_json().encode(), CONTENT_TYPE_JSON)
    assert info.value.reason == "kind"
    # decode picks the codec by the expected class, so a JSON status decoded as a Frame is not msgpack.
    assert reason_of(encode(status()), Frame) == "malformed"


@pytest.mark.parametrize("ct", ["text/plain", "", "application/cbor", "application/msgpack+x", ";"])
def test_unsupported_content_type(ct: str) -> None:
    assert any_reason_of(encode(status()), ct) == "malformed"


@pytest.mark.parametrize("ct", [None, 1, b"application/json"])
def test_content_type_not_a_string(ct: object) -> None:
    assert any_reason_of(encode(status()), ct) == "malformed"  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", ["capture_ts", "expires_ts"])
def test_nan_inf_in_msgpack_is_invalid(bad: float, field: str) -> None:
    obj = dump(frame()) | {field: bad}
    assert reason_of(pack(obj), Frame) == "invalid"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(("cls", "field"), [(Result, "confidence"), (Birth, "epoch_ts"), (Birth, "deadline_ms")])
def test_nan_inf_in_json_is_invalid(literal: str, cls: type[Message], field: str) -> None:
    msg = result() if cls is Result else birth()
    obj = dump(msg)
    text = json.dumps(obj | {field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', literal)
    assert reason_of(text.encode(), cls) == "invalid"


def test_wrong_pixel_count_is_invalid() -> None:
    obj = dump(frame())
    for pixels in (bytes(5), bytes(7), b"", "000000"):
        assert reason_of(pack(obj | {"pixels": pixels}), Frame) == "invalid"
    assert reason_of(pack(obj | {"height": 3}), Frame) == "invalid"


def test_non_tiling_bit_bands_are_invalid() -> None:
    obj = dump(birth())
    obj["nair"]["bit_bands"] = [{"end": 10, "bits": 8}, {"end": 10, "bits": 4}, {"end": 100, "bits": 4}]
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"
    obj["nair"]["bit_bands"] = [{"end": 10, "bits": 8}, {"end": 99, "bits": 4}]
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"
    obj["nair"]["bit_bands"] = [{"end": 100, "bits": 17}]
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"
    obj["nair"]["bit_bands"] = []
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"


@pytest.mark.parametrize(
    "over",
    [
        {"mode": "vp"},
        {"mode": "image"},
        {"mode": "auto"},
        {"mode": "auto", "image": None},
        {"mode": "image", "nair": None},
        {"vp": {"variant": "r18", "weight": 1.0, "k": 1}},
        {"image": {"codecs": [], "height": 4, "width": 4}},
        {"image": {"codecs": ["png"], "height": 4}},
        {"fragments": [{"start": 0, "end": 100}]},  # the removed fragment plan
        {"nair": {"artifact_sha256": "ab" * 32, "split": "x", "ir_shape": [1, 1, 1], "n_components": 1,
                  "bits": 8, "fragments": [{"start": 0, "end": 1}]}},
        {"epoch_ts": None},
        {"expiry_ms": 1.5},
        {"expiry_ms": "500"},
        {"expiry_ms": 0},
    ],
)
def test_birth_rules_hold_in_json(over: dict[str, Any]) -> None:
    obj = dump(birth(mode="auto", image=image())) | {"mode": "nair", "image": None} | over
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"


@pytest.mark.parametrize("missing", ["epoch_ts", "expiry_ms"])
def test_birth_without_epoch_or_expiry_is_invalid(missing: str) -> None:
    obj = dump(birth())
    del obj[missing]
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [("representation", "auto"), ("representation", None), ("components_received", -1),
     ("components_received", 2**64), ("components_received", 1.5), ("codec", ""), ("codec", 7),
     ("wire_bytes", True), ("wire_bytes", -3), ("wire_bytes", "12")],
)
def test_result_new_fields_in_json_are_checked(field: str, value: object) -> None:
    assert reason_of(json.dumps(dump(result()) | {field: value}).encode(), Result) == "invalid"


def test_result_new_fields_in_json() -> None:
    made = result(representation="image", codec="png", wire_bytes=2**64 - 1, components_received=5)
    obj = json.loads(encode(made))
    assert (obj["representation"], obj["codec"], obj["wire_bytes"], obj["components_received"]) == (
        "image", "png", 2**64 - 1, 5)
    assert decode(encode(made), Result) == made
    # An older fusion's result without the new fields still decodes, with the defaults.
    old = {k: v for k, v in dump(result()).items()
           if k not in ("representation", "components_received", "codec", "wire_bytes")}
    assert decode(json.dumps(old).encode(), Result) == result()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("frame_id", 1.0),
        ("frame_id", True),
        ("frame_id", -1),
        ("stream_id", b"main"),
        ("stream_id", "a/b"),
        ("height", "2"),
        ("extra", 1),
        ("pixels", (0, 1, 2, 3, 4, 5)),
        ("pixels", None),
        ("session", ""),
    ],
)
def test_wrong_types_in_msgpack_are_invalid(field: str, value: object) -> None:
    assert reason_of(pack(dump(frame()) | {field: value}), Frame) == "invalid"


def test_bytes_keys_and_shapes_are_invalid() -> None:
    obj = dump(frame())
    obj[b"v2"] = 1  # type: ignore[index]
    assert reason_of(pack(obj), Frame) == "invalid"
    assert reason_of(pack(dump(frame()) | {"height": [[2]]}), Frame) == "invalid"
    assert reason_of(pack(dump(frame()) | {"pixels": {"a": 1}}), Frame) == "invalid"


@pytest.mark.parametrize(("field", "value"), [("ts", "1"), ("ts", True), ("agent_id", 5), ("role", None)])
def test_wrong_types_in_json_are_invalid(field: str, value: object) -> None:
    assert reason_of(json.dumps(dump(status()) | {field: value}).encode(), Status) == "invalid"


# -- fuzzing --------------------------------------------------------------------------------------------------------
def outcome(payload: bytes, cls: type[Message] | None = None, ct: str = CONTENT_TYPE_JSON) -> Message | str:
    """The decoded message, or the WireError's reason (any other exception propagates and fails the test)."""
    try:
        return decode_any(payload, ct) if cls is None else decode(payload, cls)
    except WireError as err:
        return err.reason


def assert_wire_error_or_message(payload: bytes, ct: str) -> None:
    """Decoding garbage ends in a WireError with a known reason (or, vanishingly rarely, a valid message)."""
    for cls in MESSAGE_CLASSES:
        out = outcome(payload, cls)
        assert isinstance(out, cls) or out in WIRE_REASONS - {"session"}
    out = outcome(payload, ct=ct)
    assert isinstance(out, tuple(MESSAGE_CLASSES)) or out in WIRE_REASONS - {"session"}


@FUZZ
@given(payload=st.binary(max_size=300), ct=st.sampled_from([CONTENT_TYPE_MSGPACK, CONTENT_TYPE_JSON, "x/y"]))
def test_random_bytes(payload: bytes, ct: str) -> None:
    assert_wire_error_or_message(payload, ct)


@FUZZ
@given(obj=msgpack_values)
def test_random_msgpack_objects(obj: object) -> None:
    assert_wire_error_or_message(pack(obj), CONTENT_TYPE_MSGPACK)


@FUZZ
@given(obj=json_values)
def test_random_json_objects(obj: object) -> None:
    assert_wire_error_or_message(json.dumps(obj).encode(), CONTENT_TYPE_JSON)


@FUZZ
@given(msg=messages(), data=st.data())
def test_mutated_messages(msg: Message, data: st.DataObject) -> None:
    """A valid message with one field replaced, dropped or added: a valid message or a WireError, never a crash."""
    ct = content_type(msg)
    obj = dump(msg)
    action = data.draw(st.sampled_from(["replace", "drop", "add"]))
    values = msgpack_values if ct == CONTENT_TYPE_MSGPACK else json_values
    if action == "add":
        obj[data.draw(st.text(max_size=10))] = data.draw(values)
    else:
        key = data.draw(st.sampled_from(sorted(obj)))
        if action == "drop":
            del obj[key]
        else:
            obj[key] = data.draw(values)
    payload = encode_dict(obj, ct)
    assume(len(payload) <= max_bytes(ct))
    out = outcome(payload, type(msg))
    if not isinstance(out, type(msg)):
        expected = {"version"} if obj.get("v") != 1 or type(obj.get("v")) is not int else {"kind", "invalid"}
        assert out in expected


@FUZZ
@given(msg=messages(), data=st.data())
def test_truncated_and_flipped_payloads(msg: Message, data: st.DataObject) -> None:
    payload = bytearray(encode(msg))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255)), max_size=3))
    for pos, byte in flips:
        payload[pos] = byte
    garbled = bytes(payload[:cut])
    for cls in MESSAGE_CLASSES:
        out = outcome(garbled, cls)
        if isinstance(out, str):
            assert out in WIRE_REASONS - {"session"}
        else:
            assert isinstance(out, cls)
            assert all(not isinstance(x, float) or math.isfinite(x) for x in out.model_dump().values())
