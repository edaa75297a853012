"""The sensor's footprint on a Pi-class device: the torch sensor against the light sensor (``nairbus bench footprint``).

Two fresh venvs are built from the project the same way — ``python -m venv --without-pip`` and ``pip --python VENV
install --no-compile`` (what ``uv pip install`` does by default: no installer inside the venv, bytecode written on
first import) — one with the hub install (``nairbus[hub]``: torch) and one with the sensor-only install (``nairbus``:
ONNX Runtime, no torch). The hub's venv exports the model's device parts (``nairbus export-onnx --out-dir``). Each
sensor then runs as a user runs it (``nairbus sensor``, ``--runtime torch`` from the hub's venv, ``--runtime onnx``
from the light one) in decision mode, in nair mode at the manifest's sensor artifact and in vp mode (the family's
first variant, exported with ``export-onnx --variants``), one compute thread,
replaying test frames unpaced to a private Mosquitto, each process moved at once into a CPU control group of
``device_cpus`` of a core (:class:`~nairbus.agents.tools.cpugroups.CpuGroups`). Measured from outside the process:
the time from its start (after a first, unmeasured start that wrote the bytecode of what it imports) to the first
frame message on the broker, the process CPU per frame and the frames per
second between its first and last frame on the broker (``/proc/<pid>/stat``, sampled), its peak RSS (``VmHWM``),
and each venv's size on disk (``du -m``: after the install, and after the sensors' first starts wrote the bytecode of
what they import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.agents.tools.cpugroups import CpuGroups
from nairbus.agents.tools.reports import FootprintInstall, FootprintReport, FootprintRun, write_report
from nairbus.schemas.topics import TopicTree

__all__ = ["FootprintSettings", "directory_mb", "run_footprint"]

Progress = Callable[[str], None]
RECIPE = ("python -m venv --without-pip VENV; pip --python VENV/bin/python install --no-compile SPEC "
          "(no installer in the venv; bytecode written on first import, as uv installs by default)")
MODES = ("decision", "nair", "vp")
"""decision: the whole model here; nair: the head at the sensor artifact's split; vp: the family's first variant."""
SAMPLE_S = 0.02
"""How often a sensor process's CPU time and RSS are read."""


@dataclass(frozen=True)
class FootprintSettings:
    """What ``nairbus bench footprint`` measures and where."""

    model: str = "base"
    frames: int = 300
    device_cpus: float = 0.25
    source: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2])
    """The project the venvs are installed from (a checkout: its ``pyproject.toml``)."""
    run_dir: Path = Path("runs/footprint")
    report: Path = Path("reports/sensor-footprint.json")
    command: str = "nairbus bench footprint"

    def __post_init__(self) -> None:
        if self.frames < 20:
            raise ValueError(f"frames must be at least 20, not {self.frames}")
        if not (self.source / "pyproject.toml").is_file():
            raise ValueError(f"{self.source} is not the nairbus project (no pyproject.toml): pass --source CHECKOUT")


