"""The cost of each representation on the device: what a sensor computes per frame, its share of the model's MACs,
and the summary of measured CPU time, wall time and memory.

A sensor can send four kinds of representation of a frame, and each puts a different part of the work on the device:

``image``
    no model on the device: the frame compressed by the sensor's image ladder (0 % of the model's MACs);
``nair-<split>``
    the head of the model up to ``split``, the NAIR transform and quantiser, the codes packed into a frame (the
    head's MACs, plus the transform's own multiply-adds, counted apart as ``macs_transform``);
``decision``
    the whole model on the device, then top-k (100 %);
``vp-<variant>``
    one variant of the shipped Variant-Parallelism family, then top-k (the variant's MACs over the model's).

:func:`representations` lists them with their MAC shares (pure arithmetic on counted MACs); :func:`count_macs` counts
multiply-accumulates of any callable with torch's operator counter (convolutions and matrix products, so imported
``torch.export`` models are counted like the native family, where it agrees with
:func:`nairbus.models.architectures.resnet.count_macs`); the per-frame work functions (:func:`nair_work`,
:func:`classifier_work`, :func:`image_work`) take one uint8 frame, do the sensor's computation, and hand the result to
a ``send`` callable (the real frame builders are composed in :mod:`nairbus.agents.tools.devicecost_child`);
:func:`run_frames` times them frame by frame with injectable clocks, and :func:`summarise` reduces what was measured
(median and p90 ms, peak RSS). Nothing here starts a process.

A split without a calibrated artifact is measured with :func:`equivalent_artifact`: a NAIR artifact of the same IR
shape, bits and fragment plan with an identity channel basis and zero statistics. Its transform does exactly the
calibrated one's operations (channel basis product, 2-D DCT, reordering, quantiser, packing), so its cost is the
same; its values carry no meaning and the report marks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from nairbus.models.nair.transform import NairArtifact, NairTransform, geometric_plan
from nairbus.models.vp.fusion import topk

__all__ = ["DECISION_K", "DEFAULT_FRAMES", "DEFAULT_WARMUP", "DEFAULT_WIRE_BYTES", "FrameTimes", "FrameWork",
           "Representation", "classifier_work", "count_macs", "equivalent_artifact", "image_work", "model_macs",
           "model_probs", "nair_work", "representations", "run_frames", "summarise", "transform_macs"]

Kind = Literal["image", "nair", "decision", "vp"]
DEFAULT_FRAMES = 200
"""Test frames measured per representation (the first N of the test split)."""
DEFAULT_WARMUP = 20
"""Frames run before the measured ones (first calls allocate, fill caches, pick kernels)."""
DEFAULT_WIRE_BYTES = 200
"""The wire budget of a frame: the image ladder is tried best-first until a message fits it, the NAIR prefix fills
it (the tight-link operating point)."""
DECISION_K = 1
"""Classes a decision reports (the decision mode's default: the decision alone; a VP variant reports its family's
``k``)."""

FrameWork = Callable[[np.ndarray, int], int]
"""One frame's sensor-side work: uint8 frame ``(H, W)`` and frame id in, wire bytes of what it sends out."""


