"""The replay window: what a sender publishes again after a loss or on a receiver's request (fast, no broker)."""

from __future__ import annotations

import threading
import time

from nairbus.agents.runtime.replay import ReplayWindow


def _window(messages: int) -> ReplayWindow:
    window = ReplayWindow(replay_s=1.0, replay_max=1000)
    for i in range(messages):
        window.record(f"t/{i}", bytes([i % 256]))
    return window


def test_a_request_gets_the_recent_messages_oldest_first() -> None:
    window = _window(5)
    assert [topic for topic, _ in window.requested(10.0)] == [f"t/{i}" for i in range(5)]


def test_a_flood_of_requests_costs_no_more_than_one() -> None:
    """Issue 35: 200 replay requests made a sensor publish 19 989 messages (x100). Each message goes out again on
    request once; a later request gets only what was published since."""
    window = _window(50)
    sent: list[int] = []
    lock = threading.Lock()

    def ask() -> None:
        got = len(window.requested(10.0))
        with lock:
            sent.append(got)

    threads = [threading.Thread(target=ask) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) == 50
    window.record("t/new", b"x")
    assert window.requested(10.0) == [("t/new", b"x")]
    assert window.requested(10.0) == []


def test_after_a_loss_the_window_is_sent_whatever_was_requested() -> None:
    window = _window(3)
    window.requested(10.0)
    assert len(window.before_loss(time.monotonic())) == 3
