"""NAIR on the map: each frame's prefix under each cap, as the sensor sends it (packed or range-coded), and the
range-coded entries whose bit allocation follows the cap.

Per frame the longest importance-ordered prefix whose one message fits the cap (:func:`nair_arrays`).

A range-coded artifact (``nairbus calibrate --entropy-coding``) codes the same components in fewer bytes, and the
allocation that wins depends on the cap: one bit for most components where bytes are scarce, more bits where they are
not. For each split asked for, every named allocation of at most :data:`~nairbus.models.nair.entropy.MAX_ENTROPY_BITS`
bits is calibrated (as ``nairbus calibrate --split S --bit-bands B --entropy-coding`` does, cached beside the map's
other artifacts), measured under every cap on the validation and the test frames, and per cap the allocation most
accurate on *validation* is the one the entry reports on test (ties: fewer mean wire bytes, then the earlier one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.agents.nair.outgoing import NairFrameEncoder
from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.evaluation.image import frame_counters
from nairbus.models.evaluation.map import Cap, CapArrays, DeviceCost, MapEntry
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.calibration import BIT_ALLOCATIONS, BitBands, CalibrationSettings, calibrate, format_bit_bands
from nairbus.models.nair.codec import NairCodec, packed_bytes, run_spans
from nairbus.models.nair.entropy import MAX_ENTROPY_BITS
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import ArtifactMismatchError, NairArtifact
from nairbus.models.zoo import model_option
from nairbus.schemas.lean import LeanContext
from nairbus.schemas.messages import MAX_FRAGMENT_DATA
from nairbus.schemas.wire import alias_wire_bytes, lean_fragment_payload_len, msgpack_uint_len

__all__ = ["CODED_ALLOCATIONS", "coded_entry", "nair_arrays", "prefix_predictions"]

CODED_ALLOCATIONS: dict[str, BitBands] = {
    label: bands for label, bands in BIT_ALLOCATIONS.items() if max(b for _, b in bands) <= MAX_ENTROPY_BITS
}
"""The allocations a coded entry chooses from per cap."""


def _full_ir_wire(artifact: NairArtifact, seq: int, frame_id: int, capture_ms: int,
                  codes: np.ndarray | None = None) -> int:
    """Wire bytes of the whole IR as the sensor sends it with no budget: one fragment per run of at most
    ``MAX_FRAGMENT_DATA`` bytes (each at the frame's counters; a later fragment's sequence number is a byte
    longer at most). A range-coded artifact codes the frame's ``codes``."""
    k = artifact.n_components
    if codes is not None:
        runs = NairCodec(artifact).encode(codes, end=k, max_bytes=MAX_FRAGMENT_DATA)
        return sum(alias_wire_bytes(lean_fragment_payload_len(len(run.data), seq, frame_id, capture_ms, run.start,
                                                              run.end, k)) for run in runs)
    return sum(alias_wire_bytes(lean_fragment_payload_len(packed_bytes(artifact, start, end), seq, frame_id,
                                                          capture_ms, start, end, k))
               for start, end in run_spans(artifact, k, False, MAX_FRAGMENT_DATA))


