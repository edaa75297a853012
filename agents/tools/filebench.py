"""``nairbus bench files``: a user's files and a live source on a busy device, measured end to end.

Every run is the product as a user runs it: a private Mosquitto, ``nairbus fusion`` and ``nairbus sensor`` as
processes with their shipped defaults, and a result recorder subscribed at QoS 1 (what a script that must see every
decision does). While the sensor works, ``hogs`` busy-looping processes keep both cores busy (a device doing other
work; each hog ends by itself after its run). The scenarios (``reports/files.json``):

- ``oneshot``: a folder of ``files`` image files written from the test split in the model's colour, one-shot: how
  many were read, sent, decided, whether every result names its file, and the live decisions against the whole model
  run offline on the same files (agreement and accuracy, with 95 % Wilson intervals).
- ``watch_burst``: ``--watch`` on an empty folder, then ``burst`` files written at once: results received.
- ``slow_writes``: ``--watch``, then ``slow_files`` JPEG files each written in place over ``write_s`` seconds (four at
  a time): results received, files refused.
- ``live``: a live source (the data set replayed at ``live_fps``, latest frame wins) on the same loopback link, quiet
  and busy: frames skipped and why, and the wire bytes of the frames sent (the link's budget; a busy CPU must cost
  frames, counted as CPU, not bytes).
- ``qos1_replay``: ``replay_frames`` frames replayed at ``replay_fps`` (within what fusion admits per sensor): results
  a QoS 1 subscriber received.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.agents.tools.linkbench import NotifyListener, wilson
from nairbus.agents.tools.ownmodel import TEST_SEED, prepare_own_model, write_shapes
from nairbus.agents.tools.reports import FilesReport, write_report
from nairbus.models.store import MODEL_DIR_ENV
from nairbus.schemas import Result, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.topics import TopicTree

__all__ = ["SCENARIOS", "FileBenchSettings", "run_files"]

SCENARIOS = ("oneshot", "watch_burst", "slow_writes", "live", "qos1_replay")
ROOT, SITE = "nairbus-filebench", "bench"


@dataclass(frozen=True)
class FileBenchSettings:
    """What ``nairbus bench files`` runs (defaults: the issue's bars)."""

    model: str = "mobilenet"
    """The model of the watch, live and replay scenarios (a shipped one: the replay source plays its data set)."""
    own_model: bool = True
    """The one-shot folder runs a user's own model on its own frames (:mod:`nairbus.agents.tools.ownmodel`: a
    5-class CNN on 64 x 64 RGB shapes, imported and calibrated through the CLI) instead of ``model``."""
    files: int = 1000
    burst: int = 200
    slow_files: int = 20
    write_s: float = 2.0
    live_fps: float = 30.0
    live_frames: int = 300
    replay_frames: int = 10_000
    replay_fps: float = 150.0
    hogs: int = 2 * (os.cpu_count() or 2)
    scenarios: tuple[str, ...] = SCENARIOS
    runtime: str = "torch"
    """What runs the one-shot sensor's model work: torch, or onnx (the light sensor, on the parts ``nairbus
    export-onnx`` writes from the model into the run folder)."""
    report: Path = Path("reports/files.json")
    run_dir: Path = Path("runs/files")

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
        if min(self.files, self.burst, self.slow_files, self.live_frames, self.replay_frames) < 1:
            raise ValueError("every count must be at least 1")
        if self.runtime not in ("torch", "onnx"):
            raise ValueError(f"unknown runtime {self.runtime!r}; torch or onnx")


# ----- the device's other work ------------------------------------------------------------------------------------

_HOG = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"


@contextlib.contextmanager
def busy(hogs: int, seconds: float) -> Iterator[None]:
    """``hogs`` busy-looping processes for at most ``seconds`` (killed when the block ends)."""
    procs = [subprocess.Popen([sys.executable, "-c", _HOG, str(seconds)]) for _ in range(hogs)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# ----- the bus ------------------------------------------------------------------------------------------------------

class Recorder:
    """Every result of the bench's topic root, at QoS 1 on a persistent session: (stream, frame) → result."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.topics = TopicTree(ROOT, SITE)
        self.comm = Communicator(BrokerSettings(host=broker.host, port=broker.port), "filebench-recorder", None,
                                 lambda _s: b"", session_expiry_s=600)
        self.comm.subscribe(self.topics.all_results(), qos=1)
        self.results: dict[tuple[str, int], Result] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Recorder:
        self.comm.start()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.comm.stop(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.comm.get(timeout=0.1)
            if message is None:
                continue
            with contextlib.suppress(WireError):
                result = wire_decode(message.payload, Result)
                self.results[(result.stream_id, result.frame_id)] = result

    def of(self, stream: str) -> dict[int, Result]:
        """The results of one stream, by frame id."""
        return {frame: r for (s, frame), r in list(self.results.items()) if s == stream}

    def wait(self, stream: str, want: int, timeout: float, idle_s: float = 15.0) -> dict[int, Result]:
        """Results of ``stream`` once ``want`` arrived, nothing new came for ``idle_s``, or ``timeout`` passed."""
        end, last_n, last_at = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < end:
            n = len(self.of(stream))
            if n >= want:
                break
            if n != last_n:
                last_n, last_at = n, time.monotonic()
            elif time.monotonic() - last_at > idle_s:
                break
            time.sleep(0.2)
        return self.of(stream)


@dataclass
class Agents:
    """The agent processes of one bus, each with its log under the run directory."""

    broker: PrivateMosquitto
    run_dir: Path
    model: str
    model_dir: Path | None = None
    """Where the agents find ``model`` besides the shipped weights (``NAIRBUS_MODEL_DIR``)."""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NAIRBUS_", "NOTIFY_SOCKET"))}
        env.update({"NAIRBUS_TOPICS__ROOT": ROOT, "NAIRBUS_TOPICS__SITE": SITE, "COLUMNS": "200"})
        if self.model_dir is not None:
            env[MODEL_DIR_ENV] = str(self.model_dir.resolve())
        if os.environ.get("NAIRBUS_DATA_DIR"):
            env["NAIRBUS_DATA_DIR"] = os.environ["NAIRBUS_DATA_DIR"]
        return env

    def start(self, name: str, args: list[str], ready_s: float = 120.0, stdout: bool = True) -> subprocess.Popen[str]:
        """``nairbus <args>`` against the bench's broker, once it said READY (systemd's notify protocol);
        ``stdout``: kept for :meth:`finish` (a sensor's counters), else discarded."""
        notify = NotifyListener(Path(tempfile.mkdtemp(prefix="filebench-")) / f"{name}.sock")
        env = {**self.env(), "NOTIFY_SOCKET": str(notify.path)}
        with (self.run_dir / f"{name}.err").open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "nairbus.agents.cli", *args, "--broker",
                                     f"{self.broker.host}:{self.broker.port}"], env=env, text=True,
                                    stdout=subprocess.PIPE if stdout else subprocess.DEVNULL, stderr=err)
        self.procs.append(proc)
        try:
            if not notify.wait_ready(proc, ready_s):
                raise RuntimeError(f"{name} did not come up; see {self.run_dir / f'{name}.err'}")
        finally:
            notify.close()
        return proc

    def fusion(self) -> subprocess.Popen[str]:
        extra = [] if self.model == "base" else ["--also-model", self.model]
        return self.start("fusion", ["fusion", "--stats-interval", "1", *extra], stdout=False)

    def finish(self, proc: subprocess.Popen[str], timeout: float, interrupt: bool = False) -> dict[str, Any]:
        """Wait for (or, ``interrupt``, stop) a sensor; its counters (the JSON line it prints on stdout)."""
        if interrupt:
            proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines = [line for line in (out or "").splitlines() if line.startswith("{")]
        return {"exit": proc.returncode, **(json.loads(lines[-1]) if lines else {})}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.contextmanager