def directory_mb(path: Path) -> float:
    """Disk use of everything under ``path`` in MB of 2**20 bytes (allocated blocks, as ``du -m``; hard links counted
    once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            info = os.lstat(os.path.join(root, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return round(total / 2**20, 1)


def build_venv(path: Path, spec: str) -> tuple[float, float]:
    """A fresh venv at ``path`` with ``spec`` installed (:data:`RECIPE`); (its size in MB, seconds the install took)."""
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)], check=True)
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "-q",
                           "--no-compile", spec], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"installing {spec} into {path} failed: {done.stderr[-2000:]}")
    return directory_mb(path), round(time.monotonic() - began, 1)


def _packages(python: Path) -> tuple[bool, list[str]]:
    code = ("import importlib.metadata as m, importlib.util as u, json; print(json.dumps([u.find_spec('torch') is not "
            "None, sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())]))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    torch, packages = json.loads(out)
    return bool(torch), [str(p) for p in packages]


@dataclass
class _Samples:
    """``(monotonic time, CPU seconds, VmHWM kB)`` of one process, read every :data:`SAMPLE_S`."""

    pid: int
    rows: list[tuple[float, float, int]] = field(default_factory=list)

    def read(self) -> None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        self.rows.append((time.monotonic(), cpu, hwm))

    def at(self, moment: float) -> tuple[float, float, int]:
        """The first sample at or after ``moment`` (the last one when none is)."""
        return next((row for row in self.rows if row[0] >= moment), self.rows[-1])


class _Arrivals:
    """When each frame message of one sensor reached the broker's subscriber (monotonic times)."""

    def __init__(self, broker: PrivateMosquitto, topics: TopicTree, sensor_id: str) -> None:
        self.times: list[float] = []
        self.comm = Communicator(BrokerSettings(host=broker.host, port=broker.port),
                                 f"footprint-{uuid.uuid4().hex[:8]}", None, lambda state: b"{}")
        for topic in (topics.sensor_frag(sensor_id), topics.sensor_topk(sensor_id)):
            self.comm.subscribe(topic, qos=0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while not self.stop.is_set():
            if self.comm.get(timeout=0.05) is not None:
                self.times.append(time.monotonic())

    def __enter__(self) -> _Arrivals:
        self.comm.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last messages in flight
        self.stop.set()
        self.thread.join(timeout=5)
        self.comm.stop()


def run_sensor(python: Path, args: list[str], env: dict[str, str], groups: CpuGroups | None, name: str, cwd: Path
               ) -> tuple[float, _Samples, dict[str, Any]]:
    """Start ``python -m nairbus.agents.cli sensor ARGS`` in device group ``name`` (none: uncapped), sample it until it
    ends; (its start time, the samples, its counters)."""
    began = time.monotonic()
    process = subprocess.Popen([str(python), "-m", "nairbus.agents.cli", "sensor", *args], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if groups is not None:
        groups.device(name, process.pid)
    samples = _Samples(process.pid)
    while process.poll() is None:
        samples.read()
        time.sleep(SAMPLE_S)
    out, err = process.communicate()
    if process.returncode != 0 or not samples.rows:
        raise RuntimeError(f"the {name} sensor failed ({process.returncode}): {err[-2000:]}")
    return began, samples, json.loads(out.strip().splitlines()[-1])


def measure(python: Path, sensor: str, mode: str, model: str, settings: FootprintSettings,
            broker: PrivateMosquitto, groups: CpuGroups) -> FootprintRun:
    """One sensor in one mode, streaming ``settings.frames`` unpaced frames in the device budget. ``model``: the
    model's name or manifest; in vp mode the folder of the variant family (empty: the shipped one) and its variant,
    ``FOLDER:VARIANT``."""
    runtime = "onnx" if sensor == "light" else "torch"
    sensor_id = f"{sensor}-{mode}"
    topics = TopicTree("footprint", "lab")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")} | {
        "NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
        "NAIRBUS_TOPICS__ROOT": "footprint", "NAIRBUS_TOPICS__SITE": "lab", "NAIRBUS_LOG__LEVEL": "warning"}
    if mode == "vp":
        family_dir, _, variant = model.rpartition(":")
        env |= {"NAIRBUS_MODEL_DIR": family_dir} if family_dir else {}
        what = ["--variant", variant]
    else:
        what = ["--model", model, "--no-link-fit"]
    args = [*what, "--runtime", runtime, "--mode", mode, "--count", str(settings.frames), "--deadline-ms", "60000",
            "--threads", "1", "--sensor-id", sensor_id]
    # A first start, uncapped, writes the bytecode of what the sensor imports (the venvs are installed without it):
    # the measured start is a device's every start after its first.
    run_sensor(python, [*args[:-1], f"{sensor_id}-warmup", "--count", "5"], env, None, sensor_id, settings.run_dir)
    with _Arrivals(broker, topics, sensor_id) as arrivals:
        began, samples, counters = run_sensor(python, args, env, groups, sensor_id, settings.run_dir)
    if len(arrivals.times) < 2:
        raise RuntimeError(f"the {sensor_id} sensor's frames never reached the broker")
    first, last = arrivals.times[0], arrivals.times[-1]
    cpu = samples.at(last)[1] - samples.at(first)[1]
    frames = len(arrivals.times) - 1
    throttled = groups.throttled().get(f"device-{sensor_id}", {}).get("throttled_s")
    sent = counters.get("frames_sent", counters.get("published", 0))  # a VP sensor's word is 'published'
    return FootprintRun(sensor=sensor, runtime=runtime, mode=mode, frames_sent=int(sent),
                        cpu_ms_per_frame=round(1000 * cpu / frames, 2), fps=round(frames / (last - first), 1),
                        peak_rss_mb=round(max(row[2] for row in samples.rows) / 1024, 1),
                        startup_s=round(first - began, 2), throttled_s=throttled)


def _export(full_python: Path, settings: FootprintSettings, *what: str) -> Path:
    """The hub's venv exports device parts (``what``: ``--model NAME`` or ``--variants``) into a model directory
    for the light sensor (``nairbus export-onnx --out-dir``): the directory."""
    bundle = (settings.run_dir / ("bundle-vp" if "--variants" in what else "bundle")).resolve()
    done = subprocess.run([str(full_python), "-m", "nairbus.agents.cli", "export-onnx", *what,
                           "--out-dir", str(bundle)], capture_output=True, text=True, check=False,
                          cwd=settings.run_dir)
    if done.returncode != 0:
        raise RuntimeError(f"nairbus export-onnx failed: {done.stderr[-2000:]}")
    return bundle


def _first_variant(family_dir: Path) -> str:
    """The name of the first variant of the family whose manifest is in ``family_dir``."""
    from nairbus.models.vp.manifest import FamilyManifest

    return FamilyManifest.load(family_dir).variants[0].name


def run_footprint(settings: FootprintSettings, progress: Progress) -> FootprintReport:
    """Build both venvs, run both sensors in both modes in the device budget, write and return the report."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    venvs = {"torch": (settings.run_dir / "venv-hub", f"{settings.source}[hub]"),
             "light": (settings.run_dir / "venv-light", str(settings.source))}
    built: dict[str, tuple[float, float]] = {}
    for name, (path, spec) in venvs.items():
        progress(f"installing {spec} into a fresh venv ({name} sensor)")
        built[name] = build_venv(path, spec)
    python = {name: path / "bin" / "python" for name, (path, _spec) in venvs.items()}
    progress("exporting the device parts with the hub's venv (nairbus export-onnx)")
    manifest = _export(python["torch"], settings, "--model", settings.model) / f"{settings.model}.json"
    family = _export(python["torch"], settings, "--variants")
    variant = _first_variant(family)
    models = {("torch", "vp"): f":{variant}", ("light", "vp"): f"{family}:{variant}"}
    runs: list[FootprintRun] = []
    with PrivateMosquitto() as broker, CpuGroups(device_cpus=settings.device_cpus) as groups:
        for mode in MODES:
            for sensor in ("torch", "light"):
                model = models.get((sensor, mode), settings.model if sensor == "torch" else str(manifest))
                progress(f"{sensor} sensor, {mode} mode: {settings.frames} frames in {settings.device_cpus} of a core")
                runs.append(measure(python[sensor], sensor, mode, model, settings, broker, groups))
                progress(f"  {runs[-1].model_dump()}")
        isolation = dict(groups.isolation)
    report = _report(settings, venvs, built, python, runs, isolation, manifest)
    write_report(settings.report, report)
    return report


def _report(settings: FootprintSettings, venvs: dict[str, tuple[Path, str]], built: dict[str, tuple[float, float]],
            python: dict[str, Path], runs: list[FootprintRun], isolation: dict[str, Any],
            manifest: Path) -> FootprintReport:
    installs = {}
    for name, (path, spec) in venvs.items():
        torch, packages = _packages(python[name])
        installs[name] = FootprintInstall(spec=spec.replace(str(settings.source), "."), size_mb=built[name][0],
                                          size_mb_after_runs=directory_mb(path), install_s=built[name][1],
                                          torch_importable=torch, packages=packages)
    by = {(r.sensor, r.mode): r for r in runs}
    ratio = {mode: round(by["light", mode].cpu_ms_per_frame / by["torch", mode].cpu_ms_per_frame, 3)
             for mode in MODES}
    light = [r for r in runs if r.sensor == "light"]
    bars = {"light_install_le_200_mb": installs["light"].size_mb_after_runs <= 200,
            "light_no_torch": not installs["light"].torch_importable,
            "light_rss_le_120_mb": all(r.peak_rss_mb <= 120 for r in light),
            "light_cpu_le_torch": all(v <= 1.0 for v in ratio.values()),
            "light_startup_le_3_s": all(r.startup_s <= 3.0 for r in light)}
    artifact = json.loads(manifest.read_text()).get("sensor_artifact") or f"{settings.model}.nair.npz"
    return FootprintReport(command=settings.command, model=settings.model, artifact=str(artifact),
                           frames=settings.frames, device_cpus=settings.device_cpus, threads=1, recipe=RECIPE,
                           isolation=json.loads(json.dumps(isolation)), installs=installs, runs=runs,
                           cpu_ratio_light_to_torch=ratio, bars=bars)
