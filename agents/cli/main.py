"""The ``nairbus`` command: one entry point with a sub-command for every job."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(
    help="nairbus: an MQTT bus for distributed deep-learning inference (NAIR split computing) on IoT devices.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _quiet_logs() -> None:
    """Commands log warnings and errors only (agents configure their own logging from their settings)."""
    from agents.runtime.logging import configure_logging
    from agents.runtime.settings import LogSettings

    configure_logging(LogSettings(level="warning"))


train_app = typer.Typer(help="Train the models nairbus ships (seeded; weights and manifest land in models/weights).",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML config file (also NAIRBUS_CONFIG).")]  # noqa: UP045
DataDirOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--data-dir", help="Directory with the Fashion-MNIST IDX files (also NAIRBUS_DATA_DIR)."),
]


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError as exc:
        raise typer.BadParameter("expected i/n, e.g. 0/3") from exc
    return (i, n)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def _load_config(config: Path | None, overrides: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from agents.runtime.config import load_config

    try:
        return load_config(config, overrides)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        _fail(f"invalid configuration: {exc}")


def _training_progress(progress: Progress, label: str) -> Any:
    task = progress.add_task(label, total=None)

    def report(kind: str, done: int, total: int, info: dict[str, float]) -> None:
        if kind == "step":
            progress.update(task, completed=done, total=total,
                            description=f"{label} epoch {int(info['epoch'])} loss {info['loss']:.3f} "
                                        f"train acc {info['train_acc']:.3f}")
        elif kind == "validation":
            progress.console.print(f"  validation accuracy {info['validation_acc']:.4f}")
        else:
            progress.console.print(f"epoch {done}/{total}: loss {info['loss']:.4f}, train acc {info['train_acc']:.4f}"
                                   f", {info['seconds']:.0f} s")

    return report


@train_app.command("base")
def train_base_cmd(
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (default: the shipped model's).")] = None,  # noqa: UP045
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Where weights and manifest go.")] = None,  # noqa: UP045
) -> None:
    """Train the mature model (ResNet family, 28x28) and write weights plus manifest with its test accuracy."""
    from dataclasses import replace

    from models.data import DatasetMissingError
    from models.store import OUTPUT_DIR
    from models.zoo import BASE_SETTINGS, train_base

    settings = replace(BASE_SETTINGS, epochs=epochs or BASE_SETTINGS.epochs, seed=seed)
    shipped = (settings.epochs, settings.seed) == (BASE_SETTINGS.epochs, BASE_SETTINGS.seed)
    command = "nairbus train base" + ("" if shipped else f" --epochs {settings.epochs} --seed {seed}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        try:
            path = train_base(settings, data_dir, out_dir or OUTPUT_DIR, _training_progress(progress, "base"),
                              command)
        except DatasetMissingError as exc:
            _fail(str(exc))
    manifest = json.loads(path.read_text())
    console.print(f"test accuracy {manifest['test_accuracy']:.4f}, {manifest['train_wall_seconds']} s -> {path}")


@train_app.command("mobilenet")
def train_mobilenet_cmd(
    epochs: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Epochs (default 30); the weights kept are the epoch most accurate on the validation split.")] = None,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Path, typer.Option(help="Working directory for the native weights and manifest (export "
                                                "them with 'nairbus export-model').")] = Path("mobilenet-train"),
) -> None:
    """Train the second architecture: MobileNetV2-style, 3x32x32 RGB input resized from the data set."""
    from dataclasses import replace

    from models.data import DatasetMissingError
    from models.zoo import MOBILENET_SETTINGS, train_mobilenet

    settings = replace(MOBILENET_SETTINGS, epochs=epochs or MOBILENET_SETTINGS.epochs)
    command = "nairbus train mobilenet" + ("" if settings == MOBILENET_SETTINGS else f" --epochs {settings.epochs}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        try:
            path = train_mobilenet(settings, data_dir, out_dir, _training_progress(progress, "mobilenet"), command)
        except DatasetMissingError as exc:
            _fail(str(exc))
    manifest = json.loads(path.read_text())
    chosen = manifest["selection"]
    console.print(f"best epoch on validation {chosen['best_epoch']} of {chosen['epochs_run']}; test accuracy "
                  f"{manifest['test_accuracy']:.4f}, {manifest['train_wall_seconds']} s -> {path}")


@train_app.command("taildrop")
def train_taildrop_cmd(
    epochs: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Fine-tuning epochs (default: the mature model's 24); the checkpoint kept is the epoch with the best "
             "validation score.")] = None,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Where weights and manifest go.")] = None,  # noqa: UP045
) -> None:
    """Fine-tune the retrained tail-drop baseline (the state of the art NAIR is measured against) from the mature
    model."""
    from dataclasses import replace

    from models.data import DatasetMissingError
    from models.store import OUTPUT_DIR
    from models.taildrop import TailDropSettings
    from models.zoo import DEFAULT_SPLIT, train_taildrop

    shipped = TailDropSettings(split=DEFAULT_SPLIT)
    settings = replace(shipped, epochs=epochs or shipped.epochs)
    command = "nairbus train taildrop" + ("" if settings == shipped else f" --epochs {settings.epochs}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        try:
            path = train_taildrop(settings, data_dir, out_dir or OUTPUT_DIR, _training_progress(progress, "taildrop"),
                                  command, say=progress.console.print)
        except (DatasetMissingError, FileNotFoundError) as exc:
            _fail(str(exc))
    manifest = json.loads(path.read_text())
    chosen = manifest["selection"]
    console.print(f"best epoch on validation {chosen['best_epoch']} of {chosen['epochs_run']} run, "
                  f"{manifest['fill']}-fill; full-bandwidth test accuracy {manifest['test_accuracy']:.4f}, "
                  f"{manifest['train_wall_seconds']} s -> {path}")


@app.command()
def calibrate(
    model: Annotated[str, typer.Option(help="Model name (shipped, or imported into $NAIRBUS_MODEL_DIR) or the path "
                                            "of its manifest.")] = "base",
    split: Annotated[Optional[str], typer.Option(help="Split point (default: the model's).")] = None,  # noqa: UP045
    images: Annotated[int, typer.Option(help="Training images used for calibration (the first of the seed-0 "
                                              "permutation; the validation split is its last 5 000).")] = 10000,
    method: Annotated[str, typer.Option(help="nair, pca, naive or prune (baselines).")] = "nair",
    bit_bands: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Bits per component by importance: '8' (all at 8 bits, the default) or bands FRACTION:BITS, e.g. "
             "'0.02:3,0.06:2,1:1' (first 2 % of the components at 3 bits, up to 6 % at 2, the rest at 1).")] = None,
    wire_bytes: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Instead of --bit-bands: choose, on the validation split, the named allocation most accurate when "
             "each frame is one MQTT PUBLISH of at most this many bytes.")] = None,
    images_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Calibrate on a folder of your own unlabeled images (PNG/JPEG/WebP/BMP, converted to the model's input) "
             "instead of the data set; uses up to --images of them, in name order.")] = None,
    out: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Artifact path (default <model>.nair.npz beside the model's manifest).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Fit the NAIR artifact (transform, fill statistics, quantisation, fragment plan) on training images only —
    or, with --images-dir, on a folder of your own camera's images: NAIR calibration needs no labels.

    The artifact's sha256 covers only what determines its behaviour, so the same command on the same data writes
    the same sha256; the command, the wall time and any validation comparison are kept as its provenance.
    """
    import numpy as np

    from models.calibration import CalibrationSettings, format_bit_bands, parse_bit_bands
    from models.calibration import calibrate as fit
    from models.data import VALIDATION_IMAGES, DatasetMissingError, load_split, validation_split
    from models.store import artifact_output_path, load_model

    if bit_bands is not None and wire_bytes is not None:
        _fail("give --bit-bands or --wire-bytes, not both")
    try:
        bands = parse_bit_bands(bit_bands) if bit_bands is not None else ((1.0, 8),)
    except ValueError as exc:
        _fail(f"--bit-bands: {exc}")
    if wire_bytes is not None and wire_bytes <= 0:
        _fail(f"--wire-bytes must be positive, not {wire_bytes}")
    if images_dir is not None and wire_bytes is not None:
        _fail("--wire-bytes chooses an allocation by accuracy on the labelled validation split; with your own "
              "unlabeled --images-dir give --bit-bands instead")
    try:
        net, manifest = load_model(model)
    except (FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    if images_dir is not None:
        _calibrate_from_folder(net, manifest, model, images_dir, images, split, method, bands, bit_bands, out)
        return
    try:
        train = load_split("train", data_dir)
    except DatasetMissingError as exc:
        _fail(str(exc))
    limit = len(train) - (VALIDATION_IMAGES if wire_bytes is not None else 0)
    if not 1 <= images <= limit:
        _fail(f"--images must lie in 1..{limit} (the training split has {len(train)} images"
              + (f", {VALIDATION_IMAGES} of them held out for validation)" if wire_bytes is not None else ")"))
    split_name = split or manifest.get("default_split", "stage2")
    if split_name not in manifest.get("split_points", [split_name]):
        _fail(f"model {model} has no split point {split_name!r}; it has {', '.join(manifest['split_points'])}")
    pick = np.random.default_rng(0).permutation(len(train))[:images]
    calibration_images = train.images[np.sort(pick)]
    settings = CalibrationSettings(split=split_name, method=method, bit_bands=bands)  # type: ignore[arg-type]
    command = "nairbus calibrate" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--model", model, "base"), ("--split", split, None), ("--images", images, 10000),
            ("--method", method, "nair"), ("--bit-bands", bit_bands and format_bit_bands(bands), None),
            ("--wire-bytes", wire_bytes, None), ("--out", out, None)) if value != default)
    started = time.perf_counter()
    selection = None
    if wire_bytes is not None:
        from agents.nair.allocation import choose_allocation

        validation = validation_split(train)
        source = (f"validation: models.data.validation_split ({len(validation)} training images, disjoint from the "
                  f"{images} calibration images)")
        with console.status("choosing a bit allocation") as status:
            artifact, selection = choose_allocation(net, manifest, calibration_images, validation, settings,
                                                    wire_bytes, validation_source=source, progress=status.update)
        for row in selection["compared"]:
            console.print(f"  {row['label']:<26} {row['bit_bands']:<20} validation accuracy {row['accuracy']:.4f} "
                          f"at <= {wire_bytes} B")
        console.print(f"chosen on validation: --bit-bands {selection['chosen']}")
    else:
        with console.status(f"calibrating {method} at {settings.split} on {images} training images"):
            artifact = fit(net, manifest["name"], manifest["sha256"], calibration_images, settings)
    artifact.meta["provenance"] = {**artifact.meta.get("provenance", {}), "command": command,
                                   **({"selection": selection} if selection else {})}
    path = artifact.save(out or artifact_output_path(model))
    seconds = time.perf_counter() - started
    console.print(f"artifact {artifact.sha256[:12]} ({path.stat().st_size} B, {len(artifact.plan)} fragments, "
                  f"{artifact.total_bytes()} B for the whole IR) in {seconds:.1f} s -> {path}")


