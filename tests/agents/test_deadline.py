"""The one deadline buffer both fusion agents use: per-owner and global bounds, deadlines, decided keys."""

from __future__ import annotations

from dataclasses import dataclass

from nairbus.agents.runtime.deadline import DeadlineBuffer


@dataclass
class Frame:
    deadline: float
    parts: int = 0
    evicted: bool = False


def test_an_owner_over_its_bound_evicts_only_its_own_oldest_frame() -> None:
    buf: DeadlineBuffer[tuple[str, int], Frame] = DeadlineBuffer(max_frames=100, max_per_owner=3)
    buf.open(("quiet", 0), "quiet", Frame(1.0))
    for i in range(10):
        buf.open(("flood", i), "flood", Frame(1.0))
    assert buf.pending_of("flood") == 3
    assert buf.get(("quiet", 0)) is not None
    forced = buf.pop_ready(0.0, lambda f: False)
    assert len(forced) == 7
    assert all(f.evicted for f in forced)
    assert buf.is_decided(("flood", 0))


def test_the_global_bound_evicts_from_the_busiest_owner() -> None:
    buf: DeadlineBuffer[str, Frame] = DeadlineBuffer(max_frames=4, max_per_owner=10)
    buf.open("a0", "a", Frame(1.0))
    for i in range(3):
        buf.open(f"b{i}", "b", Frame(1.0))
    buf.open("a1", "a", Frame(1.0))
    assert buf.get("a0") is not None
    assert buf.get("b0") is None
    assert len(buf) == 4


def test_done_and_overdue_frames_come_out_and_flush_takes_the_rest() -> None:
    buf: DeadlineBuffer[str, Frame] = DeadlineBuffer()
    buf.open("done", "s", Frame(10.0, parts=2))
    buf.open("due", "s", Frame(1.0))
    buf.open("open", "s", Frame(10.0))
    assert buf.next_deadline() == 10.0
    ready = buf.pop_ready(2.0, lambda f: f.parts == 2)
    assert sorted((f.deadline, f.parts) for f in ready) == [(1.0, 0), (10.0, 2)]
    assert [f.deadline for f in buf.flush()] == [10.0]
    assert len(buf) == 0
    assert buf.is_decided("open")
