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
:class:`LinkMonitor` samples a communicator on its own thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["BudgetDecision", "LinkEstimator", "LinkMonitor", "LinkPolicy"]


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


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """The wire bytes a frame may spend (0: skip it) and why."""

    wire_bytes: int
    reason: str
    rate: float | None
    backlog: int


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
    backlog: int = 0

    def sample(self, now: float, delivered: int, backlog: int) -> None:
        """One observation: bytes delivered so far (monotonic) and bytes still waiting, at ``now``."""
        last = self._last
        self._last = (now, delivered, backlog)
        self.backlog = backlog
        if last is not None:
            t0, d0, b0 = last
            dt = now - t0
            # Busy: the link had bytes to carry during the tick — some were waiting at its start, or the sender
            # handed some over during it (the sample before a frame is taken just before the frame is handed over,
            # so on a fast link the whole frame crosses within the next tick). A tick that ends with the queue empty
            # counts too: its deliveries are what emptied it.
            handed_more = delivered + backlog > d0 + b0
            if dt > 0 and (b0 > 0 or handed_more) and delivered >= d0:
                self._busy.append((now, dt, delivered - d0))
                self._busy_s += dt
                self._busy_bytes += delivered - d0
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._busy and self._busy[0][0] < now - self.policy.window_s:
            _t, dt, nbytes = self._busy.popleft()
            self._busy_s -= dt
            self._busy_bytes -= nbytes

    def rate(self, now: float) -> float | None:
        """Bytes per second the link delivered while it was busy in the last window (None: not busy enough)."""
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
        backlog = self.backlog
        idle = backlog == 0
        last = self._last_budget
        if idle and last and self._known_rate is not None:
            # Everything sent has drained, so the link carries at least the last frame per period: a rate measured
            # during a bad moment (a loss and its retransmission timeout) must not cap the frames forever.
            self._known_rate = max(self._known_rate, last / period_s)
        rate = self._known_rate
        if rate is None:
            budget = p.start_bytes if not last else (round(last * p.probe_gain) if idle else last)
            reason = "start"
        else:
            standing = max(0.0, backlog - rate * p.queue_target_s)
            budget = round(rate * period_s - standing)
            reason = "rate"
            # Probe while the link keeps up: nothing waits beyond what a round trip of late acknowledgements and
            # the tolerated queue hold (a receiver's delayed ACKs keep a few hundred bytes unacknowledged at all
            # times, so "nothing waiting" would stop the probe below the link's rate).
            drained = backlog <= rate * p.queue_target_s
            if drained and last and round(last * 1.25) > budget:
                budget, reason = round(last * 1.25), "probe"
            remaining = deadline_s * (1.0 - p.deadline_margin) - capture_ts_age_s
            in_time = round(rate * remaining - backlog)
            if budget < p.min_useful_bytes <= in_time:
                # A standing queue is being paid back, but a small frame still arrives in time: send that rather
                # than nothing (the most important bytes are worth the most).
                budget, reason = p.min_useful_bytes, "minimum"
            if in_time < budget:
                budget, reason = in_time, "deadline"
        if cap is not None and budget > cap:
            budget, reason = cap, reason + "+cap"
        if budget < p.min_useful_bytes:
            return BudgetDecision(0, "skip:" + reason, rate, backlog)
        self._last_budget = budget
        return BudgetDecision(budget, reason, rate, backlog)


class LinkMonitor:
    """Samples a sender's delivered and backlog bytes every ``tick_s`` on a daemon thread into an estimator."""

    def __init__(self, handed: Callable[[], int], backlog: Callable[[], int], policy: LinkPolicy | None = None,
                 tick_s: float = 0.01) -> None:
        self._handed = handed
        self._backlog = backlog
        self.estimator = LinkEstimator(policy or LinkPolicy())
        self.tick_s = tick_s
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nairbus-link-monitor", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def sample_now(self) -> None:
        """Take one sample at once (the sensor calls this right before it sizes a frame)."""
        backlog = self._backlog()
        handed = self._handed()
        with self.lock:
            self.estimator.sample(time.monotonic(), max(0, handed - backlog), backlog)

    def budget(self, capture_ts_age_s: float, deadline_s: float, period_s: float,
               cap: int | None = None) -> BudgetDecision:
        """:meth:`LinkEstimator.frame_budget` on fresh figures."""
        self.sample_now()
        with self.lock:
            return self.estimator.frame_budget(time.monotonic(), capture_ts_age_s, deadline_s, period_s, cap)

    def rate(self) -> float | None:
        """The current rate estimate, bytes per second."""
        with self.lock:
            return self.estimator.rate(time.monotonic())

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.sample_now()
            except Exception:  # a sampling hiccup (socket gone mid-reconnect) must not end the thread
                continue