def bus(settings: FileBenchSettings, name: str, model: str | None = None,
        model_dir: Path | None = None) -> Iterator[tuple[Agents, Recorder]]:
    """A private broker, a recorder and a fusion agent (serving ``model``, else the settings' model) for one
    scenario."""
    run_dir = settings.run_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with PrivateMosquitto() as broker, Recorder(broker) as recorder:
        agents = Agents(broker, run_dir, model or settings.model, model_dir)
        try:
            agents.fusion()
            yield agents, recorder
        finally:
            agents.close()


# ----- frames as files ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frames:
    """Test-split images in the model's colour and their labels."""

    images: np.ndarray
    labels: np.ndarray
    mode: str

    def encoded(self, i: int, fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.images[i % len(self.images)]).convert(self.mode).save(buffer, format=fmt)
        return buffer.getvalue()


def load_frames(model: str, count: int) -> Frames:
    """The first ``count`` test images (wrapping) in the colour ``model`` takes."""
    from nairbus.models.data.registry import load_data
    from nairbus.models.nair.pipeline import NairPipeline

    spec = NairPipeline.load(model, optional=True).input_spec
    test = load_data("test")
    n = min(count, len(test))
    return Frames(test.images[:n], test.labels[:n], "RGB" if spec.channels == 3 else "L")


