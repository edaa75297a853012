"""The link fitting on what the kernel says of the path (``TCP_INFO``): its delivery rate through a max filter, the
bytes on the path told from the bytes queued, and link traces of real shaped runs replayed through the estimator."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from nairbus.agents.nair.link import DeliveryRateFilter, LinkEstimator, LinkPolicy, replay_trace
from nairbus.agents.runtime.linkprobe import TcpInfo

TRACES = Path(__file__).parent / "data" / "link-traces"


def tcp(delivery_rate: float, unacked: int = 0, notsent: int = 0, min_rtt: float = 0.3,
        app_limited: bool = False) -> TcpInfo:
    """A ``TCP_INFO`` with what the estimator reads (``unacked`` in bytes, whole segments of 1000 B)."""
    return TcpInfo(app_limited=app_limited, mss=1000, unacked_segments=-(-unacked // 1000), lost_segments=0,
                   retrans_segments=0, total_retrans=0, rto=min_rtt + 0.2, rtt=min_rtt, rttvar=0.001, ssthresh=100,
                   cwnd=100, notsent_bytes=notsent, min_rtt=min_rtt, delivery_rate=delivery_rate)


def test_the_rate_is_the_most_delivered_over_the_window() -> None:
    f = DeliveryRateFilter(window_s=2.0)
    f.add(0.0, 100.0, app_limited=False)
    f.add(0.5, 50.0, app_limited=False)  # a round trip that delivered less (a small window after a loss)
    assert f.value(1.0) == 100.0
    assert f.value(2.6) == 50.0  # the high sample left the window
    f.add(2.7, 40.0, app_limited=True)  # the sender had less to send: says nothing new
    assert f.value(2.7) == 50.0
    f.add(2.8, 80.0, app_limited=True)  # ...unless it delivered more than the estimate
    assert f.value(2.8) == 80.0


def test_a_long_path_keeps_ten_round_trips_of_samples() -> None:
    f = DeliveryRateFilter(window_s=2.0)
    f.add(0.0, 100.0, app_limited=False, rtt=0.6)
    f.add(1.0, 60.0, app_limited=False, rtt=0.6)
    assert f.value(5.0) == 100.0
    assert f.value(6.5) == 60.0


def budget_after(sample: TcpInfo, backlog: int) -> tuple[int, str]:
    """The next frame's budget (10 fps, 1 s deadline) after one sample of a 300 ms path."""
    est = LinkEstimator(LinkPolicy())
    est.sample(1.0, 1_000_000, backlog, tcp=sample)
    decision = est.frame_budget(1.0, 0.0, 1.0, 0.1)
    return decision.wire_bytes, decision.reason


def test_bytes_on_the_path_are_not_a_queue_but_bytes_not_sent_are() -> None:
    rate, path = 125_000.0, 37_500  # 1 Mbit/s of payload over a 300 ms round trip
    assert budget_after(tcp(rate, unacked=path), path) == (12_500, "rate")  # the path is full: a frame per period
    # 20 kB not sent yet (behind TCP's window): paid back from the next frames, the frame shrinks to the minimum
    assert budget_after(tcp(rate, unacked=path, notsent=20_000), path + 20_000) == (48, "minimum")
    # bytes in flight beyond rate x min RTT wait in the bottleneck's queue: 7.5 kB, less the 50 ms tolerated
    assert budget_after(tcp(rate, unacked=45_000), 45_000) == (12_500 - (7_500 - 6_250), "rate")


def _traces() -> list[Path]:
    return sorted(TRACES.glob("*.jsonl.gz"))


def _read(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]
