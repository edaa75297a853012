"""Hypothesis strategies that generate valid nairbus messages (and the ids and pieces they are made of)."""

from __future__ import annotations

from typing import Any, Literal

from hypothesis import strategies as st

from schemas.messages import (
    MAX_FRAGMENT_DATA,
    U64_MAX,
    Birth,
    ClassScore,
    Fragment,
    FragmentSpan,
    Message,
    ModelRef,
    NairBirth,
    Result,
    Stats,
    Status,
    TopK,
    VpBirth,
    packed_size,
)

ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
roots = st.lists(ids, min_size=1, max_size=3).map("/".join)
sessions = st.text(min_size=1, max_size=64)
names = st.text(min_size=1, max_size=32)
labels = st.text(min_size=1, max_size=24)
sha256s = st.binary(min_size=32, max_size=32).map(bytes.hex)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
u64s = st.integers(min_value=0, max_value=U64_MAX)
finite = st.floats(allow_nan=False, allow_infinity=False)
probabilities = st.floats(min_value=0, max_value=1)
non_negative = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


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


@st.composite
def fragment_plans(draw: st.DrawFn) -> tuple[int, tuple[FragmentSpan, ...]]:
    """``(n_components, spans)`` with spans tiling ``[0, n_components)``."""
    sizes = draw(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=12))
    spans, start = [], 0
    for size in sizes:
        spans.append(FragmentSpan(start=start, end=start + size))
        start += size
    return start, tuple(spans)


@st.composite
def births(draw: st.DrawFn) -> Birth:
    """Valid Birth messages of both modes."""
    modes: list[Literal["nair", "vp"]] = ["nair", "vp"]
    mode = draw(st.sampled_from(modes))
    label_set = tuple(draw(st.lists(labels, min_size=1, max_size=30)))
    nair = vp = None
    if mode == "nair":
        n_components, spans = draw(fragment_plans())
        nair = NairBirth(
            artifact_sha256=draw(sha256s),
            split=draw(names),
            ir_shape=draw(st.tuples(*[st.integers(min_value=1, max_value=4096)] * 3)),
            n_components=n_components,
            bits=draw(st.integers(min_value=1, max_value=16)),
            fragments=spans,
        )
    else:
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
        nair=nair,
        vp=vp,
        budget_bytes=draw(st.none() | st.integers(min_value=1, max_value=U64_MAX)),
        deadline_ms=draw(positive),
    )


@st.composite
def fragments(draw: st.DrawFn) -> Fragment:
    """Valid Fragment messages, data length matching range and bits."""
    bits = draw(st.integers(min_value=1, max_value=16))
    count = draw(st.integers(min_value=1, max_value=MAX_FRAGMENT_DATA * 8 // bits))
    start = draw(st.integers(min_value=0, max_value=U64_MAX - count))
    capture, expires = draw(capture_and_expiry())
    need = packed_size(count, bits)
    return Fragment(
        sensor_id=draw(ids),
        session=draw(sessions),
        seq=draw(u64s),
        frame_id=draw(u64s),
        capture_ts=capture,
        expires_ts=expires,
        index=draw(u64s),
        start=start,
        end=start + count,
        bits=bits,
        frame_fragments=draw(st.integers(min_value=1, max_value=65535)),
        data=draw(st.binary(min_size=need, max_size=need)),
    )


@st.composite
def topks(draw: st.DrawFn) -> TopK:
    """Valid TopK messages."""
    classes = tuple(draw(st.lists(u64s, min_size=1, max_size=50, unique=True)))
    scores = tuple(draw(st.lists(finite, min_size=len(classes), max_size=len(classes))))
    capture, expires = draw(capture_and_expiry())
    return TopK(
        sensor_id=draw(ids),
        session=draw(sessions),
        seq=draw(u64s),
        frame_id=draw(u64s),
        capture_ts=capture,
        expires_ts=expires,
        classes=classes,
        scores=scores,
    )


@st.composite
def results(draw: st.DrawFn) -> Result:
    """Valid Result messages."""
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
    )


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


def messages() -> st.SearchStrategy[Message]:
    """Any valid message."""
    return st.one_of(statuses(), births(), fragments(), topks(), results(), stats())


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
