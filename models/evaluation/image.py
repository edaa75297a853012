"""The image-compression baseline: compress the frame on the sensor, run the whole mature model at the hub.

This is what a user would do instead of NAIR. Every codec of :mod:`nairbus.models.image.codec` is measured on the same
frames with the mature model (``nairbus.models.store.load_model("base")``), counted in **bytes on the wire**: each frame
travels as one MQTT 5 QoS-0 PUBLISH with a topic alias (empty topic name, no other property) whose payload is the lean
msgpack image message, ``[2, tag, seq, frame_id, capture_ms, ..., data]``, sized by
:func:`nairbus.schemas.wire.lean_image_payload_len` (the report records that function's description of the layout). The
evaluation uses representative counters: frame ``i`` (from 0) has ``seq = frame_id = i + 1`` and
``capture_ms = 33 * i`` (30 frames/s from the session's start), so the envelope grows by a byte or two as the
counters do, as it would live.

Each codec *family* has a fixed quality ladder (:data:`FAMILY_LADDERS`, data chosen before any test figure was seen,
not tuned on test; ``grey-front`` is the Pareto front of down-sampled and full-size grey rungs on the validation
split, as ``models/experiments/images.toml`` records). Under a per-frame **wire-byte cap** a real sensor sends, frame
by frame, the highest rung of the ladder whose whole PUBLISH fits the cap; a frame with no rung that fits is not sent
and counts as wrong. The rate–accuracy table gives, per family and cap, the accuracy over all frames with a 95 % Wilson
interval, the share of frames sent and the mean wire and payload bytes of the frames sent; the report's ``best``
names, for every cap, the most accurate family with its accuracy and interval (the strongest image baseline there).

Two uses, kept apart: :func:`evaluate_images` produces the test figures (``reports/images.json``), and
:func:`calibrated_table` produces the same table from a validation holdout of the *training* images only, small JSON
that ``sensor --mode auto`` reads to choose per frame between the image and NAIR features (:func:`image_choice_at`,
:func:`encode_within_cap`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from nairbus.models.evaluation import stats
from nairbus.models.evaluation.matrices import load_matrix
from nairbus.models.image.codec import ImageCodec, get_image_codec
from nairbus.models.manifest import ModelManifest
from nairbus.schemas.wire import ALIAS_PROPERTIES_LEN, lean_image_payload_len, publish_size

Predict = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[str], None]

TABLE_KIND: Final = "nairbus.image-rate-table"
TABLE_VERSION: Final = 1
FRAME_INTERVAL_MS: Final = 33
"""Representative capture clock of the evaluation: frame ``i`` is captured at ``33 * i`` ms (30 frames/s)."""
_MATRIX: Final = load_matrix("images")
FAMILY_LADDERS: Final[Mapping[str, tuple[str, ...]]] = {family: tuple(ladder)
                                                        for family, ladder in _MATRIX["ladders"].items()}
"""Each family's quality ladder, lowest quality first (``models/experiments/images.toml``: fixed data, not tuned on
test)."""
WIRE_CAPS: Final[tuple[int, ...]] = tuple(_MATRIX["wire_caps"])
"""Per-frame wire-byte caps of the rate–accuracy table (2000 B is above every rung, the raw frame included)."""
BAR_CAPS: Final[tuple[int, ...]] = tuple(_MATRIX["bar_caps"])
"""The caps the design's bar names: NAIR must be at least as accurate as the best image codec at these."""


# --- bytes on the wire ----------------------------------------------------------------------------------------------


