"""The fusion agent's reassembly buffer: completeness, deadlines, and memory bounded fairly between sensors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nairbus.agents.nair.reassembly import AddOutcome, Reassembler


def test_a_frame_is_ready_when_complete_or_at_its_deadline() -> None:
    buf: Reassembler[bytes] = Reassembler(deadline_s=1.0)
    assert buf.add(("a", "s", 1), 0, b"x", 1, expected=2, capture_ts=0.0, now=0.0) is AddOutcome.ADDED
    assert buf.add(("a", "s", 1), 0, b"x", 1, expected=2, capture_ts=0.0, now=0.1) is AddOutcome.DUPLICATE
    assert buf.add(("a", "s", 1), 1, b"x", 1, expected=3, capture_ts=0.0, now=0.1) is AddOutcome.INCONSISTENT
    buf.add(("a", "s", 2), 0, b"x", 1, expected=2, capture_ts=0.0, now=0.2)
    assert buf.pop_ready(0.5) == []
    buf.add(("a", "s", 1), 1, b"y", 1, expected=2, capture_ts=0.0, now=0.6)
    [done] = buf.pop_ready(0.6)
    assert done.key == ("a", "s", 1)
    assert done.complete
    assert not done.evicted
    [late] = buf.pop_ready(1.3)
    assert late.key == ("a", "s", 2)
    assert not late.complete
    assert buf.add(("a", "s", 1), 2, b"z", 1, expected=2, capture_ts=0.0, now=1.4) is AddOutcome.LATE
    assert len(buf) == 0
    assert buf.pending_of("a") == 0


def test_a_flooding_sensor_evicts_only_its_own_frames() -> None:
    buf: Reassembler[bytes] = Reassembler(deadline_s=10.0, max_frames=100, max_per_sensor=20)
    for i in range(10):  # two well-behaved sensors, ten frames each in flight
        buf.add(("good-1", "s", i), 0, b"x", 1, expected=4, capture_ts=0.0, now=0.0)
        buf.add(("good-2", "s", i), 0, b"x", 1, expected=4, capture_ts=0.0, now=0.0)
    for i in range(10_000):  # one sensor floods new frames
        buf.add(("flood", "s", i), 0, b"x", 1, expected=4, capture_ts=0.0, now=0.0)
    forced = buf.pop_ready(0.0)
    assert {f.key[0] for f in forced} == {"flood"}
    assert all(f.evicted for f in forced)
    assert (buf.pending_of("good-1"), buf.pending_of("good-2"), buf.pending_of("flood")) == (10, 10, 20)


def test_the_global_bound_takes_from_the_sensor_holding_the_most() -> None:
    buf: Reassembler[bytes] = Reassembler(deadline_s=10.0, max_frames=30, max_per_sensor=25)
    for i in range(5):
        buf.add(("small", "s", i), 0, b"x", 1, expected=2, capture_ts=0.0, now=0.0)
    for i in range(40):
        buf.add(("big", "s", i), 0, b"x", 1, expected=2, capture_ts=0.0, now=0.0)
    assert buf.pending_of("small") == 5
    assert len(buf) <= 30
    assert {f.key[0] for f in buf.pop_ready(0.0)} == {"big"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 50), st.integers(0, 3), st.floats(0, 5)),
                max_size=300))
def test_bounds_hold_and_every_frame_comes_out_once(ops: list[tuple[str, int, int, float]]) -> None:
    buf: Reassembler[int] = Reassembler(deadline_s=1.0, max_frames=12, max_per_sensor=5)
    out: list[tuple[str, str, int]] = []
    now = 0.0
    for sensor, frame, index, dt in ops:
        now += dt / 10
        buf.add((sensor, "s", frame), index, index, 1, expected=4, capture_ts=0.0, now=now)
        assert len(buf) <= 12
        assert all(buf.pending_of(s) <= 5 for s in "abcd")
        out += [f.key for f in buf.pop_ready(now)]
    out += [f.key for f in buf.flush()]
    assert len(out) == len(set(out))  # a frame is decided once, whatever forced it out
    assert len(buf) == 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_per_sensor"):
        Reassembler(deadline_s=1.0, max_per_sensor=0)


def test_a_sensor_opens_at_most_its_rate_of_new_frames() -> None:
    from types import SimpleNamespace

    from nairbus.agents.nair.fusion import FusionAgent

    fake = SimpleNamespace(settings=SimpleNamespace(max_fps_per_sensor=50.0), _frame_tokens={})
    burst = sum(FusionAgent._frame_allowed(fake, "flood", 0.0) for _ in range(1000))  # type: ignore[arg-type]
    assert burst == 50  # one second's worth at once
    later = sum(FusionAgent._frame_allowed(fake, "flood", 2.0 + i / 1000) for i in range(1000))  # type: ignore[arg-type]
    assert 95 <= later <= 101  # then the rate: 50 refilled by t=2 plus 50/s over the next second
    assert FusionAgent._frame_allowed(fake, "quiet", 2.0)  # type: ignore[arg-type]  # every sensor has its own
