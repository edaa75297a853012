"""Message models of the nairbus wire, one pydantic v2 model per message kind.

Every model is strict (no coercion: an int is not a str, a bool is not an int), frozen, forbids unknown fields,
rejects NaN and infinities, and carries ``v`` (the schema version, :data:`SCHEMA_VERSION`) and ``kind`` (the
discriminator). :class:`Fragment` and :class:`TopK` travel as msgpack on the high-rate sensor topics; the others as
JSON (see :mod:`schemas.codec`).

Sequences are tuples. In strict Python-mode validation a list is not a tuple, so build messages with tuples; the
codec decodes msgpack arrays to tuples and JSON through ``model_validate_json``, which accepts arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.ids import ID_REGEX

__all__ = [
    "MAX_FRAGMENT_DATA",
    "MAX_FRAME_FRAGMENTS",
    "MAX_FRAME_PIXELS",
    "MAX_LABELS",
    "MAX_TOPK",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "U64_MAX",
    "Birth",
    "ClassScore",
    "Fragment",
    "FragmentSpan",
    "Frame",
    "Id",
    "Message",
    "MessageKind",
    "ModelRef",
    "NairBirth",
    "Result",
    "Sha256Hex",
    "Stats",
    "Status",
    "TopK",
    "VpBirth",
    "WireModel",
    "packed_size",
]

SCHEMA_VERSION: Final = 1
MAX_FRAGMENT_DATA: Final = 8192
"""Most payload bytes one :class:`Fragment` may carry."""
MAX_FRAME_FRAGMENTS: Final = 65535
"""Most fragments one sensor may send for one frame (and most spans in a fragment plan)."""
MAX_LABELS: Final = 1000
MAX_FRAME_PIXELS: Final = 12288
"""Most pixels one :class:`Frame` may carry (fits the msgpack limit with its header)."""
MAX_TOPK: Final = 500
U64_MAX: Final = 2**64 - 1
"""Largest integer on the wire (msgpack carries at most uint64)."""

# -- constrained scalar types ---------------------------------------------------------------------------------------
Id = Annotated[str, StringConstraints(pattern=rf"^{ID_REGEX}$")]
"""A sensor, stream or fusion id: 1-64 characters from ``[A-Za-z0-9_-]``."""
Session = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""Per-connection session id; a new one on every (re)connect, so sequence numbers restart visibly."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""A human-facing name (model, split point, variant, rejection reason)."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""A class label."""
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest as 64 lowercase hex digits (``hashlib.sha256(...).hexdigest()``)."""
Timestamp = Annotated[float, Field(ge=0)]
"""Unix time in seconds (``time.time()``)."""
U64 = Annotated[int, Field(ge=0, le=U64_MAX)]
"""A non-negative integer that fits the wire."""
PositiveU64 = Annotated[int, Field(gt=0, le=U64_MAX)]
Bits = Annotated[int, Field(ge=1, le=16)]
"""Quantisation bits per component."""
Probability = Annotated[float, Field(ge=0, le=1)]

MessageKind = Literal["status", "birth", "frag", "topk", "result", "stats", "frame"]
"""The ``kind`` discriminator of every message."""


class WireModel(BaseModel):
    """Base of every wire model: strict, frozen, no extra fields, finite floats."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


# -- status -----------------------------------------------------------------------------------------------------------
class Status(WireModel):
    """Retained liveness of an agent; its last will is the same message with ``state="offline"``. JSON."""

    v: Literal[1] = 1
    kind: Literal["status"] = "status"
    agent_id: Id
    role: Literal["sensor", "fusion"]
    state: Literal["online", "offline"]
    session: Session
    ts: Timestamp


# -- birth ------------------------------------------------------------------------------------------------------------
class ModelRef(WireModel):
    """Which trained model an agent runs, pinned by the SHA-256 of its weights."""

    name: Name
    sha256: Sha256Hex


class FragmentSpan(WireModel):
    """A half-open component range ``[start, end)`` of the fragment plan."""

    start: U64
    end: U64

    @model_validator(mode="after")
    def _non_empty(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"fragment span end {self.end} must be greater than start {self.start}")
        return self


