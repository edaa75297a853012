"""The link fitting's pure core against a simulated shaped link, and what a frame costs on the wire.

The simulated link is a token bucket (rate, burst) that drains the sensor's backlog in 1 ms steps, sampled every 10 ms
like :class:`nairbus.agents.nair.link.LinkMonitor` samples a socket. Like a real TCP receiver it acknowledges late:
every second full segment, or 40 ms after the first byte it has not acknowledged (Linux's delayed ACK), so the sender's
backlog includes bytes that have already crossed the link. The real thing — tbf in network namespaces — is
``tests/agents/test_linkbench.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nairbus.agents.nair.auto import AutoChooser
from nairbus.agents.nair.link import LinkEstimator, LinkMemory, LinkPolicy, state_dir
from nairbus.agents.nair.outgoing import NairFrameEncoder, alias_wire_bytes
from nairbus.agents.runtime.linkprobe import TcpInfo
from nairbus.models.nair.codec import packed_bytes
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import WEIGHTS_DIR
from nairbus.schemas.lean import LeanContext
from nairbus.schemas.wire import lean_fragment_payload_len

MSS = 1448
DELAYED_ACK_S = 0.04


def simulate(rate: float, fps: float, seconds: float = 8.0, deadline: float = 1.0,
             cap: int = 12600, stall: tuple[float, float] | None = None, delay: float = 0.0) -> dict[str, float]:
    """Run the estimator against a token-bucket link; frame latencies, skips and bytes per frame.

    ``stall`` (from, to) stops the link delivering anything for a while, as a lost segment and TCP's retransmission
    timeout do. ``delay`` is the path's one-way propagation delay: a byte reaches the receiver ``delay`` after it
    left the bottleneck, and its acknowledgement the sender another ``delay`` later (the sensor knows the path's
    minimum round trip, ``2 × delay``, as TCP_INFO tells it).
    """
    est = LinkEstimator(LinkPolicy())
    burst = max(3028.0, rate / 100)
    tokens, handed, delivered, acked, unacked_since = burst, 0.0, 0.0, 0.0, None
    queue: list[list[float]] = []  # [bytes left, handed at]
    arrivals: list[tuple[float, float]] = []  # (time a byte count reached the receiver, that count)
    latencies, sizes, skipped, starts = [], [], 0, []
    period, next_frame, next_tick, t, dt = 1.0 / fps, 0.0, 0.0, 0.0, 0.001
    received = 0.0
    sent_at: list[tuple[float, float]] = []  # (end offset of a frame's bytes, when it was handed over)
    srtt: float | None = None  # the kernel's smoothed RTT: an EWMA (1/8) of each acknowledgement's round trip
    while t < seconds:
        stalled = stall is not None and stall[0] <= t < stall[1]
        tokens = min(burst, tokens + rate * dt)
        while queue and tokens > 0 and not stalled:
            take = min(tokens, queue[0][0])
            queue[0][0] -= take
            tokens -= take
            delivered += take
            if queue[0][0] <= 1e-9:
                handed_at = queue.pop(0)[1]
                latencies.append(t + delay - handed_at)
                starts.append(handed_at)
        arrivals.append((t + delay, delivered))
        while arrivals and arrivals[0][0] <= t - delay:  # acknowledgements of what reached the receiver come back
            received = arrivals.pop(0)[1]
        if received > acked:
            unacked_since = t if unacked_since is None else unacked_since
            if received - acked >= 2 * MSS or t - unacked_since >= DELAYED_ACK_S:
                acked, unacked_since = received, None
                while len(sent_at) > 1 and sent_at[0][0] < acked:
                    sent_at.pop(0)
                if sent_at:
                    sample = t - sent_at[0][1]
                    srtt = sample if srtt is None else srtt + (sample - srtt) / 8
        if t >= next_tick:
            next_tick += 0.01
            est.sample(t, int(acked), int(handed - acked), 2 * delay)
        if t >= next_frame:
            next_frame += period
            est.sample(t, int(acked), int(handed - acked), 2 * delay)
            decision = est.frame_budget(t, 0.005, deadline, period, cap)
            if decision.wire_bytes == 0:
                skipped += 1
            else:
                queue.append([float(decision.wire_bytes), t])
                handed += decision.wire_bytes
                sent_at.append((handed, t))
                sizes.append(decision.wire_bytes)
        t += dt
    lat, began = np.array(latencies), np.array(starts)
    steady = lat[began >= 3.0]
    return {"skipped": skipped, "frames": len(sizes) + skipped, "p99_s": float(np.percentile(lat, 99)),
            "steady_p99_s": float(np.percentile(steady, 99)) if len(steady) else float("nan"),
            "first_5s_in_time": float(np.mean(lat[began < 5.0] <= deadline)),
            "in_time": float(np.sum(lat <= deadline)) / (len(sizes) + skipped),
            "mean_bytes": float(np.mean(sizes[len(sizes) // 4:])), "fair_bytes": rate / fps}


@pytest.mark.parametrize("rate", [12_500.0, 31_250.0, 125_000.0])
@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_a_shaped_link_is_filled_without_missing_the_deadline(rate: float, fps: float) -> None:
    out = simulate(rate, fps)
    assert out["skipped"] <= 0.01 * out["frames"]
    assert out["p99_s"] <= 1.0
    # The link is used: after the start, frames get at least 80 % of what the link carries per frame.
    assert out["mean_bytes"] >= 0.8 * min(out["fair_bytes"], 12600)


@pytest.mark.parametrize("rtt", [0.1, 0.3, 0.6])
@pytest.mark.parametrize("rate", [31_250.0, 125_000.0])
@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_a_long_round_trip_is_not_taken_for_a_queue(rtt: float, rate: float, fps: float) -> None:
    # Bytes in flight over a long path (up to rate × RTT) are unacknowledged without waiting anywhere: the sensor
    # must still fill the link, and every frame must arrive within the deadline plus half the round trip.
    out = simulate(rate, fps, seconds=20.0, deadline=0.5 + rtt / 2, delay=rtt / 2)
    assert out["mean_bytes"] >= 0.8 * min(out["fair_bytes"], 12600)
    assert out["skipped"] <= 0.01 * out["frames"]
    assert out["steady_p99_s"] <= 0.5 + rtt / 2  # after the first seconds, 99 % within the deadline
    # Over the whole run (20 s here; a live run is minutes), slow start's one overshoot included: at least 97 %.
    assert out["in_time"] >= 0.97


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_a_stall_does_not_cap_the_frames_after_it(fps: float) -> None:
    # A 300 ms stall (a retransmission timeout) makes the link look slow while it lasts; once it has drained, the
    # frames must grow back to what the link carries, not stay at the rate measured during the stall.
    out = simulate(12_500.0, fps, stall=(1.0, 1.3))
    assert out["mean_bytes"] >= 0.8 * out["fair_bytes"]
    assert out["skipped"] <= 0.05 * out["frames"]


def test_a_fast_link_carries_whole_frames() -> None:
    out = simulate(1_250_000.0, 30.0, seconds=3.0)
    assert out["mean_bytes"] == pytest.approx(12600, rel=0.02)
    assert out["p99_s"] < 0.05


def test_frames_that_cannot_arrive_in_time_are_skipped_not_queued() -> None:
    est = LinkEstimator(LinkPolicy())
    # A measured 10 kB/s link with 20 kB already waiting: nothing sent now could arrive within a 1 s deadline.
    for i in range(200):
        est.sample(i * 0.01, 100 * i, 20_000)
    decision = est.frame_budget(2.0, 0.0, 1.0, 1 / 30)
    assert decision.wire_bytes == 0
    assert decision.reason.startswith("skip")


def test_a_user_cap_bounds_every_frame() -> None:
    est = LinkEstimator(LinkPolicy())
    for frame in range(20):
        assert est.frame_budget(frame / 30, 0.0, 1.0, 1 / 30, cap=300).wire_bytes <= 300


@pytest.fixture(scope="module")
def artifact() -> NairArtifact:
    return NairArtifact.load(WEIGHTS_DIR / "base.nair.npz")


@pytest.mark.parametrize("cap", [40, 64, 200, 300, 1000, 5000])
def test_a_nair_frame_fits_its_wire_cap_exactly(artifact: NairArtifact, cap: int) -> None:
    ctx = LeanContext("cam-1", "abc", epoch_ts=1000.0, expiry_s=10.0)
    enc = NairFrameEncoder(artifact, ctx, "t")
    end = enc.prefix_for(cap, None, 1234, 1234, 70_000)
    codes = np.zeros(artifact.n_components, dtype=np.uint16)
    seq = iter(range(1234, 2000))
    [msg] = enc.messages(codes, 1234, lambda: next(seq), 1070.0, end)
    assert msg.wire_bytes <= cap
    # ... and uses it: one more component would not fit.
    bigger = alias_wire_bytes(lean_fragment_payload_len(packed_bytes(artifact, 0, end + 1), 1234, 1234, 70_000, 0,
                                                        end + 1, end + 1))
    assert bigger > cap


def test_auto_prefers_what_its_table_says_is_more_accurate() -> None:
    chooser = AutoChooser.from_table({"nair": [{"payload_bytes": 100, "accuracy": 0.80},
                                               {"payload_bytes": 1000, "accuracy": 0.93}],
                                      "image": {"png": {"accuracy": 0.94}, "grey2+deflate": {"accuracy": 0.85}}})
    assert chooser.prefer_image(150, "grey2+deflate")  # 0.85 > 0.80
    assert not chooser.prefer_image(1500, "grey2+deflate")  # 0.93 > 0.85
    assert chooser.prefer_image(1500, "png")
    assert not chooser.prefer_image(50, None)  # no codec fits: NAIR, whatever it buys
    assert chooser.nair_expected(50) == 0.0
    # Within the noise the smaller message goes: NAIR fills the budget, the image takes the first codec that fits.
    close = AutoChooser.from_table({"nair": [{"payload_bytes": 1000, "accuracy": 0.940}],
                                    "image": {"png": {"accuracy": 0.937}}})
    assert close.choose(nair_payload_bytes=3000, codec="png", decision_fits=False) == "image"
    assert close.choose(nair_payload_bytes=3000, codec=None, decision_fits=False) == "nair"
    ahead = AutoChooser.from_table({"nair": [{"payload_bytes": 1000, "accuracy": 0.95}],
                                    "image": {"png": {"accuracy": 0.937}}})
    assert ahead.choose(nair_payload_bytes=3000, codec="png", decision_fits=False) == "nair"


def test_a_remembered_rate_starts_the_next_run_near_it(tmp_path: Path) -> None:
    memory = LinkMemory.for_link("cam-1", "10.0.0.1:1883", tmp_path)
    assert memory.recall(1000.0) is None  # nothing yet
    memory.remember(31_250.0, 1000.0)
    assert memory.recall(1010.0) == 31_250.0
    assert memory.recall(1000.0 + 8 * 24 * 3600) is None  # a week later: maybe another link, forgotten
    assert LinkMemory.for_link("cam-1", "10.0.0.2:1883", tmp_path).recall(1010.0) is None  # another broker
    memory.path.write_text("{not json")
    assert memory.recall(1010.0) is None  # a damaged file is no memory, not an error
    est = LinkEstimator(LinkPolicy())
    est.seed(0.5 * 31_250.0)
    first = est.frame_budget(0.0, 0.0, 1.0, 0.1)
    assert first.reason == "rate"
    assert first.wire_bytes == round(0.5 * 31_250.0 * 0.1)


def test_the_state_directory_follows_systemd_then_xdg() -> None:
    assert state_dir({"STATE_DIRECTORY": "/var/lib/nairbus:/other"}) == Path("/var/lib/nairbus")
    assert state_dir({"XDG_STATE_HOME": "/home/u/.state"}) == Path("/home/u/.state/nairbus")
    assert state_dir({}).parts[-3:] == (".local", "state", "nairbus")


def _kernel_view(queued: float, in_queue: float, rate: float, delivered: list[tuple[float, float]],
                 min_rtt: float) -> TcpInfo:
    """What TCP_INFO tells one sender of a shared FIFO link: its delivery rate over the last 100 ms (app-limited
    while none of its bytes wait), and a round trip that grows with the whole queue (every sender's bytes)."""
    (t0, d0), (t1, d1) = delivered[0], delivered[-1]
    rate_sample = (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0
    return TcpInfo(app_limited=queued <= 0, mss=MSS, unacked_segments=int(-(-queued // MSS)), lost_segments=0,
                   retrans_segments=0, total_retrans=0, rto=0.2 + min_rtt, rtt=min_rtt + in_queue / rate,
                   rttvar=0.001, ssthresh=1000, cwnd=1000, notsent_bytes=0, min_rtt=min_rtt,
                   delivery_rate=rate_sample)


def share(senders: int, rate: float, fps: float, seconds: float = 30.0, stagger: float = 2.0,
          kernel: bool = False, min_rtt: float = 0.001) -> dict[str, Any]:
    """Senders joining one token-bucket link (one FIFO queue) ``stagger`` seconds apart, each with its own
    estimator and its own acknowledgements; their shares of the link once all have run 5 s, and Jain's index.
    ``kernel``: each sender also sees what TCP_INFO would tell it (:func:`_kernel_view`)."""
    ests = [LinkEstimator(LinkPolicy()) for _ in range(senders)]
    burst = max(3028.0, rate / 100)
    tokens, queue, t, dt, next_tick = burst, [], 0.0, 0.001, 0.0
    handed, delivered = [0.0] * senders, [0.0] * senders
    history: list[list[tuple[float, float]]] = [[(0.0, 0.0)] for _ in range(senders)]
    sent: list[list[tuple[float, int]]] = [[] for _ in range(senders)]
    period, next_frame = 1.0 / fps, [i * stagger for i in range(senders)]
    while t < seconds:
        tokens = min(burst, tokens + rate * dt)
        while queue and tokens > 0:
            take = min(tokens, queue[0][1])
            queue[0][1] -= take
            tokens -= take
            delivered[queue[0][0]] += take
            if queue[0][1] <= 1e-9:
                queue.pop(0)
        in_queue = sum(q[1] for q in queue)
        for s in range(senders):
            if t < s * stagger:
                continue
            tcp = None
            if kernel:
                history[s].append((t, delivered[s]))
                while history[s][0][0] < t - 0.1:
                    history[s].pop(0)
                tcp = _kernel_view(handed[s] - delivered[s], in_queue, rate, history[s], min_rtt)
            if t >= next_tick:
                ests[s].sample(t, int(delivered[s]), int(handed[s] - delivered[s]), min_rtt if kernel else 0.0, tcp)
            if t >= next_frame[s]:
                next_frame[s] += period
                ests[s].sample(t, int(delivered[s]), int(handed[s] - delivered[s]), min_rtt if kernel else 0.0, tcp)
                budget = ests[s].frame_budget(t, 0.005, 1.0, period, 12600).wire_bytes
                if budget:
                    queue.append([s, float(budget)])
                    handed[s] += budget
                    sent[s].append((t, budget))
        if t >= next_tick:
            next_tick += 0.01
        t += dt
    steady = (senders - 1) * stagger + 5.0
    rates = np.array([sum(b for at, b in sent[s] if at >= steady) / (seconds - steady) for s in range(senders)])
    return {"shares": rates / rate, "jain": float(rates.sum() ** 2 / (senders * (rates ** 2).sum()))}


_SMALL_FAIR_FRAMES = pytest.mark.xfail(strict=True, reason="open: at 30 fps on 250 kbit/s (fair frames of 200-350 B) "
                                                           "the simulation's shares reach Jain 0.80-0.88 in 60 s")


@pytest.mark.parametrize(("senders", "fps", "rate"), [
    (3, 10.0, 31_250.0), pytest.param(3, 30.0, 31_250.0, marks=_SMALL_FAIR_FRAMES), (3, 10.0, 125_000.0),
    (3, 30.0, 125_000.0),
    (5, 10.0, 31_250.0), pytest.param(5, 30.0, 31_250.0, marks=_SMALL_FAIR_FRAMES), (5, 10.0, 125_000.0),
    (5, 30.0, 125_000.0)])
def test_sensors_sharing_one_uplink_converge_to_fair_shares(senders: int, fps: float, rate: float) -> None:
    """Issue 31 point 2: with what the kernel says (the queueing delay every sender of the FIFO sees alike), each
    sensor's rate follows the same additive-increase, multiplicative-decrease rule, and the shares converge."""
    out = share(senders, rate, fps, seconds=60.0, kernel=True)
    assert out["jain"] >= 0.9, out
    assert out["shares"].sum() >= 0.95, out


@pytest.mark.xfail(strict=True, reason="without TCP_INFO (no kernel delay signal) each sender reads its queue as its "
                                       "own backlog over its own rate, which a small sender behind a shared FIFO "
                                       "reads as a long queue — the first sender keeps the link (Jain 0.2-0.4)")
@pytest.mark.parametrize("senders", [3, 5])
def test_without_the_kernels_view_the_first_sender_keeps_the_link(senders: int) -> None:
    out = share(senders, 125_000.0, 10.0)
    assert out["jain"] >= 0.9, out


def test_the_monitor_samples_while_bytes_are_on_their_way_and_sleeps_while_the_link_is_idle() -> None:
    """Issue 35: a 10 ms poll whatever the frame rate cost a 1 fps sensor 11 of its 14.75 ms per frame. The monitor
    ticks only from a hand-over until everything sent has been delivered."""
    import threading
    import time

    from nairbus.agents.nair.link import LinkMonitor

    state = {"handed": 0, "backlog": 0}
    lock = threading.Lock()

    def backlog() -> int:
        with lock:
            return state["backlog"]

    monitor = LinkMonitor(lambda: state["handed"], backlog, tick_s=0.01)
    monitor.start()
    try:
        monitor.sample_now()  # a frame is sized: nothing on its way
        time.sleep(0.3)
        idle_samples = monitor.samples
        assert idle_samples <= 3  # asleep, not polling every 10 ms
        with lock:
            state["handed"], state["backlog"] = 5000, 5000
        monitor.wake()  # the frame was handed over
        time.sleep(0.2)
        assert monitor.samples - idle_samples >= 5  # it watches the bytes leave
        with lock:
            state["backlog"] = 0
        time.sleep(0.1)
        drained_at = monitor.samples
        time.sleep(0.3)
        assert monitor.samples - drained_at <= 1  # delivered: asleep again
    finally:
        monitor.stop()