def read_as_sensor(model: str, paths: list[Path]) -> tuple[Any, np.ndarray]:
    """The model (torch, the hub's) and every file as its sensor reads it: converted to the model's input."""
    from nairbus.agents.sources.images import read_image_file
    from nairbus.models.nair.pipeline import NairPipeline

    pipeline = NairPipeline.load(model, optional=True)
    return pipeline, np.stack([read_image_file(p, pipeline.input_spec) for p in paths])


def offline_classes(pipeline: Any, images: np.ndarray) -> list[int]:
    """The whole model's class for each file."""
    return [int(c) for start in range(0, len(images), 256)
            for c in pipeline.full_model_probs(images[start:start + 256]).argmax(axis=1)]


def sent_twin_classes(pipeline: Any, images: np.ndarray, results: dict[int, Result]) -> dict[int, int]:
    """Each decided file's class recomputed offline from what its frame carried: a NAIR frame's delivered prefix of
    components through the hub's tail, an image frame's codec decoded through the whole model, a decision as the
    whole model's. Live equals this twin unless the bus lost or changed something."""
    from nairbus.models.image.codec import get_image_codec

    spec = pipeline.input_spec
    frames = sorted(results)
    nair = [f for f in frames if results[f].representation == "nair"]
    twin: dict[int, int] = {}
    if nair:
        codes = pipeline.encode_all(images[nair])
        ends = np.array([results[f].components_received for f in nair])
        twin.update(zip(nair, (int(c) for c in pipeline.prefix_probs(codes, ends).argmax(axis=1)), strict=True))
    for f in frames:
        r = results[f]
        if r.representation == "nair":
            continue
        pixels = images[f : f + 1]
        if r.representation == "image" and r.codec is not None:
            codec = get_image_codec(r.codec)
            pixels = codec.decode(codec.encode(images[f]), (spec.height, spec.width))[None]
        twin[f] = int(pipeline.full_model_probs(pixels).argmax(axis=1)[0])
    return twin


def _share(hits: int, n: int) -> dict[str, Any]:
    interval = wilson(hits, n)
    return {"hits": hits, "n": n, "share": hits / n if n else None,
            "ci95": None if interval is None else [round(interval[0], 4), round(interval[1], 4)]}


# ----- scenarios ------------------------------------------------------------------------------------------------------