def frame_counters(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(seq, frame_id, capture_ms)`` of frames ``0..n-1``: ``i + 1``, ``i + 1`` and ``33 * i``."""
    index = np.arange(n, dtype=np.int64)
    return index + 1, index + 1, index * FRAME_INTERVAL_MS


def wire_bytes(data_len: int, seq: int, frame_id: int, capture_ms: int) -> int:
    """Bytes of the whole PUBLISH carrying ``data_len`` bytes of image: alias, QoS 0, lean msgpack payload."""
    payload = lean_image_payload_len(data_len, seq, frame_id, capture_ms)
    return publish_size(0, payload, qos=0, properties_len=ALIAS_PROPERTIES_LEN)


def wire_bytes_all(data_lens: np.ndarray) -> np.ndarray:
    """:func:`wire_bytes` of frames ``0..n-1`` with their representative counters."""
    seq, frame_id, capture_ms = frame_counters(len(data_lens))
    return np.array([wire_bytes(int(d), int(s), int(f), int(c))
                     for d, s, f, c in zip(data_lens, seq, frame_id, capture_ms, strict=True)], dtype=np.int64)


def encode_within_cap(ladder: Sequence[str], image: np.ndarray, wire_cap: int, *, seq: int, frame_id: int,
                      capture_ms: int) -> tuple[ImageCodec, bytes] | None:
    """The sensor's policy: the highest rung of ``ladder`` whose PUBLISH fits ``wire_cap``, with its bytes.

    ``None`` when no rung fits (the frame is not sent). Sizes are not monotone in quality, so rungs are tried from
    the top down and the first that fits wins, which is the rung :func:`cap_outcome` picks offline.
    """
    for spec in reversed(ladder):
        codec = get_image_codec(spec)
        data = codec.encode(image)
        if wire_bytes(len(data), seq, frame_id, capture_ms) <= wire_cap:
            return codec, data
    return None


# --- statistics -----------------------------------------------------------------------------------------------------


def _accuracy_fields(correct: np.ndarray) -> dict[str, Any]:
    """Accuracy of a boolean vector with its 95 % Wilson interval."""
    out = stats.accuracy(correct)
    return {"accuracy": out["accuracy"], "ci95": out["ci95"]}


# --- measurement ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpecResult:
    """One codec setting over a set of frames: per-frame payload and wire bytes, correctness, agreement, error."""

    spec: str
    payload: np.ndarray
    wire: np.ndarray
    correct: np.ndarray
    agree: np.ndarray
    squared_error: float

    def summary(self) -> dict[str, Any]:
        """Mean bytes, accuracy (95 % CI), agreement with the uncompressed frame's prediction and PSNR."""
        psnr = None if self.squared_error == 0 else 10 * math.log10(255.0**2 / self.squared_error)
        return {"spec": self.spec, "mean_payload_bytes": float(self.payload.mean()),
                "mean_wire_bytes": float(self.wire.mean()), **_accuracy_fields(self.correct),
                "agreement": float(self.agree.mean()), "psnr_db": psnr}


def mature_predictor(model: Any, batch_size: int = 1000) -> Predict:
    """Class predictions of the whole mature model on uint8 frames ``(N, 28, 28)``."""
    from nairbus.models.evaluation.nair import mature_predictions

    def predict(images: np.ndarray) -> np.ndarray:
        return mature_predictions(model, images, batch_size)

    return predict


def measure_spec(codec: ImageCodec, images: np.ndarray, labels: np.ndarray, predict: Predict,
                 reference: np.ndarray) -> SpecResult:
    """Encode, decode (through the strict decoder) and classify every frame with one codec setting.

    ``reference`` holds the predictions on the uncompressed frames; frames that decode bit-exact reuse them.
    """
    shape = (int(images.shape[1]), int(images.shape[2]))
    encoded = [codec.encode(image) for image in images]
    decoded = np.stack([codec.decode(data, shape) for data in encoded])
    payload = np.array([len(data) for data in encoded], dtype=np.int64)
    changed = np.any(decoded != images, axis=(1, 2))
    pred = reference.copy()
    if changed.any():
        pred[changed] = predict(decoded[changed])
    error = float(((decoded.astype(np.float64) - images) ** 2).mean())
    return SpecResult(codec.name, payload, wire_bytes_all(payload), pred == labels, pred == reference, error)


def measure_families(images: np.ndarray, labels: np.ndarray, predict: Predict,
                     families: Mapping[str, Sequence[str]] = FAMILY_LADDERS,
                     progress: ProgressFn | None = None) -> tuple[np.ndarray, dict[str, list[SpecResult]]]:
    """Predictions on the uncompressed frames, and :func:`measure_spec` for every rung of every family (a rung two
    families share is measured once)."""
    reference = predict(images)
    out: dict[str, list[SpecResult]] = {}
    measured: dict[str, SpecResult] = {}
    for family, ladder in families.items():
        out[family] = []
        for spec in ladder:
            if progress:
                progress(spec)
            if spec not in measured:
                measured[spec] = measure_spec(get_image_codec(spec), images, labels, predict, reference)
            out[family].append(measured[spec])
    return reference, out


# --- the cap policy -------------------------------------------------------------------------------------------------


def cap_choice(wire: np.ndarray, cap: int) -> np.ndarray:
    """Per frame, the highest rung (row of ``wire``, ``(rungs, frames)``) that fits ``cap``; -1 where none does."""
    fits = wire <= cap
    top = wire.shape[0] - 1 - np.argmax(fits[::-1], axis=0)
    return np.where(fits.any(axis=0), top, -1)


def cap_outcome(results: Sequence[SpecResult], cap: int) -> dict[str, Any]:
    """One family under one per-frame wire cap: accuracy over all frames (unsent = wrong), share sent, bytes."""
    wire = np.stack([r.wire for r in results])
    choice = cap_choice(wire, cap)
    sent = choice >= 0
    cols = np.arange(wire.shape[1])
    rows = np.maximum(choice, 0)
    correct = np.stack([r.correct for r in results])[rows, cols] & sent
    agree = np.stack([r.agree for r in results])[rows, cols] & sent
    payload = np.stack([r.payload for r in results])[rows, cols]
    counts = np.bincount(choice + 1, minlength=len(results) + 1)
    chosen = {r.spec: int(c) for r, c in zip(results, counts[1:], strict=True) if c}
    return {"cap_bytes": cap, **_accuracy_fields(correct), "share_sent": float(sent.mean()),
            "agreement": float(agree.mean()),
            "mean_wire_bytes": float(wire[rows, cols][sent].mean()) if sent.any() else None,
            "mean_payload_bytes": float(payload[sent].mean()) if sent.any() else None,
            "chosen": chosen}


def family_tables(results: Mapping[str, Sequence[SpecResult]], caps: Sequence[int] = WIRE_CAPS) -> dict[str, Any]:
    """Per family: its ladder, each rung's summary and the cap policy at every cap."""
    return {family: {"ladder": [r.spec for r in rungs], "specs": [r.summary() for r in rungs],
                     "caps": [cap_outcome(rungs, cap) for cap in caps]}
            for family, rungs in results.items()}


def best_at_cap(tables: Mapping[str, Any], cap: int) -> dict[str, Any] | None:
    """The family most accurate under the per-frame cap ``cap``; ``None`` if the cap is not tabulated.

    Ties go to the larger share sent, then fewer wire bytes, then the earlier family.
    """
    rows = [(family, row) for family, table in tables.items() for row in table["caps"] if row["cap_bytes"] == cap]
    if not rows:
        return None
    family, row = max(rows, key=lambda fr: (fr[1]["accuracy"], fr[1]["share_sent"],
                                            -(fr[1]["mean_wire_bytes"] or math.inf)))
    return {"family": family, **{k: row[k] for k in ("cap_bytes", "accuracy", "ci95", "share_sent",
                                                     "mean_wire_bytes", "mean_payload_bytes")}}


def best_setting_within_mean(tables: Mapping[str, Any], mean_wire: float) -> dict[str, Any] | None:
    """The single codec setting most accurate with *mean* wire bytes ≤ ``mean_wire`` (a looser, average budget)."""
    specs = [s for table in tables.values() for s in table["specs"] if s["mean_wire_bytes"] <= mean_wire]
    return max(specs, key=lambda s: s["accuracy"], default=None)


# --- the calibrated table (validation only) -------------------------------------------------------------------------


def calibrated_table(model: Any, manifest: ModelManifest, images: np.ndarray, labels: np.ndarray, *,
                     source: str, families: Mapping[str, Sequence[str]] = FAMILY_LADDERS,
                     caps: Sequence[int] = WIRE_CAPS, progress: ProgressFn | None = None,
                     batch_size: int = 1000) -> dict[str, Any]:
    """Accuracy against the per-frame wire cap per family, from validation frames only, as small JSON.

    ``images``/``labels`` must be a holdout of the *training* images
    (``nairbus.models.data.fashion_mnist.validation_split``),
    never the test split; ``source`` says which. ``sensor --mode auto`` reads the result with
    :func:`image_choice_at`. The table names the model it was measured with (name and sha256).
    """
    _reference, results = measure_families(images, labels, mature_predictor(model, batch_size), families, progress)
    return table_from_results(results, manifest, source=source, caps=caps)


def table_from_results(results: Mapping[str, Sequence[SpecResult]], manifest: ModelManifest, *, source: str,
                       caps: Sequence[int] = WIRE_CAPS) -> dict[str, Any]:
    """The JSON of :func:`calibrated_table` from measured rungs: per family and cap, accuracy and bytes; the best."""
    tables = family_tables(results, caps)
    keep = ("cap_bytes", "accuracy", "ci95", "share_sent", "agreement", "mean_wire_bytes")
    compact = {family: {"ladder": t["ladder"], "caps": [{k: row[k] for k in keep} for row in t["caps"]]}
               for family, t in tables.items()}
    frames = {len(r.correct) for rungs in results.values() for r in rungs}
    return {"kind": TABLE_KIND, "version": TABLE_VERSION, "source": source, "frames": max(frames, default=0),
            "model": {"name": manifest.name, "sha256": manifest.sha256},
            "wire": wire_settings(), "families": compact,
            "best": [best_at_cap(tables, cap) for cap in caps]}


def image_choice_at(table: Mapping[str, Any], wire_cap: int) -> dict[str, Any] | None:
    """From a :func:`calibrated_table`, the best family at the largest tabulated cap ≤ ``wire_cap``.

    Returns ``{"family", "ladder", "cap_bytes", "accuracy"}`` (a conservative step: the accuracy of a cap the link
    certainly allows), or ``None`` when ``wire_cap`` is below every tabulated cap.
    """
    if table.get("kind") != TABLE_KIND or table.get("version") != TABLE_VERSION:
        raise ValueError(f"not a {TABLE_KIND} v{TABLE_VERSION} table")
    rows = [row for row in table["best"] if row is not None and row["cap_bytes"] <= wire_cap]
    if not rows:
        return None
    row = max(rows, key=lambda r: r["cap_bytes"])
    return {"family": row["family"], "ladder": list(table["families"][row["family"]]["ladder"]),
            "cap_bytes": row["cap_bytes"], "accuracy": row["accuracy"]}


def _first_line(doc: str | None) -> str:
    """The first line of a docstring (how :mod:`nairbus.schemas.wire` describes a message)."""
    return (doc or "").strip().splitlines()[0] if doc else ""


def wire_settings() -> dict[str, Any]:
    """How the evaluation counts wire bytes (recorded in every report and table)."""
    return {"packet": "MQTT 5 PUBLISH, QoS 0, topic alias (empty topic name), no other property",
            "properties_len": ALIAS_PROPERTIES_LEN,
            "payload": _first_line(lean_image_payload_len.__doc__),
            "counters": f"frame i (from 0): seq = frame_id = i + 1, capture_ms = {FRAME_INTERVAL_MS} * i"}


# --- the test report ------------------------------------------------------------------------------------------------


def wire_overhead(results: Mapping[str, Sequence[SpecResult]]) -> dict[str, Any]:
    """Envelope bytes per message (wire minus image data) over every measured message, and at 200 B of data."""
    over = np.concatenate([r.wire - r.payload for rungs in results.values() for r in rungs])
    n = max(len(r.wire) for rungs in results.values() for r in rungs)
    return {"min": int(over.min()), "max": int(over.max()), "mean": float(over.mean()),
            "first_frame_200B": wire_bytes(200, 1, 1, 0) - 200,
            "last_frame_200B": wire_bytes(200, n, n, FRAME_INTERVAL_MS * (n - 1)) - 200}


def evaluate_images(model: Any, manifest: ModelManifest, test_images: np.ndarray, test_labels: np.ndarray,
                    validation_images: np.ndarray | None, validation_labels: np.ndarray | None, *,
                    validation_source: str, families: Mapping[str, Sequence[str]] = FAMILY_LADDERS,
                    caps: Sequence[int] = WIRE_CAPS, progress: ProgressFn | None = None,
                    batch_size: int = 1000) -> dict[str, Any]:
    """The whole report: per-family tables on the test frames, the best family at every cap, the validation table
    (None without validation frames: ``validation_images`` None or empty), overhead."""
    started = time.perf_counter()
    caps = tuple(sorted(set(caps) | set(BAR_CAPS)))
    say = progress or (lambda _message: None)
    reference, results = measure_families(test_images, test_labels, mature_predictor(model, batch_size), families,
                                          lambda spec: say(f"test: {spec}"))
    tables = family_tables(results, caps)
    validation = None if validation_images is None or validation_labels is None or not len(validation_labels) else (
        calibrated_table(
        model, manifest, validation_images, validation_labels, source=validation_source, families=families,
        caps=caps, progress=lambda spec: say(f"validation: {spec}"), batch_size=batch_size))
    return {
        "frames": len(test_labels),
        "mature_model": {"name": manifest.name, "sha256": manifest.sha256, "test_accuracy": manifest.test_accuracy},
        "uncompressed": _accuracy_fields(reference == test_labels),
        "settings": {"families": {f: list(ladder) for f, ladder in families.items()}, "caps": list(caps),
                     "wire": wire_settings(), "policy": "per frame, the highest rung whose whole PUBLISH fits the "
                     "cap; no rung fits: not sent, counted wrong; wire and payload means are over frames sent",
                     "validation_source": validation_source},
        "wire_overhead_bytes": wire_overhead(results),
        "families": tables,
        "best": {str(cap): best_at_cap(tables, cap) for cap in caps},
        "best_fixed_setting_mean": {str(cap): best_setting_within_mean(tables, cap) for cap in BAR_CAPS},
        "validation": validation,
        "evaluation_seconds": round(time.perf_counter() - started, 1),
    }


# --- plot -----------------------------------------------------------------------------------------------------------

FAMILY_STYLE: Final[Mapping[str, tuple[str, str]]] = {
    "grey-front": ("k", "*"), "grey+zstd": ("C6", "P"), "down20:grey+zstd": ("C9", ">"),
    "down14:grey+zstd": ("C5", "h"),
    "grey+deflate": ("C3", "o"), "webp": ("C0", "s"), "jpeg": ("C2", "^"), "jpeg-shared": ("C8", "<"),
    "webp-lossless": ("C4", "D"),
    "png": ("C1", "v"), "raw": ("C7", "x")}


def plot_rate(report: Mapping[str, Any], path: Any) -> Any:
    """Accuracy against wire bytes per frame (log x), per family, with 95 % bands; full range and a zoom.

    Lines are the per-frame cap policy (x: the cap); markers with error bars are the single settings (x: their mean
    wire bytes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    top = report["uncompressed"]["accuracy"] * 100
    for ax, (low, high) in zip(axes, ((0.0, 100.0), (top - 12.0, min(100.0, top + 2.0))), strict=True):
        for family, table in report["families"].items():
            color, marker = FAMILY_STYLE.get(family, ("k", "."))
            caps = table["caps"]
            xs = [row["cap_bytes"] for row in caps]
            ax.plot(xs, [row["accuracy"] * 100 for row in caps], color=color, linewidth=1.8,
                    label=f"{family} (cap policy)" if len(table["ladder"]) > 1 else f"{family} (sent if it fits)")
            ax.fill_between(xs, [row["ci95"][0] * 100 for row in caps], [row["ci95"][1] * 100 for row in caps],
                            color=color, alpha=0.15, linewidth=0)
            specs = table["specs"]
            ax.errorbar([s["mean_wire_bytes"] for s in specs], [s["accuracy"] * 100 for s in specs],
                        yerr=[[(s["accuracy"] - s["ci95"][0]) * 100 for s in specs],
                              [(s["ci95"][1] - s["accuracy"]) * 100 for s in specs]],
                        fmt=marker, color=color, markersize=4, alpha=0.6, linewidth=0.8)
        ax.axhline(top, color="k", linestyle=":", label="uncompressed frame")
        for cap in BAR_CAPS:
            ax.axvline(cap, color="grey", linestyle="--", linewidth=0.8)
        ax.set(xscale="log", ylim=(low, high), xlabel="wire bytes per frame (MQTT PUBLISH, log scale)",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"image codecs + whole mature model, Fashion-MNIST test ({report['frames']} frames)")
    axes[1].set_title("zoom; dashed: 200 and 300 B; markers: single settings at their mean")
    axes[1].errorbar([], [], yerr=[], fmt="o", color="grey", markersize=4, label="single setting (mean wire bytes)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
