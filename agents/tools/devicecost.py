"""The cost of each representation on the device, measured: one process per representation in a Pi-class CPU budget.

For a model, :func:`plan_costs` lists what a sensor can send (:func:`nairbus.models.evaluation.cost.representations`:
the image, NAIR at every split point, the decision, each VP variant of the shipped family when it was derived from
this model) with the MACs each puts on the device. :func:`measure_costs` then starts, per representation, one child
(:mod:`nairbus.agents.tools.devicecost_child`) with one compute thread, lets it import and load, moves it into a CPU
control group capped at ``device_cpus`` of one core (:class:`~nairbus.agents.tools.cpugroups.CpuGroups`: cgroup v1
``cpu.cfs_quota_us`` or v2 ``cpu.max``, 25 000 µs per 100 000 µs for a quarter of a core), and collects its JSON:
process CPU ms and wall ms per frame, one frame at a time as a live sensor works, after a warm-up, on the first
``frames`` test frames; peak RSS and the RSS after imports. Where no control group can be written the children run
uncapped and the report's ``isolation`` says why.

NAIR at a split with no calibrated artifact (beside the model's manifest, or in ``artifacts_dir``) is measured with
an equivalent transform (:func:`nairbus.models.evaluation.cost.equivalent_artifact`): the same operations, so the same
cost. The image representation tries the sensor's image ladder best-first until a message fits ``wire_bytes`` (what
an image sensor does at that budget); NAIR packs the prefix that fits the same budget.
"""

from __future__ import annotations

import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from nairbus.agents.nair.settings import DEFAULT_IMAGE_CODECS
from nairbus.agents.tools.cpugroups import CpuGroups
from nairbus.agents.tools.devicecost_child import THREAD_ENV, ChildSpec
from nairbus.models.evaluation.cost import (
    DECISION_K,
    DEFAULT_FRAMES,
    DEFAULT_WARMUP,
    DEFAULT_WIRE_BYTES,
    Representation,
    equivalent_artifact,
    model_macs,
    representations,
    transform_macs,
)

__all__ = ["DEVICE_CPUS", "CostPlan", "CostSettings", "find_artifacts", "measure_costs", "plan_costs", "run_child"]

DEVICE_CPUS = 0.25
"""A Pi-class budget: a quarter of one core."""
Progress = Callable[[str], None]


@dataclass(frozen=True)
class CostSettings:
    """What ``nairbus evaluate cost`` measures and how."""

    model: str = "base"
    frames: int = DEFAULT_FRAMES
    warmup: int = DEFAULT_WARMUP
    wire_bytes: int | None = DEFAULT_WIRE_BYTES
    device_cpus: float = DEVICE_CPUS
    image_codecs: tuple[str, ...] = DEFAULT_IMAGE_CODECS
    artifacts_dir: Path | None = None
    """Where to look for artifacts of splits that have none beside the model's manifest."""
    only: tuple[str, ...] = ()
    """Only these representations (by name: ``image``, ``nair-stem``, ``decision``, ``vp-w44r28``, ...)."""
    data_dir: Path | None = None
    child_timeout_s: float = 900.0


@dataclass
class CostPlan:
    """A model's representations and what each child needs beyond them."""

    model: str
    sha256: str
    macs_model: int
    items: list[Representation]
    artifact_paths: dict[str, Path] = field(default_factory=dict)
    ir_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    variant_weights: dict[str, str] = field(default_factory=dict)
    vp_k: int = 5
    skipped: list[dict[str, str]] = field(default_factory=list)


def find_artifacts(model: str, sha256: str, splits: tuple[str, ...], extra: Path | None = None) -> dict[str, Path]:
    """Per split, the NAIR artifact calibrated for this model: the sensor's, the default, any ``<model>.*.nair.npz``
    beside the manifest, then ``extra``'s; baselines (another method) and other models' artifacts are passed over."""
    from nairbus.models.nair.transform import ArtifactMismatchError, NairArtifact
    from nairbus.models.store import default_artifact_path, locate_model, sensor_artifact_path

    _, directory = locate_model(model)
    candidates = [sensor_artifact_path(model), default_artifact_path(model),
                  *sorted(directory.glob(f"{model}.*.nair.npz"))]
    if extra is not None:
        candidates += sorted(extra.glob(f"{model}.*.nair.npz")) + sorted(extra.glob(f"{model}.nair.npz"))
    found: dict[str, Path] = {}
    for path in candidates:
        if not path.is_file() or path in found.values():
            continue
        try:
            artifact = NairArtifact.load(path)
        except (OSError, ValueError, KeyError, ArtifactMismatchError):
            continue
        ours = artifact.model_sha256 == sha256 and artifact.meta.get("method", "nair") == "nair"
        if ours and artifact.split in splits:
            found.setdefault(artifact.split, path)
    return found