MIN_FOLDER_IMAGES = 200
"""Fewest usable images ``calibrate --images-dir`` fits on (the channel covariance and the quantiser ranges need
a few hundred frames; a thousand or more is better)."""


def _calibrate_from_folder(net: Any, manifest: dict[str, Any], model: str, folder: Path, limit: int,
                           split: str | None, method: str, bands: Any, bit_bands: str | None, out: Path | None) -> None:
    """``calibrate --images-dir``: read the folder (progress bar; bad files counted, never fatal), refuse when too
    few images fit, fit the artifact, record which files it saw."""
    import hashlib

    import numpy as np

    from agents.sources.folder import FolderSource
    from agents.sources.images import IMAGE_SUFFIXES
    from models.calibration import CalibrationSettings, format_bit_bands
    from models.calibration import calibrate as fit
    from models.store import artifact_output_path

    spec = net.input_spec
    split_name = split or manifest.get("default_split", manifest["split_points"][0])
    if split_name not in manifest["split_points"]:
        _fail(f"model {manifest['name']} has no split point {split_name!r}; it has "
              f"{', '.join(manifest['split_points'])}")
    try:
        source = FolderSource(folder, spec=spec)
    except FileNotFoundError as exc:
        _fail(str(exc))
    candidates = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if candidates < MIN_FOLDER_IMAGES:
        _fail(f"{folder} holds {candidates} image files; NAIR calibration needs at least {MIN_FOLDER_IMAGES} "
              f"(better a thousand or more) of your camera's frames")
    images: list[np.ndarray] = []
    names = hashlib.sha256()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task(f"reading {folder} as {spec.describe()}", total=min(candidates, limit))
        for _frame_id, path, image in source.files():
            images.append(image)
            names.update(path.name.encode() + b"\0")
            progress.advance(task)
            if len(images) >= limit:
                break
    refused = {k.removeprefix("bad_"): v for k, v in source.counters.items() if k.startswith("bad_")}
    if refused:
        console.print(f"[yellow]skipped[/] {sum(refused.values())} files that cannot be used: "
                      + ", ".join(f"{n} {reason}" for reason, n in sorted(refused.items())))
    if len(images) < MIN_FOLDER_IMAGES:
        _fail(f"only {len(images)} of the files in {folder} are usable images; NAIR calibration needs at least "
              f"{MIN_FOLDER_IMAGES}")
    settings = CalibrationSettings(split=split_name, method=method, bit_bands=bands)  # type: ignore[arg-type]
    command = f"nairbus calibrate --model {model} --images-dir {folder}" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--split", split, None), ("--images", limit, 10000), ("--method", method, "nair"),
            ("--bit-bands", bit_bands and format_bit_bands(bands), None), ("--out", out, None)) if value != default)
    started = time.perf_counter()
    with console.status(f"calibrating {method} at {split_name} on {len(images)} unlabeled images"):
        artifact = fit(net, manifest["name"], manifest["sha256"], np.stack(images), settings)
    artifact.meta["provenance"] = {**artifact.meta.get("provenance", {}), "command": command,
                                   "calibration_source": {"folder": folder.name, "files": len(images),
                                                          "file_names_sha256": names.hexdigest(),
                                                          "labels_used": False}}
    path = artifact.save(out or artifact_output_path(model))
    console.print(f"artifact {artifact.sha256[:12]} ({path.stat().st_size} B, {len(artifact.plan)} fragments, "
                  f"{artifact.total_bytes()} B for the whole IR) from {len(images)} unlabeled images in "
                  f"{time.perf_counter() - started:.1f} s -> {path}")


