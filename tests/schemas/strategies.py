"""Hypothesis strategies that generate valid nairbus messages (and the ids, pieces and lean contexts they need)."""

from __future__ import annotations

from typing import Any, Literal

from hypothesis import strategies as st

from nairbus.schemas.lean import LeanContext, LeanMessage
from nairbus.schemas.messages import (
    MAX_FRAGMENT_DATA,
    MAX_FRAME_PIXELS,
    U64_MAX,
    Birth,
    BitBand,
    ClassScore,
    Command,
    CommandResponse,
    Controls,
    DeviceRef,
    Fragment,
    Frame,
    ImageBirth,
    ImageFrame,
    Item,
    Message,
    ModelRef,
    NairBirth,
    Result,
    Stats,
    Status,
    StreamMetrics,
    StreamState,
    TopK,
    VpBirth,
    packed_size,
)

ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
roots = st.lists(ids, min_size=1, max_size=3).map("/".join)
sessions = st.text(min_size=1, max_size=64)
names = st.text(min_size=1, max_size=32)
labels = st.text(min_size=1, max_size=24)
item_names = st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f", blacklist_categories=("Cs",)),
                     min_size=1, max_size=255)
sha256s = st.binary(min_size=32, max_size=32).map(bytes.hex)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
u64s = st.integers(min_value=0, max_value=U64_MAX)
finite = st.floats(allow_nan=False, allow_infinity=False)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
"""Finite floats that survive a float32 round trip exactly (the lean encoder packs scores as float32)."""
probabilities = st.floats(min_value=0, max_value=1)
non_negative = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
expiry_mss = st.integers(min_value=1, max_value=86_400_000)
capture_mss = st.integers(min_value=0, max_value=2**40 - 1)
"""Capture times a lean message can carry: milliseconds since the session epoch."""
MODES: tuple[Literal["nair", "vp", "image", "auto"], ...] = ("nair", "vp", "image", "auto")


@st.composite
def capture_and_expiry(draw: st.DrawFn) -> tuple[float, float]:
    """A capture timestamp and a strictly later expiry."""
    capture = draw(timestamps)
    expires = capture + draw(st.floats(min_value=1e-3, max_value=3600))
    return capture, expires


def statuses() -> st.SearchStrategy[Status]:
    """Valid Status messages."""
    return st.builds(
        Status,
        agent_id=ids,
        role=st.sampled_from(["sensor", "fusion"]),
        state=st.sampled_from(["online", "offline"]),
        session=sessions,
        ts=timestamps,
    )


# -- births ---------------------------------------------------------------------------------------------------------
@st.composite
def bit_bands(draw: st.DrawFn, max_bands: int = 12, max_width: int = 5000) -> tuple[int, tuple[BitBand, ...]]:
    """``(n_components, bands)`` with bands tiling ``[0, n_components)`` at 1-16 bits each."""
    widths = draw(st.lists(st.integers(min_value=1, max_value=max_width), min_size=1, max_size=max_bands))
    bands, end = [], 0
    for width in widths:
        end += width
        bands.append(BitBand(end=end, bits=draw(st.integers(min_value=1, max_value=16))))
    return end, tuple(bands)


@st.composite
def nair_births(draw: st.DrawFn) -> NairBirth:
    """Valid NAIR sections of a birth."""
    n_components, bands = draw(bit_bands())
    return NairBirth(
        artifact_sha256=draw(sha256s),
        split=draw(names),
        ir_shape=draw(st.tuples(*[st.integers(min_value=1, max_value=4096)] * 3)),
        n_components=n_components,
        bit_bands=bands,
    )


def image_births() -> st.SearchStrategy[ImageBirth]:
    """Valid image sections of a birth."""
    return st.builds(
        ImageBirth,
        codecs=st.lists(names, min_size=1, max_size=8).map(tuple),
        height=st.integers(min_value=1, max_value=1024),
        width=st.integers(min_value=1, max_value=1024),
    )


@st.composite
def births(draw: st.DrawFn, mode: Literal["nair", "vp", "image", "auto"] | None = None) -> Birth:
    """Valid Birth messages of every mode (or of ``mode``), with the sections that mode needs."""
    mode = draw(st.sampled_from(MODES)) if mode is None else mode
    label_set = tuple(draw(st.lists(labels, min_size=1, max_size=30)))
    nair = draw(nair_births()) if mode in ("nair", "auto") else None
    image = draw(image_births()) if mode in ("image", "auto") else None
    vp = None
    if mode == "vp":
        vp = VpBirth(
            variant=draw(names),
            weight=draw(positive),
            k=draw(st.integers(min_value=1, max_value=len(label_set))),
        )
    return Birth(
        sensor_id=draw(ids),
        session=draw(sessions),
        ts=draw(timestamps),
        mode=mode,
        stream_id=draw(ids),
        labels=label_set,
        model=ModelRef(name=draw(names), sha256=draw(sha256s)),
        device=draw(st.none() | st.builds(DeviceRef, runtime=st.sampled_from(["torch", "onnx"]),
                                          parts=st.lists(sha256s, max_size=4).map(tuple))),
        nair=nair,
        vp=vp,
        image=image,
        budget_bytes=draw(st.none() | st.integers(min_value=1, max_value=U64_MAX)),
        deadline_ms=draw(positive),
        epoch_ts=draw(timestamps),
        expiry_ms=draw(expiry_mss),
    )


