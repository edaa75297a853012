"""The lean wire of the high-rate sensor topics: positional msgpack arrays, validated into the same models.

A fragment, top-k or image message carries only what changes from frame to frame. What is fixed for a session —
sensor id, session id, time epoch, expiry, codec, bit allocation — is in the sensor's retained
:class:`~nairbus.schemas.messages.Birth` and given to the codec as a :class:`LeanContext`. Layouts (every integer
unsigned; ``tag`` is :attr:`LeanContext.tag`, ``capture_ms`` milliseconds since the birth's ``epoch_ts``)::

    frag   [2, tag, seq, frame_id, capture_ms, start, end, frame_end, data]
    topk   [2, tag, seq, frame_id, capture_ms, classes, scores]
    image  [2, tag, seq, frame_id, capture_ms, codec, data]      codec: index into the birth's image codecs

A typical one-message NAIR frame spends about 23 payload bytes on this envelope (plus 9 for the MQTT PUBLISH with
a topic alias), against about 240 for the self-describing msgpack map it replaces.

Decoding raises only :class:`~nairbus.schemas.codec.WireError`: ``oversize``, ``malformed`` (not msgpack, not an array
of the kind's arity), ``version`` (first element not :data:`~nairbus.schemas.messages.LEAN_VERSION`), ``session`` (tag
of another session: a straggler from before the sensor's reconnect) or ``invalid``.

>>> ctx = LeanContext("cam-01", "a1b2c3", epoch_ts=1000.0, expiry_s=10.0)
>>> frag = Fragment(sensor_id="cam-01", session="a1b2c3", seq=1, frame_id=7, capture_ts=1000.25,
...                 expires_ts=1010.25, start=0, end=8, frame_end=8, data=b"\\x01")
>>> decode_lean(encode_lean(frag, ctx), Fragment, ctx) == frag
True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgpack  # type: ignore[import-untyped]
from pydantic import ValidationError

from nairbus.schemas.codec import WireError, _brief
from nairbus.schemas.messages import LEAN_VERSION, MAX_TOPK, Birth, Fragment, ImageFrame, TopK

__all__ = ["LEAN_TYPES", "MAX_LEAN_BYTES", "LeanContext", "LeanMessage", "decode_lean", "encode_lean"]

MAX_LEAN_BYTES: Final = 16384
"""Largest lean payload accepted (or produced)."""
LeanMessage = Fragment | TopK | ImageFrame
L = TypeVar("L", Fragment, TopK, ImageFrame)
_FIELDS: Final[dict[type[Any], tuple[str, ...]]] = {
    Fragment: ("start", "end", "frame_end", "data"),
    TopK: ("classes", "scores"),
    ImageFrame: ("codec", "data"),
}
LEAN_TYPES: Final = frozenset(_FIELDS)
_HEAD: Final = 5  # version, tag, seq, frame_id, capture_ms
_MS_MAX: Final = 2**40


@dataclass(frozen=True, slots=True)
class LeanContext:
    """What a sensor's birth fixes for every lean message of its session."""

    sensor_id: str
    session: str
    epoch_ts: float
    expiry_s: float

    @property
    def tag(self) -> int:
        """A 7-bit digest of the session (one msgpack byte), so stragglers of an earlier session are refused."""
        return zlib.crc32(self.session.encode()) % 128

    @classmethod
    def from_birth(cls, birth: Birth) -> LeanContext:
        """The context a birth announces."""
        return cls(birth.sensor_id, birth.session, birth.epoch_ts, birth.expiry_ms / 1000.0)


