"""``nairbus bench share``'s pure parts: bytes delivered between two moments of a link trace, Jain's index, and the
shares over the steady state (the real run, several sensors behind one tbf, is ``reports/link-share.json``)."""

from __future__ import annotations

from typing import Any

import pytest

from nairbus.agents.tools.sharebench import ShareSettings, delivered_between, jain, share_of_run


def trace(rate: float, start: float, end: float, frames_from: float | None = None) -> list[dict[str, Any]]:
    """A link trace of a sensor whose link delivered ``rate`` bytes/s from ``start`` to ``end`` (a sample every
    0.1 s, 500 bytes always waiting) and sized a frame every 0.1 s from ``frames_from``."""
    out: list[dict[str, Any]] = []
    t = start
    while t <= end + 1e-9:
        delivered = rate * (t - start)
        out.append({"t": t, "handed": delivered + 500, "backlog": 500})
        if t >= (frames_from if frames_from is not None else start):
            out.append({"t": t, "age": 0.0, "deadline": 1.0, "period": 0.1, "cap": None, "budget": 100,
                        "reason": "rate", "rate": rate, "backlog": 500})
        t = round(t + 0.1, 6)
    return out


def test_delivered_between_reads_the_samples_at_or_before_each_moment() -> None:
    got = delivered_between(trace(1000.0, 0.0, 10.0), 2.0, 7.0)
    assert got == pytest.approx(5000.0)
    assert delivered_between(trace(1000.0, 5.0, 10.0), 2.0, 7.0) is None  # the trace starts after the span


def test_jain_is_one_for_equal_shares_and_one_over_n_for_one_taker() -> None:
    assert jain([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain([9.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert jain([]) == 0.0


def test_the_steady_state_runs_from_the_last_start_until_the_first_stop() -> None:
    traces = {"cam1": trace(50_000.0, 0.0, 40.0), "cam2": trace(40_000.0, 3.0, 43.0),
              "cam3": trace(35_000.0, 6.0, 46.0)}
    out = share_of_run(traces, settle_s=5.0, rate_bps=1_000_000)
    assert out["steady_s"] == pytest.approx(29.0)  # 6 + 5 → 40
    assert out["share_of_link"] == {"cam1": 0.4, "cam2": 0.32, "cam3": 0.28}
    assert out["link_used"] == pytest.approx(1.0)
    assert out["jain"] == pytest.approx(jain([50_000, 40_000, 35_000]), abs=1e-4)


def test_a_run_too_short_for_a_steady_state_is_refused() -> None:
    with pytest.raises(ValueError, match="no steady state"):
        ShareSettings(sensors=(5,), seconds=20.0, stagger_s=3.0, settle_s=5.0)
    with pytest.raises(ValueError, match="at least 2"):
        ShareSettings(sensors=(1,))
