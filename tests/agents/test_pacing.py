"""The one paced loop (agents/runtime/pacing.py) every frame-taking agent runs: frames at their slots, late ones skipped
(never a burst to catch up), batch work charged to the frames' capture time, files classified one and all."""

from __future__ import annotations

import threading
import time

import numpy as np

from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.sources import FrameBatch


def _batches(n: int, size: int) -> list[FrameBatch]:
    ids = np.arange(n)
    return [FrameBatch(ids[i : i + size], np.zeros((len(ids[i : i + size]), 4, 4), dtype=np.uint8))
            for i in range(0, n, size)]


def _run(pacing: Pacing[int], batches: list[FrameBatch], work_s: float = 0.0,
         stop: threading.Event | None = None) -> tuple[list[tuple[int, float, float]], list[int]]:
    sent: list[tuple[int, float, float]] = []
    skipped: list[int] = []

    def work(batch: FrameBatch) -> list[int]:
        time.sleep(work_s)
        return [int(i) * 10 for i in batch.frame_ids]

    def emit(frame_id: int, _image: np.ndarray, result: int | None, capture_ts: float) -> None:
        assert result == frame_id * 10
        sent.append((frame_id, time.monotonic(), capture_ts))

    run_paced(batches, pacing, stop or threading.Event(), work, emit, skipped.append)
    return sent, skipped


def test_frames_are_handed_over_at_their_rate() -> None:
    # A quarter second of slack: frames are handed over at their rate, and a busy machine's hiccup does not make
    # one late enough to skip (what is asserted is the pace, not the skipping: the next test has that).
    sent, skipped = _run(Pacing(100.0, slack_s=0.25), _batches(20, 5))
    assert [f for f, _, _ in sent] == list(range(20))
    assert skipped == []
    span = sent[-1][1] - sent[0][1]
    assert 0.17 <= span <= 0.6  # 19 periods of 10 ms, give or take a shared machine


def test_slow_work_skips_late_frames_instead_of_bursting() -> None:
    # 30 ms of work per group at 100 fps: the agent cannot keep up, so frames are skipped...
    started = time.time()
    sent, skipped = _run(Pacing(100.0, slack_s=0.02), _batches(60, 10), work_s=0.03)
    assert skipped
    assert len(sent) >= 10
    assert len(sent) + len(skipped) == 60
    # ...and each frame sent was handed over within the slack plus one round of work of its capture: no backlog.
    for _frame, handed, capture in sent:
        assert capture >= started - 0.01
        assert (handed - time.monotonic()) + (time.time() - capture) <= 0.02 + 2 * 0.03 + 0.1


def test_files_are_all_classified_and_work_is_charged_to_capture_time() -> None:
    sent, skipped = _run(Pacing(200.0, skip_late=False, source_paced=True), _batches(10, 5), work_s=0.05)
    assert skipped == []
    assert [f for f, _, _ in sent] == list(range(10))
    now = time.time()
    assert all(capture <= now for _, _, capture in sent)


def test_unpaced_runs_as_fast_as_the_work_and_stop_ends_it() -> None:
    stop = threading.Event()
    sent, _ = _run(Pacing(None), _batches(50, 10))
    assert len(sent) == 50
    stop.set()
    sent, skipped = _run(Pacing(10.0), _batches(50, 10), stop=stop)
    assert sent == []
    assert skipped == []
