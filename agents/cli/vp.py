"""The Variant Parallelism sub-commands of ``nairbus``: ``train variants``, ``evaluate vp``, ``capture``, ``demo-vp``.

They live here so that :mod:`nairbus.agents.cli` only registers them (:func:`register`); ``nairbus sensor --mode vp``
and ``nairbus fusion --mode vp`` are options of the shared agent commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nairbus.agents.cli.common import BrokerOpt

if TYPE_CHECKING:
    from nairbus.models.vp.training import VpTrainSettings

console = Console(stderr=True)
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory with the Fashion-MNIST IDX files (also NAIRBUS_DATA_DIR)."),
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {escape(message)}")  # a message may hold brackets: pip install 'nairbus[camera]'
    raise typer.Exit(2)


def _progress_fn(progress: Progress, label: str) -> Any:
    task = progress.add_task(label, total=None)

    def report(kind: str, done: int, total: int, info: dict[str, float]) -> None:
        if kind == "step":
            progress.update(task, completed=done, total=total,
                            description=f"{label} epoch {int(info['epoch'])} loss {info['loss']:.3f} "
                                        f"fused train acc {info['train_acc']:.3f}")
        elif kind == "teacher":
            progress.console.print("teacher outputs computed (training images and their mirror images)")
        elif kind == "validation":
            progress.console.print(f"  after epoch {int(info['epochs'])}: validation ensemble accuracy "
                                   f"{info['validation_acc']:.4f}")
        else:
            progress.console.print(f"epoch {done}/{total}: loss {info['loss']:.4f}, fused train acc "
                                   f"{info['train_acc']:.4f}, {info['seconds']:.0f} s")

    return report


def _train_variants_command(settings: VpTrainSettings, shipped: VpTrainSettings, resume_from: Path | None) -> str:
    """The command line that trains ``settings``: only what differs from the shipped family's settings."""
    parts = ["nairbus train variants"]
    for flag, value, default in (("--epochs", settings.epochs, shipped.epochs),
                                 ("--restart-epochs", settings.restart_epochs, shipped.restart_epochs),
                                 ("--restarts", settings.restarts, shipped.restarts),
                                 ("--seed", settings.seed, shipped.seed),
                                 ("--distill", settings.distill_weight, shipped.distill_weight),
                                 ("--validation-images", settings.validation_images, shipped.validation_images)):
        if value != default:
            parts.append(f"{flag} {value}")
    if resume_from is not None:
        parts.append(f"--resume-from {resume_from}")
    return " ".join(parts)


def _print_family(manifest: dict[str, Any], path: Path) -> None:
    """What a trained family achieved: each variant's size and accuracy, the kept epoch, the ensemble."""
    for v in manifest["variants"]:
        console.print(f"{v['name']}: {v['params']} params ({v['params_ratio']:.1%}), {v['macs']} MACs "
                      f"({v['macs_ratio']:.1%}), test accuracy {v['test_accuracy']:.4f}")
    chosen = manifest.get("selection")
    if chosen is not None:
        console.print(f"kept the weights after epoch {chosen['kept_epochs']} (best on validation) of "
                      f"{chosen['history'][-1]['epochs']} run")
    console.print(f"ensemble {manifest['ensemble_accuracy']:.4f}, worst with one lost "
                  f"{min(manifest['leave_one_out_accuracy'].values()):.4f}, {manifest['train_wall_seconds']} s "
                  f"-> {path}")


