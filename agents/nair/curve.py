"""The NAIR accuracy-vs-wire-bytes curve the sensor's own rule gives (offline).

Every figure counts the whole MQTT PUBLISH a frame costs as the sensor sends it (QoS 0, topic alias, lean envelope,
data: :func:`nairbus.agents.nair.outgoing.alias_wire_bytes`), with the same per-frame counters the image evaluation
uses (frame ``i`` is sequence number and frame id ``i + 1``, captured ``33 i`` ms into the session). Under a per-frame
cap the NAIR sensor sends the longest importance-ordered prefix whose message fits — exactly what
:meth:`nairbus.agents.nair.outgoing.NairFrameEncoder.prefix_for` does live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nairbus.agents.nair.outgoing import NairFrameEncoder, alias_wire_bytes
from nairbus.models.evaluation.image import FRAME_INTERVAL_MS
from nairbus.models.evaluation.stats import wilson_interval
from nairbus.models.nair.codec import NairCodec, packed_bytes
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.schemas.wire import lean_fragment_payload_len, msgpack_uint_len

__all__ = ["WIRE_EVAL_CAPS", "nair_curve", "nair_wire_bytes"]

WIRE_EVAL_CAPS: tuple[int, ...] = (40, 50, 60, 70, 80, 100, 125, 150, 175, 200, 225, 250, 300, 350, 400, 500, 600,
                                   700, 800, 1000, 1500, 2000, 4000, 8000, 13000)
"""Per-frame wire caps (bytes) of the NAIR curves; the image table's caps are a subset."""


def _counters(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.arange(n)
    return idx + 1, idx + 1, idx * FRAME_INTERVAL_MS


def nair_wire_bytes(artifact: NairArtifact, ends: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """Wire bytes of each frame's one-message prefix ``[0, ends[i])`` (0 where nothing is sent; a range-coded
    artifact needs the frames' ``codes``)."""
    seq, fid, ms = _counters(len(ends))
    out = np.zeros(len(ends), dtype=np.int64)
    codec = NairCodec(artifact)
    for i, end in enumerate(ends.tolist()):
        if end > 0:
            data = packed_bytes(artifact, 0, end) if codes is None else codec.data_bytes(codes[i], end)
            out[i] = alias_wire_bytes(lean_fragment_payload_len(data, int(seq[i]), int(fid[i]), int(ms[i]), 0, end,
                                                                end))
    return out


def _ends_under_cap(encoder: NairFrameEncoder, n: int, cap: int, codes: np.ndarray) -> np.ndarray:
    seq, fid, ms = _counters(n)
    if encoder.artifact.entropy_coded:  # each frame's coded prefix is its own
        return np.array([encoder.prefix_for(cap, None, int(seq[i]), int(fid[i]), int(ms[i]), codes[i])
                         for i in range(n)], dtype=np.int64)
    # The envelope differs by at most a few bytes between frames; work it out per distinct counter width.
    ends = np.zeros(n, dtype=np.int64)
    cache: dict[tuple[int, int, int], int] = {}
    for i in range(n):
        key = (msgpack_uint_len(int(seq[i])), msgpack_uint_len(int(fid[i])), msgpack_uint_len(int(ms[i])))
        if key not in cache:
            cache[key] = encoder.prefix_for(cap, None, int(seq[i]), int(fid[i]), int(ms[i]))
        ends[i] = cache[key]
    return ends


def nair_curve(pipeline: NairPipeline, codes: np.ndarray, labels: np.ndarray,
               caps: Sequence[int] = WIRE_EVAL_CAPS) -> list[dict[str, Any]]:
    """Accuracy (95 % CI), mean wire and data bytes, and share sent of NAIR under each per-frame wire cap."""
    from nairbus.schemas.lean import LeanContext

    encoder = NairFrameEncoder(pipeline.artifact, LeanContext("s", "s", 0.0, 10.0), "t")
    rows = []
    for cap in caps:
        ends = _ends_under_cap(encoder, len(codes), cap, codes)
        sent = ends > 0
        pred = np.full(len(codes), -1)
        if sent.any():
            pred[sent] = pipeline.prefix_probs(codes[sent], ends[sent]).argmax(1)
        correct = (pred == labels) & sent
        coded = codes if pipeline.artifact.entropy_coded else None
        wire = nair_wire_bytes(pipeline.artifact, ends, coded)
        lo, hi = wilson_interval(int(correct.sum()), len(correct))
        rows.append({"cap_bytes": cap, "accuracy": float(correct.mean()), "ci95": [lo, hi],
                     "share_sent": float(sent.mean()),
                     "mean_wire_bytes": float(wire[sent].mean()) if sent.any() else None,
                     "mean_data_bytes": float(np.mean([pipeline.codec.data_bytes(row, int(e))
                                                       for row, e in zip(codes, ends, strict=True)]))
                     if sent.any() else None,
                     "mean_components": float(ends.mean())})
    return rows
