"""One representation's sensor-side work, measured in a process of its own: ``python -m
nairbus.agents.tools.devicecost_child``, started and placed in a CPU-capped group by
:mod:`nairbus.agents.tools.devicecost`.

The exchange on stdin and stdout, one JSON line each: the parent writes a :class:`ChildSpec`; the child imports what a
sensor imports, records its RSS (the imports' share), loads the model and builds the work with the real frame builders
(:class:`~nairbus.agents.nair.outgoing.NairFrameEncoder`, :class:`~nairbus.agents.nair.outgoing.ImageFrameEncoder`,
the lean :class:`~nairbus.schemas.messages.TopK` a decision or a VP variant sends), says ``{"ready": true}``; the
parent moves it into the device's group and writes ``go``; the child runs the warm-up and the measured frames one at a
time (:func:`nairbus.models.evaluation.cost.run_frames`) on one compute thread and writes its summary. Loading runs
before the cap (a device loads once; the cap is about the frames).

The module's own imports are light on purpose: everything heavy is imported after the spec is read, so
``rss_mb_imports`` is the RSS of the sensor's code without a model.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nairbus.models.evaluation.cost import FrameWork

RUNTIME_MODULES = ("numpy", "torch", "nairbus.models.store", "nairbus.models.nair.pipeline", "nairbus.models.vp.family",
                   "nairbus.models.image.codec", "nairbus.agents.nair.outgoing", "nairbus.schemas.lean",
                   "nairbus.models.evaluation.cost")
"""What every measured process imports before its RSS is read as ``rss_mb_imports``: the sensor's code, no model."""
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
"""One compute thread, as a device of less than one core runs (set by the parent before the interpreter starts)."""


@dataclass(frozen=True)
class ChildSpec:
    """What one child measures: a representation of ``model`` on the frames saved at ``frames_path``."""

    representation: str
    kind: str
    model: str
    frames_path: str
    warmup: int
    wire_bytes: int | None
    k: int = 1
    split: str | None = None
    artifact: str | None = None
    """NAIR: the artifact's path; None: an equivalent (uncalibrated) transform of ``ir_shape``."""
    ir_shape: tuple[int, ...] | None = None
    variant_weights: str | None = None
    image_codecs: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> ChildSpec:
        data = json.loads(line)
        for name in ("ir_shape", "image_codecs"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)


def parse_memory(status: str) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) in kB from the text of ``/proc/<pid>/status`` (absent ones: 0)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in out and value.split():
            out[key] = int(value.split()[0])
    return out


def memory_kb() -> dict[str, int]:
    """This process's ``VmRSS`` and ``VmHWM`` in kB (``/proc/self/status``)."""
    with open("/proc/self/status") as handle:
        return parse_memory(handle.read())


def _lean_context() -> Any:
    from nairbus.schemas.lean import LeanContext

    return LeanContext(sensor_id="cost", session="cost-measurement", epoch_ts=time.time() - 1.0, expiry_s=1.0)


def _nair_send(artifact: Any, wire_bytes: int | None) -> Callable[[Any, int], int]:
    """Pack one frame's codes as the NAIR sensor does: the prefix that fits ``wire_bytes``, as lean fragments."""
    from itertools import count

    from nairbus.agents.nair.outgoing import NairFrameEncoder

    ctx = _lean_context()
    encoder = NairFrameEncoder(artifact, ctx, "cost/frag")
    seq = count(1)

    def send(codes: Any, frame_id: int) -> int:
        capture_ts = time.time()
        capture_ms = max(0, round((capture_ts - ctx.epoch_ts) * 1000.0))
        end = encoder.prefix_for(wire_bytes, None, 1, frame_id, capture_ms)
        return sum(out.wire_bytes for out in encoder.messages(codes, frame_id, lambda: next(seq), capture_ts, end))

    return send


