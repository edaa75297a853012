"""``nairbus calibrate`` and ``nairbus calibrate-auto``: NAIR artifacts (from the data set, or a folder of your own
unlabeled images) and the auto mode's tables."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nairbus.agents.cli.common import (
    DataDirOpt,
    _fail,
    app,
    console,
    export_for_light_sensors,
)

if TYPE_CHECKING:
    from nairbus.models.manifest import ModelManifest
    from nairbus.models.nair.calibration import BitBands


@dataclass(frozen=True)
class CalibrateOptions:
    """The options of one ``nairbus calibrate`` run, as given on the command line."""

    model: str
    split: str | None
    images: int
    method: str
    bit_bands: str | None
    wire_bytes: int | None
    images_dir: Path | None
    validation_dir: Path | None
    joint_klt: int
    out: Path | None
    data_dir: Path | None
    entropy_coding: bool = False
    importance: str = "variance"
    predict_fill: bool = False


@app.command()
def calibrate(
    model: Annotated[str, typer.Option(help="Model name (shipped, or imported into $NAIRBUS_MODEL_DIR) or the path "
                                            "of its manifest.")] = "base",
    split: Annotated[str | None, typer.Option(help="Split point (default: the model's).")] = None,
    images: Annotated[int, typer.Option(help="Training images used for calibration (the first of the seed-0 "
                                              "permutation; the validation split is its last 5 000).")] = 10000,
    method: Annotated[str, typer.Option(help="nair, pca, naive or prune (baselines).")] = "nair",
    bit_bands: Annotated[str | None, typer.Option(
        help="Bits per component by importance: '8' (all at 8 bits, the default) or bands FRACTION:BITS, e.g. "
             "'0.02:3,0.06:2,1:1' (first 2 % of the components at 3 bits, up to 6 % at 2, the rest at 1).")] = None,
    wire_bytes: Annotated[int | None, typer.Option(
        help="Instead of --bit-bands: choose, on the validation split, the named allocation most accurate when "
             "each frame is one MQTT PUBLISH of at most this many bytes.")] = None,
    images_dir: Annotated[Path | None, typer.Option(
        help="Calibrate on a folder of your own unlabeled images (PNG/JPEG/WebP/BMP, converted to the model's input) "
             "instead of the data set; uses up to --images of them, in name order.")] = None,
    validation_dir: Annotated[Path | None, typer.Option(
        help="With --wire-bytes: choose on a labelled folder of your own images (one sub-folder per class, named by "
             "its label or index; 'nairbus export-images --labelled' writes one) instead of the data set's "
             "validation split. Needed with --images-dir.")] = None,
    joint_klt: Annotated[int, typer.Option(
        help="Decorrelate the leading N components by a joint KLT after the channel KLT and DCT (0: off). A short "
             "prefix then carries more of the IR; costs N*N multiply-adds per frame on the device and 4*N*N artifact "
             "bytes (e.g. 512: 0.26 M MACs, 1 MB). Must not exceed the IR's component count.")] = 0,
    out: Annotated[Path | None, typer.Option(
        help="Artifact path (default <model>.nair.npz beside the model's manifest).")] = None,
    data_dir: DataDirOpt = None,
    entropy_coding: Annotated[bool, typer.Option(
        "--entropy-coding/--packed",
        help="Range-code each fragment with per-component code probabilities fitted on the calibration images "
             "(bands of at most 4 bits) instead of bit-packing it: the same codes in fewer bytes, so a budget buys "
             "a longer prefix.")] = False,
    importance: Annotated[str, typer.Option(
        help="The order components are sent and given bits in: variance (calibration energy) or task (how far the "
             "model's own output moves without each, measured on calibration images, no labels).")] = "variance",
    predict_fill: Annotated[bool, typer.Option(
        "--predict-fill/--mean-fill",
        help="Estimate the components that did not arrive from the leading ones that did (a linear estimator fitted "
             "on the calibration images, kept in the artifact: about 4 x 64 x the IR's components bytes) instead "
             "of the calibration mean.")] = False,
) -> None:
    """Fit the NAIR artifact (transform, fill statistics, quantisation, fragment plan) on training images only —
    or, with --images-dir, on a folder of your own camera's images: NAIR calibration needs no labels.

    The artifact's sha256 covers only what determines its behaviour, so the same command on the same data writes
    the same sha256; the command, the wall time and any validation comparison are kept as its provenance.
    """
    options = CalibrateOptions(model=model, split=split, images=images, method=method, bit_bands=bit_bands,
                               wire_bytes=wire_bytes, images_dir=images_dir, validation_dir=validation_dir,
                               joint_klt=joint_klt, out=out, data_dir=data_dir, entropy_coding=entropy_coding,
                               importance=importance, predict_fill=predict_fill)
    bands = _checked_bands(options)
    net, manifest = _load_model(model)
    if images_dir is not None:
        _calibrate_from_folder(net, manifest, options, images_dir, bands)
    else:
        _calibrate_from_dataset(net, manifest, options, bands)


def _checked_bands(options: CalibrateOptions) -> BitBands:
    """The parsed ``--bit-bands`` (all at 8 bits by default); contradictory or out-of-range options end the command."""
    from nairbus.models.nair.calibration import parse_bit_bands
    from nairbus.models.nair.entropy import MAX_ENTROPY_BITS

    if options.bit_bands is not None and options.wire_bytes is not None:
        _fail("give --bit-bands or --wire-bytes, not both")
    try:
        bands = parse_bit_bands(options.bit_bands) if options.bit_bands is not None else ((1.0, 8),)
    except ValueError as exc:
        _fail(f"--bit-bands: {exc}")
    if options.wire_bytes is not None and options.wire_bytes <= 0:
        _fail(f"--wire-bytes must be positive, not {options.wire_bytes}")
    if options.joint_klt < 0:
        _fail(f"--joint-klt must be 0 (off) or a positive component count, not {options.joint_klt}")
    if options.importance not in ("variance", "task"):
        _fail(f"--importance is variance or task, not {options.importance!r}")
    if options.importance == "task" and options.method not in ("nair", "klt", "variance"):
        _fail(f"--importance task orders NAIR's components; --method {options.method} has an order of its own")
    if options.joint_klt and options.method != "nair":
        _fail(f"--joint-klt is part of the nair method; --method {options.method} has none")
    if options.entropy_coding and options.wire_bytes is None and max(b for _, b in bands) > MAX_ENTROPY_BITS:
        _fail(f"--entropy-coding takes bit bands of at most {MAX_ENTROPY_BITS} bits (e.g. --bit-bands 0.04:2,1:1); "
              f"these reach {max(b for _, b in bands)}")
    if options.validation_dir is not None and options.wire_bytes is None:
        _fail("--validation-dir is where --wire-bytes chooses the allocation: give --wire-bytes too")
    if options.images_dir is not None and options.wire_bytes is not None and options.validation_dir is None:
        _fail("--wire-bytes chooses an allocation by accuracy on labelled images; with your own unlabeled "
              "--images-dir give a labelled --validation-dir too (one sub-folder per class), or --bit-bands instead")
    return bands


def _load_model(model: str) -> tuple[Any, ModelManifest]:
    """The model and its manifest; the command ends with the reason when it cannot be loaded."""
    from nairbus.models.store import load_model

    try:
        return load_model(model)
    except (FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))


def _calibrate_from_dataset(net: Any, manifest: ModelManifest, options: CalibrateOptions, bands: BitBands) -> None:
    """``calibrate`` on the data set's training images: fit the artifact (or, with ``--wire-bytes``, every named
    allocation, the best on the validation split or ``--validation-dir``), save it and say where it went."""
    from nairbus.models.nair.calibration import calibrate as fit
    from nairbus.models.store import artifact_output_path

    train, split_name, calibration_images = _dataset_calibration_images(manifest, options)
    _check_joint_klt(net, split_name, options.joint_klt)
    settings = _settings(options, split_name, bands)
    command = _dataset_command(options, bands)
    started = time.perf_counter()
    selection = None
    if options.wire_bytes is not None:
        artifact, selection = _choose_on_validation(net, manifest, calibration_images, train, settings,
                                                    options.wire_bytes, options)
    else:
        with console.status(f"calibrating {options.method} at {settings.split} on {options.images} training images"):
            artifact = fit(net, manifest.name, manifest.sha256, calibration_images, settings)
    artifact.meta["provenance"] = {**artifact.meta.get("provenance", {}), "command": command,
                                   **({"selection": selection} if selection else {})}
    path = artifact.save(options.out or artifact_output_path(options.model))
    seconds = time.perf_counter() - started
    console.print(f"artifact {artifact.sha256[:12]} ({path.stat().st_size} B, {len(artifact.plan)} fragments, "
                  f"{artifact.total_bytes()} B for the whole IR) in {seconds:.1f} s -> {path}")
    export_for_light_sensors(options.model)


def _dataset_calibration_images(manifest: ModelManifest, options: CalibrateOptions) -> tuple[Any, str, Any]:
    """The training split, the split point and the calibration images (the first ``--images`` of the seed-0
    permutation); a missing data set, an out-of-range ``--images`` or an unknown ``--split`` end the command."""
    import numpy as np

    from nairbus.models.data.fashion_mnist import VALIDATION_IMAGES, DatasetMissingError
    from nairbus.models.data.registry import load_data

    try:
        train = load_data("train", data_dir=options.data_dir)
    except DatasetMissingError as exc:
        _fail(str(exc))
    limit = len(train) - (VALIDATION_IMAGES if options.wire_bytes is not None else 0)
    if not 1 <= options.images <= limit:
        _fail(f"--images must lie in 1..{limit} (the training split has {len(train)} images"
              + (f", {VALIDATION_IMAGES} of them held out for validation)" if options.wire_bytes is not None else ")"))
    split_name = options.split or manifest.default_split or "stage2"
    if split_name not in manifest.split_points:
        _fail(f"model {options.model} has no split point {split_name!r}; it has {', '.join(manifest.split_points)}")
    pick = np.random.default_rng(0).permutation(len(train))[:options.images]
    return train, split_name, train.images[np.sort(pick)]


def _settings(options: CalibrateOptions, split: str, bands: BitBands) -> Any:
    """The calibration settings the options ask for at ``split``."""
    from nairbus.models.nair.calibration import CalibrationSettings

    return CalibrationSettings(split=split, method=options.method, bit_bands=bands,  # type: ignore[arg-type]
                               joint_klt=options.joint_klt, entropy_coding=options.entropy_coding,
                               importance=options.importance,  # type: ignore[arg-type]
                               predict_fill=options.predict_fill)


def _switches(options: CalibrateOptions) -> str:
    """The trailing flags of a recorded command: the coding and the order, where not the defaults."""
    return (" --entropy-coding" if options.entropy_coding else "") + (
        f" --importance {options.importance}" if options.importance != "variance" else "") + (
        " --predict-fill" if options.predict_fill else "")


def _dataset_command(options: CalibrateOptions, bands: BitBands) -> str:
    """The command line the artifact's provenance keeps (options left at their defaults are not repeated)."""
    from nairbus.models.nair.calibration import format_bit_bands
    from nairbus.models.zoo import model_option

    return "nairbus calibrate" + model_option(options.model) + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--split", options.split, None), ("--images", options.images, 10000),
            ("--method", options.method, "nair"),
            ("--bit-bands", options.bit_bands and format_bit_bands(bands), None),
            ("--wire-bytes", options.wire_bytes, None), ("--validation-dir", options.validation_dir, None),
            ("--joint-klt", options.joint_klt, 0), ("--out", options.out, None))
        if value != default) + _switches(options)