@app.command("calibrate-auto")
def calibrate_auto(
    model: Annotated[str, typer.Option(help="Shipped model name.")] = "base",
    frames: Annotated[int, typer.Option(help="Validation images (training split, disjoint from calibration).")] = 5000,
    image_codecs: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="Comma-separated codec ladder to tabulate (default: the sensor's default ladder).")] = None,
    artifact: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="NAIR artifact (default models/weights/<model>.nair.npz); the table goes beside it (.auto.json).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Tabulate, on validation images only, NAIR's accuracy by bytes and each image codec's, for --mode auto."""
    from agents.nair.auto import auto_table_path
    from agents.nair.rates import write_auto_table
    from agents.runtime.config import SensorSettings
    from models.data import DatasetMissingError, load_split, validation_split
    from models.pipeline import NairPipeline

    codecs = tuple(c.strip() for c in image_codecs.split(",") if c.strip()) if image_codecs else \
        SensorSettings().image_codecs
    try:
        pipeline = NairPipeline.load(model, artifact)
        validation = validation_split(load_split("train", data_dir), frames)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        _fail(str(exc))
    command = "nairbus calibrate-auto" + ("" if frames == 5000 else f" --frames {frames}") + \
        (f" --artifact {artifact}" if artifact else "")
    with console.status("tabulating") as status:
        path = write_auto_table(pipeline, validation, codecs, command, auto_table_path(model, artifact),
                                progress=status.update)
    console.print(f"auto-mode table ({len(codecs)} codecs, {frames} validation images) -> {path}")


