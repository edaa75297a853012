"""Quantisation and packing of NAIR components into fragment payloads, and back.

Pure numpy: a frame's components (already in importance order) are quantised per component and packed at the
artifact's bits per component (bits may fall with importance). A sensor sends the prefix ``[0, end)`` that its
budget buys (:func:`prefix_end`), usually as one :class:`ComponentRun`; the receiver turns whatever runs arrived
back into component values plus a mask. An artifact with entropy tables range-codes each run instead of packing it
(:mod:`nairbus.models.nair.entropy`); then a run's size depends on the frame's codes, and the prefix a budget buys
is found per frame (:meth:`NairCodec.fit`). Every run decodes on its own (per-component scale, a coder of its own),
so any prefix, and any subset of runs, is usable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from nairbus.models.nair import entropy
from nairbus.models.nair.artifact import NairArtifact


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


def _bits_array(bits: int | np.ndarray, count: int) -> np.ndarray:
    return np.full(count, bits, dtype=np.int64) if np.isscalar(bits) else np.asarray(bits, dtype=np.int64)


def pack(codes: np.ndarray, bits: int | np.ndarray) -> bytes:
    """Pack unsigned codes of ``bits`` bits each (one width, or one per code), most significant bit first, into
    ``ceil(sum(bits) / 8)`` bytes."""
    widths = _bits_array(bits, len(codes))
    if len(codes) and (widths == 8).all():
        return codes.astype(np.uint8).tobytes()
    parts = []
    for offset, length, b in _segments(widths):
        seg = codes[offset : offset + length].astype(np.uint16)
        shifts = np.arange(b - 1, -1, -1, dtype=np.uint16)
        parts.append(((seg[:, None] >> shifts) & 1).astype(np.uint8).ravel())
    return np.packbits(np.concatenate(parts)).tobytes() if parts else b""


def unpack(data: bytes, count: int, bits: int | np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack` (``PayloadError`` if ``data`` is not exactly what ``count`` codes pack to)."""
    widths = _bits_array(bits, count)
    if len(data) != (int(widths.sum()) + 7) // 8:
        raise PayloadError(f"{len(data)} bytes cannot hold {count} codes of {int(widths.sum())} bits in all")
    raw = np.frombuffer(data, dtype=np.uint8)
    if count and (widths == 8).all():
        return raw.astype(np.uint16)
    flat = np.unpackbits(raw)
    out = np.empty(count, dtype=np.uint16)
    pos = 0
    for offset, length, b in _segments(widths):
        matrix = flat[pos : pos + length * b].reshape(length, b).astype(np.uint16)
        out[offset : offset + length] = (matrix << np.arange(b - 1, -1, -1, dtype=np.uint16)).sum(axis=1)
        pos += length * b
    return out


def bit_offsets(artifact: NairArtifact) -> np.ndarray:
    """Cumulative bits ``(K + 1,)``: component ``k``'s code starts at bit ``offsets[k]`` of a packed prefix."""
    return np.concatenate([[0], np.cumsum(artifact.bits.astype(np.int64))])