def _choose_on_validation(net: Any, manifest: ModelManifest, calibration_images: Any, train: Any, settings: Any,
                          wire_bytes: int, options: CalibrateOptions) -> tuple[Any, dict[str, Any]]:
    """``--wire-bytes`` on the data set: the best allocation on ``--validation-dir`` if given, else on the
    validation split held out of ``train``; the folder's record goes into the selection."""
    from nairbus.models.data.fashion_mnist import validation_split

    folder_record = None
    if options.validation_dir is not None:
        validation, source, folder_record = _labelled_validation(net, manifest, options.validation_dir)
    else:
        validation = validation_split(train)
        source = (f"validation: fashion_mnist.validation_split ({len(validation)} training images, disjoint from "
                  f"the {options.images} calibration images)")
    artifact, selection = _choose_allocation(net, manifest, calibration_images, validation, settings, wire_bytes,
                                             source)
    if folder_record is not None:
        selection["validation_folder"] = folder_record
    return artifact, selection


def _choose_allocation(net: Any, manifest: ModelManifest, calibration_images: Any, validation: Any,
                       settings: Any, wire_bytes: int, source: str) -> tuple[Any, dict[str, Any]]:
    """``--wire-bytes``: every named allocation calibrated and measured on ``validation``, the best kept, the
    comparison printed."""
    from nairbus.agents.nair.allocation import choose_allocation

    with console.status("choosing a bit allocation") as status:
        artifact, selection = choose_allocation(net, manifest, calibration_images, validation, settings,
                                                wire_bytes, validation_source=source, progress=status.update)
    for row in selection["compared"]:
        console.print(f"  {row['label']:<26} {row['bit_bands']:<20} validation accuracy {row['accuracy']:.4f} "
                      f"at <= {wire_bytes} B")
    console.print(f"chosen on validation: --bit-bands {selection['chosen']}")
    return artifact, selection