def encode_lean(msg: LeanMessage, ctx: LeanContext) -> bytes:
    """The positional msgpack payload of a fragment, top-k or image message of ``ctx``'s session.

    Raises ``ValueError`` for a message of another sensor or session, one captured before the epoch (or 2**40 ms
    or more after it), or a score beyond float32's range, and
    :class:`WireError` (``oversize``) past :data:`MAX_LEAN_BYTES`.
    """
    if msg.sensor_id != ctx.sensor_id or msg.session != ctx.session:
        raise ValueError(f"message of {msg.sensor_id}/{msg.session} encoded in the context of "
                         f"{ctx.sensor_id}/{ctx.session}")
    offset_ms = (msg.capture_ts - ctx.epoch_ts) * 1000.0
    capture_ms = round(offset_ms) if offset_ms < _MS_MAX else _MS_MAX  # round(inf) would raise OverflowError
    if capture_ms < 0:
        raise ValueError(f"capture_ts {msg.capture_ts} is before the session epoch {ctx.epoch_ts}")
    if capture_ms >= _MS_MAX:  # every receiver would refuse it
        raise ValueError(f"capture_ts {msg.capture_ts} is 2**40 ms or more after the session epoch {ctx.epoch_ts}")
    body = [getattr(msg, name) for name in _FIELDS[type(msg)]]
    try:
        payload: bytes = msgpack.packb([LEAN_VERSION, ctx.tag, msg.seq, msg.frame_id, capture_ms, *body],
                                       use_bin_type=True, use_single_float=True)
    except OverflowError as exc:  # a score beyond float32's range
        raise ValueError(f"{msg.kind} does not fit the lean wire: {exc}") from None
    if len(payload) > MAX_LEAN_BYTES:
        raise WireError("oversize", f"encoded {msg.kind} is {len(payload)} bytes, limit {MAX_LEAN_BYTES}")
    return payload


def decode_lean(payload: bytes | bytearray | memoryview, expected: type[L], ctx: LeanContext) -> L:
    """Decode and validate an untrusted lean payload of ``ctx``'s session as an ``expected`` message."""
    fields = _FIELDS.get(expected)
    if fields is None:
        raise TypeError(f"{expected.__name__} does not travel lean")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireError("malformed", f"payload must be bytes, got {type(payload).__name__}")
    size = memoryview(payload).nbytes
    if size > MAX_LEAN_BYTES:
        raise WireError("oversize", f"payload is {size} bytes, limit {MAX_LEAN_BYTES}")
    try:
        obj = msgpack.unpackb(bytes(payload), raw=False, use_list=False, strict_map_key=True,
                              max_str_len=0, max_bin_len=MAX_LEAN_BYTES, max_array_len=2 * MAX_TOPK,
                              max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types
        raise WireError("malformed", f"payload is not valid msgpack: {type(exc).__name__}: {exc}") from None
    if type(obj) is not tuple or not obj:  # not a subclass: a zero-length ext decodes as ExtType(code, b"")
        raise WireError("malformed", f"payload is a {type(obj).__name__}, not a positional array")
    if type(obj[0]) is not int or obj[0] != LEAN_VERSION:
        raise WireError("version", f"lean version {_brief(obj[0])}, expected {LEAN_VERSION}")
    if len(obj) != _HEAD + len(fields):
        raise WireError("malformed", f"{expected.__name__} array has {len(obj)} elements, "
                                     f"expected {_HEAD + len(fields)}")
    _version, tag, seq, frame_id, capture_ms, *body = obj
    if type(tag) is not int or tag != ctx.tag:
        raise WireError("session", f"session tag {_brief(tag, 20)} is not the current session's {ctx.tag}")
    if type(capture_ms) is not int or not 0 <= capture_ms < _MS_MAX:
        raise WireError("invalid", f"capture_ms {_brief(capture_ms)} is not a time after the session epoch")
    capture_ts = ctx.epoch_ts + capture_ms / 1000.0
    data: dict[str, Any] = {"sensor_id": ctx.sensor_id, "session": ctx.session, "seq": seq, "frame_id": frame_id,
                            "capture_ts": capture_ts, "expires_ts": capture_ts + ctx.expiry_s}
    data.update(zip(fields, body, strict=True))
    try:
        return expected.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        summary = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in errors[:3])
        raise WireError("invalid", f"{expected.__name__}: {summary}") from None
    except Exception as exc:  # a validator bug or resource error must not escape the boundary
        raise WireError("invalid", f"{expected.__name__}: {type(exc).__name__}: {exc}") from None
