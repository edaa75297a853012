"""Quantisation and packing of NAIR components into fragment payloads, and back.

Pure numpy: a frame's components (already in importance order) become a list of :class:`FragmentPayload` in
sending order; the receiver turns whatever payloads arrived back into component values plus a mask. Every payload
decodes on its own (per-component scale, no entropy coder state), so any subset of fragments is usable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from models.nair import NairArtifact


@dataclass(frozen=True, slots=True)
class FragmentPayload:
    """One fragment's content: plan index, component span ``[start, end)``, bits per component, packed codes."""

    index: int
    start: int
    end: int
    bits: int
    data: bytes


class PayloadError(ValueError):
    """A fragment payload that does not fit the artifact's plan."""


def quantise(values: np.ndarray, lo: np.ndarray, step: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Uniform per-component quantisation to ``bits`` (clipped), as uint16 codes."""
    top = (1 << bits.astype(np.int64)) - 1
    codes = np.rint((values - lo) / step)
    return np.asarray(np.clip(codes, 0, top), dtype=np.uint16)


def dequantise(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise` (to the centre of each bin)."""
    return np.asarray(codes.astype(np.float32) * step + lo, dtype=np.float32)


def pack(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned codes of ``bits`` bits each, big-endian bit order, into ``ceil(n*bits/8)`` bytes."""
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    bit_matrix = ((codes.astype(np.uint16)[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.ravel()).tobytes()


def unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`."""
    if len(data) != (count * bits + 7) // 8:
        raise PayloadError(f"{len(data)} bytes cannot hold {count} codes of {bits} bits")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw.astype(np.uint16)
    bit_matrix = np.unpackbits(raw)[: count * bits].reshape(count, bits).astype(np.uint16)
    return np.asarray((bit_matrix << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(axis=1), dtype=np.uint16)


def budget_spans(artifact: NairArtifact, budget_bytes: int | None) -> list[tuple[int, int, int]]:
    """Fragments ``(index, start, end)`` sent under a per-frame payload budget, most important first.

    Whole fragments are sent while they fit; the first that does not fit is cut to the components that do.
    """
    spans: list[tuple[int, int, int]] = []
    left = np.inf if budget_bytes is None else budget_bytes
    plan = zip(artifact.plan.tolist(), artifact.fragment_bits().tolist(), strict=True)
    for index, ((start, end), bits) in enumerate(plan):
        size = ((end - start) * bits + 7) // 8
        if size <= left:
            spans.append((index, start, end))
            left -= size
            continue
        fit = int(left * 8 // bits)
        if fit > 0:
            spans.append((index, start, start + fit))
        break
    return spans


def encode_codes(codes: np.ndarray, artifact: NairArtifact,
                 spans: Iterable[tuple[int, int, int]]) -> list[FragmentPayload]:
    """Pack one frame's codes ``(K,)`` into payloads for the given spans."""
    out = []
    for index, start, end in spans:
        bits = int(artifact.bits[start])
        out.append(FragmentPayload(index, start, end, bits, pack(codes[start:end], bits)))
    return out


def check_payload(artifact: NairArtifact, payload: FragmentPayload) -> None:
    """Raise :class:`PayloadError` unless the payload is a (possibly cut) prefix of a planned fragment."""
    if not 0 <= payload.index < len(artifact.plan):
        raise PayloadError(f"fragment index {payload.index} outside the plan of {len(artifact.plan)}")
    start, end = (int(v) for v in artifact.plan[payload.index])
    if payload.start != start or not start < payload.end <= end:
        raise PayloadError(f"span [{payload.start}, {payload.end}) does not fit planned fragment [{start}, {end})")
    if payload.bits != int(artifact.bits[start]):
        raise PayloadError(f"fragment has {payload.bits} bits, plan says {int(artifact.bits[start])}")
    if len(payload.data) != ((payload.end - payload.start) * payload.bits + 7) // 8:
        raise PayloadError("payload length does not match its span and bits")


def decode_payloads(artifact: NairArtifact, payloads: Iterable[FragmentPayload]) -> tuple[np.ndarray, np.ndarray]:
    """Component values ``(K,)`` and received mask ``(K,)`` from the payloads that arrived (checked first)."""
    k = artifact.n_components
    values = np.zeros(k, dtype=np.float32)
    mask = np.zeros(k, dtype=bool)
    for payload in payloads:
        check_payload(artifact, payload)
        sl = slice(payload.start, payload.end)
        codes = unpack(payload.data, payload.end - payload.start, payload.bits)
        values[sl] = dequantise(codes, artifact.lo[sl], artifact.step[sl])
        mask[sl] = True
    return values, mask


def spans_mask(n_components: int, spans: Iterable[tuple[int, int, int]]) -> np.ndarray:
    """Received mask for a set of spans (for the offline evaluator)."""
    mask = np.zeros(n_components, dtype=bool)
    for _index, start, end in spans:
        mask[start:end] = True
    return mask