def _check_joint_klt(net: Any, split: str, joint_klt: int) -> None:
    """Refuse a ``--joint-klt`` longer than the IR at ``split`` (one probe frame through the head)."""
    if not joint_klt:
        return
    import numpy as np
    import torch

    spec = net.input_spec
    with torch.no_grad():
        ir = net.head(spec.prepare(np.zeros((1, *spec.pixel_shape), dtype=np.uint8)), split)
    components = int(np.prod(ir.shape[1:]))
    if joint_klt > components:
        _fail(f"--joint-klt {joint_klt}: the IR at {split} has only {components} components")


def _say_skipped(counters: Any) -> None:
    """One line for the files a folder reader refused (its ``bad_<reason>`` counters), if any."""
    refused = {k.removeprefix("bad_"): v for k, v in counters.items() if k.startswith("bad_")}
    if refused:
        console.print(f"[yellow]skipped[/] {sum(refused.values())} files that cannot be used: "
                      + ", ".join(f"{n} {reason}" for reason, n in sorted(refused.items())))


MIN_VALIDATION_IMAGES = 100
"""Fewest usable labelled images ``--validation-dir`` chooses on (a 95 % interval near 90 % is about +-6 points at
100 images; a thousand or more is better)."""


def _labelled_validation(net: Any, manifest: ModelManifest, folder: Path) -> tuple[Any, str, dict[str, Any]]:
    """The labelled folder as a validation set for the model's input spec and labels (progress bar; bad files
    counted, never fatal; a clear error when it is not one sub-folder per class or too small), its description, and
    the record the artifact keeps of it (folder name, files, classes, a sha256 of the file names)."""
    from nairbus.agents.sources.labelled import LabelledFolderError, read_labelled_folder
    from nairbus.models.data.fashion_mnist import Dataset

    spec = net.input_spec
    labels = list(manifest.labels or spec.labels or ())
    if not labels:
        _fail(f"model {manifest.name} names no labels, so a labelled folder cannot be matched to its classes")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task(f"reading labelled {folder} as {spec.describe()}", total=None)
        try:
            read = read_labelled_folder(folder, spec, labels, advance=lambda: progress.advance(task))
        except LabelledFolderError as exc:
            _fail(str(exc))
    _say_skipped(read.counters)
    if len(read) < MIN_VALIDATION_IMAGES:
        _fail(f"{folder} holds {len(read)} usable labelled images; choosing an allocation needs at least "
              f"{MIN_VALIDATION_IMAGES}")
    classes = len(set(read.labels.tolist()))
    source = (f"validation: labelled folder {folder.name} ({len(read)} images, {classes} "
              f"classes, file names sha256 {read.names_sha256[:12]})")
    record = {"folder": folder.name, "files": len(read), "classes": classes, "file_names_sha256": read.names_sha256}
    return Dataset(read.images, read.labels), source, record