def _variants(model: str, sha256: str, plan: CostPlan) -> dict[str, int]:
    """The shipped VP family's variants and their MACs when the family was derived from this model, else none (and
    why, in ``plan.skipped``)."""
    from nairbus.models.vp.manifest import FamilyManifest, family_manifest_path

    try:
        family = FamilyManifest.load()
    except FileNotFoundError:
        plan.skipped.append({"name": "vp", "why": f"no variant family manifest {family_manifest_path().name}"})
        return {}
    base = family.base
    if base is None or base.sha256 != sha256:
        plan.skipped.append({"name": "vp", "why": f"the shipped variant family was derived from model "
                                                  f"{base.name if base else None!r}, not {model!r}"})
        return {}
    plan.vp_k = family.k
    plan.variant_weights = {v.name: v.weights_name for v in family.variants}
    return {v.name: v.macs for v in family.variants}


def plan_costs(settings: CostSettings) -> CostPlan:
    """Load the model, count its MACs per split, find its artifacts and variants: the representations to measure."""
    from nairbus.models.nair.transform import NairArtifact
    from nairbus.models.store import load_model

    model, manifest = load_model(settings.model)
    total, heads, shapes = model_macs(model)
    plan = CostPlan(manifest.name, manifest.sha256, total, [], ir_shapes=shapes)
    plan.artifact_paths = find_artifacts(manifest.name, manifest.sha256, tuple(heads), settings.artifacts_dir)
    transform = {split: transform_macs(NairArtifact.load(plan.artifact_paths[split]) if split in plan.artifact_paths
                                       else equivalent_artifact(manifest.name, manifest.sha256, split, shapes[split]))
                 for split in heads}
    items = representations(total, heads, {s: p.name for s, p in plan.artifact_paths.items()},
                            _variants(manifest.name, manifest.sha256, plan), transform)
    if model.input_spec.channels != 1:
        note = (f"the sensor's image mode sends grey frames and refuses a model that takes "
                f"{model.input_spec.describe()}; measured on the grey source frame all the same")
        items[0] = replace(items[0], note=note)
    plan.items = [r for r in items if not settings.only or r.name in settings.only]
    unknown = set(settings.only) - {r.name for r in items}
    if unknown:
        raise ValueError(f"unknown representation(s) {sorted(unknown)}; this model has {[r.name for r in items]}")
    return plan


def child_spec(rep: Representation, plan: CostPlan, settings: CostSettings, frames_path: Path) -> ChildSpec:
    """What the child measuring ``rep`` is told."""
    artifact = plan.artifact_paths.get(rep.split) if rep.split else None
    return ChildSpec(
        representation=rep.name, kind=rep.kind, model=plan.model, frames_path=str(frames_path),
        warmup=settings.warmup, wire_bytes=settings.wire_bytes,
        k=plan.vp_k if rep.kind == "vp" else DECISION_K, split=rep.split,
        artifact=str(artifact) if artifact else None,
        ir_shape=plan.ir_shapes.get(rep.split) if rep.split else None,
        variant_weights=plan.variant_weights.get(rep.variant) if rep.variant else None,
        image_codecs=settings.image_codecs if rep.kind == "image" else ())


