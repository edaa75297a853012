"""Bytes on the wire: encode messages and decode untrusted payloads into validated messages.

The capture agent's :class:`~nairbus.schemas.messages.Frame` travels as a msgpack map (:data:`CONTENT_TYPE_MSGPACK`),
the human- and hub-facing messages as compact UTF-8 JSON (:data:`CONTENT_TYPE_JSON`); publishers set the MQTT 5
content-type property to :func:`content_type`. The high-rate fragments, top-k and images are lean positional arrays
instead (:mod:`nairbus.schemas.lean`).

Decoding never raises anything but :class:`WireError`, whose ``reason`` is one of :data:`WIRE_REASONS`:

``oversize``  payload larger than the codec's limit (checked before parsing)
``malformed`` not valid msgpack / UTF-8 JSON (duplicate keys included), not a map at the top, unsupported content
              type
``version``   ``v`` missing or not :data:`~nairbus.schemas.messages.SCHEMA_VERSION` (checked before validation)
``kind``      ``kind`` missing or not the expected one (or not carried by that content type)
``session``   (lean messages, :mod:`nairbus.schemas.lean`) the session tag is not the sensor's current session's
``invalid``   the model's validation failed: wrong types or shapes, out-of-range values, NaN/inf, ...

>>> from nairbus.schemas.messages import Status
>>> msg = Status(agent_id="cam-01", role="sensor", state="online", session="s1", ts=1.5)
>>> decode(encode(msg), Status) == msg
True
>>> try:
...     decode(b'{"v": 2, "kind": "status"}', Status)
... except WireError as err:
...     print(err.reason)
version
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeVar, get_args

import msgpack  # type: ignore[import-untyped]
from pydantic import ValidationError

from nairbus.schemas.messages import (
    MAX_TOPK,
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    Frame,
    Message,
    WireModel,
)

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_MSGPACK",
    "MAX_JSON_BYTES",
    "MAX_MSGPACK_BYTES",
    "WIRE_REASONS",
    "ContentType",
    "Payload",
    "WireError",
    "WireReason",
    "content_type",
    "decode",
    "decode_any",
    "encode",
    "max_bytes",
]

CONTENT_TYPE_MSGPACK: Final = "application/msgpack"
CONTENT_TYPE_JSON: Final = "application/json"
ContentType = Literal["application/msgpack", "application/json"]

MAX_MSGPACK_BYTES: Final = 16384
"""Largest msgpack payload accepted (or produced)."""
MAX_JSON_BYTES: Final = 65536
"""Largest JSON payload accepted (or produced)."""

WireReason = Literal["oversize", "malformed", "version", "kind", "session", "invalid"]
WIRE_REASONS: Final[frozenset[str]] = frozenset(get_args(WireReason))

_MSGPACK_TYPES: Final[frozenset[type[Message]]] = frozenset({Frame})
_LEAN_KINDS: Final = frozenset({"frag", "topk", "image"})
_DETAIL_MAX: Final = 300

M = TypeVar("M", bound=WireModel)
"""A message class; :func:`decode` raises ``TypeError`` for a WireModel that is not one of :data:`MESSAGE_TYPES`."""
Payload = bytes | bytearray | memoryview
_ALL_TYPES: Final[frozenset[type[Message]]] = frozenset(MESSAGE_TYPES.values())


class WireError(ValueError):
    """A payload (or a message to encode) that does not satisfy the wire contract.

    ``reason`` is a short machine-readable token from :data:`WIRE_REASONS`, fit for a counter label; ``detail`` is a
    bounded human-readable explanation, fit for a log line.
    """

    reason: WireReason
    detail: str

    def __init__(self, reason: WireReason, detail: str) -> None:
        detail = detail if len(detail) <= _DETAIL_MAX else detail[: _DETAIL_MAX - 3] + "..."
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# -- content types and limits ---------------------------------------------------------------------------------------
def _brief(value: object, limit: int = 40) -> str:
    """A short repr of an untrusted value: scalars as such, containers by type only (the repr of a deeply nested
    array, which msgpack parses up to its own stack limit, would raise ``RecursionError``)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return repr(value)[:limit]
    return f"<{type(value).__name__}>"


def _message_class(msg_or_cls: object) -> type[Message]:
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    for known in _ALL_TYPES:
        if cls is known:
            return known
    raise TypeError(f"{cls.__name__} is not a nairbus message type")


def content_type(msg_or_cls: Message | type[Message]) -> ContentType:
    """The MQTT content type a message (instance or class) travels with.

    Lean messages (fragments, top-k, images) carry no content type on the wire; their format is the birth's.
    """
    if _message_class(msg_or_cls).model_fields["kind"].default in _LEAN_KINDS:
        raise TypeError("fragments, top-k and images travel lean: use nairbus.schemas.lean.encode_lean / decode_lean")
    return CONTENT_TYPE_MSGPACK if _message_class(msg_or_cls) in _MSGPACK_TYPES else CONTENT_TYPE_JSON


def max_bytes(content_type: str) -> int:
    """The payload size limit for a content type (``ValueError`` if it is not one of nairbus's)."""
    ct = _normalise_content_type(content_type)
    if ct == CONTENT_TYPE_MSGPACK:
        return MAX_MSGPACK_BYTES
    if ct == CONTENT_TYPE_JSON:
        return MAX_JSON_BYTES
    raise ValueError(f"unsupported content type {content_type!r}")


