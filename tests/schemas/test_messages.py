"""Message models: strictness, immutability and the cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.messages import (
    MAX_FRAGMENT_DATA,
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    Birth,
    ClassScore,
    Fragment,
    FragmentSpan,
    ModelRef,
    NairBirth,
    Result,
    Stats,
    Status,
    TopK,
    VpBirth,
    packed_size,
)

SHA = "ab" * 32


def status(**over: Any) -> Status:
    fields: dict[str, Any] = {"agent_id": "cam-01", "role": "sensor", "state": "online", "session": "s", "ts": 1.0}
    return Status(**(fields | over))


def nair(**over: Any) -> NairBirth:
    fields: dict[str, Any] = {
        "artifact_sha256": SHA,
        "split": "layer2",
        "ir_shape": (64, 8, 8),
        "n_components": 100,
        "bits": 8,
        "fragments": (FragmentSpan(start=0, end=10), FragmentSpan(start=10, end=100)),
    }
    return NairBirth(**(fields | over))


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
        "index": 0,
        "start": 0,
        "end": 10,
        "bits": 4,
        "frame_fragments": 2,
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
        "scores": (0.7, 0.2),
    }
    return TopK(**(fields | over))


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
    for kind, cls in MESSAGE_TYPES.items():
        assert cls.model_fields["kind"].default == kind
        assert cls.model_fields["v"].default == SCHEMA_VERSION
    assert set(MESSAGE_TYPES) == {"status", "birth", "frag", "topk", "result", "stats", "frame"}


def test_valid_examples_build() -> None:
    assert status().kind == "status"
    assert birth().nair is not None
    assert birth(mode="vp", nair=None, vp=VpBirth(variant="r18", weight=1.0, k=3)).vp is not None
    assert fragment().data == bytes(5)
    assert topk().classes == (3, 1)
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


def test_frozen_and_no_extra_fields() -> None:
    msg = status()
    with pytest.raises(ValidationError):
        msg.ts = 2.0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        status(extra=1)


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


@pytest.mark.parametrize(
    "spans",
    [
        ((1, 100),),  # does not start at 0
        ((0, 10), (11, 100)),  # gap
        ((0, 10), (9, 100)),  # overlap
        ((0, 10), (10, 99)),  # ends short of n_components
        ((0, 10), (10, 101)),  # runs past n_components
        ((10, 100), (0, 10)),  # out of order
    ],
)
def test_fragment_plan_must_tile_components(spans: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValidationError, match="fragment plan"):
        nair(fragments=tuple(FragmentSpan(start=a, end=b) for a, b in spans))


@pytest.mark.parametrize(("start", "end"), [(5, 5), (5, 4), (-1, 3)])
def test_fragment_span_non_empty(start: int, end: int) -> None:
    with pytest.raises(ValidationError):
        FragmentSpan(start=start, end=end)


@pytest.mark.parametrize(
    "over",
    [
        {"fragments": ()},
        {"bits": 0},
        {"bits": 17},
        {"n_components": 0},
        {"ir_shape": (64, 0, 8)},
        {"ir_shape": (64, 8)},
        {"artifact_sha256": "AB" * 32},
        {"artifact_sha256": "ab" * 31},
    ],
)
def test_nair_birth_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        nair(**over)


@pytest.mark.parametrize(
    "over",
    [
        {"mode": "vp"},  # vp mode with nair set and vp unset
        {"nair": None},  # nair mode without nair
        {"vp": VpBirth(variant="r18", weight=1.0, k=1)},  # both set
        {"mode": "vp", "nair": None, "vp": VpBirth(variant="r18", weight=1.0, k=4)},  # k > labels
        {"labels": ()},
        {"labels": ("",)},
        {"labels": ("a",) * 1001},
        {"deadline_ms": 0.0},
        {"budget_bytes": 0},
        {"mode": "other"},
    ],
)
def test_birth_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        birth(**over)


@pytest.mark.parametrize("bad", [{"weight": 0.0}, {"k": 0}, {"k": 501}, {"variant": ""}])
def test_vp_birth_rejects(bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"variant": "r18", "weight": 1.0, "k": 1} | bad
    with pytest.raises(ValidationError):
        VpBirth(**fields)


@pytest.mark.parametrize(("count", "bits"), [(1, 1), (7, 1), (8, 1), (9, 1), (10, 4), (3, 12), (5, 16), (100, 3)])
def test_fragment_data_length_follows_bits(count: int, bits: int) -> None:
    need = packed_size(count, bits)
    assert need == -(-count * bits // 8)
    assert fragment(end=count, bits=bits, data=bytes(need)).data == bytes(need)
    for wrong in (need - 1, need + 1):
        with pytest.raises(ValidationError, match="bytes"):
            fragment(end=count, bits=bits, data=bytes(wrong))


@pytest.mark.parametrize(
    "over",
    [
        {"expires_ts": 10.0},  # not after capture
        {"expires_ts": 9.0},
        {"end": 0},
        {"start": 11, "end": 10},
        {"bits": 0},
        {"bits": 17},
        {"frame_fragments": 0},
        {"frame_fragments": 65536},
        {"seq": -1},
        {"seq": 2**64},
        {"frame_id": True},
        {"data": "00000"},  # str for bytes
        {"data": bytearray(5)},
        {"start": 0, "end": MAX_FRAGMENT_DATA * 8 + 8, "bits": 1, "data": bytes(MAX_FRAGMENT_DATA + 1)},
        {"start": 0, "end": 2**63, "bits": 16, "data": bytes(8)},
    ],
)
def test_fragment_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        fragment(**over)


def test_fragment_index_is_plan_index_not_bounded_by_frame_fragments() -> None:
    assert fragment(index=5, frame_fragments=2).index == 5


@pytest.mark.parametrize(
    "over",
    [
        {"classes": (1, 1), "scores": (0.5, 0.5)},
        {"classes": (1,), "scores": (0.5, 0.5)},
        {"classes": (), "scores": ()},
        {"classes": (-1,), "scores": (0.5,)},
        {"classes": tuple(range(501)), "scores": (0.0,) * 501},
        {"scores": (float("nan"), 0.1)},
        {"scores": (float("inf"), 0.1)},
        {"expires_ts": 1.0},
    ],
)
def test_topk_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        topk(**over)


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
    ],
)
def test_result_rejects(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        result(**over)