class NairBirth(WireModel):
    """How to decode a NAIR sensor's fragments: codec artifact, split point, IR shape, quantisation and plan.

    ``fragments`` is the plan: spans that tile ``[0, n_components)`` in order, without gaps or overlaps. A
    :class:`Fragment` with plan index ``i`` carries ``fragments[i]``.
    """

    artifact_sha256: Sha256Hex
    split: Name
    ir_shape: tuple[PositiveU64, PositiveU64, PositiveU64]
    n_components: PositiveU64
    bits: Bits
    fragments: Annotated[tuple[FragmentSpan, ...], Field(min_length=1, max_length=MAX_FRAME_FRAGMENTS)]

    @model_validator(mode="after")
    def _plan_tiles_components(self) -> Self:
        expected_start = 0
        for i, span in enumerate(self.fragments):
            if span.start != expected_start:
                raise ValueError(
                    f"fragment plan is not contiguous: span {i} starts at {span.start}, expected {expected_start}"
                )
            expected_start = span.end
        if expected_start != self.n_components:
            raise ValueError(f"fragment plan ends at {expected_start}, expected n_components={self.n_components}")
        return self


class VpBirth(WireModel):
    """A variant-parallel sensor: which variant it runs, its vote weight and how many classes it reports."""

    variant: Name
    weight: Annotated[float, Field(gt=0)]
    k: Annotated[int, Field(ge=1, le=MAX_TOPK)]


class Birth(WireModel):
    """Retained description of a sensor: everything fusion needs to decode it. JSON.

    Exactly one of ``nair`` and ``vp`` is set, the one ``mode`` names.
    """

    v: Literal[1] = 1
    kind: Literal["birth"] = "birth"
    sensor_id: Id
    session: Session
    ts: Timestamp
    mode: Literal["nair", "vp"]
    stream_id: Id
    labels: Annotated[tuple[Label, ...], Field(min_length=1, max_length=MAX_LABELS)]
    model: ModelRef
    nair: NairBirth | None = None
    vp: VpBirth | None = None
    budget_bytes: PositiveU64 | None = None
    deadline_ms: Annotated[float, Field(gt=0)]

    @model_validator(mode="after")
    def _mode_matches(self) -> Self:
        if self.mode == "nair" and (self.nair is None or self.vp is not None):
            raise ValueError("mode 'nair' needs 'nair' set and 'vp' unset")
        if self.mode == "vp":
            if self.vp is None or self.nair is not None:
                raise ValueError("mode 'vp' needs 'vp' set and 'nair' unset")
            if self.vp.k > len(self.labels):
                raise ValueError(f"vp.k={self.vp.k} exceeds the {len(self.labels)} labels")
        return self


# -- high-rate sensor data ---------------------------------------------------------------------------------------------
def packed_size(n_components: int, bits: int) -> int:
    """Bytes that ``n_components`` values of ``bits`` bits each take when bit-packed: ``ceil(n * bits / 8)``."""
    return (n_components * bits + 7) // 8


