"""Entropy coding of NAIR codes: a probability table per component, fitted at calibration, driving a range coder.

Calibration quantises its own images' components and counts, per component, how often each code occurs
(:func:`fit_tables`, add-half smoothed); the tables travel in the artifact and are hashed with it. A run of components
``[start, end)`` of one frame is coded on its own (:func:`encode_run`) with ``constriction``'s range coder, so any
prefix — and any subset of runs — still decodes; the receiver knows ``end - start`` from the fragment and decodes
exactly that many symbols (:func:`decode_run`). A budget is met in real encoded bytes: :func:`longest_prefix` finds
the longest prefix whose coded run fits.

Codes of at most :data:`MAX_ENTROPY_BITS` bits are entropy-coded (NAIR's rate-optimal allocations spend 1–4 bits per
component; a table per component for 8-bit codes would outweigh the model).
"""

from __future__ import annotations

from collections.abc import Callable

import constriction
import numpy as np

__all__ = ["MAX_ENTROPY_BITS", "EntropyError", "decode_run", "encode_run", "fit_tables", "info_bits",
           "longest_prefix"]

MAX_ENTROPY_BITS = 4
"""The widest codes a table is fitted for: a table holds ``2 ** MAX_ENTROPY_BITS`` probabilities per component."""
_WORD = 4
"""The range coder emits 32-bit words (little-endian on the wire); trailing zero bytes of the last word are not
sent and are restored before decoding."""
_SLACK_BYTES = 8
"""How far above the information content a coded run may land (the coder's final words)."""


class EntropyError(ValueError):
    """Codes or a coded run that the tables cannot take."""


def fit_tables(codes: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Per-component code probabilities ``(K, 2 ** MAX_ENTROPY_BITS)`` float32 from calibration codes ``(N, K)``.

    Counts are add-half smoothed over the codes a component's bits allow; codes it cannot take get 0.
    """
    bits = np.asarray(bits, dtype=np.int64)
    if bits.max(initial=0) > MAX_ENTROPY_BITS:
        raise EntropyError(f"entropy coding takes codes of at most {MAX_ENTROPY_BITS} bits; these have up to "
                           f"{int(bits.max())} (choose bit bands of {MAX_ENTROPY_BITS} bits or fewer)")
    width = 1 << MAX_ENTROPY_BITS
    k = codes.shape[1]
    counts = np.zeros((k, width), dtype=np.float64)
    rows = np.broadcast_to(np.arange(k), codes.shape)
    np.add.at(counts, (rows.ravel(), codes.astype(np.int64).ravel()), 1.0)
    allowed = np.arange(width)[None, :] < (1 << bits)[:, None]
    counts = np.where(allowed, counts + 0.5, 0.0)
    return np.asarray(counts / counts.sum(axis=1, keepdims=True), dtype=np.float32)


def _model() -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(perfect=False)


def encode_run(codes: np.ndarray, tables: np.ndarray) -> bytes:
    """Range-code one run's codes ``(n,)`` with their components' tables ``(n, W)``."""
    if len(codes) == 0:
        return b""
    symbols = np.ascontiguousarray(codes, dtype=np.int32)
    if (symbols < 0).any() or (symbols >= tables.shape[1]).any():
        raise EntropyError("a code lies outside its component's table")
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols, _model(), np.ascontiguousarray(tables, dtype=np.float32))
    words: np.ndarray = encoder.get_compressed()
    return words.astype("<u4").tobytes().rstrip(b"\0")


def decode_run(data: bytes, tables: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_run`: the ``len(tables)`` codes of a run (``EntropyError`` if ``data`` does not
    decode to codes its components can take)."""
    count = len(tables)
    if count == 0:
        if data:
            raise EntropyError(f"{len(data)} bytes for an empty run")
        return np.zeros(0, dtype=np.uint16)
    padded = data + b"\0" * (-len(data) % _WORD)
    words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        symbols = np.asarray(decoder.decode(_model(), np.ascontiguousarray(tables, dtype=np.float32)))
    except Exception as exc:  # constriction raises its own errors on a corrupt stream
        raise EntropyError(f"the run does not decode: {exc}") from None
    if (symbols >= (1 << np.asarray(bits, dtype=np.int64))).any():
        raise EntropyError("the run decodes to codes wider than their components' bits")
    return symbols.astype(np.uint16)


def info_bits(codes: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Cumulative information content ``(n + 1,)`` in bits of a run's codes under the tables (the coded size's
    lower bound, without the coder's final words)."""
    p = np.maximum(tables[np.arange(len(codes)), codes.astype(np.int64)].astype(np.float64), 2.0 ** -24)
    return np.concatenate([[0.0], np.cumsum(-np.log2(p))])


def longest_prefix(codes: np.ndarray, tables: np.ndarray, budget_bytes: int, limit: int | None = None,
                   coded_size: Callable[[int], int] | None = None) -> int:
    """The most components ``[0, end)`` (at most ``limit``) of one frame's codes whose coded run fits
    ``budget_bytes`` — measured by coding it, not estimated. ``coded_size(end)`` (default: code the prefix) lets a
    caller that remembers coded prefixes answer without coding again."""
    def size(end: int) -> int:
        return len(encode_run(codes[:end], tables[:end])) if coded_size is None else coded_size(end)

    n = len(codes) if limit is None else min(limit, len(codes))
    if budget_bytes <= 0 or n == 0:
        return 0
    info = info_bits(codes[:n], tables[:n])
    # Bracket with the information content: every prefix at most the budget less the coder's slack fits (nearly
    # always); none over the budget does. Then bisect on real coded sizes.
    lo = int(np.searchsorted(info, max(0, budget_bytes - _SLACK_BYTES) * 8.0, side="right")) - 1
    hi = int(np.searchsorted(info, budget_bytes * 8.0, side="right")) - 1
    while lo > 0 and size(lo) > budget_bytes:
        lo //= 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return max(0, lo)
