"""Message models of the nairbus wire, one pydantic v2 model per message kind.

Every model is strict (no coercion: an int is not a str, a bool is not an int), frozen, forbids unknown fields,
rejects NaN and infinities, and carries ``v`` (the schema version, :data:`SCHEMA_VERSION`) and ``kind`` (the
discriminator). :class:`Fragment` and :class:`TopK` travel as msgpack on the high-rate sensor topics; the others as
JSON (see :mod:`nairbus.schemas.codec`).

Sequences are tuples. In strict Python-mode validation a list is not a tuple, so build messages with tuples; the
codec decodes msgpack arrays to tuples and JSON through ``model_validate_json``, which accepts arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from nairbus.schemas.ids import ID_REGEX

__all__ = [
    "LEAN_VERSION",
    "MAX_FRAGMENT_DATA",
    "MAX_FRAME_FRAGMENTS",
    "MAX_FRAME_PIXELS",
    "MAX_LABELS",
    "MAX_TOPK",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "U64_MAX",
    "Birth",
    "BitBand",
    "ClassScore",
    "DeviceRef",
    "Fragment",
    "Frame",
    "Id",
    "ImageBirth",
    "ImageFrame",
    "Item",
    "ItemName",
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
"""Version of the JSON messages (status, birth, result, stats) and of the capture agent's msgpack frames."""
LEAN_VERSION: Final = 2
"""Version of the lean high-rate messages (:class:`Fragment`, :class:`TopK`, :class:`ImageFrame`)."""
MAX_FRAGMENT_DATA: Final = 16256
"""Most data bytes one :class:`Fragment` or :class:`ImageFrame` may carry (the lean payload limit, less its
envelope); a sensor cuts a longer prefix into several fragments."""
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
ItemName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""What a source calls one of its items (a file's name relative to its folder): printable, at most 255 characters."""
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

MessageKind = Literal["status", "birth", "frag", "topk", "image", "item", "result", "stats", "frame", "command",
                      "command_response", "controls", "stream_state", "stream_metrics"]
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
    role: Literal["sensor", "fusion", "capture"]
    """``capture``: a capture agent, which publishes frames for variant-parallel sensors (its status is on the
    sensor topics, under its agent id)."""
    state: Literal["online", "offline"]
    session: Session
    ts: Timestamp
    fleet: Id | None = None
    """The fusion fleet the agent belongs to (``FusionSettings.fleet``): its members share the sensors; None for
    every other agent."""


# -- birth ------------------------------------------------------------------------------------------------------------
class ModelRef(WireModel):
    """Which trained model an agent runs, pinned by the SHA-256 of its weights."""

    name: Name
    sha256: Sha256Hex


class DeviceRef(WireModel):
    """What runs a sensor's model work: ``torch`` (the weights ``model`` names) or ``onnx`` (parts exported from those
    weights, each named by its file's SHA-256: the whole model, the head at the NAIR split). Fusion decodes either
    the same way; the names say which exported files a device ran."""

    runtime: Literal["torch", "onnx"]
    parts: Annotated[tuple[Sha256Hex, ...], Field(max_length=4)] = ()


class BitBand(WireModel):
    """Components up to ``end`` (from the previous band's end) are quantised to ``bits`` bits each."""

    end: PositiveU64
    bits: Bits


class NairBirth(WireModel):
    """How to decode a NAIR sensor's fragments: codec artifact, split point, IR shape and bits per component.

    ``bit_bands`` tile ``[0, n_components)`` in order. With ``coding="packed"`` a fragment ``[start, end)`` carries
    its components packed band by band at each band's bits, most significant bit first, so its length follows from
    the bands; with ``coding="range"`` they are range-coded with the artifact's per-component probability tables
    (its length follows from the codes, at most :data:`MAX_FRAGMENT_DATA`).
    """

    artifact_sha256: Sha256Hex
    split: Name
    ir_shape: tuple[PositiveU64, PositiveU64, PositiveU64]
    n_components: PositiveU64
    bit_bands: Annotated[tuple[BitBand, ...], Field(min_length=1, max_length=64)]
    coding: Literal["packed", "range"] = "packed"

    @model_validator(mode="after")
    def _bands_tile_components(self) -> Self:
        previous = 0
        for i, band in enumerate(self.bit_bands):
            if band.end <= previous:
                raise ValueError(f"bit band {i} ends at {band.end}, not after {previous}")
            previous = band.end
        if previous != self.n_components:
            raise ValueError(f"bit bands end at {previous}, expected n_components={self.n_components}")
        return self

    def packed_bytes(self, start: int, end: int) -> int:
        """Bytes that components ``[start, end)`` take bit-packed band by band."""
        total_bits, lo = 0, 0
        for band in self.bit_bands:
            a, b = max(start, lo), min(end, band.end)
            if b > a:
                total_bits += (b - a) * band.bits
            lo = band.end
        return (total_bits + 7) // 8


class ImageBirth(WireModel):
    """An image-mode sensor: the codecs its :class:`ImageFrame` payloads may use (each names its index) and the
    frame size. Specs are those of ``nairbus.models.image.codec`` (e.g. ``png``, ``webp:q80``, ``grey4+deflate``)."""

    codecs: Annotated[tuple[Name, ...], Field(min_length=1, max_length=64)]
    height: Annotated[int, Field(ge=1, le=1024)]
    width: Annotated[int, Field(ge=1, le=1024)]


class VpBirth(WireModel):
    """A variant-parallel sensor: which variant it runs, its vote weight and how many classes it reports."""

    variant: Name
    weight: Annotated[float, Field(gt=0)]
    k: Annotated[int, Field(ge=1, le=MAX_TOPK)]


class DecisionBirth(WireModel):
    """A decision-mode sensor: it runs the whole model (the birth's ``model``) and sends each frame's top ``k``
    classes and scores as a :class:`TopK` message."""

    k: Annotated[int, Field(ge=1, le=MAX_TOPK)]


class Birth(WireModel):
    """Retained description of a sensor: everything fusion needs to decode it. JSON.

    ``mode`` names what the sensor sends: ``nair`` fragments (``nair`` set), ``vp`` top-k (``vp`` set), ``image`` frames
    (``image`` set), ``decision`` top-k of the whole model (``decision`` set) or ``auto``, per frame whichever of NAIR
    fragments, an image and (``decision`` set) the decision fits its link and device better (``nair`` and ``image``
    set). The
    high-rate messages are lean (:mod:`nairbus.schemas.lean`): their capture times count milliseconds from ``epoch_ts``
    and they expire ``expiry_ms`` after capture.
    """

    v: Literal[1] = 1
    kind: Literal["birth"] = "birth"
    sensor_id: Id
    session: Session
    ts: Timestamp
    mode: Literal["nair", "vp", "image", "auto", "decision"]
    stream_id: Id
    labels: Annotated[tuple[Label, ...], Field(min_length=1, max_length=MAX_LABELS)]
    model: ModelRef
    device: DeviceRef | None = None
    """What ran the model on the device (None: a sensor from before it was named)."""
    nair: NairBirth | None = None
    vp: VpBirth | None = None
    image: ImageBirth | None = None
    decision: DecisionBirth | None = None
    budget_bytes: PositiveU64 | None = None
    deadline_ms: Annotated[float, Field(gt=0)]
    epoch_ts: Timestamp
    expiry_ms: Annotated[int, Field(ge=1, le=86_400_000)]

    @model_validator(mode="after")
    def _mode_matches(self) -> Self:
        wanted = {"nair": {"nair"}, "vp": {"vp"}, "image": {"image"}, "auto": {"nair", "image"},
                  "decision": {"decision"}}[self.mode]
        present = {name for name in ("nair", "vp", "image", "decision") if getattr(self, name) is not None}
        if self.mode == "auto":
            present.discard("decision")  # an auto sensor whose device may run the whole model sends decisions too
        if present != wanted:
            raise ValueError(f"mode {self.mode!r} needs {sorted(wanted)} set and nothing else, got {sorted(present)}")
        for section in (self.vp, self.decision):
            if section is not None and section.k > len(self.labels):
                raise ValueError(f"k={section.k} exceeds the {len(self.labels)} labels")
        return self


# -- high-rate sensor data ---------------------------------------------------------------------------------------------
def packed_size(n_components: int, bits: int) -> int:
    """Bytes that ``n_components`` values of ``bits`` bits each take when bit-packed: ``ceil(n * bits / 8)``."""
    return (n_components * bits + 7) // 8


class Fragment(WireModel):
    """A run of one frame's NAIR components ``[start, end)``, bit-packed as the sensor's artifact plans. Lean.

    Components are in importance order, so the prefix ``[0, end)`` of a frame is the most useful ``end`` components
    the sensor could send; a frame usually travels as one fragment with ``start = 0``. ``frame_end`` is where the
    sensor's send for this frame ends (fusion may decide the frame once ``[0, frame_end)`` has arrived). On the wire
    this is a positional msgpack array (:mod:`nairbus.schemas.lean`); ``sensor_id``, ``session`` and ``expires_ts`` come
    from the topic and the sensor's birth, not from the message. ``seq`` counts every publish of the session.
    """

    v: Literal[2] = 2
    kind: Literal["frag"] = "frag"
    sensor_id: Id
    session: Session
    seq: U64
    frame_id: U64
    capture_ts: Timestamp
    expires_ts: Timestamp
    start: U64
    end: U64
    frame_end: U64
    data: Annotated[bytes, Field(min_length=1, max_length=MAX_FRAGMENT_DATA)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.expires_ts <= self.capture_ts:
            raise ValueError(f"expires_ts {self.expires_ts} must be after capture_ts {self.capture_ts}")
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be greater than start {self.start}")
        if self.frame_end < self.end:
            raise ValueError(f"frame_end {self.frame_end} is before the fragment's end {self.end}")
        # At one bit per component at least, data bounds the range (checked before anything multiplies it).
        if self.end - self.start > len(self.data) * 8:
            raise ValueError(f"{len(self.data)} bytes cannot carry {self.end - self.start} components")
        return self


class TopK(WireModel):
    """A variant-parallel sensor's top-k classes and scores for one frame. Lean (see :mod:`nairbus.schemas.lean`)."""

    v: Literal[2] = 2
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


class ImageFrame(WireModel):
    """One frame compressed whole by codec ``codec`` of the sensor's birth; fusion runs the whole model. Lean."""

    v: Literal[2] = 2
    kind: Literal["image"] = "image"
    sensor_id: Id
    session: Session
    seq: U64
    frame_id: U64
    capture_ts: Timestamp
    expires_ts: Timestamp
    codec: Annotated[int, Field(ge=0, lt=64)]
    data: Annotated[bytes, Field(min_length=1, max_length=MAX_FRAGMENT_DATA)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.expires_ts <= self.capture_ts:
            raise ValueError(f"expires_ts {self.expires_ts} must be after capture_ts {self.capture_ts}")
        return self


class Item(WireModel):
    """What a sensor's source calls one frame (the file it was read from), published just before the frame's data
    so that fusion names the item in the frame's result. Sent only by sources of named items (a folder). JSON."""

    v: Literal[1] = 1
    kind: Literal["item"] = "item"
    sensor_id: Id
    session: Session
    frame_id: U64
    name: ItemName


class Frame(WireModel):
    """One captured frame, published once by a capture agent for every variant-parallel sensor. msgpack.

    Every VP sensor of a stream subscribes to the stream's frame topic, so all variants see the same frame under the
    same ``frame_id``. With ``encoding`` ``raw``, ``pixels`` is row-major uint8, ``height * width * channels`` bytes
    (channels interleaved); otherwise it is the encoded file (PNG, JPEG, WebP) of a ``height × width`` image, which
    each sensor decodes and converts to its model's input.
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
    channels: Literal[1, 3] = 1
    encoding: Literal["raw", "png", "jpeg", "webp"] = "raw"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.expires_ts <= self.capture_ts:
            raise ValueError(f"expires_ts {self.expires_ts} must be after capture_ts {self.capture_ts}")
        need = self.height * self.width * self.channels
        if self.encoding == "raw" and len(self.pixels) != need:
            raise ValueError(f"pixels is {len(self.pixels)} bytes, {self.height}x{self.width}x{self.channels} needs "
                             f"{need}")
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
    representation: Literal["nair", "image", "vp", "decision"] = "nair"
    """What the decision was made from: NAIR components, a compressed image, variant votes, or the top-k of a sensor
    that ran the whole model."""
    components_received: U64 = 0
    """NAIR: components that arrived (a prefix of the importance order when nothing was lost)."""
    codec: Name | None = None
    """Image: the codec of the frame (the sensor's birth ``image.codec``)."""
    wire_bytes: U64 = 0
    """MQTT PUBLISH bytes of the messages that carried this frame (counted with a topic alias, as sensors send)."""
    model: ModelRef | None = None
    """The model that decided the frame (one fusion agent may serve several; the sensor's birth names it)."""
    item: ItemName | None = None
    """The source's name for the frame (a file's name relative to its folder), when its sensor sent one."""

    @model_validator(mode="after")
    def _distinct_topk(self) -> Self:
        indices = [entry.class_index for entry in self.topk]
        if len(set(indices)) != len(indices):
            raise ValueError("topk class indices must be distinct")
        return self


class Stats(WireModel):
    """Periodic counters of a fusion agent. JSON.

    ``rejected`` counts rejected input by reason (e.g. the :class:`~nairbus.schemas.codec.WireError` reasons, or
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


# -- commands (home automation, the hub) ------------------------------------------------------------------------------
Transaction = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""An id the sender picks; the answer echoes it (Zigbee2MQTT's contract)."""
MAX_DEADLINE_MS: Final = 3_600_000.0
MAX_FPS: Final = 1000.0
MAX_REPLAY_S: Final = 60.0


class Tally(WireModel):
    """What a fusion agent decided of a sensor's session after the sensor left (withdrew its birth): sent inside a
    :class:`Command` on the sensor's set topic, so a one-shot run can say how many of its frames were decided."""

    fusion_id: Id
    session: Session
    """The sensor's session the count is of."""
    decided: U64
    """Frames of that session this fusion agent decided and published a result for."""


class Command(WireModel):
    """A request on ``…/sensors/<id>/set`` (or ``…/fusion/<id>/set``): change what is given, leave the rest. JSON.

    ``rebirth`` asks the agent to publish its birth again (Sparkplug's rebirth request: a fusion agent that sees
    frames of a sensor it has no birth for asks for one). ``replay_s`` asks a sensor to publish again the frames it
    sent in the last that many seconds (as far as it still holds them): a fusion agent whose session the broker
    forgot — a broker restarted without persistence — has missed what was published before it subscribed again.
    ``fps`` 0 means "as fast as the frames come"; a budget is either wire bytes or a fraction of the IR, never both.
    ``tally`` is a fusion agent's answer to a sensor withdrawing its birth (:class:`Tally`).
    """

    v: Literal[1] = 1
    kind: Literal["command"] = "command"
    transaction: Transaction | None = None
    rebirth: bool = False
    budget_bytes: Annotated[int, Field(ge=16, le=65000)] | None = None
    budget_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    deadline_ms: Annotated[float, Field(ge=10, le=MAX_DEADLINE_MS)] | None = None
    fps: Annotated[float, Field(ge=0, le=MAX_FPS)] | None = None
    paused: bool | None = None
    replay_s: Annotated[float, Field(gt=0, le=MAX_REPLAY_S)] | None = None
    tally: Tally | None = None
    """From a fusion agent to a sensor that left: how many of its session's frames were decided (changes nothing)."""

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if self.budget_bytes is not None and self.budget_fraction is not None:
            raise ValueError("give budget_bytes or budget_fraction, not both")
        return self


class Controls(WireModel):
    """An agent's current, retained settings (``…/sensors/<id>/controls``): what a command may change. JSON."""

    v: Literal[1] = 1
    kind: Literal["controls"] = "controls"
    agent_id: Id
    budget_bytes: Annotated[int, Field(ge=16, le=U64_MAX)] | None = None
    budget_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    deadline_ms: Annotated[float, Field(gt=0, le=MAX_DEADLINE_MS)]
    fps: Annotated[float, Field(gt=0, le=MAX_FPS)] | None = None
    """None: unpaced (as fast as the frames come)."""
    paused: bool = False
    ts: Timestamp


class CommandResponse(WireModel):
    """The answer to one :class:`Command` (``…/sensors/<id>/response``), with its ``transaction``. JSON."""

    v: Literal[1] = 1
    kind: Literal["command_response"] = "command_response"
    agent_id: Id
    transaction: Transaction | None = None
    status: Literal["ok", "error"]
    error: Annotated[str, StringConstraints(max_length=300)] | None = None
    controls: Controls | None = None
    """The settings after the command (None when it could not be read at all)."""


# -- what fusion publishes for home automation -------------------------------------------------------------------------
class StreamState(WireModel):
    """A stream's current label (``…/streams/<id>/state``, retained): published when the label changes and on a
    heartbeat, so a home-automation state changes only when the classification does; ``label`` None (JSON ``null``)
    when no frame was decided for a while (a paused or stalled camera: no label is current). JSON."""

    v: Literal[1] = 1
    kind: Literal["stream_state"] = "stream_state"
    stream_id: Id
    label: Label | None
    """None: no frame decided lately; Home Assistant shows the label as unknown."""
    class_index: U64 | None
    since_ts: Timestamp
    """When this label was first decided (the last change); for no label, when the last frame was decided."""
    frame_id: U64
    """The latest frame with this label (for no label: the stream's last frame)."""
    ts: Timestamp


class StreamMetrics(WireModel):
    """A stream's figures over the last interval (``…/streams/<id>/metrics``, retained, rate-limited). JSON."""

    v: Literal[1] = 1
    kind: Literal["stream_metrics"] = "stream_metrics"
    stream_id: Id
    frames: U64
    interval_s: Annotated[float, Field(gt=0)]
    fps: Annotated[float, Field(ge=0)]
    confidence_pct: Annotated[float, Field(ge=0, le=100)] | None
    """Mean confidence of the interval's decisions, in percent (rounded to 0.1); None for an interval without one."""
    latency_ms: Annotated[float, Field(ge=0)] | None
    """Median latency of the interval's decisions (rounded to 1 ms); None for an interval without one."""
    ts: Timestamp


Message: TypeAlias = (Status | Birth | Fragment | TopK | ImageFrame | Item | Result | Stats | Frame | Command
                      | CommandResponse | Controls | StreamState | StreamMetrics)
"""Any nairbus message."""

MESSAGE_TYPES: Final[Mapping[str, type[Message]]] = MappingProxyType(
    {"status": Status, "birth": Birth, "frag": Fragment, "topk": TopK, "result": Result, "stats": Stats,
     "frame": Frame, "image": ImageFrame, "item": Item, "command": Command, "command_response": CommandResponse,
     "controls": Controls, "stream_state": StreamState, "stream_metrics": StreamMetrics}
)
"""Message class by ``kind``."""
