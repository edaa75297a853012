"""What a sensor sends for one frame under a wire budget: a NAIR prefix, a compressed image or its decision (the
whole model's top-k), as lean messages.

Pure (no MQTT, no clock): given a frame and the wire bytes it may spend, build the publishes. The budget is in
**wire** bytes — the whole MQTT PUBLISH with a topic alias, the lean envelope and the data — so what the link
fitting measures and what a frame costs are the same currency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nairbus.models.image.codec import ImageCodec
from nairbus.models.loss import LossModel
from nairbus.models.nair.artifact import NairArtifact
from nairbus.models.nair.codec import NairCodec, packed_bytes, prefix_end, run_spans
from nairbus.schemas.lean import LeanContext, encode_lean
from nairbus.schemas.messages import MAX_FRAGMENT_DATA, BitBand, Fragment, ImageFrame, TopK
from nairbus.schemas.wire import alias_wire_bytes, lean_fragment_payload_len, lean_image_payload_len

__all__ = ["DecisionEncoder", "ImageFrameEncoder", "NairFrameEncoder", "Outgoing", "alias_wire_bytes", "top_k"]

_ENVELOPE_SLACK = 4
"""Bytes kept aside for the envelope growing as the data does (msgpack and MQTT length prefixes)."""


def bit_bands(bits: np.ndarray) -> tuple[BitBand, ...]:
    """The artifact's bits per component as bands for the birth."""
    ends = [*(np.flatnonzero(np.diff(bits.astype(np.int64))) + 1).tolist(), len(bits)]
    return tuple(BitBand(end=int(e), bits=int(bits[e - 1])) for e in ends)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One publish of a frame: its topic and lean payload, and what it carries."""

    topic: str
    payload: bytes
    wire_bytes: int
    """PUBLISH bytes with a topic alias (what the sensor sends once the alias is set up)."""
    data_bytes: int
    components: int
    """NAIR: components carried (0 for an image)."""
    lost: bool = False
    """Injected loss (test tooling): built and counted, never sent."""
    codec: str | None = None
    representation: str = "nair"
    """What the frame went as: ``nair``, ``image`` or ``decision``."""


def _frame_codes(codes: np.ndarray | None) -> np.ndarray:
    """The frame's codes a range-coded artifact sizes a frame by (its sizes depend on them)."""
    if codes is None:
        raise ValueError("a range-coded artifact sizes a frame by its codes: pass them")
    return codes


class NairFrameEncoder:
    """Builds a frame's fragments: the most important components that fit the budget, in importance order."""

    def __init__(self, artifact: NairArtifact, ctx: LeanContext, topic: str, *, by_plan: bool = False,
                 loss: LossModel | None = None) -> None:
        self.artifact = artifact
        self.codec = NairCodec(artifact)
        self.ctx = ctx
        self.topic = topic
        self.by_plan = by_plan
        self.loss = loss or LossModel()

    def _overhead(self, seq: int, frame_id: int, capture_ms: int) -> int:
        k = self.artifact.n_components
        return alias_wire_bytes(lean_fragment_payload_len(0, seq, frame_id, capture_ms, k, k, k)) + _ENVELOPE_SLACK

    def wire_size(self, end: int, seq: int, frame_id: int, capture_ms: int, codes: np.ndarray | None = None) -> int:
        """Wire bytes of a one-message frame carrying components ``[0, end)`` (a range-coded artifact needs the
        frame's ``codes``)."""
        data = self._data_bytes(codes, end)
        return alias_wire_bytes(lean_fragment_payload_len(data, seq, frame_id, capture_ms, 0, end, end))

    def _data_bytes(self, codes: np.ndarray | None, end: int) -> int:
        if not self.artifact.entropy_coded:
            return packed_bytes(self.artifact, 0, end)
        return self.codec.data_bytes(_frame_codes(codes), end)

    def prefix_for(self, wire_budget: int | None, payload_cap: int | None, seq: int, frame_id: int,
                   capture_ms: int, codes: np.ndarray | None = None) -> int:
        """Components ``[0, end)`` a frame sends within ``wire_budget`` wire bytes and ``payload_cap`` data bytes.

        A one-message frame fills the wire budget exactly (the longest prefix whose whole PUBLISH fits); a frame cut
        along the plan (test tooling) keeps a few bytes of slack per message. A range-coded artifact measures the
        frame's own coded sizes (``codes`` required).
        """
        if self.artifact.entropy_coded:
            return self._coded_prefix_for(_frame_codes(codes), wire_budget, payload_cap, seq, frame_id, capture_ms)
        a = self.artifact
        budget = payload_cap
        if wire_budget is not None:
            overhead = self._overhead(seq, frame_id, capture_ms)
            pieces = 1
            for _ in range(3):  # each message of a plan-cut prefix pays its own envelope
                data_budget = wire_budget - overhead * pieces
                end = prefix_end(a, data_budget)
                pieces = max(1, len(run_spans(a, end, self.by_plan, MAX_FRAGMENT_DATA)))
            if pieces == 1 and not self.by_plan:
                # Grow from the conservative prefix to the longest whose real message fits (sizes rise with end).
                lo, hi = end, prefix_end(a, wire_budget)
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if self.wire_size(mid, seq, frame_id, capture_ms) <= wire_budget:
                        lo = mid
                    else:
                        hi = mid - 1
                data_budget = packed_bytes(a, 0, lo)
            budget = data_budget if budget is None else min(budget, data_budget)
        end = prefix_end(a, budget)
        return max(0, end)

    def _coded_prefix_for(self, codes: np.ndarray, wire_budget: int | None, payload_cap: int | None, seq: int,
                          frame_id: int, capture_ms: int) -> int:
        """:meth:`prefix_for` of a range-coded artifact: the longest prefix whose coded run fits the data budget
        left after the envelope, then the envelope's slack spent too if the whole message still fits."""
        if wire_budget is None:
            return self.codec.fit(codes, payload_cap)
        overhead = self._overhead(seq, frame_id, capture_ms)
        data_budget = wire_budget - overhead
        cap = data_budget if payload_cap is None else min(payload_cap, data_budget)
        end = self.codec.fit(codes, cap)
        if self.by_plan or (payload_cap is not None and payload_cap <= data_budget):
            return end
        roomier = self.codec.fit(codes, data_budget + _ENVELOPE_SLACK if payload_cap is None
                                 else min(payload_cap, data_budget + _ENVELOPE_SLACK))
        if roomier > end and self.wire_size(roomier, seq, frame_id, capture_ms, codes) <= wire_budget:
            return roomier
        return end

    def messages(self, codes: np.ndarray, frame_id: int, next_seq: Callable[[], int], capture_ts: float,
                 end: int) -> list[Outgoing]:
        """The fragments carrying components ``[0, end)`` of one frame's codes ``(K,)``."""
        runs = self.codec.encode(codes, end=end, by_plan=self.by_plan, max_bytes=MAX_FRAGMENT_DATA)
        lost = self.loss.lost(frame_id, len(runs)) if runs else np.zeros(0, dtype=bool)
        out = []
        for run, gone in zip(runs, lost.tolist(), strict=True):
            msg = Fragment(sensor_id=self.ctx.sensor_id, session=self.ctx.session, seq=next_seq(), frame_id=frame_id,
                           capture_ts=capture_ts, expires_ts=capture_ts + self.ctx.expiry_s, start=run.start,
                           end=run.end, frame_end=end, data=run.data)
            payload = encode_lean(msg, self.ctx)
            out.append(Outgoing(self.topic, payload, alias_wire_bytes(len(payload)), len(run.data),
                                run.end - run.start, bool(gone)))
        return out

    def full_payload_bytes(self) -> int:
        """Data bytes of the whole IR (packed: a range-coded IR is smaller nearly always)."""
        return packed_bytes(self.artifact, 0, self.artifact.n_components)


