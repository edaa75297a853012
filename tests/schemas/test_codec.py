"""Codec: round trips of every message kind, and garbage that must always end in a WireError with the right reason."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.codec import (
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
from schemas.messages import MESSAGE_TYPES, Birth, Fragment, Message, ModelRef, Result, Stats, Status, TopK
from tests.schemas.strategies import json_values, messages, msgpack_values
from tests.schemas.test_messages import birth, fragment, nair, result, status, topk

MESSAGE_CLASSES = list(MESSAGE_TYPES.values())
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reason_of(payload: bytes, expected: type[Message]) -> str:
    with pytest.raises(WireError) as info:
        decode(payload, expected)
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


def test_content_types() -> None:
    assert content_type(Fragment) == content_type(TopK) == CONTENT_TYPE_MSGPACK
    for cls in (Status, Birth, Result, Stats):
        assert content_type(cls) == CONTENT_TYPE_JSON
    assert content_type(fragment()) == CONTENT_TYPE_MSGPACK
    assert content_type(status()) == CONTENT_TYPE_JSON
    assert max_bytes(CONTENT_TYPE_MSGPACK) == MAX_MSGPACK_BYTES
    assert max_bytes("application/json; charset=utf-8") == MAX_JSON_BYTES
    with pytest.raises(TypeError):
        content_type(ModelRef)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported"):
        max_bytes("text/plain")


def test_json_is_compact_and_msgpack_binary() -> None:
    payload = encode(status())
    assert b" " not in payload
    assert json.loads(payload)["kind"] == "status"
    frag = msgpack.unpackb(encode(fragment()), raw=False)
    assert isinstance(frag["data"], bytes)
    assert frag["v"] == 1


def test_decode_any_ignores_content_type_parameters() -> None:
    assert decode_any(encode(status()), "Application/JSON; charset=utf-8") == status()


def test_wire_error_is_readable() -> None:
    err = WireError("invalid", "x" * 1000)
    assert str(err).startswith("invalid: ")
    assert len(err.detail) <= 300
    assert isinstance(err, ValueError)


# -- targeted rejections --------------------------------------------------------------------------------------------
def test_oversize() -> None:
    assert reason_of(b"\x80" * (MAX_MSGPACK_BYTES + 1), Fragment) == "oversize"
    assert reason_of(b" " * (MAX_JSON_BYTES + 1), Status) == "oversize"
    with pytest.raises(WireError) as info:
        decode_any(bytearray(MAX_MSGPACK_BYTES + 1), CONTENT_TYPE_MSGPACK)
    assert info.value.reason == "oversize"
    # A valid msgpack message padded past the limit is still oversize, checked before parsing.
    obj = dump(topk()) | {"pad": b"x" * MAX_MSGPACK_BYTES}
    assert reason_of(pack(obj), TopK) == "oversize"


def test_encode_refuses_oversize() -> None:
    big = birth(labels=tuple("x" * 256 for _ in range(1000)), nair=nair())
    with pytest.raises(WireError) as info:
        encode(big)
    assert info.value.reason == "oversize"


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\x91", b"\x81\xa1v", pack([1, 2]), pack("v"), pack(None)])
def test_malformed_msgpack(payload: bytes) -> None:
    assert reason_of(payload, Fragment) == "malformed"


def test_truncated_msgpack_is_malformed() -> None:
    payload = encode(fragment())
    for cut in range(len(payload)):
        assert reason_of(payload[:cut], Fragment) == "malformed"
    assert reason_of(payload + b"\x00", Fragment) == "malformed"  # trailing data


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
    ],
)
def test_malformed_json(payload: bytes) -> None:
    assert reason_of(payload, Status) == "malformed"


def test_deep_msgpack_nesting_is_malformed() -> None:
    assert reason_of(b"\x91" * 10_000 + b"\xc0", TopK) == "malformed"
    assert reason_of(b"\x81\xa1a" * 5_000 + b"\xc0", TopK) == "malformed"


@pytest.mark.parametrize("msg", [status(), birth(), fragment(), topk(), result()])
@pytest.mark.parametrize("version", ["missing", 0, 2, "1", 1.0, True, None, [1]])
def test_wrong_version(msg: Message, version: object) -> None:
    obj = dump(msg)
    if version == "missing":
        del obj["v"]
    else:
        obj["v"] = version
    ct = content_type(msg)
    assert reason_of(encode_dict(obj, ct), type(msg)) == "version"
    # Version is checked before anything else: a broken body of another version is still "version".
    obj["extra"] = float("nan") if ct == CONTENT_TYPE_MSGPACK else "junk"
    obj.pop("kind")
    assert reason_of(encode_dict(obj, ct), type(msg)) == "version"


@pytest.mark.parametrize("msg", [status(), birth(), fragment(), topk(), result()])
@pytest.mark.parametrize("kind", ["missing", "nope", 1, None, "STATUS"])
def test_wrong_kind(msg: Message, kind: object) -> None:
    obj = dump(msg)
    if kind == "missing":
        del obj["kind"]
    else:
        obj["kind"] = kind
    assert reason_of(encode_dict(obj, content_type(msg)), type(msg)) == "kind"


def test_decoding_as_another_kind_is_kind() -> None:
    assert reason_of(encode(topk()), Fragment) == "kind"
    assert reason_of(encode(status()), Birth) == "kind"
    # A JSON kind under the msgpack content type (and the reverse) is a kind error for decode_any.
    with pytest.raises(WireError) as info:
        decode_any(pack(dump(status())), CONTENT_TYPE_MSGPACK)
    assert info.value.reason == "kind"
    with pytest.raises(WireError) as info:
        decode_any(topk().model_dump_json().encode(), CONTENT_TYPE_JSON)
    assert info.value.reason == "kind"


@pytest.mark.parametrize("ct", ["text/plain", "", "application/cbor", "application/msgpack+x"])
def test_unsupported_content_type(ct: str) -> None:
    with pytest.raises(WireError) as info:
        decode_any(encode(status()), ct)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", ["capture_ts", "expires_ts"])
def test_nan_inf_in_msgpack_is_invalid(bad: float, field: str) -> None:
    obj = dump(fragment()) | {field: bad}
    assert reason_of(pack(obj), Fragment) == "invalid"
    obj = dump(topk()) | {"scores": (0.5, bad)}
    assert reason_of(pack(obj), TopK) == "invalid"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_inf_in_json_is_invalid(literal: str) -> None:
    text = encode(result()).decode().replace('"confidence":0.9', f'"confidence":{literal}')
    assert literal in text
    assert reason_of(text.encode(), Result) == "invalid"


def test_wrong_data_length_is_invalid() -> None:
    obj = dump(fragment())
    for data in (bytes(4), bytes(6), b"", "00000"):
        assert reason_of(pack(obj | {"data": data}), Fragment) == "invalid"
    assert reason_of(pack(obj | {"bits": 8}), Fragment) == "invalid"  # 10 components at 8 bits need 10 bytes


def test_non_contiguous_plan_is_invalid() -> None:
    obj = dump(birth())
    obj["nair"]["fragments"] = [{"start": 0, "end": 10}, {"start": 20, "end": 100}]
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"
    obj["nair"]["fragments"] = [{"start": 0, "end": 10}, {"start": 10, "end": 99}]
    assert reason_of(json.dumps(obj).encode(), Birth) == "invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("frame_id", 1.0),
        ("frame_id", True),
        ("frame_id", -1),
        ("sensor_id", b"cam"),
        ("sensor_id", "a/b"),
        ("bits", "4"),
        ("extra", 1),
        ("classes", (1, 2)),
        ("data", None),
    ],
)
def test_wrong_types_in_msgpack_are_invalid(field: str, value: object) -> None:
    assert reason_of(pack(dump(fragment()) | {field: value}), Fragment) == "invalid"


def test_bytes_keys_and_shapes_are_invalid() -> None:
    obj = dump(topk())
    obj[b"v2"] = 1  # type: ignore[index]
    assert reason_of(pack(obj), TopK) == "invalid"
    assert reason_of(pack(dump(topk()) | {"classes": [[1], [2]]}), TopK) == "invalid"


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
        assert isinstance(out, cls) or out in WIRE_REASONS
    out = outcome(payload, ct=ct)
    assert isinstance(out, tuple(MESSAGE_CLASSES)) or out in WIRE_REASONS


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
            assert out in WIRE_REASONS
        else:
            assert isinstance(out, cls)
            assert all(not isinstance(x, float) or math.isfinite(x) for x in out.model_dump().values())