@dataclass(frozen=True, slots=True)
class Representation:
    """One thing a sensor can send, and what it costs in MACs: ``macs_device`` of the model's ``macs_model``."""

    name: str
    kind: Kind
    macs_device: int
    macs_model: int
    split: str | None = None
    variant: str | None = None
    artifact: str | None = None
    """NAIR: the artifact's file name; None where the split has none (measured with an equivalent transform)."""
    macs_transform: int = 0
    """NAIR: the transform's own multiply-adds per frame (channel basis, DCT, joint KLT), outside the model's."""
    note: str | None = None

    @property
    def mac_share(self) -> float:
        """The share of the model's MACs computed on the device."""
        return self.macs_device / self.macs_model if self.macs_model else 0.0

    @property
    def macs_hub(self) -> int:
        """The model's MACs left to the hub: the rest of the model (image, NAIR), nothing (decision, VP: fusion
        applies a rule to top-k)."""
        return self.macs_model - self.macs_device if self.kind in ("image", "nair") else 0

    def as_json(self) -> dict[str, Any]:
        """The representation's fields as the report records them."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "split": self.split, "variant": self.variant,
                               "mac_share": round(self.mac_share, 6), "macs_device": self.macs_device,
                               "macs_hub": self.macs_hub}
        if self.kind == "nair":
            out.update(artifact=self.artifact if self.artifact else "no artifact: equivalent transform",
                       macs_transform=self.macs_transform)
        if self.note:
            out["note"] = self.note
        return out


def representations(macs_model: int, split_macs: Mapping[str, int], artifacts: Mapping[str, str | None],
                    variant_macs: Mapping[str, int],
                    transform: Mapping[str, int] | None = None) -> list[Representation]:
    """Every representation of a model with ``macs_model`` MACs per frame: the image, NAIR at each split (in the order
    of ``split_macs``, the model's own: shallow to deep), the decision, then each VP variant."""
    if macs_model <= 0:
        raise ValueError(f"a model's MACs per frame must be positive, not {macs_model}")
    out = [Representation("image", "image", 0, macs_model)]
    for split, macs in split_macs.items():
        if not 0 <= macs <= macs_model:
            raise ValueError(f"split {split}: {macs} MACs is outside 0..{macs_model}")
        out.append(Representation(f"nair-{split}", "nair", macs, macs_model, split=split,
                                  artifact=artifacts.get(split), macs_transform=(transform or {}).get(split, 0)))
    out.append(Representation("decision", "decision", macs_model, macs_model))
    out.extend(Representation(f"vp-{name}", "vp", macs, macs_model, variant=name)
               for name, macs in variant_macs.items())
    return out


def count_macs(run: Callable[[], object]) -> int:
    """Multiply-accumulates of one call of ``run`` (convolutions and matrix products), half torch's FLOP count."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops()) // 2


def model_macs(model: Any) -> tuple[int, dict[str, int], dict[str, tuple[int, ...]]]:
    """A split model's MACs per frame, each split point's head MACs, and each split's IR shape ``(C, H, W)``."""
    spec = model.input_spec
    x = torch.zeros(1, spec.channels, spec.height, spec.width)
    heads: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for split in model.split_points:
        def head(at: str = split) -> None:
            shapes[at] = tuple(int(n) for n in model.head(x, at).shape[1:])

        heads[split] = count_macs(head)
    return count_macs(lambda: model(x)), heads, shapes


def transform_macs(artifact: NairArtifact) -> int:
    """The NAIR transform's multiply-adds for one frame of ``artifact``'s IR shape."""
    transform = NairTransform(artifact)
    ir = torch.zeros(1, *artifact.ir_shape)
    return count_macs(lambda: transform.forward(ir))


def equivalent_artifact(model_name: str, model_sha256: str, split: str, ir_shape: Sequence[int],
                        bits: int = 8) -> NairArtifact:
    """A NAIR artifact with the operations of a calibrated one at ``split`` (identity channel basis, 2-D DCT, every
    component at ``bits`` bits, the calibration's geometric fragment plan) but no calibrated values: for cost only."""
    c, h, w = (int(v) for v in ir_shape)
    k = c * h * w
    all_bits = np.full(k, bits, dtype=np.uint8)
    zeros = np.zeros(k, dtype=np.float32)
    return NairArtifact(
        model_name=model_name, model_sha256=model_sha256, split=split, ir_shape=(c, h, w), spatial_dct=True,
        mean=np.zeros((c, h, w), dtype=np.float32), channel_basis=np.eye(c, dtype=np.float32),
        order=np.arange(k, dtype=np.int64), fill=zeros, lo=zeros, step=np.ones(k, dtype=np.float32), bits=all_bits,
        plan=geometric_plan(k, all_bits, 64, 2.0, 4096), meta={"equivalent": "uncalibrated, for cost only"})


def nair_work(encode: Callable[[np.ndarray], np.ndarray], send: Callable[[np.ndarray, int], int]) -> FrameWork:
    """The NAIR sensor's work: ``encode`` (head, transform, quantiser: ``NairPipeline.encode``) on a batch of one
    frame, then ``send`` packs that frame's codes ``(K,)`` into its message(s) and returns their wire bytes."""

    def work(frame: np.ndarray, frame_id: int) -> int:
        return send(encode(frame[None])[0], frame_id)

    return work


def classifier_work(probs: Callable[[np.ndarray], np.ndarray], k: int,
                    send: Callable[[np.ndarray, np.ndarray, int], int]) -> FrameWork:
    """A decision or VP sensor's work: class probabilities of a batch of one frame, its top-k, then ``send``."""

    def work(frame: np.ndarray, frame_id: int) -> int:
        classes, scores = topk(probs(frame[None]), k)
        return send(classes[0], scores[0], frame_id)

    return work


def model_probs(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The decision's classifier: a split model's class probabilities for uint8 frames of any size (converted by its
    input spec, as ``NairPipeline.full_model_probs`` does)."""

    def probs(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(model.input_spec.prepare(images)), dim=1).numpy()

    return probs


def image_work(send: Callable[[np.ndarray, int], int]) -> FrameWork:
    """The image sensor's work: nothing but ``send`` (the codec ladder compresses the frame)."""

    def work(frame: np.ndarray, frame_id: int) -> int:
        return send(frame, frame_id)

    return work


@dataclass
class FrameTimes:
    """Per measured frame: CPU ms of the process, wall ms, and the wire bytes the work produced."""

    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    wire_bytes: list[int] = field(default_factory=list)


def run_frames(work: FrameWork, frames: np.ndarray, warmup: int, cpu_clock: Callable[[], float] = time.process_time,
               wall_clock: Callable[[], float] = time.perf_counter) -> FrameTimes:
    """Run ``work`` on ``warmup`` frames (cycling through ``frames``), then time it on every frame, one at a time."""
    if len(frames) == 0:
        raise ValueError("no frames to measure")
    for i in range(warmup):  # frame ids after the measured ones'
        work(frames[i % len(frames)], len(frames) + i)
    times = FrameTimes()
    for frame_id, frame in enumerate(frames):
        cpu, wall = cpu_clock(), wall_clock()
        sent = work(frame, frame_id)
        times.cpu_ms.append((cpu_clock() - cpu) * 1000.0)
        times.wall_ms.append((wall_clock() - wall) * 1000.0)
        times.wire_bytes.append(int(sent))
    return times


def _spread(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3)}


def summarise(times: FrameTimes, rss_kb: Mapping[str, int]) -> dict[str, Any]:
    """What a report keeps of one representation's measurement: CPU and wall ms per frame (median, p90, mean), the
    frames per second the run sustained (frames back to back: inside a CPU cap, its stalls included), wire bytes per
    frame, and RSS in MB (2**20 bytes) from ``rss_kb``: ``peak``, ``imports`` (after importing the code, before any
    model) and ``python`` (the interpreter before those imports)."""
    if not times.cpu_ms:
        raise ValueError("nothing was measured")
    wall_s = sum(times.wall_ms) / 1000.0
    return {
        "frames": len(times.cpu_ms),
        "cpu_ms_per_frame": _spread(times.cpu_ms),
        "wall_ms_per_frame": _spread(times.wall_ms),
        "frames_per_s": round(len(times.wall_ms) / wall_s, 1) if wall_s > 0 else None,
        "wire_bytes_per_frame": round(float(np.mean(times.wire_bytes)), 1),
        **{f"rss_mb_{key}": round(rss_kb[key] / 1024.0, 1) for key in ("peak", "imports", "python") if key in rss_kb},
    }