MIN_FOLDER_IMAGES = 200
"""Fewest usable images ``calibrate --images-dir`` fits on (the channel covariance and the quantiser ranges need
a few hundred frames; a thousand or more is better)."""


def read_calibration_folder(spec: Any, folder: Path, limit: int) -> tuple[Any, str]:
    """Up to ``limit`` images of a folder in name order, converted to ``spec``, with a progress bar; files that
    cannot be used are counted, reported and skipped; too few usable images end the command. Returns the images
    ``(N, *spec.pixel_shape)`` and a sha256 of the file names read (what the artifact saw)."""
    import hashlib

    import numpy as np

    from nairbus.agents.sources.folder import FolderSource
    from nairbus.agents.sources.images import IMAGE_SUFFIXES

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
    _say_skipped(source.counters)
    if len(images) < MIN_FOLDER_IMAGES:
        _fail(f"only {len(images)} of the files in {folder} are usable images; NAIR calibration needs at least "
              f"{MIN_FOLDER_IMAGES}")
    return np.stack(images), names.hexdigest()


def _calibrate_from_folder(net: Any, manifest: ModelManifest, options: CalibrateOptions, folder: Path,
                           bands: BitBands) -> None:
    """``calibrate --images-dir``: read the folder (progress bar; bad files counted, never fatal), refuse when too
    few images fit, fit the artifact (or, with ``--wire-bytes``, every named allocation, the best on the labelled
    ``--validation-dir``), record which files it saw."""
    from nairbus.models.nair.calibration import calibrate as fit
    from nairbus.models.store import artifact_output_path

    spec = net.input_spec
    split_name = options.split or manifest.default_split or manifest.split_points[0]
    if split_name not in manifest.split_points:
        _fail(f"model {manifest.name} has no split point {split_name!r}; it has "
              f"{', '.join(manifest.split_points)}")
    _check_joint_klt(net, split_name, options.joint_klt)
    images, names_sha256 = read_calibration_folder(spec, folder, options.images)
    settings = _settings(options, split_name, bands)
    command = _folder_command(options, folder, bands)
    started = time.perf_counter()
    selection = None
    if options.wire_bytes is not None and options.validation_dir is not None:
        validation, source, folder_record = _labelled_validation(net, manifest, options.validation_dir)
        artifact, selection = _choose_allocation(net, manifest, images, validation, settings, options.wire_bytes,
                                                 source)
        selection["validation_folder"] = folder_record
    else:
        with console.status(f"calibrating {options.method} at {split_name} on {len(images)} unlabeled images"):
            artifact = fit(net, manifest.name, manifest.sha256, images, settings)
    artifact.meta["provenance"] = {**artifact.meta.get("provenance", {}), "command": command,
                                   "calibration_source": {"folder": folder.name, "files": len(images),
                                                          "file_names_sha256": names_sha256,
                                                          "labels_used": False},
                                   **({"selection": selection} if selection else {})}
    path = artifact.save(options.out or artifact_output_path(options.model))
    console.print(f"artifact {artifact.sha256[:12]} ({path.stat().st_size} B, {len(artifact.plan)} fragments, "
                  f"{artifact.total_bytes()} B for the whole IR) from {len(images)} unlabeled images in "
                  f"{time.perf_counter() - started:.1f} s -> {path}")
    export_for_light_sensors(options.model)