def _oneshot_files(settings: FileBenchSettings, folder: Path,
                   say: Callable[[str], None]) -> tuple[str, Path | None, dict[str, Any] | None, list[str], np.ndarray]:
    """Write the one-shot folder: the own model's test shapes (made first) or the data set's test frames; the model,
    its folder, how the own model was made, the file names and their labels."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if settings.own_model:
        made = prepare_own_model(settings.run_dir / "own-model", say=say)
        names, labels = write_shapes(folder, settings.files, TEST_SEED)
        return str(made["name"]), settings.run_dir / "own-model", made, names, labels
    frames = load_frames(settings.model, settings.files)
    names = [f"snap-{i:05d}.png" for i in range(settings.files)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(frames.encoded(i))
    return settings.model, None, None, names, frames.labels[np.arange(settings.files) % len(frames.labels)]


@contextlib.contextmanager
def _model_dir(path: Path | None) -> Iterator[None]:
    """``NAIRBUS_MODEL_DIR`` set to ``path`` (when given) in this process for the block."""
    old = os.environ.get(MODEL_DIR_ENV)
    if path is not None:
        os.environ[MODEL_DIR_ENV] = str(path.resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MODEL_DIR_ENV, None)
        else:
            os.environ[MODEL_DIR_ENV] = old


def _device_model(settings: FileBenchSettings, model: str, model_dir: Path | None) -> list[str]:
    """The one-shot sensor's model flags: ``--model MODEL`` (torch), or for the light sensor the parts ``nairbus
    export-onnx --out-dir`` writes from the model (found in ``model_dir``, the user's model folder) into the run
    folder, as a device gets them from its hub."""
    if settings.runtime == "torch":
        return ["--model", model]
    device = (settings.run_dir / f"{model}-device").resolve()
    env = {**os.environ, **({MODEL_DIR_ENV: str(model_dir.resolve())} if model_dir is not None else {})}
    done = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "export-onnx", "--model", model, "--out-dir",
                           str(device)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nairbus export-onnx --model {model} failed: {done.stderr[-2000:]}")
    return ["--runtime", "onnx", "--model", str(device / f"{model}.json")]


def scenario_oneshot(settings: FileBenchSettings, say: Callable[[str], None]) -> dict[str, Any]:
    folder = settings.run_dir / "oneshot-files"
    model, model_dir, made, names, labels = _oneshot_files(settings, folder, say)
    model_args = _device_model(settings, model, model_dir)
    old = time.time() - 60
    for name in names:
        os.utime(folder / name, (old, old))
    with _model_dir(model_dir):
        pipeline, images = read_as_sensor(model, [folder / n for n in names])  # read once, for both offline answers
    offline = offline_classes(pipeline, images)
    say(f"oneshot: {settings.files} files of {model} written; sensor runs beside {settings.hogs} busy processes")
    with bus(settings, "oneshot", model, model_dir) as (agents, recorder), busy(settings.hogs, 1800):
        started = time.monotonic()
        sensor = agents.start("sensor", ["sensor", "--sensor-id", "files", *model_args, "--folder", str(folder)])
        counters = agents.finish(sensor, timeout=1800)
        seconds = time.monotonic() - started
        got = recorder.wait("files", settings.files, timeout=60)
    mine = {f: r for f, r in got.items() if f < len(names)}
    twin = sent_twin_classes(pipeline, images, mine)
    return {"model": model, **({"own_model": made} if made is not None else {}), "runtime": settings.runtime,
            "files": settings.files,
            "seconds": round(seconds, 1), "sensor": counters, "decided": len(got),
            "named_right": sum(int(r.item == names[f]) for f, r in mine.items()),
            "live_equals_offline": _share(sum(int(r.class_index == offline[f]) for f, r in mine.items()),
                                          settings.files),
            "live_equals_sent": _share(sum(int(r.class_index == twin[f]) for f, r in mine.items()), settings.files),
            "live_accuracy": _share(sum(int(r.class_index == labels[f]) for f, r in mine.items()), settings.files),
            "offline_accuracy": _share(int(sum(int(o == y) for o, y in zip(offline, labels, strict=True))),
                                       settings.files),
            "complete": sum(int(r.complete) for r in got.values())}


def _watch(settings: FileBenchSettings, name: str, write: Callable[[Path], list[str]],
           say: Callable[[str], None]) -> dict[str, Any]:
    folder = settings.run_dir / f"{name}-files"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with bus(settings, name) as (agents, recorder), busy(settings.hogs, 1800):
        sensor = agents.start("sensor", ["sensor", "--sensor-id", "watched", "--model", settings.model,
                                         "--folder", str(folder), "--watch"])
        names = write(folder)
        say(f"{name}: {len(names)} files written; waiting for their results")
        got = recorder.wait("watched", len(names), timeout=600)
        counters = agents.finish(sensor, timeout=60, interrupt=True)
    return {"files": len(names), "decided": len(got), "sensor": counters,
            "named_right": sum(int(r.item in names) for r in got.values()),
            "files_refused": counters.get("files_refused")}


def scenario_watch_burst(settings: FileBenchSettings, say: Callable[[str], None]) -> dict[str, Any]:
    frames = load_frames(settings.model, settings.burst)

    def write(folder: Path) -> list[str]:
        names = [f"burst-{i:05d}.png" for i in range(settings.burst)]
        for i, name in enumerate(names):
            (folder / name).write_bytes(frames.encoded(i))
        return names

    return _watch(settings, "watch_burst", write, say)


def scenario_slow_writes(settings: FileBenchSettings, say: Callable[[str], None]) -> dict[str, Any]:
    frames = load_frames(settings.model, settings.slow_files)

    def write_slowly(path: Path, data: bytes, pieces: int = 10) -> None:
        with path.open("wb") as out:
            for k in range(pieces):
                out.write(data[k * len(data) // pieces:(k + 1) * len(data) // pieces])
                out.flush()
                time.sleep(settings.write_s / pieces)

    def write(folder: Path) -> list[str]:
        names = [f"cam-{i:03d}.jpg" for i in range(settings.slow_files)]
        for start in range(0, len(names), 4):
            writers = [threading.Thread(target=write_slowly, args=(folder / n, frames.encoded(start + k, "JPEG")))
                       for k, n in enumerate(names[start:start + 4])]
            for w in writers:
                w.start()
            for w in writers:
                w.join()
        return names

    result = _watch(settings, "slow_writes", write, say)
    return {**result, "write_s": settings.write_s}


def _live_run(settings: FileBenchSettings, name: str, hogs: int) -> dict[str, Any]:
    with bus(settings, name) as (agents, recorder), busy(hogs, 600):
        sensor = agents.start("sensor", ["sensor", "--sensor-id", "live", "--model", settings.model, "--count",
                                         str(settings.live_frames), "--fps", f"{settings.live_fps:g}"])
        counters = agents.finish(sensor, timeout=600)
        got = recorder.wait("live", counters.get("frames_sent", 0), timeout=30, idle_s=5)
    wire = [r.wire_bytes for r in got.values()]
    skipped = {k: v for k, v in counters.items() if k.startswith("skipped_") and v}
    return {"hogs": hogs, "sensor": counters, "decided": len(got), "skipped": skipped,
            "wire_bytes_mean": float(np.mean(wire)) if wire else None,
            "wire_bytes_median": float(np.median(wire)) if wire else None}


def scenario_live(settings: FileBenchSettings, say: Callable[[str], None]) -> dict[str, Any]:
    say(f"live: {settings.live_frames} frames at {settings.live_fps:g} fps, quiet then busy")
    quiet = _live_run(settings, "live_quiet", 0)
    loaded = _live_run(settings, "live_busy", settings.hogs)
    return {"fps": settings.live_fps, "frames": settings.live_frames, "quiet": quiet, "busy": loaded}


def scenario_qos1_replay(settings: FileBenchSettings, say: Callable[[str], None]) -> dict[str, Any]:
    say(f"qos1_replay: {settings.replay_frames} frames at {settings.replay_fps:g} fps, a QoS 1 subscriber")
    with bus(settings, "qos1_replay") as (agents, recorder):
        sensor = agents.start("sensor", ["sensor", "--sensor-id", "replay", "--model", settings.model, "--count",
                                         str(settings.replay_frames), "--fps", f"{settings.replay_fps:g}"])
        counters = agents.finish(sensor, timeout=settings.replay_frames / settings.replay_fps * 3 + 120)
        got = recorder.wait("replay", counters.get("frames_sent", 0), timeout=120)
    return {"frames": settings.replay_frames, "fps": settings.replay_fps, "sensor": counters,
            "received_qos1": len(got)}


RUNNERS: dict[str, Callable[[FileBenchSettings, Callable[[str], None]], dict[str, Any]]] = {
    "oneshot": scenario_oneshot, "watch_burst": scenario_watch_burst, "slow_writes": scenario_slow_writes,
    "live": scenario_live, "qos1_replay": scenario_qos1_replay}


def command_line(settings: FileBenchSettings) -> str:
    """The command that regenerates the report (options that differ from the defaults)."""
    default = FileBenchSettings()
    parts = ["nairbus bench files"]
    if not settings.own_model:
        parts.append("--no-own-model")
    for key in ("model", "files", "burst", "slow_files", "write_s", "live_fps", "live_frames", "replay_frames",
                "replay_fps", "hogs"):
        value = getattr(settings, key)
        if value != getattr(default, key):
            parts.append(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float)
                         else f"--{key.replace('_', '-')} {value}")
    if settings.scenarios != SCENARIOS:
        parts += [f"--scenario {s}" for s in settings.scenarios]
    if settings.runtime != default.runtime:
        parts.append(f"--runtime {settings.runtime}")
    if settings.report.resolve() != default.report.resolve():
        parts.append(f"--report {os.path.relpath(settings.report)}")
    return " ".join(parts)


def run_files(settings: FileBenchSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the scenarios; the report is rewritten after each one."""
    report: dict[str, Any] = {"command": command_line(settings), "model": settings.model, "hogs": settings.hogs,
                              "cpus": os.cpu_count(), "settings": {k: str(v) if isinstance(v, Path) else v
                                                                   for k, v in asdict(settings).items()}}
    existing = json.loads(settings.report.read_text()) if settings.report.is_file() else {}
    for name in settings.scenarios:
        began = time.monotonic()
        report[name] = RUNNERS[name](settings, say)
        report[name]["wall_s"] = round(time.monotonic() - began, 1)
        merged = {**existing, **report}
        write_report(settings.report, FilesReport.from_data(merged), sort_keys=True)
        say(f"{name}: done in {report[name]['wall_s']:.0f} s -> {settings.report}")
    return report