def _normalise_content_type(value: str) -> str:
    # "application/json; charset=utf-8" -> "application/json"
    return value.split(";", 1)[0].strip().lower()


# -- encode ---------------------------------------------------------------------------------------------------------
def encode(msg: Message) -> bytes:
    """Serialise a message for the wire: msgpack for Fragment/TopK, compact JSON for the others.

    Raises :class:`WireError` (``oversize``) if the result exceeds the receiving side's limit, so nothing is
    published that every receiver would reject; ``TypeError`` for a non-message.
    """
    ct = content_type(msg)
    if ct == CONTENT_TYPE_MSGPACK:
        payload: bytes = msgpack.packb(msg.model_dump(mode="python"), use_bin_type=True)
        limit = MAX_MSGPACK_BYTES
    else:
        payload = msg.model_dump_json().encode("utf-8")
        limit = MAX_JSON_BYTES
    if len(payload) > limit:
        raise WireError("oversize", f"encoded {msg.kind} is {len(payload)} bytes, limit {limit}")
    return payload


# -- decode ---------------------------------------------------------------------------------------------------------
def decode(payload: Payload, expected: type[M]) -> M:
    """Decode and validate an untrusted payload that must be an ``expected`` message.

    Raises :class:`WireError` for every problem with the payload (see the module docs for the reasons), ``TypeError``
    if ``expected`` is not a message class.
    """
    cls = _message_class(expected)
    ct = content_type(cls)
    data = _as_bytes(payload, max_bytes(ct))
    obj = _parse(data, ct)
    _check_header(obj, frozenset({cls.model_fields["kind"].default}), ct)
    return _validate(expected, obj, data, ct)


def decode_any(payload: Payload, content_type: str) -> Message:
    """Decode and validate an untrusted payload of any message kind, by its MQTT content type.

    The content type picks the codec (parameters such as ``; charset=utf-8`` are ignored); ``kind`` then picks the
    model, and must be a kind that travels with that content type. An unsupported content type is ``malformed``.
    """
    if not isinstance(content_type, str):
        raise WireError("malformed", f"content type must be a str, got {type(content_type).__name__}")
    ct = _normalise_content_type(content_type)
    if ct not in (CONTENT_TYPE_MSGPACK, CONTENT_TYPE_JSON):
        raise WireError("malformed", f"unsupported content type {content_type!r}")
    data = _as_bytes(payload, max_bytes(ct))
    obj = _parse(data, ct)
    kinds = frozenset(k for k, cls in MESSAGE_TYPES.items()
                      if k not in _LEAN_KINDS and (cls in _MSGPACK_TYPES) == (ct == CONTENT_TYPE_MSGPACK))
    kind = _check_header(obj, kinds, ct)
    return _validate(MESSAGE_TYPES[kind], obj, data, ct)


def _as_bytes(payload: object, limit: int) -> bytes:
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, bytearray | memoryview):
        if memoryview(payload).nbytes > limit:
            raise WireError("oversize", f"payload is {memoryview(payload).nbytes} bytes, limit {limit}")
        data = bytes(payload)
    else:
        raise WireError("malformed", f"payload must be bytes, got {type(payload).__name__}")
    if len(data) > limit:
        raise WireError("oversize", f"payload is {len(data)} bytes, limit {limit}")
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse(data: bytes, ct: str) -> object:
    """Bytes to plain Python objects (arrays as tuples for msgpack), bounded; ``malformed`` on any failure."""
    try:
        if ct == CONTENT_TYPE_MSGPACK:
            return msgpack.unpackb(
                data,
                raw=False,
                use_list=False,
                strict_map_key=True,
                max_str_len=MAX_MSGPACK_BYTES,
                max_bin_len=MAX_MSGPACK_BYTES,
                max_array_len=2 * MAX_TOPK,
                max_map_len=64,
                max_ext_len=0,
            )
        text = data.decode("utf-8")
        # NaN/Infinity literals parse here and are rejected by validation as "invalid", as in msgpack.
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except Exception as exc:  # msgpack raises many types; JSON ValueError, UnicodeDecodeError, RecursionError
        codec = "msgpack" if ct == CONTENT_TYPE_MSGPACK else "JSON"
        raise WireError("malformed", f"payload is not valid {codec}: {type(exc).__name__}: {exc}") from None


def _check_header(obj: object, kinds: frozenset[str], ct: str) -> str:
    """Check ``v`` then ``kind`` before full validation; return the kind."""
    if not isinstance(obj, Mapping):
        raise WireError("malformed", f"payload is a {type(obj).__name__}, not a map")
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        shown = "missing" if "v" not in obj else _brief(version)
        raise WireError("version", f"schema version {shown}, expected {SCHEMA_VERSION}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        shown = "missing" if "kind" not in obj else _brief(kind)
        raise WireError("kind", f"kind {shown}, expected one of {sorted(kinds)} for {ct}")
    return kind


def _validate(cls: type[M], obj: object, data: bytes, ct: str) -> M:
    try:
        if ct == CONTENT_TYPE_MSGPACK:
            return cls.model_validate(obj)
        return cls.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise WireError("malformed", f"payload is not valid JSON: {errors[0]['msg']}") from None
        summary = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise WireError("invalid", f"{cls.__name__}: {summary}{more}") from None
    except Exception as exc:  # a validator bug or resource error must not escape the boundary
        raise WireError("invalid", f"{cls.__name__}: {type(exc).__name__}: {exc}") from None
