"""What the VP sensor and fusion agents share: the topk message size, the per-frame classification cost model and
the choice of frames that can still be classified by their deadline."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

from nairbus.agents.runtime.logging import get_logger
from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.schemas import (
    Frame,
    TopK,
)
from nairbus.schemas.lean import LeanContext, encode_lean
from nairbus.schemas.wire import alias_wire_bytes

log = get_logger("nairbus.vp")
FRAME_SIDE = 28
VP_SPEC = fashion_mnist_spec()
"""What the variants take: 28x28 grey (each variant resizes to its own resolution inside)."""
MAX_PENDING_FRAMES: Final = 1024
"""Most frames an MQTT-source sensor holds between rounds; beyond that the oldest are skipped."""
SENSOR_COUNTERS: Final = ("frames", "published", "frames_skipped", "wire_bytes", "payload_bytes",
                          "dropped_outgoing", "frames_rejected")
"""What a VP sensor counts (and ``nairbus sensor --mode vp`` prints at the end). ``frames`` is every frame taken
from the source; each is published, skipped (stale) or dropped by the outgoing queue."""


class VpConfigError(RuntimeError):
    """A VP agent was configured with something the shipped family does not have (variant, k)."""


def topk_message_bytes(k: int, n_classes: int = VP_SPEC.num_classes) -> int:
    """Wire bytes of one real lean :class:`TopK` publish with ``k`` classes, as a sensor sends it.

    The whole MQTT PUBLISH under an established topic alias (fixed header, alias property, payload) of a message
    with typical counters: sequence number 123 456, frame id 9 999, captured an hour into the session.
    """
    n = min(k, n_classes)
    ctx = LeanContext("vp-w44r28", "0123456789ab", epoch_ts=1_700_000_000.0, expiry_s=10.0)
    capture = ctx.epoch_ts + 3600.0
    message = TopK(sensor_id=ctx.sensor_id, session=ctx.session, seq=123456, frame_id=9999, capture_ts=capture,
                   expires_ts=capture + ctx.expiry_s, classes=tuple(range(n)),
                   scores=tuple(0.1234567 for _ in range(n)))
    return alias_wire_bytes(len(encode_lean(message, ctx)))


class ClassifyCost:
    """How long a sensor takes to classify and publish frames: ``per_batch_s + n * per_frame_s`` for a batch of n.

    Fitted online by least squares with exponential forgetting over the batches the sensor ran (their sizes vary
    with the backlog, which separates the two terms); while the sizes do not vary, the whole time is charged per
    frame (pessimistic for a large backlog, which batches better). Zero until the first batch is measured.
    """

    def __init__(self, per_frame_s: float = 0.0, per_batch_s: float = 0.0, forget: float = 0.95) -> None:
        self.per_frame_s = per_frame_s
        self.per_batch_s = per_batch_s
        self.forget = forget
        self._sums = (0.0, 0.0, 0.0, 0.0, 0.0)  # weight, n, t, n*n, n*t

    def note(self, frames: int, seconds: float) -> None:
        """Learn from one batch of ``frames`` frames that took ``seconds``."""
        if frames < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        n, t, k = float(frames), seconds, self.forget
        w, sn, st, snn, snt = (k * x for x in self._sums)
        w, sn, st, snn, snt = w + 1, sn + n, st + t, snn + n * n, snt + n * t
        self._sums = (w, sn, st, snn, snt)
        det = w * snn - sn * sn
        slope = (w * snt - sn * st) / det if det > 1e-6 * w * snn else -1.0
        intercept = (st - slope * sn) / w
        if slope < 0 or intercept < 0:  # sizes too alike (or noise): charge it all per frame
            slope, intercept = st / sn, 0.0
        self.per_frame_s, self.per_batch_s = slope, intercept

    def seconds(self, frames: int, batch: int) -> float:
        """Estimated seconds to classify ``frames`` frames in batches of at most ``batch``."""
        return math.ceil(frames / max(1, batch)) * self.per_batch_s + frames * self.per_frame_s


def choose_young(frames: Sequence[Frame], now: float, deadline_s: float, cost: Callable[[int], float],
                 epoch_ts: float = 0.0) -> tuple[list[Frame], list[Frame]]:
    """Split waiting frames into those to classify (newest first) and those too stale to be worth it.

    Newest first, a frame is chosen if classifying it with every frame chosen before it (``cost(n)``: seconds for
    the first n) still finishes by its deadline (``capture_ts + deadline_s``), it has not expired, and it was
    captured after the session's epoch (so its capture time fits the lean wire). Older frames have earlier
    deadlines, so once the sensor is behind it keeps the newest frames and skips the rest (latest frame wins).
    """
    chosen: list[Frame] = []
    stale: list[Frame] = []
    for frame in sorted(frames, key=lambda f: (f.capture_ts, f.frame_id), reverse=True):
        finish = now + cost(len(chosen) + 1)
        if frame.capture_ts >= epoch_ts and frame.expires_ts > now and finish <= frame.capture_ts + deadline_s:
            chosen.append(frame)
        else:
            stale.append(frame)
    return chosen, stale