@app.command()
def sensor(
    config: ConfigOpt = None,
    sensor_id: Annotated[Optional[str], typer.Option(help="Sensor id (topic segment).")] = None,  # noqa: UP045
    stream_id: Annotated[Optional[str], typer.Option(help="Result stream (default: sensor id).")] = None,  # noqa: UP045
    count: Annotated[Optional[int], typer.Option(help="Frames to replay from --start.")] = None,  # noqa: UP045
    start: Annotated[Optional[int], typer.Option(help="First data-set index to replay.")] = None,  # noqa: UP045
    shard: Annotated[Optional[str], typer.Option(help="i/n: every n-th frame from i (share frames).")] = None,  # noqa: UP045
    budget: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="'auto' (default): each frame gets what the link delivers by its deadline, measured; N: also at most N "
             "wire bytes per frame (MQTT PUBLISH bytes, envelope included).")] = None,
    link_fit: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        "--link-fit/--no-link-fit",
        help="Size frames to the measured link (default) or send every frame's whole budget regardless.")] = None,
    budget_fraction: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="NAIR: cap each frame's payload at this fraction of the IR.")] = None,
    bytes_per_second: Annotated[Optional[float], typer.Option(help="Cap on wire bytes per second.")] = None,  # noqa: UP045
    image_codecs: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="image/auto: comma-separated codec ladder, best first (e.g. png,grey4+deflate,webp:q50).")] = None,
    artifact: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="NAIR artifact (default: the model manifest's sensor_artifact, chosen on validation — for base the "
             "deep split, models/weights/base.stage3.nair.npz; models/weights/base.nair.npz is the middle "
             "split).")] = None,
    deadline_ms: Annotated[Optional[float], typer.Option(help="Frame deadline at the sensor.")] = None,  # noqa: UP045
    fps: Annotated[Optional[float], typer.Option(help="Replay rate (frames per second).")] = None,  # noqa: UP045
    qos: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="QoS of the frame messages: 0 (default: one message per frame, topic alias) or 1 (PUBACKed).",
        min=0, max=1)] = None,
    test_loss: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="TEST TOOLING: inject fragment loss, 'random:0.2' or 'bursty:0.2[:burst]'.")] = None,
    data_dir: DataDirOpt = None,
    mode: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="nair (feature prefix), image (compressed frame, whole model at the hub), auto (per frame the better of "
             "the two at the link's budget) or vp (one variant, top-k).")] = None,
    variant: Annotated[Optional[str], typer.Option(help="VP: variant of the shipped family to run.")] = None,  # noqa: UP045
    k: Annotated[Optional[int], typer.Option(help="VP: classes reported per frame (1..classes/2).")] = None,  # noqa: UP045
    source: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="'replay' (the data set, frame id = index); 'folder' (the image files of --folder, your own camera's "
             "snapshots); 'image-topic' (JPEG/PNG messages on --image-topic); 'camera' (--camera); VP: 'mqtt' "
             "(frames from a capture agent).")] = None,
    folder: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Directory of PNG/JPEG/WebP/BMP files, sent in name order (implies --source folder).")] = None,
    watch: Annotated[Optional[bool], typer.Option(  # noqa: UP045
        "--watch/--no-watch", help="With --folder: keep taking new files as they appear, until stopped.")] = None,
    image_topic: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="MQTT topic carrying JPEG/PNG snapshots (e.g. Frigate's), one frame per message (implies --source "
             "image-topic).")] = None,
    frame_stream: Annotated[Optional[str], typer.Option(help="VP, mqtt source: capture stream to follow.")] = None,  # noqa: UP045
    model: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="The model whose head runs here: a shipped name (default base), a model imported into "
             "$NAIRBUS_MODEL_DIR, or the path of its manifest.")] = None,
    camera: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="A camera as the source (implies --source camera; needs pip install 'nairbus[camera]'): a device "
             "index (0), a stream URL (rtsp://...) or a video file.")] = None,
) -> None:
    """Run a sensor agent that replays frames onto the bus, each sized to what its link delivers by the deadline.

    Prints its counters as one JSON line at the end (frames, frames_sent, frames_skipped, wire_bytes, ...).
    """
    from agents.runtime.service import run_sensor

    budget_bytes: int | None = None
    if budget is not None and budget != "auto":
        if not budget.isdigit() or int(budget) < 16:
            raise typer.BadParameter("--budget takes 'auto' or a whole number of wire bytes >= 16")
        budget_bytes = int(budget)
    values: dict[str, Any] = {
        "sensor_id": sensor_id, "stream_id": stream_id, "count": count, "start": start, "shard": _shard(shard),
        "budget_bytes": budget_bytes, "budget_fraction": budget_fraction, "bytes_per_second": bytes_per_second,
        "link_fit": link_fit, "artifact": artifact,
        "image_codecs": tuple(c.strip() for c in image_codecs.split(",") if c.strip()) if image_codecs else None,
        "deadline_ms": deadline_ms, "fps": fps, "data_dir": data_dir, "qos": qos,
        "mode": mode, "variant": variant, "k": k, "frame_stream": frame_stream,
        "source": source or ("folder" if folder is not None else "image-topic" if image_topic else
                             "camera" if camera else None),
        "camera": camera,
        "folder": folder, "watch": watch, "image_topic": image_topic, "model": model,
    }
    if test_loss:
        kind, _, rest = test_loss.partition(":")
        parts = rest.split(":") if rest else ["0"]
        loss: dict[str, Any] = {"kind": kind, "rate": float(parts[0])}
        if len(parts) > 1:
            loss["mean_burst"] = float(parts[1])
        values["loss"] = loss
        values["fragments_by_plan"] = True
    cfg = _load_config(config, {"sensor": {k: v for k, v in values.items() if v is not None}})
    try:
        if cfg.sensor.mode == "vp":
            from agents.runtime.service import _on_signals
            from agents.vp.sensor import run_vp_sensor

            counters = run_vp_sensor(cfg, _on_signals)
        else:
            counters = run_sensor(cfg)
    except (ConnectionError, FileNotFoundError, RuntimeError, ValueError) as exc:
        _fail(str(exc))
    console.print(json.dumps(counters), soft_wrap=True, markup=False, highlight=False)