def _coded_prefix_plan(encoder: NairFrameEncoder, codes: np.ndarray, cap: Cap) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_prefix_plan` of a range-coded artifact: every frame's coded prefix is its own."""
    seq, frame_id, capture_ms = frame_counters(len(codes))
    ends, wire = np.zeros(len(codes), dtype=np.int64), np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(codes):
        s, f, m = int(seq[i]), int(frame_id[i]), int(capture_ms[i])
        if cap is None:
            ends[i], wire[i] = encoder.artifact.n_components, _full_ir_wire(encoder.artifact, s, f, m, row)
        else:
            ends[i] = encoder.prefix_for(cap, None, s, f, m, row)
            wire[i] = encoder.wire_size(int(ends[i]), s, f, m, row) if ends[i] > 0 else 0
    return ends, wire


def _prefix_plan(encoder: NairFrameEncoder, n: int, cap: Cap,
                 codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the prefix end the sensor sends under ``cap`` and its wire bytes (0, 0: not sent). Sizes depend on
    the counters only through their msgpack widths, so each width class is worked out once (a range-coded artifact
    sizes each frame by its ``codes``)."""
    if encoder.artifact.entropy_coded:
        assert codes is not None
        return _coded_prefix_plan(encoder, codes, cap)
    seq, frame_id, capture_ms = frame_counters(n)
    ends, wire = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    cache: dict[tuple[int, int, int], tuple[int, int]] = {}
    for i in range(n):
        s, f, m = int(seq[i]), int(frame_id[i]), int(capture_ms[i])
        key = (msgpack_uint_len(s), msgpack_uint_len(f), msgpack_uint_len(m))
        if key not in cache:
            if cap is None:
                cache[key] = (encoder.artifact.n_components, _full_ir_wire(encoder.artifact, s, f, m))
            else:
                end = encoder.prefix_for(cap, None, s, f, m)
                cache[key] = (end, encoder.wire_size(end, s, f, m) if end > 0 else 0)
        ends[i], wire[i] = cache[key]
    return ends, wire


def nair_arrays(pipeline: NairPipeline, codes: np.ndarray, labels: np.ndarray, caps: Sequence[Cap]) -> CapArrays:
    """NAIR under each cap: per frame the longest prefix whose message fits, classified by the hub's tail."""
    encoder = NairFrameEncoder(pipeline.artifact, LeanContext("s", "s", 0.0, 10.0), "t")
    correct, wire = [], []
    done: dict[bytes, np.ndarray] = {}
    for cap in caps:
        ends, cap_wire = _prefix_plan(encoder, len(codes), cap, codes)
        key = ends.tobytes()
        if key not in done:
            sent = ends > 0
            pred = np.full(len(codes), -1)
            if sent.any():
                pred[sent] = pipeline.prefix_probs(codes[sent], ends[sent]).argmax(1)
            done[key] = (pred == labels) & sent
        correct.append(done[key])
        wire.append(cap_wire)
    return CapArrays(np.array(correct, dtype=bool), np.array(wire, dtype=np.int64))


def prefix_predictions(pipeline: NairPipeline, codes: np.ndarray, wire_budget: int) -> np.ndarray:
    """Per frame, the hub's class for the longest prefix whose message fits ``wire_budget`` wire bytes, as the
    sensor's ``--budget N`` sends it (-1: not even one component fits)."""
    encoder = NairFrameEncoder(pipeline.artifact, LeanContext("s", "s", 0.0, 10.0), "t")
    ends, _wire = _prefix_plan(encoder, len(codes), wire_budget, codes)
    pred = np.full(len(codes), -1)
    sent = ends > 0
    if sent.any():
        pred[sent] = pipeline.prefix_probs(codes[sent], ends[sent]).argmax(1)
    return pred


# --- range-coded entries ---------------------------------------------------------------------------------------


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label).strip("-")


def coded_artifact(net: Any, manifest: ModelManifest, split: str, label: str, bands: BitBands,
                   calibration_images: np.ndarray, artifacts_dir: Path, say: Callable[[str], None]) -> NairArtifact:
    """The range-coded artifact of ``bands`` at ``split``: cached in ``artifacts_dir`` (for this model build), else
    calibrated now."""
    path = artifacts_dir / f"{manifest.name}.{split}.coded-{_slug(label)}.nair.npz"
    if path.is_file():
        try:
            cached = NairArtifact.load(path)
            cached.check_model(manifest.name, manifest.sha256)
            return cached
        except ArtifactMismatchError:
            pass
    say(f"calibrating range-coded NAIR at {split}, {label} -> {path}")
    started = time.perf_counter()
    settings = CalibrationSettings(split=split, bit_bands=bands, entropy_coding=True)
    artifact = calibrate(net, manifest.name, manifest.sha256, calibration_images, settings)
    artifact.meta["provenance"] = {
        **artifact.meta.get("provenance", {}),
        "command": f"nairbus calibrate{model_option(manifest.name)} --split {split} --bit-bands "
                   f"{format_bit_bands(bands)} --entropy-coding --out {path}",
        "made_by": "nairbus evaluate map (--coded-split)",
        "calibration_seconds": round(time.perf_counter() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    artifact.save(path)
    return artifact


def _choose_per_cap(validation: dict[str, CapArrays]) -> list[str]:
    """Per cap, the label most accurate on validation (ties: fewer mean wire bytes, then the earlier label)."""
    labels = list(validation)
    chosen = []
    for row in range(validation[labels[0]].correct.shape[0]):
        def key(index: int, row: int = row) -> tuple[float, float, int]:
            arrays = validation[labels[index]]
            return float(arrays.correct[row].mean()), -float(arrays.wire[row].mean()), -index
        chosen.append(labels[max(range(len(labels)), key=key)])
    return chosen


def _pick_rows(arrays: dict[str, CapArrays], chosen: Sequence[str]) -> CapArrays:
    return CapArrays(np.stack([arrays[label].correct[row] for row, label in enumerate(chosen)]),
                     np.stack([arrays[label].wire[row] for row, label in enumerate(chosen)]))


def coded_entry(net: Any, manifest: ModelManifest, split: str, cost: DeviceCost, validation: Dataset, test: Dataset,
                caps: Sequence[Cap], calibration_images: np.ndarray, artifacts_dir: Path,
                say: Callable[[str], None], allocations: Mapping[str, BitBands] = CODED_ALLOCATIONS) -> MapEntry:
    """Range-coded NAIR at ``split``, its allocation (one of ``allocations``) chosen per cap on ``validation``,
    reported on ``test``."""
    measured: dict[str, dict[str, CapArrays]] = {"validation": {}, "test": {}}
    artifacts = {}
    for label, bands in allocations.items():
        artifact = coded_artifact(net, manifest, split, label, bands, calibration_images, artifacts_dir, say)
        artifacts[label] = artifact
        pipeline = NairPipeline(net, manifest, artifact)
        for where, data in (("validation", validation), ("test", test)):
            say(f"range-coded NAIR {split}, {label} ({where})")
            codes = pipeline.encode_all(data.images).astype(np.uint8)
            measured[where][label] = nair_arrays(pipeline, codes, data.labels, caps)
    chosen = _choose_per_cap(measured["validation"])
    detail = {
        "coding": "range",
        "allocation_per_cap": [{"cap_bytes": cap, "bit_bands": format_bit_bands(allocations[label]),
                                "label": label} for cap, label in zip(caps, chosen, strict=True)],
        "candidates": {label: {"bit_bands": format_bit_bands(allocations[label]),
                               "artifact_sha256": a.sha256, "command": a.meta.get("provenance", {}).get("command"),
                               "tables_bytes": int(a.tables.nbytes)} for label, a in artifacts.items()},
        "chosen_on": "validation: per cap the allocation with the best validation accuracy",
    }
    return MapEntry(f"nair-{split}-coded", "nair", cost, _pick_rows(measured["validation"], chosen),
                    _pick_rows(measured["test"], chosen), split=split, detail=detail)
