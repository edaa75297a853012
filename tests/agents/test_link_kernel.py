"""The link fitting on what the kernel says of the path (``TCP_INFO``): its delivery rate through a max filter, the
bytes on the path told from the bytes queued, and link traces of real shaped runs replayed through the estimator."""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from nairbus.agents.nair.link import DeliveryRateFilter, LinkEstimator, LinkPolicy, replay_trace
from nairbus.agents.runtime.linkprobe import TcpInfo

TRACES = Path(__file__).parent / "data" / "link-traces"


def tcp(delivery_rate: float, unacked: int = 0, notsent: int = 0, min_rtt: float = 0.3,
        app_limited: bool = False, queue_delay: float = 0.0) -> TcpInfo:
    """A ``TCP_INFO`` with what the estimator reads (``unacked`` in bytes, whole segments of 1000 B)."""
    return TcpInfo(app_limited=app_limited, mss=1000, unacked_segments=-(-unacked // 1000), lost_segments=0,
                   retrans_segments=0, total_retrans=0, rto=min_rtt + 0.2, rtt=min_rtt + queue_delay, rttvar=0.001,
                   ssthresh=100, cwnd=100, notsent_bytes=notsent, min_rtt=min_rtt, delivery_rate=delivery_rate)


def test_the_rate_is_the_median_of_the_windows_samples() -> None:
    f = DeliveryRateFilter(window_s=2.0)
    for t, rate in ((0.0, 100.0), (0.1, 160.0), (0.2, 100.0), (0.3, 90.0), (0.4, 100.0)):
        f.add(t, rate, app_limited=False)  # 160: a burst through the token bucket, not the link's rate
    assert f.value(0.5) == 100.0
    assert f.peak(0.5) == 160.0
    f.add(0.5, 40_000.0, app_limited=True)  # the sender had less to send: a burst at the first hop's line rate
    assert f.value(0.5) == 100.0
    assert f.value(2.35) == 100.0  # (0.4 s, 100) still in the window
    assert f.value(3.0) == 100.0  # no sample since: the sender had less to send, the path carries what it did
    f.add(3.1, 900.0, app_limited=False)
    assert f.value(3.1) == 100.0  # a lone sample (a burst through the bucket) does not move it


def test_a_long_path_keeps_ten_round_trips_of_samples() -> None:
    f = DeliveryRateFilter(window_s=2.0)
    f.add(0.0, 100.0, app_limited=False, rtt=0.6)
    for t in (5.0, 5.2, 5.4, 5.6):
        f.add(t, 60.0, app_limited=False, rtt=0.6)
    assert f.value(5.6) == 60.0  # four samples of 60 against one of 100
    assert f.peak(5.6) == 100.0
    assert f.peak(6.5) == 60.0


def budget_after(sample: TcpInfo, backlog: int, old: int = 0, before: TcpInfo | None = None) -> tuple[int, str]:
    """The next frame's budget (10 fps, 1 s deadline) on a 300 ms path after two samples a second apart (what the
    kernel's rate needs to be trusted): first ``old`` bytes not yet delivered, then ``backlog`` (everything handed
    over in between is counted as sent within the last round trip)."""
    est = LinkEstimator(LinkPolicy())
    est.sample(0.0, 1_000_000, old, tcp=before or sample)
    est.sample(1.0, 1_000_000, backlog, tcp=sample)
    decision = est.frame_budget(1.0, 0.0, 1.0, 0.1)
    return decision.wire_bytes, decision.reason


def test_bytes_sent_within_a_round_trip_are_on_the_path_older_ones_and_unsent_ones_queue() -> None:
    rate, path = 125_000.0, 37_500  # 1 Mbit/s of payload over a 300 ms round trip
    assert budget_after(tcp(rate, unacked=path), path) == (12_500, "rate")  # the path is full: a frame per period
    # 20 kB not sent yet (behind TCP's window): paid back from the next frames, the frame shrinks to the minimum
    assert budget_after(tcp(rate, unacked=path, notsent=20_000), path + 20_000) == (48, "minimum")
    # 7.5 kB sent more than a round trip ago and still unacknowledged wait in the bottleneck's queue: paid back
    # beyond the 50 ms (6.25 kB) tolerated
    assert budget_after(tcp(rate, unacked=45_000), 45_000, old=7_500) == (12_500 - (7_500 - 6_250), "rate")
    # once the path has shown a queue (the round trip 100 ms above its lowest), the rate is the fair-share rule's
    # (it starts from the measured rate)
    queued = tcp(rate, unacked=path, queue_delay=0.1)
    assert budget_after(queued, path, before=tcp(rate, unacked=path)) == (12_500, "share")


def _traces() -> list[Path]:
    return sorted(TRACES.glob("*.jsonl.gz"))


def _read(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _link(path: Path) -> tuple[float, float]:
    """The link rate (bits/s) and the frame rate a trace's file name records (``1Mbit-rtt600ms-10fps...``)."""
    rate, _rtt, fps = path.name.split(".")[0].split("-")[:3]
    scale = {"Mbit": 1e6, "kbit": 1e3}
    unit = next(u for u in scale if rate.endswith(u))
    return float(rate.removesuffix(unit)) * scale[unit], float(fps.removesuffix("fps"))


@pytest.mark.parametrize("path", _traces(), ids=lambda p: p.name.split(".")[0])
def test_a_recorded_link_replays_to_the_decisions_the_sensor_made(path: Path) -> None:
    """The estimator is a pure function of what it sampled: fed the samples of a real run (tbf-shaped uplink, delay
    line, kernel TCP_INFO) it gives every frame the budget the sensor gave it then (to the byte its rounding of the
    recorded times to microseconds allows)."""
    pairs = replay_trace(_read(path))
    assert len(pairs) > 100
    differ = [(r["t"], r["budget"], d.wire_bytes) for r, d in pairs if abs(r["budget"] - d.wire_bytes) > 1]
    assert not differ, differ[:5]


@pytest.mark.parametrize("path", _traces(), ids=lambda p: p.name.split(".")[0])
def test_on_a_recorded_link_the_rate_is_the_links_and_frames_fill_it(path: Path) -> None:
    """After the first 5 s: the rate the estimator tells is the link's TCP payload rate (tbf counts Ethernet, IP and
    TCP headers: 1448 of every 1514 bytes are payload) within 10 % in the median and 20 % in 90 % of the frames,
    and the frames carry at least 80 % of it (capped by the whole frame)."""
    rate_bps, fps = _link(path)
    payload = rate_bps / 8 * 1448 / 1514
    pairs = replay_trace(_read(path))
    start = pairs[0][0]["t"] + 5.0
    steady = [(r, d) for r, d in pairs if r["t"] >= start]
    rates = sorted(d.rate for _r, d in steady if d.rate is not None)
    assert abs(statistics.median(rates) / payload - 1) <= 0.1, (statistics.median(rates), payload)
    p5, p95 = rates[len(rates) // 20], rates[-1 - len(rates) // 20]
    assert p5 >= 0.8 * payload, (p5, payload)
    assert p95 <= 1.2 * payload, (p95, payload)
    cap = max(r["cap"] or 0 for r, _d in steady)
    sent = sum(d.wire_bytes for _r, d in steady) / len(steady)
    assert sent >= 0.8 * min(payload / fps, cap), (sent, payload / fps, cap)