def _topk_send() -> Callable[[Any, Any, int], int]:
    """Publish one frame's top-k as a decision or VP sensor does: a lean ``TopK`` message."""
    from nairbus.schemas.lean import encode_lean
    from nairbus.schemas.messages import TopK
    from nairbus.schemas.wire import alias_wire_bytes

    ctx = _lean_context()

    def send(classes: Any, scores: Any, frame_id: int) -> int:
        capture_ts = time.time()
        msg = TopK(sensor_id=ctx.sensor_id, session=ctx.session, seq=frame_id + 1, frame_id=frame_id,
                   capture_ts=capture_ts, expires_ts=capture_ts + ctx.expiry_s,
                   classes=tuple(int(c) for c in classes), scores=tuple(float(s) for s in scores))
        return alias_wire_bytes(len(encode_lean(msg, ctx)))

    return send


def _image_send(codecs: tuple[str, ...], wire_bytes: int | None, used: Counter[str]) -> Callable[[Any, int], int]:
    """Compress one frame as the image sensor does: its ladder best-first, the first message that fits."""
    from nairbus.agents.nair.outgoing import ImageFrameEncoder
    from nairbus.models.image.codec import get_image_codec

    encoder = ImageFrameEncoder([get_image_codec(c) for c in codecs], _lean_context(), "cost/image")

    def send(frame: Any, frame_id: int) -> int:
        out = encoder.message(frame, frame_id, frame_id + 1, time.time(), wire_bytes)
        used[out.codec if out is not None and out.codec else "none fits"] += 1
        return out.wire_bytes if out is not None else 0

    return send


def build_work(spec: ChildSpec, used: Counter[str]) -> FrameWork:
    """The representation's :data:`~nairbus.models.evaluation.cost.FrameWork`, its model loaded."""
    from nairbus.models.evaluation import cost
    from nairbus.models.nair.pipeline import NairPipeline
    from nairbus.models.nair.transform import NairArtifact
    from nairbus.models.store import load_model

    if spec.kind == "image":
        return cost.image_work(_image_send(spec.image_codecs, spec.wire_bytes, used))
    if spec.kind == "vp":
        from nairbus.models.vp.family import softmax_outputs

        assert spec.variant_weights is not None
        variant = load_model(spec.variant_weights)[0]
        return cost.classifier_work(lambda images: softmax_outputs(variant, images), spec.k, _topk_send())
    model, manifest = load_model(spec.model)
    if spec.kind == "decision":
        return cost.classifier_work(cost.model_probs(model), spec.k, _topk_send())
    if spec.kind != "nair" or spec.split is None:
        raise ValueError(f"unknown representation kind {spec.kind!r} (split {spec.split!r})")
    if spec.artifact is not None:
        artifact = NairArtifact.load(Path(spec.artifact))
    else:
        assert spec.ir_shape is not None
        artifact = cost.equivalent_artifact(manifest.name, manifest.sha256, spec.split, spec.ir_shape)
    pipeline = NairPipeline(model, manifest, artifact)
    return cost.nair_work(pipeline.encode, _nair_send(artifact, spec.wire_bytes))


def _say(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main() -> int:
    """Read the spec, import, load, say ready, wait for ``go``, measure, write the summary (exit 0)."""
    spec = ChildSpec.from_json(sys.stdin.readline())
    rss_python = memory_kb()["VmRSS"]
    started = time.process_time()
    for name in RUNTIME_MODULES:
        importlib.import_module(name)
    import numpy as np
    import torch

    from nairbus.models.evaluation.cost import run_frames, summarise

    torch.set_num_threads(1)
    rss_imports = memory_kb()["VmRSS"]
    imported = time.process_time()
    used: Counter[str] = Counter()
    work = build_work(spec, used)
    frames = np.load(spec.frames_path)
    loaded = time.process_time()
    _say({"ready": True, "pid": os.getpid()})
    if sys.stdin.readline().strip() != "go":
        return 1
    times = run_frames(work, frames, spec.warmup)
    # VmHWM, not ru_maxrss: the latter may keep the high-water mark of the process before exec (the parent's copy)
    result = summarise(times, {"peak": memory_kb()["VmHWM"], "imports": rss_imports, "python": rss_python})
    result.update(threads=torch.get_num_threads(), startup_cpu_s={"imports": round(imported - started, 3),
                                                                    "load": round(loaded - imported, 3)})
    if used:
        result["codecs_used"] = dict(used.most_common())
    _say(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