class Fragment(WireModel):
    """One fragment of a frame's NAIR features: components ``[start, end)`` bit-packed at ``bits`` bits. msgpack.

    ``seq`` counts every publish of the session (loss and reordering show as gaps); ``index`` is the fragment's
    position in the birth plan; ``frame_fragments`` is how many fragments the sensor sends for this frame (it may
    send fewer than the plan holds). Stale fragments (``expires_ts`` passed) are to be dropped.
    """

    v: Literal[1] = 1
    kind: Literal["frag"] = "frag"
    sensor_id: Id
    session: Session
    seq: U64
    frame_id: U64
    capture_ts: Timestamp
    expires_ts: Timestamp
    index: U64
    start: U64
    end: U64
    bits: Bits
    frame_fragments: Annotated[int, Field(ge=1, le=MAX_FRAME_FRAGMENTS)]
    data: Annotated[bytes, Field(max_length=MAX_FRAGMENT_DATA)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.expires_ts <= self.capture_ts:
            raise ValueError(f"expires_ts {self.expires_ts} must be after capture_ts {self.capture_ts}")
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be greater than start {self.start}")
        # Bound the range before multiplying so a huge range cannot cost anything.
        if self.end - self.start > MAX_FRAGMENT_DATA * 8:
            raise ValueError(f"component range {self.end - self.start} is larger than any fragment can carry")
        need = packed_size(self.end - self.start, self.bits)
        if len(self.data) != need:
            raise ValueError(
                f"data is {len(self.data)} bytes, {self.end - self.start} components at {self.bits} bits need {need}"
            )
        return self


class TopK(WireModel):
    """A variant-parallel sensor's top-k classes and scores for one frame. msgpack."""

    v: Literal[1] = 1
    kind: Literal["topk"] = "topk"
    sensor_id: Id
    session: Session
    seq: U64
    frame_id: U64
    capture_ts: Timestamp
    expires_ts: Timestamp
    classes: Annotated[tuple[U64, ...], Field(min_length=1, max_length=MAX_TOPK)]
    scores: Annotated[tuple[float, ...], Field(min_length=1, max_length=MAX_TOPK)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.expires_ts <= self.capture_ts:
            raise ValueError(f"expires_ts {self.expires_ts} must be after capture_ts {self.capture_ts}")
        if len(self.classes) != len(self.scores):
            raise ValueError(f"{len(self.classes)} classes but {len(self.scores)} scores")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be distinct")
        return self


class Frame(WireModel):
    """One captured grey frame, published once by a capture agent for every variant-parallel sensor. msgpack.

    Every VP sensor of a stream subscribes to the stream's frame topic, so all variants see the same frame under the
    same ``frame_id``. ``pixels`` is row-major uint8, ``height * width`` bytes.
    """

    v: Literal[1] = 1
    kind: Literal["frame"] = "frame"
    stream_id: Id
    session: Session
    seq: U64
    frame_id: U64
    capture_ts: Timestamp
    expires_ts: Timestamp
    height: Annotated[int, Field(ge=1, le=1024)]
    width: Annotated[int, Field(ge=1, le=1024)]
    pixels: Annotated[bytes, Field(min_length=1, max_length=MAX_FRAME_PIXELS)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.expires_ts <= self.capture_ts:
            raise ValueError(f"expires_ts {self.expires_ts} must be after capture_ts {self.capture_ts}")
        if len(self.pixels) != self.height * self.width:
            raise ValueError(f"pixels is {len(self.pixels)} bytes, {self.height}x{self.width} needs "
                             f"{self.height * self.width}")
        return self


# -- fusion output -----------------------------------------------------------------------------------------------------
class ClassScore(WireModel):
    """One entry of a result's top-k."""

    class_index: U64
    label: Label
    score: float


class Result(WireModel):
    """Fusion's decision for one frame of a stream. JSON.

    ``complete`` is true when every planned fragment (or every variant) arrived before the decision.
    """

    v: Literal[1] = 1
    kind: Literal["result"] = "result"
    stream_id: Id
    fusion_id: Id
    frame_id: U64
    label: Label
    class_index: U64
    confidence: Probability
    topk: Annotated[tuple[ClassScore, ...], Field(max_length=MAX_TOPK)]
    fraction_received: Probability
    bytes_received: U64
    fragments_received: U64
    sensors: Annotated[tuple[Name, ...], Field(max_length=MAX_FRAME_FRAGMENTS)]
    capture_ts: Timestamp
    decided_ts: Timestamp
    latency_ms: Annotated[float, Field(ge=0)]
    complete: bool
    variants: Annotated[tuple[Name, ...], Field(max_length=MAX_FRAME_FRAGMENTS)] = ()
    """VP: the variants whose top-k was fused into this decision (empty for NAIR)."""

    @model_validator(mode="after")
    def _distinct_topk(self) -> Self:
        indices = [entry.class_index for entry in self.topk]
        if len(set(indices)) != len(indices):
            raise ValueError("topk class indices must be distinct")
        return self


class Stats(WireModel):
    """Periodic counters of a fusion agent. JSON.

    ``rejected`` counts rejected input by reason (e.g. the :class:`~schemas.codec.WireError` reasons, or
    ``"unknown_sensor"``, ``"duplicate"``, ``"expired"``).
    """

    v: Literal[1] = 1
    kind: Literal["stats"] = "stats"
    fusion_id: Id
    session: Session
    ts: Timestamp
    uptime_s: Annotated[float, Field(ge=0)]
    frames_decided: U64
    frames_complete: U64
    frames_partial: U64
    frames_in_flight: U64
    frames_evicted: U64
    fragments_received: U64
    bytes_received: U64
    rejected: Annotated[dict[Name, U64], Field(max_length=256)] = Field(default_factory=dict)
    sensors: Annotated[tuple[Id, ...], Field(max_length=MAX_FRAME_FRAGMENTS)] = ()
    latency_p50_ms: Annotated[float, Field(ge=0)] | None = None
    latency_p99_ms: Annotated[float, Field(ge=0)] | None = None


Message: TypeAlias = Status | Birth | Fragment | TopK | Result | Stats | Frame
"""Any nairbus message."""

MESSAGE_TYPES: Final[Mapping[str, type[Message]]] = MappingProxyType(
    {"status": Status, "birth": Birth, "frag": Fragment, "topk": TopK, "result": Result, "stats": Stats,
     "frame": Frame}
)
"""Message class by ``kind``."""