def train_variants_cmd(
    epochs: Annotated[int | None, typer.Option(
        help="Epochs of the first learning-rate cycle (default: the shipped family's).")] = None,
    restart_epochs: Annotated[int | None, typer.Option(
        help="Epochs of each warm restart that follows (0 = none; default: the shipped family's).")] = None,
    restarts: Annotated[int | None, typer.Option(
        help="How many warm restarts follow the first cycle (default: the shipped family's).")] = None,
    resume_from: Annotated[Path | None, typer.Option(
        help="Directory with a family trained with the same settings but fewer warm restarts: skip the cycles it "
             "ran and train only the rest, from its weights.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    validation_images: Annotated[int, typer.Option(
        help="Training images held out as the validation split that chooses how many learning-rate cycles the kept "
             "family ran (0: train on all 60 000 and keep the last cycle).")] = 5000,
    distill: Annotated[float | None, typer.Option(
        help="Weight of distillation from the mature model (0 = off; default: the shipped family's).")] = None,
    compile_models: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="Train through torch.compile (faster; needs a C compiler on CPU).")] = True,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where weights and manifests go.")] = None,
) -> None:
    """Train the VP variant family jointly (a loss per variant plus one on the fused output) and write the manifest."""
    from dataclasses import replace

    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.store import OUTPUT_DIR
    from nairbus.models.vp.training import VpTrainSettings, train_family

    if (epochs is not None and epochs < 1) or (restart_epochs is not None and restart_epochs < 0) or (
            restarts is not None and restarts < 0):
        raise typer.BadParameter("--epochs must be >= 1, --restart-epochs and --restarts >= 0")
    if not 0 <= validation_images <= 30000:
        raise typer.BadParameter("--validation-images must be in 0..30000")
    shipped = VpTrainSettings()
    settings = replace(shipped, epochs=epochs or shipped.epochs, seed=seed,
                       restart_epochs=shipped.restart_epochs if restart_epochs is None else restart_epochs,
                       restarts=shipped.restarts if restarts is None else restarts,
                       distill_weight=shipped.distill_weight if distill is None else distill, compile=compile_models,
                       validation_images=validation_images)
    command = _train_variants_command(settings, shipped, resume_from)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        try:
            path = train_family(settings, data_dir=data_dir, out_dir=out_dir or OUTPUT_DIR,
                                progress=_progress_fn(progress, "variants"), command=command,
                                resume_from=resume_from)
        except (DatasetMissingError, FileNotFoundError, ValueError, RuntimeError) as exc:
            _fail(str(exc))
    _print_family(json.loads(path.read_text()), path)


def evaluate_vp_cmd(
    frames: Annotated[int | None, typer.Option(help="Test frames (default: all 10 000).")] = None,
    report: Annotated[Path | None, typer.Option(help="JSON report path (default reports/vp.json).")] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots beside the report.")] = True,
    trials: Annotated[int, typer.Option(help="Simulated failure trials per p.")] = 100000,
    data_dir: DataDirOpt = None,
) -> None:
    """Evaluate VP on the test split: every subset, every k, the mature model, availability, bytes per frame."""
    from nairbus.agents.vp.common import topk_message_bytes
    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.evaluation.vp import REPORT_PATH, VpEvalSettings, evaluate_vp, write_report

    settings = VpEvalSettings(frames=frames, trials=trials, nair_bytes=_nair_bytes())
    try:
        result = evaluate_vp(settings, data_dir, payload_bytes=topk_message_bytes)
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ValueError) as exc:
        _fail(str(exc))
    path = write_report(result, report or REPORT_PATH, plots=plots)
    full = result["ensemble"]
    console.print(f"mature model {result['base_accuracy']:.4f}; ensemble (k={result['k']}) {full['accuracy']:.4f}; "
                  f"worst with one variant lost {full['worst_one_lost']:.4f}")
    for name, v in result["variants"].items():
        console.print(f"  {name}: {v['accuracy']:.4f}  {v['params']} params ({v['params_ratio']:.1%}), "
                      f"{v['macs']} MACs ({v['macs_ratio']:.1%})")
    ev = result["evidence"]
    for label, key in (("ensemble vs mature", "ensemble_vs_mature"), ("ensemble vs best variant",
                                                                     "ensemble_vs_best_variant")):
        test = ev[key]
        console.print(f"{label}: {100 * test['difference']:+.2f} points, McNemar p = {test['p_value']:.3g}"
                      + (" (within noise)" if test["within_noise"] else ""))
    row = result.get("payload", {}).get("topk", {}).get(str(result["k"]))
    if row and row.get("message_bytes_per_variant"):
        console.print(f"top-{result['k']} on the wire (lean message, MQTT PUBLISH with a topic alias): "
                      f"{row['message_bytes_per_variant']} B per variant, {row['message_bytes_per_frame']} B per "
                      f"frame with all variants ({row['data_bytes_per_frame']} B of numbers)")
    console.print(f"report: {path}")


def _nair_bytes() -> dict[str, float]:
    """NAIR fragment payload per frame at 10 %, 25 % and 100 % of the IR, from the committed artifact (if any)."""
    from nairbus.models.nair.transform import NairArtifact
    from nairbus.models.store import WEIGHTS_DIR

    try:
        artifact = NairArtifact.load(WEIGHTS_DIR / "base.nair.npz")
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    total = artifact.total_bytes()
    return {"NAIR 10% of IR": round(0.10 * total), "NAIR 25% of IR": round(0.25 * total),
            "NAIR whole IR": float(total)}