def _folder_command(options: CalibrateOptions, folder: Path, bands: BitBands) -> str:
    """The command line an ``--images-dir`` artifact's provenance keeps (options at their defaults left out)."""
    from nairbus.models.nair.calibration import format_bit_bands

    return f"nairbus calibrate --model {options.model} --images-dir {folder}" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--split", options.split, None), ("--images", options.images, 10000), ("--method", options.method, "nair"),
            ("--bit-bands", options.bit_bands and format_bit_bands(bands), None),
            ("--wire-bytes", options.wire_bytes, None), ("--validation-dir", options.validation_dir, None),
            ("--joint-klt", options.joint_klt, 0), ("--out", options.out, None))
        if value != default) + _switches(options)


@app.command("calibrate-auto")
def calibrate_auto(
    model: Annotated[str, typer.Option(help="Shipped model name.")] = "base",
    frames: Annotated[int, typer.Option(help="Validation images (training split, disjoint from calibration).")] = 5000,
    image_codecs: Annotated[str | None, typer.Option(
        help="Comma-separated codec ladder to tabulate (default: the sensor's default ladder).")] = None,
    artifact: Annotated[Path | None, typer.Option(
        help="NAIR artifact (default models/weights/<model>.nair.npz); the table goes beside it (.auto.json).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Tabulate, on validation images only, NAIR's accuracy by bytes and each image codec's, for --mode auto."""
    from nairbus.agents.nair.auto import auto_table_path
    from nairbus.agents.nair.rates import write_auto_table
    from nairbus.agents.nair.settings import DEFAULT_IMAGE_CODECS
    from nairbus.models.data.fashion_mnist import DatasetMissingError, validation_split
    from nairbus.models.data.registry import load_data
    from nairbus.models.nair.pipeline import NairPipeline

    codecs = tuple(c.strip() for c in image_codecs.split(",") if c.strip()) if image_codecs else \
        DEFAULT_IMAGE_CODECS
    try:
        pipeline = NairPipeline.load(model, artifact)
        validation = validation_split(load_data("train", data_dir=data_dir), frames)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        _fail(str(exc))
    command = "nairbus calibrate-auto" + ("" if frames == 5000 else f" --frames {frames}") + \
        (f" --artifact {artifact}" if artifact else "")
    with console.status("tabulating") as status:
        path = write_auto_table(pipeline, validation, codecs, command, auto_table_path(model, artifact),
                                progress=status.update)
    console.print(f"auto-mode table ({len(codecs)} codecs, {frames} validation images) -> {path}")