@app.command()
def fusion(
    config: ConfigOpt = None,
    fusion_id: Annotated[Optional[str], typer.Option(help="Fusion agent id.")] = None,  # noqa: UP045
    deadline_ms: Annotated[Optional[float], typer.Option(help="Reassembly deadline per frame.")] = None,  # noqa: UP045
    max_frames: Annotated[Optional[int], typer.Option(help="Hard bound on frames in flight.")] = None,  # noqa: UP045
    stats_interval: Annotated[Optional[float], typer.Option(help="Seconds between stats messages.")] = None,  # noqa: UP045
    partition: Annotated[Optional[str], typer.Option(help="i/n: take the sensors that hash to i of n.")] = None,  # noqa: UP045
    mode: Annotated[Optional[str], typer.Option(help="nair (reassemble fragments) or vp (fuse top-k).")] = None,  # noqa: UP045
    model: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="The model (name or manifest path; default base).")] = None,
    also: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--also-model", help="A further model this fusion agent serves (repeatable): each sensor's birth names its "
                             "model and artifact by hash.")] = None,
) -> None:
    """Run the fusion agent until interrupted: reassemble frames, run the tail, publish results and stats."""
    from agents.runtime.service import run_fusion

    values = {"fusion_id": fusion_id, "deadline_ms": deadline_ms, "max_frames": max_frames,
              "stats_interval_s": stats_interval, "partition": _shard(partition), "mode": mode, "model": model,
              "models": tuple(also) if also else None}
    cfg = _load_config(config, {"fusion": {k: v for k, v in values.items() if v is not None}})
    try:
        if cfg.fusion.mode == "vp":
            from agents.runtime.service import _on_signals
            from agents.vp.fusion import run_vp_fusion

            run_vp_fusion(cfg, _on_signals)
        else:
            run_fusion(cfg)
    except (ConnectionError, FileNotFoundError, RuntimeError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def demo(
    frames: Annotated[int, typer.Option(help="Test frames per budget (10 000 = the whole test split).")] = 10000,
    sensors: Annotated[int, typer.Option(help="Sensor agents sharing the frames.")] = 3,
    budgets: Annotated[str, typer.Option(help="Comma-separated fractions of the IR per frame.")] = "1,0.5,0.25,0.1",
    fps: Annotated[Optional[float], typer.Option(  # noqa: UP045
        help="Replay rate per sensor (default: what one fusion agent on this kind of machine keeps up with).")] = None,
    broker: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="host:port of a broker to use instead of a private one.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Where the JSON report goes.")] = None,  # noqa: UP045
    data_dir: DataDirOpt = None,
) -> None:
    """End-to-end demo: private Mosquitto, a fusion agent, sensors replaying the test set, table per budget."""
    from dataclasses import replace

    from agents.tools.demo import DemoSettings, run_demo
    from models.data import DatasetMissingError

    try:
        fractions = tuple(float(b) for b in budgets.split(","))
    except ValueError as exc:
        raise typer.BadParameter("budgets must be numbers like 1,0.5,0.25") from exc
    if any(not 0 < f <= 1 for f in fractions) or frames < 1 or sensors < 1 or (fps is not None and fps <= 0):
        raise typer.BadParameter("budgets in (0, 1], frames >= 1, sensors >= 1, fps > 0")
    target = None
    if broker:
        host, _, port = broker.rpartition(":")
        if not host or not port.isdigit():
            raise typer.BadParameter("--broker expects host:port")
        target = (host, int(port))
    from agents.runtime.logging import configure_logging
    from agents.runtime.settings import LogSettings

    # The agents log to files under runs/demo; the demo's own connection chatter would scroll its table away.
    configure_logging(LogSettings(level="warning"))
    settings = DemoSettings(budgets=fractions, sensors=sensors, frames=frames, broker=target, data_dir=data_dir)
    if fps is not None:
        settings = replace(settings, fps_per_sensor=fps)
    if report:
        settings = replace(settings, report=report)
    try:
        run_demo(settings, Console())
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ConnectionError) as exc:
        _fail(str(exc))