def capture_cmd(
    stream_id: Annotated[str, typer.Option(help="Stream id: frames go to <prefix>/frames/<stream-id>.")] = "cam-1",
    count: Annotated[int | None, typer.Option(help="Frames to publish from --start.")] = None,
    start: Annotated[int, typer.Option(help="First data-set index.")] = 0,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 50.0,
    split: Annotated[str, typer.Option(help="Data-set split to replay as the camera.")] = "test",
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file (also NAIRBUS_CONFIG).")] = None,
    data_dir: DataDirOpt = None,
    folder: Annotated[Path | None, typer.Option(
        help="Publish the image files of this folder instead of the data set.")] = None,
    watch: Annotated[bool, typer.Option("--watch/--no-watch", help="With --folder: keep taking new files.")] = False,
    camera: Annotated[str | None, typer.Option(
        help="Publish a camera's frames (a device index, a stream URL or a video file; the camera extra).")] = None,
    broker: BrokerOpt = None,
) -> None:
    """Capture agent: publish frames (the data set standing in for a camera, a folder, or a camera) for every VP
    variant sensor."""
    from pydantic import ValidationError

    from nairbus.agents.runtime.config import load_config
    from nairbus.agents.runtime.settings import parse_broker
    from nairbus.agents.vp.capture import CaptureSettings
    from nairbus.agents.vp.service import run_capture

    try:
        cfg = load_config(config, {} if broker is None else {"broker": parse_broker(broker)})
        settings = CaptureSettings(stream_id=stream_id, count=count, start=start, fps=fps, split=split,
                                   data_dir=data_dir, folder=folder, watch=watch, camera=camera,
                                   source="folder" if folder else "camera" if camera else "replay")
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        _fail(f"invalid configuration: {exc}")
    try:
        sent = run_capture(cfg, settings)
    except (ConnectionError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    console.print(json.dumps(sent))


def demo_vp_cmd(
    frames: Annotated[int | None, typer.Option(
        help="Test frames (default: 10 000, the whole test split).")] = None,
    stop_at: Annotated[float | None, typer.Option(
        help="Stop one variant agent after this fraction of the frames (default 0.5).")] = None,
    fps: Annotated[float | None, typer.Option(
        help="Capture rate in frames per second (default: the demo's, which 2 CPU cores keep up with).")] = None,
    deadline_ms: Annotated[float | None, typer.Option(
        help="Fusion deadline per frame (default: the demo's).")] = None,
    report: Annotated[Path | None, typer.Option(help="Demo report to merge the 'vp' section into.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Live VP run: private Mosquitto, capture agent, a sensor per variant, VP fusion; one variant stopped part-way."""
    from dataclasses import replace

    from nairbus.agents.tools.demo_vp import VpDemoSettings, run_vp_demo_standalone
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    given: dict[str, Any] = {"frames": frames, "stop_at": stop_at, "fps": fps, "deadline_ms": deadline_ms}
    settings = replace(VpDemoSettings(data_dir=data_dir), **{k: v for k, v in given.items() if v is not None})
    if settings.frames < 10 or not 0 < settings.stop_at < 1 or settings.fps <= 0 or settings.deadline_ms <= 0:
        raise typer.BadParameter("frames >= 10, 0 < stop-at < 1, fps > 0 and deadline-ms > 0")
    try:
        run_vp_demo_standalone(settings, report, Console())
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ConnectionError) as exc:
        _fail(str(exc))


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add the VP commands to the ``nairbus`` app (an ``evaluate`` group is created unless one exists)."""
    train_app.command("variants")(train_variants_cmd)
    evaluate_app = next((g.typer_instance for g in app.registered_groups if g.name == "evaluate"), None)
    if evaluate_app is None:
        evaluate_app = typer.Typer(
            help="Evaluate on the test split; JSON reports and PNG plots under reports/.",
            rich_markup_mode=None, no_args_is_help=True)
        app.add_typer(evaluate_app, name="evaluate")
    evaluate_app.command("vp")(evaluate_vp_cmd)
    app.command("capture")(capture_cmd)
    app.command("demo-vp")(demo_vp_cmd)
