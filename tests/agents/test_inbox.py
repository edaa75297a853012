"""The fair inbox: senders served in turn, and a flood overflows only the flooder's own queue."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nairbus.agents.runtime.inbox import FairInbox


def test_keys_are_served_in_turn() -> None:
    inbox: FairInbox[str] = FairInbox(per_key=100, total=1000, max_bytes=10**6)
    for i in range(5):
        inbox.put("flood", f"f{i}")
    inbox.put("quiet", "q0")
    assert [inbox.get(0) for _ in range(4)] == ["f0", "q0", "f1", "f2"]
    assert inbox.get(0) == "f3"
    assert inbox.get(0) == "f4"
    assert inbox.get(0) is None


def test_a_flood_overflows_only_its_own_queue() -> None:
    inbox: FairInbox[bytes] = FairInbox(per_key=50, total=120, max_bytes=10**6, size=len)
    for i in range(20):
        assert inbox.put(f"quiet-{i % 2}", b"q") == 0
    dropped = sum(inbox.put("flood", b"x" * 10) for _ in range(10_000))
    assert dropped == 10_000 - 50
    held = [inbox.get(0) for _ in range(len(inbox))]
    assert held.count(b"q") == 20  # every quiet message survived
    assert held.count(b"x" * 10) == 50


def test_the_total_bounds_take_from_the_key_holding_the_most() -> None:
    inbox: FairInbox[bytes] = FairInbox(per_key=1000, total=10, max_bytes=10**6, size=len)
    for _ in range(3):
        inbox.put("a", b"a")
    for _ in range(20):
        inbox.put("b", b"b")
    held = [inbox.get(0) for _ in range(len(inbox))]
    assert held.count(b"a") == 3
    assert len(held) == 10
    # Bytes too: big messages from one key push out that key's own.
    inbox = FairInbox(per_key=1000, total=1000, max_bytes=1000, size=len)
    inbox.put("small", b"s" * 10)
    for _ in range(50):
        inbox.put("big", b"B" * 300)
    assert inbox.nbytes <= 1000
    assert b"s" * 10 in [inbox.get(0) for _ in range(len(inbox))]
    assert inbox.put("big", b"B" * 2000) == 1  # larger than the whole bound on its own: refused


def test_get_waits_for_a_put_and_times_out() -> None:
    inbox: FairInbox[int] = FairInbox(per_key=10, total=10, max_bytes=100)
    started = time.monotonic()
    assert inbox.get(0.05) is None
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, lambda: inbox.put("k", 7)).start()
    assert inbox.get(2.0) == 7


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40), st.booleans()), max_size=400))
def test_bounds_always_hold(ops: list[tuple[str, int, bool]]) -> None:
    inbox: FairInbox[bytes] = FairInbox(per_key=7, total=15, max_bytes=200, size=len)
    for key, size, take in ops:
        inbox.put(key, b"x" * size)
        assert len(inbox) <= 15
        assert inbox.nbytes <= 200
        if take:
            inbox.get(0)
    assert sum(1 for _ in iter(lambda: inbox.get(0), None)) <= 15


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="per_key"):
        FairInbox(per_key=0, total=1, max_bytes=1)