class ImageFrameEncoder:
    """Builds a frame's image message: the first codec of the ladder whose message fits the budget."""

    def __init__(self, codecs: Sequence[ImageCodec], ctx: LeanContext, topic: str) -> None:
        if not codecs:
            raise ValueError("an image sensor needs at least one codec")
        self.codecs = tuple(codecs)
        self.ctx = ctx
        self.topic = topic

    def message(self, image: np.ndarray, frame_id: int, seq: int, capture_ts: float,
                wire_budget: int | None) -> Outgoing | None:
        """The image message within ``wire_budget`` wire bytes (None: no codec of the ladder fits)."""
        capture_ms = max(0, round((capture_ts - self.ctx.epoch_ts) * 1000.0))
        for index, codec in enumerate(self.codecs):
            data = codec.encode(image)
            size = alias_wire_bytes(lean_image_payload_len(len(data), seq, frame_id, capture_ms, index))
            if wire_budget is not None and size > wire_budget:
                continue
            msg = ImageFrame(sensor_id=self.ctx.sensor_id, session=self.ctx.session, seq=seq, frame_id=frame_id,
                             capture_ts=capture_ts, expires_ts=capture_ts + self.ctx.expiry_s, codec=index, data=data)
            payload = encode_lean(msg, self.ctx)
            return Outgoing(self.topic, payload, alias_wire_bytes(len(payload)), len(data), 0, codec=codec.name,
                            representation="image")
        return None


def top_k(probs: np.ndarray, k: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The ``k`` most probable classes of one frame's class probabilities ``(C,)``, most probable first (ties: the
    lower class id), with their probabilities."""
    order = np.argsort(-probs, kind="stable")[:k]
    return tuple(int(c) for c in order), tuple(float(probs[c]) for c in order)


class DecisionEncoder:
    """Builds a frame's decision message: the whole model's top-k as a lean :class:`~nairbus.schemas.TopK`."""

    def __init__(self, k: int, ctx: LeanContext, topic: str) -> None:
        if k < 1:
            raise ValueError(f"a decision reports k >= 1 classes, not {k}")
        self.k = k
        self.ctx = ctx
        self.topic = topic

    def message(self, probs: np.ndarray, frame_id: int, seq: int, capture_ts: float,
                wire_budget: int | None) -> Outgoing | None:
        """The top-k message of one frame's probabilities ``(C,)`` (None: it does not fit ``wire_budget``)."""
        classes, scores = top_k(probs, self.k)
        msg = TopK(sensor_id=self.ctx.sensor_id, session=self.ctx.session, seq=seq, frame_id=frame_id,
                   capture_ts=capture_ts, expires_ts=capture_ts + self.ctx.expiry_s, classes=classes, scores=scores)
        payload = encode_lean(msg, self.ctx)
        wire = alias_wire_bytes(len(payload))
        if wire_budget is not None and wire > wire_budget:
            return None
        return Outgoing(self.topic, payload, wire, len(payload), 0, representation="decision")
