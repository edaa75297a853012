"""Fitting a sensor to its link: measure how fast the connection drains, size each frame to what arrives in time.

A sensor cannot learn that its uplink is slow from ``publish()``, which always succeeds: the backlog grows out of sight
in paho's queue and the kernel's send buffer. So the sensor watches its own backlog — wire bytes handed to paho that
paho has not written (:meth:`~nairbus.agents.runtime.mqtt.Communicator.pending_bytes`) plus bytes the kernel has not had
acknowledged (:meth:`~nairbus.agents.runtime.mqtt.Communicator.socket_outq`) — and what has been delivered, which is
what it handed over minus that backlog.

:class:`LinkEstimator` (pure, clock passed in) turns those samples into a delivery rate. A sample counts only while
the link was busy (backlog at the start of the tick, or bytes handed over during it): an idle link says nothing
about its capacity, and a link whose sender is the bottleneck would otherwise look as slow as the sender. Until a
rate is known the sensor starts small and doubles while everything drains; once one is known it is kept (an idle
link says nothing new) and the budget grows by a quarter per frame while the link keeps up at frame time (no more
waiting than the tolerated queue), until the link is busy again and tells its new rate — so the sensor fills
whatever the link carries within a few frames. A link that drained everything carries at least the last frame per
period, which lifts a rate measured during a stall (a lost segment and TCP's retransmission timeout) instead of
letting it cap the frames for good.
:meth:`LinkEstimator.frame_budget` gives each frame the bytes that drain in one frame period, less any standing
queue beyond a small target, and no more than can still be delivered before the frame's deadline; a frame for
which even a useful minimum would be late is skipped, before anything reaches the socket.

Over a long path (cellular, satellite, busy Wi-Fi: a round trip of 100–600 ms) the unacknowledged bytes include what
the path itself holds: the sensor passes the connection's minimum round trip (the kernel's ``TCP_INFO``) with each
sample, and the estimator counts only the backlog beyond the bytes in flight — the rate times the minimum round trip,
or what was handed over within the last round trip when that is more — as waiting; a tick counts as busy only when
such a queue stood. A budget's effect shows a round trip later, so it grows at most once a round trip (by half,
not double, while a long path starts); the start ends once the link delivers less than was sent the round trip
before (its rate, then, is the link's), and a frame's deadline keeps a one-way trip for its last byte.
:class:`LinkMonitor` samples a communicator on its own thread while bytes are on their way (every ``tick_s``), and
sleeps from the moment everything sent has been delivered until the sender hands over more (:meth:`LinkMonitor.wake`):
an idle link says nothing, so its cost follows the frames, not the clock (a 1 fps sensor spent 11 of its 14.75 ms per
frame on a 10 ms poll).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nairbus.agents.nair.linktrace import LinkTrace
from nairbus.agents.runtime.linkprobe import TcpInfo
from nairbus.agents.runtime.state import state_dir

__all__ = ["MEMORY_SHARE", "BudgetDecision", "DeliveryRateFilter", "LinkEstimator", "LinkMemory", "LinkMonitor",
           "LinkPolicy", "replay_trace", "state_dir"]

MEMORY_MAX_AGE_S = 7 * 24 * 3600.0
"""A remembered rate older than this is forgotten (the device may have moved to another link)."""
MEMORY_SHARE = 0.5
"""A run starts at this share of the rate remembered from the last one, and probes up from there."""


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """How a sensor spends its link (defaults fit a 1 s deadline from 10 Mbit/s down to 100 kbit/s)."""

    window_s: float = 2.0
    """Busy ticks older than this no longer count towards the rate."""
    min_busy_s: float = 0.05
    """Busy time a rate estimate needs before it is trusted."""
    queue_target_s: float = 0.05
    """Standing queue the sensor tolerates (seconds of the link's rate); more is paid back from the next frames."""
    deadline_margin: float = 0.25
    """Share of the deadline kept in reserve for the broker, fusion and the estimate's error."""
    start_bytes: int = 1024
    """Wire bytes of the first frame, before anything is known about the link."""
    probe_gain: float = 2.0
    """Growth of the budget per frame before any rate is known, while the link drains everything."""
    min_useful_bytes: int = 48
    """A frame that cannot get at least this many wire bytes through in time is skipped."""



MSS_BYTES = 1448
"""A full TCP segment over Ethernet: what a link's queue holds for the time of two before the fair share cuts."""
MEASURED_SPAN_S = 1.0
"""How long the kernel's delivery-rate samples must have come before their median is the path's rate."""
QUEUE_BASE_S = 10.0
"""The window whose lowest smoothed round trip is the path's own, for the queueing delay (BBR's min-RTT window)."""
_DELAYED_ACK_BYTES = 512
"""Bytes a receiver's delayed acknowledgements may keep unacknowledged on an idle link."""


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """The wire bytes a frame may spend (0: skip it) and why."""

    wire_bytes: int
    reason: str
    rate: float | None
    backlog: int


@dataclass
class DeliveryRateFilter:
    """The path's rate from the kernel's delivery-rate samples (``TCP_INFO``, polled every tick): the median, over
    the last ``window_s`` (ten round trips of a long path), of those taken while the sender kept the path busy. Not
    their maximum, as BBR takes it: a token bucket lets a short burst through at line rate, so single samples run
    well above a shaped link's rate (at 250 kbit/s with a 3 kB bucket, measured: median 1.01×, 95th percentile
    1.3×, largest 1.5× of the payload rate), while the median is its rate — and, on a shared uplink, this sender's
    share of it. A sample taken while the sender was app-limited is left out: it can run at the first hop's line
    rate (a frame that fits the bucket crosses a veth at gigabits per second)."""

    window_s: float = 2.0
    """The shortest window; a long path's is ten of its round trips."""
    _window: float = 0.0
    _samples: deque[tuple[float, float]] = field(default_factory=deque)  # (t, rate)
    _last: float = 0.0
    """The median the last time the window held enough samples: the path's rate while the sender is app-limited."""
    _trusted: bool = False
    """Whether the samples have once spanned :data:`MEASURED_SPAN_S` (from then on the kernel's rate stands)."""

    def add(self, now: float, rate: float, app_limited: bool, rtt: float = 0.0) -> None:
        """One sample (bytes per second) at ``now`` over a path of round trip ``rtt``."""
        self._window = max(self.window_s, 10 * rtt)
        if rate > 0 and not app_limited:
            self._samples.append((now, rate))

    def _current(self, now: float) -> list[float]:
        """The window's samples."""
        while self._samples and self._samples[0][0] < now - self._window:
            self._samples.popleft()
        return [r for _t, r in self._samples]

    def _span(self, now: float) -> float:
        return now - self._samples[0][0] if self._samples else 0.0

    def value(self, now: float) -> float:
        """The estimate, bytes per second (0.0: none yet): the window's median when its samples span half a second
        or more, else the last such median. A sender that has less to send than the path carries takes no sample,
        and a lone sample can be one burst through a token bucket: neither changes what the path was measured to
        carry."""
        samples = self._current(now)
        if samples and (self._span(now) >= MEASURED_SPAN_S / 2 or not self._last):
            self._last = float(statistics.median(samples))
        return self._last

    def peak(self, now: float) -> float:
        """The largest sample in the window (0.0: none): a bound on what the path can carry."""
        return max(self._current(now), default=0.0)

    def measured(self, now: float) -> bool:
        """Whether the samples have spanned a second (or two round trips) at least, once: fewer can all be one
        burst through a token bucket (at 50 kbit/s the first measured sample ran at 9× the link's rate)."""
        self._current(now)
        if not self._trusted and self._span(now) >= max(MEASURED_SPAN_S, 2 * self._window / 10):
            self._trusted = True
        return self._trusted


@dataclass
class FairShare:
    """A sender's rate on a bottleneck it may share with senders it does not know: additive increase, multiplicative
    decrease (Chiu and Jain: the rule under which senders that each adjust by the same signal converge to equal
    shares) on the signal every sender of one FIFO queue sees alike — the queueing delay, the kernel's smoothed
    round trip over its minimum. Once a round: above ``high_s`` (plus a twentieth of the path's round trip, which a
    long path's jitter fills) the rate falls by ``decrease``; below it, it rises by ``increase`` of a step that is
    the same for every sender (a sender that has most of the link gives up more than it gains, a newcomer gains
    more than it gives up)."""

    decrease: float = 0.85
    increase: float = 0.03
    high_s: float = 0.025
    target: float | None = None
    """The rate the sender may send at now, bytes per second (None: not started)."""
    _round_at: float = float("-inf")

    def update(self, now: float, queue_delay: float, min_rtt: float, period_s: float, step: float,
               start: float, ceiling: float) -> float:
        """The rate for a frame at ``now``: ``start`` the first time, then adjusted once a round (a round trip, or a
        frame period if longer) and never above ``ceiling``."""
        if self.target is None:
            self.target, self._round_at = start, now
        elif now - self._round_at >= max(min_rtt + queue_delay, period_s):
            self._round_at = now
            if queue_delay > self.threshold(min_rtt):
                self.target *= self.decrease
            else:
                self.target += self.increase * step
        self.target = min(self.target, ceiling)
        return self.target

    def threshold(self, min_rtt: float) -> float:
        """The queueing delay above which the rate falls, on a path of minimum round trip ``min_rtt``."""
        return self.high_s + min_rtt / 20


@dataclass
class LinkEstimator:
    """Delivery rate of a link from periodic samples of (delivered bytes, backlog bytes). Pure: pass the clock."""

    policy: LinkPolicy = field(default_factory=LinkPolicy)
    _last: tuple[float, int, int] | None = None
    _busy: deque[tuple[float, float, int]] = field(default_factory=deque)  # (t_end, dt, delivered in tick)
    _busy_s: float = 0.0
    _busy_bytes: int = 0
    _last_budget: int = 0
    _known_rate: float | None = None
    _path: deque[tuple[float, int, int]] = field(default_factory=deque)  # (t, delivered, handed) so far
    _grown_at: float = float("-inf")
    """When the budget last grew beyond what the link had shown (a doubling or a probe)."""
    backlog: int = 0
    min_rtt: float = 0.0
    """The path's minimum round trip in seconds (TCP_INFO's ``min_rtt``; 0: unknown or negligible)."""
    kernel: DeliveryRateFilter | None = None
    """The kernel's view of the path, once a sample brought ``TCP_INFO``: its rate replaces the busy-tick one."""
    _unacked: int = 0
    """Bytes sent and not acknowledged, as the kernel counts them (with ``TCP_INFO``)."""
    _queue_delay: float = 0.0
    """The kernel's smoothed round trip over its lowest in the last :data:`QUEUE_BASE_S`: the path's queueing
    delay as every sender of a shared queue sees it alike (with ``TCP_INFO``)."""
    _rtts: deque[tuple[float, float]] = field(default_factory=deque)
    """(t, smoothed round trip), rising: the window's lowest first."""
    share: FairShare = field(default_factory=FairShare)
    slow_start: bool = True
    """Until the path first shows a queue (the kernel's queueing delay above :class:`FairShare`'s threshold): the
    budget of a long path doubles once a round trip, as TCP's window does, and the fair-share rule waits."""

    def sample(self, now: float, delivered: int, backlog: int, min_rtt: float = 0.0,
               tcp: TcpInfo | None = None) -> None:
        """One observation: bytes delivered so far (monotonic) and bytes still waiting, at ``now``; ``min_rtt`` the
        path's minimum round trip (bytes sent within it are in flight, not waiting); ``tcp`` what the kernel says
        of the connection (its delivery rate, and which of the waiting bytes are on the path)."""
        last = self._last
        self._last = (now, delivered, backlog)
        self.backlog = backlog
        self.min_rtt = max(0.0, min_rtt if tcp is None else tcp.min_rtt)
        if tcp is not None:
            self._kernel_sample(now, backlog, tcp)
        self._path.append((now, delivered, delivered + backlog))
        while len(self._path) > 1 and self._path[1][0] <= now - max(self.policy.window_s, 3 * self.min_rtt):
            self._path.popleft()
        if last is not None:
            t0, d0, b0 = last
            dt = now - t0
            # Busy: the link had bytes to carry during the tick — some were waiting at its start, or the sender
            # handed some over during it (the sample before a frame is taken just before the frame is handed over,
            # so on a fast link the whole frame crosses within the next tick). A tick that ends with the queue empty
            # counts too: its deliveries are what emptied it.
            handed_more = delivered + backlog > d0 + b0
            # Over a long path bytes in flight are not a busy link, and what is handed over now is acknowledged a
            # round trip later: only a queue beyond the path's own bytes says the link is the bottleneck.
            long_path = self.min_rtt >= 2 * dt
            waiting = b0 > self.in_flight(self._known_rate) if long_path else b0 > 0
            if dt > 0 and (waiting or (handed_more and not long_path)) and delivered >= d0:
                self._busy.append((now, dt, delivered - d0))
                self._busy_s += dt
                self._busy_bytes += delivered - d0
        self._expire(now)

    def _kernel_sample(self, now: float, backlog: int, tcp: TcpInfo) -> None:
        """Take the kernel's delivery rate into the max filter and its unacknowledged bytes as what is on the path
        (no more than the backlog beyond the bytes not sent yet: the last segment of a burst is rarely full)."""
        if self.kernel is None:
            self.kernel = DeliveryRateFilter(self.policy.window_s)
        self.kernel.add(now, tcp.delivery_rate, tcp.app_limited, self.min_rtt)
        self._unacked = max(0, min(tcp.in_flight, backlog - tcp.notsent_bytes))
        self._queue_delay = self._rtt_over_base(now, tcp.rtt) if tcp.rtt > 0 else 0.0
        if self._queue_delay > self.share.threshold(self.min_rtt):
            self.slow_start = False

    def _rtt_over_base(self, now: float, rtt: float) -> float:
        """``rtt`` over the lowest smoothed round trip of the last :data:`QUEUE_BASE_S` seconds. Not over the
        kernel's minimum of the connection's life: a sensor that joins a link whose queue already stands would
        take that queue for the path and read a smaller delay than the sensors before it, and grow at their cost;
        the lowest of a recent window is the same for all of them (the bottom of their shared cycles)."""
        while self._rtts and self._rtts[-1][1] >= rtt:
            self._rtts.pop()
        self._rtts.append((now, rtt))
        while self._rtts[0][0] < now - QUEUE_BASE_S:
            self._rtts.popleft()
        return rtt - self._rtts[0][1]

    def _expire(self, now: float) -> None:
        while self._busy and self._busy[0][0] < now - self.policy.window_s:
            _t, dt, nbytes = self._busy.popleft()
            self._busy_s -= dt
            self._busy_bytes -= nbytes

    def in_flight(self, rate: float | None) -> float:
        """Bytes that may be unacknowledged without waiting anywhere: what a path of :attr:`min_rtt` holds at
        ``rate``, or what was handed over within the last round trip, whichever is more (a rate measured while the
        sender sent less than the link carries is its own send rate, and must not make the path look queued)."""
        if self.min_rtt <= 0 or not self._path:
            return 0.0
        if self.kernel is not None:
            # The kernel says what is unacknowledged: what was handed over within the last round trip (and a little
            # more, for delayed acknowledgements and the path's jitter), or the rate's worth of a round trip if
            # more (bytes that left TCP's window late were handed over earlier), is on the path; the rest waits.
            recent = self._path[-1][2] - self._at(self.min_rtt * 1.1 + 0.02)[2]
            return float(min(self._unacked, max(recent, (rate or 0.0) * self.min_rtt)))
        sent_within_rtt = float(self._path[-1][2] - self._at(self.min_rtt)[2])
        return max((rate or 0.0) * self.min_rtt, sent_within_rtt)

    def waiting(self) -> int:
        """Bytes queued beyond what the path holds in flight: what a frame handed over now would wait behind."""
        return max(0, round(self.backlog - self.in_flight(self._known_rate)))

    def drained(self) -> bool:
        """Whether what was sent before has (nearly) left: no more waits than the queue the policy tolerates (and a
        few hundred bytes a receiver's delayed acknowledgements hold back)."""
        rate = self._known_rate or 0.0
        return self.waiting() <= max(_DELAYED_ACK_BYTES, rate * self.policy.queue_target_s)

    def _at(self, ago: float) -> tuple[float, int, int]:
        """The latest sample taken at least ``ago`` seconds before the last one (the oldest kept, if none is)."""
        now = self._path[-1][0]
        return next((h for h in reversed(self._path) if h[0] <= now - ago), self._path[0])

    def _saturated_rate(self) -> float | None:
        """Long paths: the delivery rate over the last round trip when it fell short of what was sent the round trip
        before (the link is full: it delivers its rate, not the send rate); None while it kept pace."""
        if self.min_rtt <= 0 or len(self._path) < 3:
            return None
        now, delivered, _h = self._path[-1]
        t1, d1, h1 = self._at(self.min_rtt)
        t2, _d2, h2 = self._at(2 * self.min_rtt)
        if t1 <= t2 or now <= t1 or h1 <= h2:
            return None
        sent_before, got_now = (h1 - h2) / (t1 - t2), (delivered - d1) / (now - t1)
        return got_now if got_now < 0.95 * sent_before else None

    @property
    def known_rate(self) -> float | None:
        """The last rate the link showed, bytes per second (kept while the link is idle)."""
        return self._known_rate

    def seed(self, rate: float) -> None:
        """Start from a rate known from before (the last run over this link): the first frames get that rate's
        bytes instead of opening with a blind probe."""
        if rate > 0 and self._known_rate is None:
            self._known_rate = rate

    def rate(self, now: float) -> float | None:
        """What the kernel measured (:class:`DeliveryRateFilter`) while the sender kept the path busy, or else the
        bytes per second the link delivered while it was busy in the last window (None: not busy enough)."""
        if self.kernel is not None and self.kernel.measured(now):
            return self.kernel.value(now)
        self._expire(now)
        if self._busy_s < self.policy.min_busy_s or self._busy_bytes <= 0:
            return None
        return self._busy_bytes / self._busy_s

    def frame_budget(self, now: float, capture_ts_age_s: float, deadline_s: float, period_s: float,
                     cap: int | None = None) -> BudgetDecision:
        """Wire bytes for the next frame, ``capture_ts_age_s`` after its capture, sent every ``period_s``.

        ``cap`` bounds it (the whole representation, or a user's byte budget). Until a rate has been measured the
        budget starts at ``start_bytes`` and doubles only while the link drains everything between frames. Once it
        has, a frame gets the rate's bytes for one period less the standing queue; when the link is idle at a
        frame (it carries more than is sent) the budget grows by a quarter per frame until the link is busy and a
        new rate is measured. Never more than the last measured rate can deliver before the frame's deadline.
        """
        p = self.policy
        measured = self.rate(now)
        if measured is not None:
            self._known_rate = measured
        full = self._saturated_rate() if self.min_rtt > period_s and self.kernel is None else None
        if full is not None and self._known_rate is None:
            self._known_rate = full  # slow start ends: the link delivered less than was sent
        # What waits: the backlog beyond the bytes a long path holds in flight (all of it on a LAN).
        backlog = max(0, round(self.backlog - self.in_flight(self._known_rate)))
        idle = backlog == 0
        last = self._last_budget
        # Grow at most once a round trip: what the last step did shows only a round trip later (TCP's slow start).
        may_grow = now - self._grown_at >= self.min_rtt
        if idle and last and self._known_rate is not None:
            # Everything sent has drained, so the link carries at least the last frame per period: a rate measured
            # during a bad moment (a loss and its retransmission timeout) must not cap the frames forever.
            self._known_rate = max(self._known_rate, last / period_s)
        rate = self._known_rate
        if rate is None:
            # Over a long path the doubling overshoots for a whole round trip before it shows; a half is gentler.
            gain = p.probe_gain if self.min_rtt <= period_s else min(p.probe_gain, 1.5)
            budget = p.start_bytes if not last else (round(last * gain) if idle and may_grow else last)
            reason = "start"
        else:
            if self.kernel is not None and self.kernel.measured(now) and not self.slow_start:
                budget, reason = self._shared_budget(now, rate, backlog, period_s, cap)
            else:
                budget, reason = self._own_budget(now, rate, backlog, period_s, last, may_grow)
            budget, reason = self._in_time(rate, backlog, capture_ts_age_s, deadline_s, budget, reason)
        if cap is not None and budget > cap:
            budget, reason = cap, reason + "+cap"
        if budget < p.min_useful_bytes:
            return BudgetDecision(0, "skip:" + reason, rate, backlog)
        if not last or (budget > last and reason in ("start", "probe")):
            self._grown_at = now
        self._last_budget = budget
        return BudgetDecision(budget, reason, rate, backlog)


    def _own_budget(self, now: float, rate: float, backlog: int, period_s: float, last: int, may_grow: bool,
                    ) -> tuple[int, str]:
        """A frame's budget from this sender's own rate and backlog: the rate's bytes for a period less the standing
        queue beyond the tolerated one, and a probe by a quarter while the link keeps up."""
        p = self.policy
        standing = max(0.0, backlog - rate * p.queue_target_s)
        budget, reason = round(rate * period_s - standing), "rate"
        # Probe while the link keeps up: nothing waits beyond what a round trip of late acknowledgements and the
        # tolerated queue hold (a receiver's delayed ACKs keep a few hundred bytes unacknowledged at all times, so
        # "nothing waiting" would stop the probe below the link's rate).
        drained = backlog <= rate * p.queue_target_s
        # Over a long path the first rates are far below the link's (a frame over a round trip, or TCP's first
        # windows): double once a round trip until a queue shows. On a short one they are near it.
        gain = p.probe_gain if self.kernel is not None and self.slow_start and self.min_rtt > period_s else 1.25
        if drained and last and round(last * gain) > budget:
            budget, reason = (round(last * gain), "probe") if may_grow else (max(budget, last), "hold")
        return budget, reason

    def _shared_budget(self, now: float, rate: float, backlog: int, period_s: float, cap: int | None,
                       ) -> tuple[int, str]:
        """A frame's budget on a path the kernel measures: :class:`FairShare`'s rate for a period, less this
        sender's standing queue beyond the tolerated one."""
        assert self.kernel is not None
        # No more than half again the most the path delivered lately (while the sender has less to send there is
        # no sample, and no bound but the whole frame).
        peak = self.kernel.peak(now)
        whole = cap / period_s if cap is not None else float("inf")
        ceiling = max(rate, min(1.5 * peak, whole) if peak else whole)
        # The step up is the same for every sensor of one model and frame rate (a share of its whole frame per
        # period), whatever share it has now: what lets their shares converge.
        step = whole if cap is not None else max(peak, rate)
        # A queue of two full segments is a link's own (tbf's bucket holds two): not yet a sign of sharing.
        self.share.high_s = max(FairShare.high_s, 2 * MSS_BYTES / max(peak, rate))
        target = self.share.update(now, self._queue_delay, self.min_rtt, period_s, step, rate, ceiling)
        standing = max(0.0, backlog - target * self.policy.queue_target_s)
        return round(target * period_s - standing), "share"

    def _in_time(self, rate: float, backlog: int, age_s: float, deadline_s: float, budget: int, reason: str,
                 ) -> tuple[int, str]:
        """``budget`` no larger than ``rate`` delivers before the frame's deadline (its last byte reaches the hub a
        one-way trip after it leaves the bottleneck), and no smaller than a useful minimum that still does."""
        p = self.policy
        remaining = deadline_s * (1.0 - p.deadline_margin) - age_s - self.min_rtt / 2
        in_time = round(rate * remaining - backlog)
        if budget < p.min_useful_bytes <= in_time:
            # A standing queue is being paid back, but a small frame still arrives in time: send that rather than
            # nothing (the most important bytes are worth the most).
            budget, reason = p.min_useful_bytes, "minimum"
        if in_time < budget:
            budget, reason = in_time, "deadline"
        return budget, reason


def replay_trace(records: Iterable[dict[str, Any]], policy: LinkPolicy | None = None,
                 ) -> list[tuple[dict[str, Any], BudgetDecision]]:
    """Feed a link trace (:mod:`~nairbus.agents.nair.linktrace`) into a fresh estimator: each recorded frame budget
    beside the one the estimator gives now, on the same samples."""
    est = LinkEstimator(policy or LinkPolicy())
    out: list[tuple[dict[str, Any], BudgetDecision]] = []
    for record in records:
        if "handed" in record:
            tcp = TcpInfo(**record["tcp"]) if "tcp" in record else None
            est.sample(record["t"], max(0, record["handed"] - record["backlog"]), record["backlog"],
                       tcp.min_rtt if tcp is not None else 0.0, tcp)
        else:
            out.append((record, est.frame_budget(record["t"], record["age"], record["deadline"], record["period"],
                                                 record["cap"])))
    return out


@dataclass(frozen=True, slots=True)
class LinkMemory:
    """The last good rate of one sensor's link to one broker, kept on disk so the next run starts near it (a JSON
    file per sensor and broker under :func:`state_dir`). Reading and writing never fail a sensor: a missing,
    unreadable or stale file is no memory, a write that fails is skipped."""

    path: Path

    @classmethod
    def for_link(cls, sensor_id: str, endpoint: str, directory: Path | None = None) -> LinkMemory:
        """The memory of ``sensor_id``'s link to the broker at ``endpoint`` (``host:port``)."""
        key = hashlib.sha256(f"{sensor_id}\0{endpoint}".encode()).hexdigest()[:16]
        return cls((directory or state_dir()) / f"link-{key}.json")

    def recall(self, now: float) -> float | None:
        """The remembered rate in bytes per second (None: nothing usable)."""
        try:
            data = json.loads(self.path.read_text())
            rate, saved = float(data["rate"]), float(data["saved"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return rate if rate > 0 and 0 <= now - saved <= MEMORY_MAX_AGE_S else None

    def remember(self, rate: float, now: float) -> None:
        """Keep ``rate`` (bytes per second) for the next run; written whole or not at all."""
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            part = self.path.with_suffix(".part")
            part.write_text(json.dumps({"rate": rate, "saved": now}))
            os.replace(part, self.path)


class LinkMonitor:
    """Samples a sender's delivered and backlog bytes into an estimator on a daemon thread: every ``tick_s`` while
    bytes are on their way, not at all while the link is idle (until :meth:`wake`)."""

    def __init__(self, handed: Callable[[], int], backlog: Callable[[], int], policy: LinkPolicy | None = None,
                 tick_s: float = 0.01, path: Callable[[], TcpInfo | None] | None = None,
                 trace: LinkTrace | None = None) -> None:
        self._handed = handed
        self._backlog = backlog
        self._path = path or (lambda: None)
        self.trace = trace
        """Where every sample and decision is written (None: nowhere)."""
        self.estimator = LinkEstimator(policy or LinkPolicy())
        self.tick_s = tick_s
        self.lock = threading.Lock()
        self.samples = 0
        """Samples taken so far (the monitor's cost)."""
        self._stop = threading.Event()
        self._busy = threading.Event()
        """Set while bytes are on their way (the thread ticks), clear while everything sent has been delivered."""
        self._wakes = 0
        """Hand-overs so far: a sample that found nothing on its way clears :attr:`_busy` only if none came since."""
        self._thread = threading.Thread(target=self._run, name="nairbus-link-monitor", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        self._busy.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def wake(self) -> None:
        """The sender handed bytes over: sample them on their way."""
        with self.lock:
            self._wakes += 1
        self._busy.set()

    def sample_now(self) -> None:
        """Take one sample at once (the sensor calls this right before it sizes a frame)."""
        with self.lock:
            wakes = self._wakes
        backlog = self._backlog()
        handed = self._handed()
        info = self._path()
        min_rtt = info.min_rtt if info is not None else 0.0
        with self.lock:
            now = time.monotonic()
            self.estimator.sample(now, max(0, handed - backlog), backlog, min_rtt, info)
            self.samples += 1
            if self.trace is not None:
                self.trace.sample(now, handed, backlog, info)
            if backlog > 0:
                self._busy.set()
            elif wakes == self._wakes:  # nothing handed over since the backlog was read: idle until the next
                self._busy.clear()

    def budget(self, capture_ts_age_s: float, deadline_s: float, period_s: float,
               cap: int | None = None) -> BudgetDecision:
        """:meth:`LinkEstimator.frame_budget` on fresh figures."""
        self.sample_now()
        with self.lock:
            now = time.monotonic()
            decision = self.estimator.frame_budget(now, capture_ts_age_s, deadline_s, period_s, cap)
            if self.trace is not None:
                self.trace.budget(now, capture_ts_age_s, deadline_s, period_s, cap, {
                    "budget": decision.wire_bytes, "reason": decision.reason, "rate": decision.rate,
                    "backlog": decision.backlog})
            return decision

    def drained(self) -> bool:
        """:meth:`LinkEstimator.drained` on a fresh sample."""
        self.sample_now()
        with self.lock:
            return self.estimator.drained()

    def rate(self) -> float | None:
        """The current rate estimate, bytes per second."""
        with self.lock:
            return self.estimator.rate(time.monotonic())

    def seed(self, rate: float) -> None:
        """:meth:`LinkEstimator.seed`."""
        with self.lock:
            self.estimator.seed(rate)

    def known_rate(self) -> float | None:
        """The last rate the link showed (kept while it is idle), bytes per second."""
        with self.lock:
            return self.estimator.known_rate

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self._busy.wait()
            if self._stop.is_set():
                return
            try:
                self.sample_now()
            except Exception:  # a sampling hiccup (socket gone mid-reconnect) must not end the thread
                continue