# Variant Parallelism commands (train variants, evaluate vp, capture, demo-vp) live in agents.cli.vp.
evaluate_app = typer.Typer(help="Evaluate on the test split; JSON reports and PNG plots under reports/.",
                           no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
from agents.cli.images import register as _register_images; _register_images(evaluate_app)  # noqa: E402, E702, I001


@evaluate_app.command("wire")
def evaluate_wire_cmd(
    frames: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Test images (the first N; default the whole test split, as reports/images.json).")] = None,
    images_report: Annotated[Path, typer.Option(help="The image codecs' report (nairbus evaluate images).")] = Path(
        "reports/images.json"),
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/wire.json"),
    plot: Annotated[Path, typer.Option(help="Where the PNG plot goes.")] = Path("reports/wire_rate.png"),
    data_dir: DataDirOpt = None,
) -> None:
    """NAIR (each shipped split point) against the image codecs, in bytes on the wire per frame (whole MQTT PUBLISH).

    Which artifact serves a wire cap is chosen on the validation split; accuracies are on the test split with
    95 % intervals. Needs reports/images.json from 'nairbus evaluate images' on the same frames.
    """
    from agents.tools.wire_eval import evaluate_wire, plot_wire
    from models.data import DatasetMissingError

    try:
        with console.status("evaluating") as status:
            result = evaluate_wire(images_report.resolve(), frames, progress=status.update, data_dir=data_dir)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        _fail(str(exc))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    plot_wire(result, json.loads(images_report.read_text()), plot)
    for cap in (200, 300):
        bar = result["bars"][f"at_{cap}_wire_bytes"]
        nair, best = bar["nair"], bar["best_image"]
        console.print(f"<= {cap} B on the wire: NAIR ({nair['artifact']}) {100 * nair['accuracy']:.2f} %, best image "
                      f"({bar['best_image_family']}) {100 * best['accuracy']:.2f} %"
                      f"{'' if bar['difference_outside_noise'] else ' (inside the 95 % intervals)'}")
    console.print(f"report: {report}; plot: {plot}")


def _nair_wire_section(frames: int, images_report: Path, data_dir: Path | None) -> dict[str, Any]:
    """The wire bars for reports/nair.json (agents.tools.wire_eval on the same test frames), or why they are missing."""
    from agents.tools.wire_eval import evaluate_wire, wire_summary
    from models.data import DatasetMissingError

    try:
        with console.status("bytes on the wire: NAIR per artifact against the image codecs") as status:
            wire = evaluate_wire(images_report.resolve(), None if frames == 10000 else frames,
                                 progress=status.update, data_dir=data_dir)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        console.print(f"[yellow]no wire bars in the report: {exc}[/]")
        return {"missing": str(exc)}
    summary = wire_summary(wire)
    for cap in (200, 300):
        bar = summary["bars"][f"at_{cap}_wire_bytes"]
        console.print(f"<= {cap} B on the wire: NAIR ({bar['nair']['artifact']}) {100 * bar['nair']['accuracy']:.2f} %,"
                      f" best image ({bar['best_image_family']}) "
                      f"{100 * bar['images'][bar['best_image_family']]['accuracy']:.2f} %")
    return summary


def _image_codec_curves(images_report: Path, frames: int) -> dict[str, Any]:
    """Every image codec setting of ``reports/images.json`` (same test frames, same lean envelope, whole mature model
    on the decoded frame): payload and wire bytes against accuracy, for the NAIR rate plot; or why it is missing."""
    if not images_report.is_file():
        return {"missing": f"{images_report} is missing; run 'nairbus evaluate images' first"}
    images = json.loads(images_report.read_text())
    if images.get("frames") != frames:
        return {"missing": f"{images_report} has {images.get('frames')} test frames, this run {frames}"}
    keep = ("spec", "mean_payload_bytes", "mean_wire_bytes", "accuracy", "ci95")
    return {"command": images.get("command"), "frames": frames,
            "families": {family: [{k: spec[k] for k in keep} for spec in table["specs"]]
                         for family, table in images["families"].items()}}


@evaluate_app.command("nair")
def evaluate_nair_cmd(
    frames: Annotated[int, typer.Option(help="Test images (the first N; 10 000 = the whole test split).")] = 10000,
    calibration_images: Annotated[int, typer.Option(help="Training images used to calibrate each method.")] = 10000,
    method: Annotated[Optional[list[str]], typer.Option(help="Only these methods (repeatable).")] = None,  # noqa: UP045
    report: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Where the JSON report goes, plots beside it (default reports/nair.json, for another model "
             "reports/nair-<model>.json).")] = None,
    model: Annotated[str, typer.Option(
        help="The model to evaluate: base (shipped) or another one, e.g. imported with 'nairbus import-model'.")]
        = "base",
    images_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        help="Calibrate every method on this folder of unlabeled images (the one the model's artifact was "
             "calibrated on) instead of the data set's calibration images.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """NAIR against naive, pruning, PCA and retrained tail-drop: prefix, loss, rate-accuracy, ablation.

    For the base model the report also carries the wire bars (NAIR per shipped artifact against each image codec,
    in bytes on the wire per frame), from reports/images.json ('nairbus evaluate images') on the same test frames.
    """
    import numpy as np

    from models.data import DatasetMissingError, load_split, validation_split
    from models.evaluation import EvalSettings, Evaluator, method_specs, run_evaluation
    from models.nair_plots import write_plots
    from models.store import load_model
    from models.zoo import DEFAULT_SPLIT

    if not 1 <= frames <= 10000 or not 100 <= calibration_images <= 55000:
        raise typer.BadParameter("--frames must be in 1..10000 and --calibration-images in 100..55000 (the last "
                                 "5 000 training images are the validation split)")
    unknown = set(method or ()) - set(method_specs(DEFAULT_SPLIT))
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {sorted(unknown)}; choose from {sorted(method_specs('x'))}")
    started = time.perf_counter()
    try:
        train, test = load_split("train", data_dir), load_split("test", data_dir)
        models = {model: load_model(model)}
    except (DatasetMissingError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    name = models[model][1]["name"]
    report = report or Path("reports/nair.json" if name == "base" else f"reports/nair-{name}.json")
    if name == "base":
        try:
            models["taildrop"] = load_model("taildrop")
        except FileNotFoundError:
            console.print("[yellow]no tail-drop baseline in models/weights; run 'nairbus train taildrop' to include "
                          "it[/]")
    requested_images = calibration_images
    if images_dir is not None:
        calibration = _folder_images(models[model][0].input_spec, images_dir, calibration_images)
        calibration_images = len(calibration)
    else:
        calibration = train.images[np.sort(np.random.default_rng(0).permutation(len(train))[:calibration_images])]
    settings = EvalSettings(frames=frames, calibration_images=calibration_images, methods=tuple(method or ()))
    with console.status("evaluating") as status:
        def say(message: str) -> None:
            console.log(message)
            status.update(message)

        validation = validation_split(train)
        source = (f"validation: models.data.validation_split ({len(validation)} training images, disjoint from the "
                  f"{calibration_images} calibration images)")
        evaluator = Evaluator(models, calibration, test, settings, say, validation=validation,
                              validation_source=source)
        split = models[model][1].get("default_split", DEFAULT_SPLIT)
        calibrate_command = "nairbus calibrate" + ("" if name == "base" else f" --model {model}") + (
            f" --images-dir {images_dir}" if images_dir is not None else "")
        result = run_evaluation(evaluator, split, model, calibrate_command)
    suffix = ("" if frames == 10000 else f" --frames {frames}") + (
        "" if requested_images == 10000 else f" --calibration-images {requested_images}")
    suffix += ("" if name == "base" else f" --model {model}") + (
        f" --images-dir {images_dir}" if images_dir is not None else "")
    result["command"] = "nairbus evaluate nair" + suffix + "".join(f" --method {m}" for m in method or ())
    result["input_spec"] = models[model][0].input_spec.model_dump(mode="json")
    result["calibration_source"] = (f"folder {images_dir.name}: {calibration_images} unlabeled image files"
                                    if images_dir is not None else
                                    f"the first {calibration_images} training images of the seed-0 permutation")
    result["shipped_artifact"] = _shipped_artifact_check(model, result)
    if "taildrop" in models:
        td = models["taildrop"][1]
        result["taildrop_training"] = {k: td[k] for k in ("test_accuracy", "train_wall_seconds", "command")}
        result["taildrop_training"].update({k: td[k] for k in ("settings", "fill") if k in td})
        if "selection" in td:
            result["taildrop_training"]["selection"] = {k: v for k, v in td["selection"].items() if k != "history"}
    if name == "base":
        result["wire"] = _nair_wire_section(frames, report.parent / "images.json", data_dir)
        result["image_codecs"] = _image_codec_curves(report.parent / "images.json", frames)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2) + "\n")
    plots = write_plots(result, report.parent, "nair" if name == "base" else report.stem)
    _print_nair_table(result)
    console.print(f"report: {report}; plots: {', '.join(str(p) for p in plots)} ({result['wall_seconds']} s)")


def _folder_images(spec: Any, folder: Path, limit: int) -> Any:
    """Up to ``limit`` images of a folder in name order, converted to ``spec`` (bad files counted and skipped)."""
    import numpy as np

    from agents.sources.folder import FolderSource

    try:
        source = FolderSource(folder, spec=spec)
    except FileNotFoundError as exc:
        _fail(str(exc))
    images = []
    for _frame_id, _path, image in source.files():
        images.append(image)
        if len(images) >= limit:
            break
    if len(images) < MIN_FOLDER_IMAGES:
        _fail(f"{folder} holds {len(images)} usable images; calibration needs at least {MIN_FOLDER_IMAGES}")
    return np.stack(images)


def _shipped_artifact_check(model: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the model's own artifact (``<model>.nair.npz``) is the one this evaluation's NAIR calibrated."""
    from models.nair import NairArtifact
    from models.store import default_artifact_path

    path = default_artifact_path(model)
    if not path.is_file() or "nair_artifact_sha256" not in result:
        return None
    shipped = NairArtifact.load(path)
    return {"file": path.name, "sha256": shipped.sha256,
            "same_as_evaluated": shipped.sha256 == result["nair_artifact_sha256"],
            "command": shipped.meta.get("provenance", {}).get("command")}


def _print_nair_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"accuracy vs IR received (prefix), {result['frames']} test images; "
                        f"mature model {result['mature_accuracy']:.2%}")
    fractions = list(next(iter(result["methods"].values()))["prefix"]) if result["methods"] else []
    table.add_column("method")
    for f in fractions:
        table.add_column(f"{float(f):.0%}", justify="right")
    for name, m in result["methods"].items():
        table.add_row(name, *(f"{m['prefix'][f]:.2%}" for f in fractions))
    console.print(table)
    if "bars" in result:
        console.print_json(data=result["bars"])