def _read_json(proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    """The child's next JSON line; TimeoutError past ``deadline``, EOFError when it ended without one."""
    import json

    stream: IO[str] | None = proc.stdout
    assert stream is not None
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([stream], [], [], left)[0]:
        raise TimeoutError("the child did not answer in time")
    line = stream.readline()
    if not line:
        raise EOFError(f"the child ended (exit {proc.wait()}) without an answer")
    data: dict[str, Any] = json.loads(line)
    return data


def run_child(spec: ChildSpec, groups: CpuGroups, timeout_s: float, log: Path) -> dict[str, Any]:
    """Start the child, give it ``spec``, move it into the device group ``spec.representation`` once it has loaded,
    let it measure; its summary, or ``{"error": ...}`` with the tail of its stderr (``log``)."""
    env = {**os.environ, **THREAD_ENV}
    deadline = time.monotonic() + timeout_s
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nairbus.agents.tools.devicecost_child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdin is not None
    try:
        proc.stdin.write(spec.to_json() + "\n")
        proc.stdin.flush()
        _read_json(proc, deadline)  # {"ready": true}: imported and loaded
        groups.device(spec.representation, proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = _read_json(proc, deadline)
        result["throttled"] = groups.throttled().get(f"device-{spec.representation}")  # before the exit's own CPU
        proc.stdin.close()
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return result
    except (TimeoutError, EOFError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        proc.wait()
        tail = log.read_text()[-2000:]
        return {"error": f"{type(exc).__name__}: {exc}", "stderr_tail": tail}


def machine() -> dict[str, Any]:
    """Where the measurement ran: CPU model, cores, kernel, Python and torch, and the load when it started."""
    import torch

    model_name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model_name or platform.processor(), "arch": platform.machine(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}


def measure_costs(settings: CostSettings, progress: Progress = lambda _m: None) -> dict[str, Any]:
    """Measure every representation of ``settings.model``; the report's body (without its command)."""
    from nairbus.models.data.registry import load_data

    started = time.perf_counter()
    progress(f"{settings.model}: counting MACs, finding artifacts")
    plan = plan_costs(settings)
    frames = np.ascontiguousarray(load_data("test", data_dir=settings.data_dir).images[:settings.frames])
    where = machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nairbus-cost-") as tmp, \
            CpuGroups(device_cpus=settings.device_cpus, name=f"nairbus-cost-{os.getpid()}") as groups:
        np.save(Path(tmp) / "frames.npy", frames)
        for number, rep in enumerate(plan.items, 1):
            progress(f"{number}/{len(plan.items)} {rep.name}: {len(frames)} frames after {settings.warmup} warm-up")
            spec = child_spec(rep, plan, settings, Path(tmp) / "frames.npy")
            measured = run_child(spec, groups, settings.child_timeout_s, Path(tmp) / f"{rep.name}.log")
            rows.append({**rep.as_json(), **measured})
        isolation = {**groups.isolation, "threads": 1, "thread_env": dict(THREAD_ENV)}
    return _report(settings, plan, rows, isolation, where, time.perf_counter() - started)


def _report(settings: CostSettings, plan: CostPlan, rows: list[dict[str, Any]], isolation: dict[str, Any],
            where: dict[str, Any], wall: float) -> dict[str, Any]:
    """The report's body: what was measured, how, where, and one row per representation."""
    return {
        "model": plan.model, "model_sha256": plan.sha256, "macs_model": plan.macs_model,
        "frames": settings.frames, "frame_source": f"the first {settings.frames} test frames, one at a time",
        "warmup_frames": settings.warmup, "wire_bytes": settings.wire_bytes,
        "image": {"codecs": list(settings.image_codecs),
                  "rule": "the sensor's ladder (agents.nair.settings.DEFAULT_IMAGE_CODECS unless given), tried "
                          "best-first until the message fits wire_bytes (agents.nair.outgoing.ImageFrameEncoder)"},
        "nair": "head to the split, NAIR transform and quantiser (NairPipeline.encode), then the prefix that fits "
                "wire_bytes packed into lean fragments (agents.nair.outgoing.NairFrameEncoder)",
        "decision_k": DECISION_K, "vp_k": plan.vp_k,
        "measure": "one child process per representation, one compute thread, moved into the capped group after "
                   "importing and loading; frames back to back, one at a time: process CPU ms per frame "
                   "(time.process_time) and wall ms per frame inside the cap (frames_per_s: what the cap sustains, "
                   "its stalls included); peak RSS (VmHWM), the RSS after importing the sensor's code before any "
                   "model (rss_mb_imports) and of the bare interpreter (rss_mb_python)",
        "isolation": isolation, "machine": where, "skipped": plan.skipped, "representations": rows,
        "wall_seconds": round(wall, 1),
    }