def packed_bytes(artifact: NairArtifact, start: int, end: int) -> int:
    """Bytes that components ``[start, end)`` take when packed at their planned bits."""
    return int((int(artifact.bits[start:end].astype(np.int64).sum()) + 7) // 8)


def prefix_end(artifact: NairArtifact, budget_bytes: int | None) -> int:
    """The most components ``[0, end)`` whose packed codes fit ``budget_bytes`` (None: all of them)."""
    if budget_bytes is None:
        return artifact.n_components
    offsets = bit_offsets(artifact)
    return int(np.searchsorted(offsets, max(0, budget_bytes) * 8, side="right") - 1)


def run_spans(artifact: NairArtifact, end: int, by_plan: bool = False,
              max_bytes: int | None = None) -> list[tuple[int, int]]:
    """How the prefix ``[0, end)`` is cut into messages: one run, or (``by_plan``) along the artifact's plan; any
    run longer than ``max_bytes`` packed is cut further, in order, at component boundaries."""
    if end <= 0:
        return []
    plan = [(int(a), int(min(b, end))) for a, b in artifact.plan.tolist() if a < end]
    spans = plan if by_plan else [(0, end)]
    if max_bytes is None:
        return spans
    offsets = bit_offsets(artifact)
    out = []
    for first, stop in spans:
        at = first
        while at < stop:
            cut = int(np.searchsorted(offsets, offsets[at] + max_bytes * 8, side="right") - 1)
            cut = min(stop, max(cut, at + 1))
            out.append((at, cut))
            at = cut
    return out


def _segments(bits: np.ndarray) -> list[tuple[int, int, int]]:
    """``(offset, length, bits)`` of the constant-bits stretches of ``bits``."""
    if len(bits) == 0:
        return []
    cuts = np.flatnonzero(np.diff(bits.astype(np.int64))) + 1
    edges = [0, *cuts.tolist(), len(bits)]
    return [(a, b - a, int(bits[a])) for a, b in itertools.pairwise(edges)]


def pack_run(codes: np.ndarray, artifact: NairArtifact, start: int, end: int) -> bytes:
    """One frame's codes ``[start, end)`` as one run's bytes: range-coded with the artifact's tables, or packed at
    their planned bits, most significant bit first."""
    if artifact.entropy_coded:
        return entropy.encode_run(codes[start:end], artifact.tables[start:end])
    return pack(codes[start:end], artifact.bits[start:end])


def unpack_run(data: bytes, artifact: NairArtifact, start: int, end: int) -> np.ndarray:
    """Inverse of :func:`pack_run`: the codes ``(end - start,)`` of a run (``PayloadError`` if the length is off or
    a coded run does not decode)."""
    if artifact.entropy_coded:
        try:
            return entropy.decode_run(data, artifact.tables[start:end], artifact.bits[start:end])
        except entropy.EntropyError as exc:
            raise PayloadError(f"components [{start}, {end}): {exc}") from None
    need = packed_bytes(artifact, start, end)
    if len(data) != need:
        raise PayloadError(f"{len(data)} bytes cannot hold components [{start}, {end}): they pack to {need}")
    return unpack(data, end - start, artifact.bits[start:end])


@dataclass(frozen=True, slots=True)
class ComponentRun:
    """Components ``[start, end)`` of one frame, packed at their planned bits (one fragment's content)."""

    start: int
    end: int
    data: bytes


def encode_runs(codes: np.ndarray, artifact: NairArtifact, spans: Iterable[tuple[int, int]],
                max_bytes: int | None = None,
                packer: Callable[[int, int], bytes] | None = None) -> list[ComponentRun]:
    """One frame's codes ``(K,)`` as runs for the given spans; a range-coded run over ``max_bytes`` (its size is the
    frame's, not the plan's) is halved until each piece fits. ``packer(start, end)`` (default :func:`pack_run`)
    lets a caller reuse runs it has coded already."""
    out = []
    pending = list(spans)[::-1]
    while pending:
        start, end = pending.pop()
        data = pack_run(codes, artifact, start, end) if packer is None else packer(start, end)
        if max_bytes is not None and len(data) > max_bytes and end - start > 1 and artifact.entropy_coded:
            mid = (start + end) // 2
            pending += [(mid, end), (start, mid)]
            continue
        out.append(ComponentRun(start, end, data))
    return out


def check_run(artifact: NairArtifact, run: ComponentRun) -> None:
    """Raise :class:`PayloadError` unless the run's range is inside the IR and its length matches its bits."""
    if not 0 <= run.start < run.end <= artifact.n_components:
        raise PayloadError(f"components [{run.start}, {run.end}) are outside the IR's {artifact.n_components}")
    if artifact.entropy_coded:
        return  # a coded run's length follows from its codes; decoding checks it
    need = packed_bytes(artifact, run.start, run.end)
    if len(run.data) != need:
        raise PayloadError(f"{len(run.data)} bytes for components [{run.start}, {run.end}), which pack to {need}")


def decode_runs(artifact: NairArtifact, runs: Iterable[ComponentRun]) -> tuple[np.ndarray, np.ndarray]:
    """Component values ``(K,)`` and received mask ``(K,)`` from the runs that arrived (each checked first)."""
    k = artifact.n_components
    values = np.zeros(k, dtype=np.float32)
    mask = np.zeros(k, dtype=bool)
    for run in runs:
        check_run(artifact, run)
        sl = slice(run.start, run.end)
        values[sl] = dequantise(unpack_run(run.data, artifact, run.start, run.end), artifact.lo[sl], artifact.step[sl])
        mask[sl] = True
    return values, mask


def spans_mask(n_components: int, spans: Iterable[tuple[int, int]]) -> np.ndarray:
    """Received mask for a set of component spans (for the offline evaluator)."""
    mask = np.zeros(n_components, dtype=bool)
    for start, end in spans:
        mask[start:end] = True
    return mask


class NairCodec:
    """The one NAIR codec the sensor, the fusion agent and the offline evaluator all use.

    ``encode(codes, budget)`` packs the prefix a byte budget buys into runs (one run, or along the artifact's plan,
    each at most ``max_bytes``); ``decode(runs)`` turns whatever runs arrived back into component values and a mask.
    Every run decodes on its own, so any prefix and any subset of runs is usable.
    """

    def __init__(self, artifact: NairArtifact) -> None:
        self.artifact = artifact
        self._memo: tuple[bytes, dict[tuple[int, int], bytes]] = (b"", {})

    def _run(self, codes: np.ndarray, start: int, end: int) -> bytes:
        """``pack_run`` remembered for the frame last seen: the sensor sizes, fits and sends the same frame's runs,
        and range coding is the costly part (a new frame's codes clear the memory)."""
        key = codes.tobytes()
        seen, runs = self._memo  # one read: a thread sharing the codec never mixes two frames' runs
        if key != seen:
            runs = {}
            self._memo = (key, runs)
        run = runs.get((start, end))
        if run is None:
            run = runs[(start, end)] = pack_run(codes, self.artifact, start, end)
        return run

    def prefix_end(self, budget_bytes: int | None) -> int:
        """The most components ``[0, end)`` whose packed codes fit ``budget_bytes`` (None: all)."""
        return prefix_end(self.artifact, budget_bytes)

    def spans(self, end: int, by_plan: bool = False, max_bytes: int | None = None) -> list[tuple[int, int]]:
        """How the prefix ``[0, end)`` is cut into messages."""
        return run_spans(self.artifact, end, by_plan, max_bytes)

    def encode(self, codes: np.ndarray, budget_bytes: int | None = None, *, end: int | None = None,
               by_plan: bool = False, max_bytes: int | None = None) -> list[ComponentRun]:
        """One frame's codes ``(K,)`` as the runs carrying the prefix ``budget_bytes`` buys (or ``[0, end)``)."""
        stop = self.fit(codes, budget_bytes) if end is None else end
        packer = (lambda a, b: self._run(codes, a, b)) if self.artifact.entropy_coded else None
        return encode_runs(codes, self.artifact, self.spans(stop, by_plan, max_bytes), max_bytes, packer)

    def fit(self, codes: np.ndarray, budget_bytes: int | None, limit: int | None = None) -> int:
        """The most components ``[0, end)`` (at most ``limit``) of this frame's codes ``(K,)`` whose one run fits
        ``budget_bytes`` (None: all): coded sizes for a range-coded artifact, packed sizes otherwise."""
        if not self.artifact.entropy_coded:
            end = self.prefix_end(budget_bytes)
            return end if limit is None else min(end, limit)
        if budget_bytes is None:
            return self.artifact.n_components if limit is None else min(limit, self.artifact.n_components)
        return entropy.longest_prefix(codes, self.artifact.tables, budget_bytes, limit,
                                      coded_size=lambda end: len(self._run(codes, 0, end)))

    def data_bytes(self, codes: np.ndarray, end: int) -> int:
        """Bytes of this frame's prefix ``[0, end)`` sent as one run."""
        if not self.artifact.entropy_coded:
            return packed_bytes(self.artifact, 0, end)
        return len(self._run(codes, 0, end))

    def decode(self, runs: Iterable[ComponentRun]) -> tuple[np.ndarray, np.ndarray]:
        """Component values ``(K,)`` and received mask ``(K,)`` from the runs that arrived (each checked first)."""
        return decode_runs(self.artifact, runs)

    def check(self, run: ComponentRun) -> None:
        """Raise :class:`PayloadError` unless ``run`` fits this artifact."""
        check_run(self.artifact, run)

    def payload_bytes(self, start: int, end: int) -> int:
        """Packed bytes of components ``[start, end)`` (a range-coded run's size depends on its codes: see
        :meth:`data_bytes`)."""
        return packed_bytes(self.artifact, start, end)