# -- lean messages --------------------------------------------------------------------------------------------------
@st.composite
def lean_contexts(draw: st.DrawFn) -> LeanContext:
    """Contexts as a birth announces them (:meth:`LeanContext.from_birth`: expiry in whole milliseconds)."""
    return LeanContext(draw(ids), draw(sessions), draw(timestamps), draw(expiry_mss) / 1000.0)


def context_for(msg: LeanMessage, expiry_ms: int = 10_000) -> LeanContext:
    """A context a message encodes in: its sensor and session, epoch at its capture (capture_ms 0)."""
    return LeanContext(msg.sensor_id, msg.session, msg.capture_ts, expiry_ms / 1000.0)


@st.composite
def _lean_head(draw: st.DrawFn, ctx: LeanContext | None) -> dict[str, Any]:
    """What every lean message has: sensor, session, counters, and times the context can carry exactly."""
    if ctx is None:
        capture, expires = draw(capture_and_expiry())
        sensor_id, session = draw(ids), draw(sessions)
    else:
        capture = ctx.epoch_ts + draw(capture_mss) / 1000.0  # exactly what decode_lean computes
        expires = capture + ctx.expiry_s
        sensor_id, session = ctx.sensor_id, ctx.session
    return {"sensor_id": sensor_id, "session": session, "seq": draw(u64s), "frame_id": draw(u64s),
            "capture_ts": capture, "expires_ts": expires}