from agents.cli.vp import register as _register_vp  # noqa: E402

_register_vp(app, train_app)
from agents.cli.models import register as _register_models  # noqa: E402

_register_models(app)
from agents.cli.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")


@app.command()
def watch(
    config: ConfigOpt = None,
    stream: Annotated[Optional[list[str]], typer.Option(help="Only this result stream (repeatable).")] = None,  # noqa: UP045
    count: Annotated[Optional[int], typer.Option(help="Exit after this many results.")] = None,  # noqa: UP045
    json_lines: Annotated[bool, typer.Option("--json", help="Print each result as a JSON line instead.")] = False,
) -> None:
    """Live view of the result topics: label, confidence, runner-up, IR received, latency, rate per stream."""
    import sys

    from agents.home.watch import watch as run_watch
    from agents.runtime.logging import configure_logging

    cfg = _load_config(config, {})
    # Logs go to stderr; connection chatter (info) would scroll the live view away, so it starts at warning.
    configure_logging(cfg.log.model_copy(update={"level": "warning"}) if cfg.log.level == "info" else cfg.log)
    try:
        run_watch(cfg, console=Console(), count=count, streams=set(stream or ()), as_json=json_lines, out=sys.stdout)
    except ConnectionError as exc:
        _fail(str(exc))


@app.command()
def readme(
    check: Annotated[bool, typer.Option(
        "--check", help="Only say whether the documents are current (non-zero exit if not).")] = False,
) -> None:
    """Rewrite the figure tables of README.md and docs/ from the JSON reports under reports/ (none typed by hand)."""
    from agents.tools.readme import refresh, stale

    try:
        changed = stale() if check else refresh()
    except ValueError as exc:
        _fail(str(exc))
    if check and changed:
        _fail(f"out of date with reports/: {', '.join(changed)}; run 'nairbus readme'")
    console.print(("updated from reports/: " + ", ".join(changed)) if changed and not check
                  else "README.md and docs/ match reports/")


if __name__ == "__main__":
    app()
