"""What the VP sensor and fusion agents share: the top-k message size, and (from the frame-stream source, where they
now live) the per-frame cost model and the choice of frames that can still be classified by their deadline."""

from __future__ import annotations

from typing import Final

from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.sources.frame_stream import MAX_PENDING_FRAMES, ClassifyCost, choose_young
from nairbus.models.data.registry import fashion_mnist_spec
from nairbus.schemas import TopK
from nairbus.schemas.lean import LeanContext, encode_lean
from nairbus.schemas.wire import alias_wire_bytes

__all__ = ["MAX_PENDING_FRAMES", "SENSOR_COUNTERS", "VP_SPEC", "ClassifyCost", "VpConfigError", "choose_young",
           "topk_message_bytes"]

log = get_logger("nairbus.vp")
VP_SPEC = fashion_mnist_spec()
"""The shipped family's input (28x28 grey): what a capture agent publishes. A VP sensor takes its variant's own input
spec (its manifest) and converts every frame to it, whatever its size."""
SENSOR_COUNTERS: Final = ("frames", "published", "frames_skipped", "wire_bytes", "payload_bytes",
                          "dropped_outgoing", "frames_rejected")
"""What a VP sensor counts (and ``nairbus sensor --mode vp`` prints at the end). ``frames`` is every frame taken
from the source; each is published, skipped (stale, paused, or captured before the session's epoch) or dropped by
the outgoing queue; ``frames_rejected`` are the source's unusable inputs (not frames, other streams', bad images)."""


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