@st.composite
def fragments(draw: st.DrawFn, ctx: LeanContext | None = None) -> Fragment:
    """Valid fragments: data as long as the range packs at some 1-16 bits; of ``ctx``'s session if given."""
    bits = draw(st.integers(min_value=1, max_value=16))
    count = draw(st.integers(min_value=1, max_value=MAX_FRAGMENT_DATA * 8 // bits))
    start = draw(st.integers(min_value=0, max_value=U64_MAX - count))
    end = start + count
    need = packed_size(count, bits)
    return Fragment(
        **draw(_lean_head(ctx)),
        start=start,
        end=end,
        frame_end=draw(st.integers(min_value=end, max_value=U64_MAX)),
        data=draw(st.binary(min_size=need, max_size=need)),
    )


@st.composite
def topks(draw: st.DrawFn, ctx: LeanContext | None = None) -> TopK:
    """Valid TopK messages, scores exact in float32; of ``ctx``'s session if given."""
    classes = tuple(draw(st.lists(u64s, min_size=1, max_size=50, unique=True)))
    scores = tuple(draw(st.lists(float32s, min_size=len(classes), max_size=len(classes))))
    return TopK(**draw(_lean_head(ctx)), classes=classes, scores=scores)


@st.composite
def image_frames(draw: st.DrawFn, ctx: LeanContext | None = None) -> ImageFrame:
    """Valid image frames; of ``ctx``'s session if given."""
    return ImageFrame(
        **draw(_lean_head(ctx)),
        codec=draw(st.integers(min_value=0, max_value=63)),
        data=draw(st.binary(min_size=1, max_size=MAX_FRAGMENT_DATA)),
    )


@st.composite
def lean_messages(draw: st.DrawFn) -> tuple[LeanMessage, LeanContext]:
    """A valid lean message of any kind and the context it travels in."""
    ctx = draw(lean_contexts())
    msg: LeanMessage = draw(st.one_of(fragments(ctx), topks(ctx), image_frames(ctx)))
    return msg, ctx


# -- the capture agent's frames and fusion's output ---------------------------------------------------------------
@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """Valid capture frames (msgpack maps)."""
    height = draw(st.integers(min_value=1, max_value=64))
    width = draw(st.integers(min_value=1, max_value=min(1024, MAX_FRAME_PIXELS // height)))
    capture, expires = draw(capture_and_expiry())
    return Frame(
        stream_id=draw(ids),
        session=draw(sessions),
        seq=draw(u64s),
        frame_id=draw(u64s),
        capture_ts=capture,
        expires_ts=expires,
        height=height,
        width=width,
        pixels=draw(st.binary(min_size=height * width, max_size=height * width)),
    )


@st.composite
def results(draw: st.DrawFn) -> Result:
    """Valid Result messages of every representation."""
    indices = draw(st.lists(u64s, max_size=10, unique=True))
    topk = tuple(ClassScore(class_index=i, label=draw(labels), score=draw(finite)) for i in indices)
    return Result(
        stream_id=draw(ids),
        fusion_id=draw(ids),
        frame_id=draw(u64s),
        label=draw(labels),
        class_index=draw(u64s),
        confidence=draw(probabilities),
        topk=topk,
        fraction_received=draw(probabilities),
        bytes_received=draw(u64s),
        fragments_received=draw(u64s),
        sensors=tuple(draw(st.lists(names, max_size=5))),
        capture_ts=draw(timestamps),
        decided_ts=draw(timestamps),
        latency_ms=draw(non_negative),
        complete=draw(st.booleans()),
        variants=tuple(draw(st.lists(names, max_size=5))),
        representation=draw(st.sampled_from(["nair", "image", "vp"])),
        components_received=draw(u64s),
        codec=draw(st.none() | names),
        wire_bytes=draw(u64s),
        item=draw(st.none() | item_names),
    )


def items() -> st.SearchStrategy[Item]:
    """Valid Item messages."""
    return st.builds(Item, sensor_id=ids, session=sessions, frame_id=u64s, name=item_names)


def stats() -> st.SearchStrategy[Stats]:
    """Valid Stats messages."""
    return st.builds(
        Stats,
        fusion_id=ids,
        session=sessions,
        ts=timestamps,
        uptime_s=non_negative,
        frames_decided=u64s,
        frames_complete=u64s,
        frames_partial=u64s,
        frames_in_flight=u64s,
        frames_evicted=u64s,
        fragments_received=u64s,
        bytes_received=u64s,
        rejected=st.dictionaries(names, u64s, max_size=6),
        sensors=st.lists(ids, max_size=6).map(tuple),
        latency_p50_ms=st.none() | non_negative,
        latency_p99_ms=st.none() | non_negative,
    )


@st.composite
def commands(draw: st.DrawFn) -> Command:
    """Valid commands: any subset of the settings, one kind of budget at most."""
    budget = draw(st.sampled_from(("none", "bytes", "fraction")))
    return Command(
        transaction=draw(st.none() | sessions),
        rebirth=draw(st.booleans()),
        budget_bytes=draw(st.integers(min_value=16, max_value=65000)) if budget == "bytes" else None,
        budget_fraction=draw(st.floats(min_value=1e-6, max_value=1)) if budget == "fraction" else None,
        deadline_ms=draw(st.none() | st.floats(min_value=10, max_value=3_600_000)),
        fps=draw(st.none() | st.floats(min_value=0, max_value=1000)),
        paused=draw(st.none() | st.booleans()),
    )


def controls() -> st.SearchStrategy[Controls]:
    """Valid controls messages."""
    return st.builds(
        Controls, agent_id=ids, budget_bytes=st.none() | st.integers(min_value=16, max_value=U64_MAX),
        budget_fraction=st.none() | st.floats(min_value=1e-6, max_value=1),
        deadline_ms=st.floats(min_value=1e-3, max_value=3_600_000), fps=st.none() | st.floats(min_value=1e-3,
                                                                                              max_value=1000),
        paused=st.booleans(), ts=timestamps)


def command_responses() -> st.SearchStrategy[CommandResponse]:
    """Valid command responses."""
    return st.builds(CommandResponse, agent_id=ids, transaction=st.none() | sessions,
                     status=st.sampled_from(["ok", "error"]), error=st.none() | st.text(max_size=300),
                     controls=st.none() | controls())


def stream_states() -> st.SearchStrategy[StreamState]:
    """Valid stream states."""
    return st.builds(StreamState, stream_id=ids, label=labels, class_index=u64s, since_ts=timestamps,
                     frame_id=u64s, ts=timestamps)


def stream_metrics() -> st.SearchStrategy[StreamMetrics]:
    """Valid stream metrics."""
    return st.builds(StreamMetrics, stream_id=ids, frames=u64s, interval_s=positive, fps=non_negative,
                     confidence_pct=st.floats(min_value=0, max_value=100), latency_ms=non_negative, ts=timestamps)


def messages() -> st.SearchStrategy[Message]:
    """Any valid message that :func:`nairbus.schemas.codec.encode` carries (JSON, and the capture Frame as msgpack)."""
    return st.one_of(statuses(), births(), results(), stats(), frames(), commands(), command_responses(),
                     controls(), stream_states(), stream_metrics(), items())


# Plain Python values msgpack and JSON can both carry (JSON-safe: str keys, no bytes).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=U64_MAX) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=U64_MAX)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
lean_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=U64_MAX)
    | st.floats()
    | st.floats(width=32)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)
"""msgpack values without strings or maps (which the lean decoder refuses outright), to get past parsing."""
