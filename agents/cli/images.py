"""``nairbus evaluate images``: the image-compression baseline (codec on the sensor, whole model at the hub).

:func:`register` adds the command to the ``evaluate`` group of :mod:`nairbus.agents.cli`. It measures every codec
family of
:mod:`nairbus.models.evaluation.image` on the test split for the report and, separately, on a holdout of the training
images for
the calibrated table that ``sensor --mode auto`` reads; it writes ``reports/images.json`` and
``reports/images_rate.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from nairbus.models.manifest import ModelManifest

console = Console(stderr=True)
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory with the Fashion-MNIST IDX files (also NAIRBUS_DATA_DIR)."),
]
SUMMARY_CAPS = (150, 200, 250, 300, 400, 600, 1000)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def _command(frames: int, validation_frames: int, report: Path, table: Path | None, threads: int,
             model: str = "base") -> str:
    """The command line that reproduces the report (options left at their defaults are not repeated)."""
    from nairbus.models.zoo import model_option, report_path

    parts = ["nairbus evaluate images" + model_option(model)]
    if frames != 10000:
        parts.append(f"--frames {frames}")
    if validation_frames != 5000:
        parts.append(f"--validation-frames {validation_frames}")
    if report != report_path("images", model):
        parts.append(f"--report {report}")
    if table is not None:
        parts.append(f"--table {table}")
    if threads:
        parts.append(f"--threads {threads}")
    return " ".join(parts)


def evaluate_images_cmd(
    frames: Annotated[int, typer.Option(help="Test images (the first N; 10 000 = the whole test split).")] = 10000,
    validation_frames: Annotated[int, typer.Option(
        help="Validation images (fashion_mnist.validation_split: training images no calibration fits on) for the "
             "calibrated auto-mode table; 0 leaves the table out (a model auto mode cannot serve, e.g. a colour "
             "one).")] = 5000,
    report: Annotated[Path | None, typer.Option(
        help="Where the JSON report goes, the plot beside it (default reports/images.json, for another model "
             "reports/images-<model>.json).")] = None,
    model: Annotated[str, typer.Option(
        help="The model that classifies the decoded frames (converted to its input spec, as a hub does with a "
             "sensor's image): base (shipped) or another one, e.g. mobilenet.")] = "base",
    table: Annotated[Path | None, typer.Option(
        help="Also write the validation table alone (the JSON sensor --mode auto reads) here.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """Every image family of models/experiments/images.toml (bit depth + zstd or deflate, down-sampled grey, the
    mixed grey-front ladder, PNG, WebP, JPEG with and without a shared header, raw): accuracy of the whole mature
    model vs wire bytes, per frame the best rung of a family's ladder that fits each cap from 40 B.

    The codecs compress the frames as the camera gives them (the data set's 28x28 grey images); the hub decodes them
    and converts them to the model's input (resized, grey replicated to RGB for a colour model), the cheapest image
    a sensor could send for that model."""
    import torch

    from nairbus.models.zoo import report_path

    _check_options(frames, validation_frames, table, threads)
    if threads:
        torch.set_num_threads(threads)
    report = report or report_path("images", model)
    started = time.perf_counter()
    classifier, manifest, test, holdout = _load_inputs(model, validation_frames, data_dir)
    source = _validation_source(manifest, validation_frames)
    result = _measure_codecs(classifier, manifest, test, frames, holdout, source)
    out: dict[str, Any] = {"command": _command(frames, validation_frames, report, table, threads, model), **result,
                           "wall_seconds": round(time.perf_counter() - started, 1)}
    _write_outputs(out, report, table)


def _check_options(frames: int, validation_frames: int, table: Path | None, threads: int) -> None:
    """Refuse out-of-range --frames, --validation-frames or --threads, and --table without a validation table."""
    if not 1 <= frames <= 10000 or not (validation_frames == 0 or 10 <= validation_frames <= 50000) or threads < 0:
        raise typer.BadParameter("--frames must be in 1..10000, --validation-frames 0 or in 10..50000, "
                                 "--threads >= 0")
    if table is not None and validation_frames == 0:
        raise typer.BadParameter("--table writes the validation table: give --validation-frames > 0")


def _load_inputs(model: str, validation_frames: int, data_dir: Path | None) -> tuple[Any, ModelManifest, Any, Any]:
    """The model, its manifest, the test split and the validation holdout (None when ``validation_frames`` is 0); a
    missing model or data set ends the command."""
    from nairbus.models.data.fashion_mnist import DatasetMissingError, validation_split
    from nairbus.models.data.registry import load_data
    from nairbus.models.store import load_model

    try:
        classifier, manifest = load_model(model)
        test = load_data("test", data_dir=data_dir)
        holdout = (validation_split(load_data("train", data_dir=data_dir), validation_frames) if validation_frames
                   else None)
    except (DatasetMissingError, FileNotFoundError) as exc:
        _fail(str(exc))
    return classifier, manifest, test, holdout


def _validation_source(manifest: ModelManifest, validation_frames: int) -> str:
    """What the validation table's frames are, and whether the model saw them in training."""
    selection = (manifest.exported_from or {}).get("selection") or manifest.selection or {}
    trained_outside = str(selection.get("split", "")).startswith("validation")
    return (f"validation: fashion_mnist.validation_split ({validation_frames} training images, disjoint from NAIR's "
            "calibration images); " + (
                "the model was trained on the other training images, never on these" if trained_outside else
                "the mature model was trained on all 60 000 training images, so these frames were seen in training "
                "and their accuracies run above test accuracy: use the table to rank caps and families, not as "
                "test figures"))


def _measure_codecs(classifier: Any, manifest: ModelManifest, test: Any, frames: int, holdout: Any,
                    source: str) -> dict[str, Any]:
    """Every codec setting on the first ``frames`` test images (and on ``holdout`` if any), with a progress bar."""
    from nairbus.models.evaluation.image import FAMILY_LADDERS, evaluate_images

    total = (2 if holdout is not None else 1) * sum(len(ladder) for ladder in FAMILY_LADDERS.values())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("image codecs", total=total)
        done = [0]

        def say(message: str) -> None:
            progress.update(task, completed=done[0], description=f"{message:<28}")
            done[0] += 1

        result = evaluate_images(classifier, manifest, test.images[:frames], test.labels[:frames],
                                 None if holdout is None else holdout.images,
                                 None if holdout is None else holdout.labels, validation_source=source, progress=say)
        progress.update(task, completed=total, description="done")
    return result


def _write_outputs(out: dict[str, Any], report: Path, table: Path | None) -> None:
    """Write the JSON report, its rate plot beside it and the validation table if asked; print the summary."""
    from nairbus.models.evaluation.image import plot_rate
    from nairbus.models.evaluation.reports import ImagesReport, write_report

    write_report(report, ImagesReport.from_data(out))
    plot = plot_rate(out, report.with_name(report.stem + "_rate.png"))
    if table is not None:
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(json.dumps(out["validation"], indent=2) + "\n")
    _print_summary(out)
    console.print(f"report: {report}; plot: {plot}" + (f"; table: {table}" if table else "")
                  + f" ({out['wall_seconds']} s)")


def _print_summary(result: dict[str, Any]) -> None:
    """Accuracy per family at a few caps, and the best codec at the bar's caps."""
    grid = Table(title=f"test accuracy under a per-frame wire cap, {result['frames']} frames "
                       f"(uncompressed {result['uncompressed']['accuracy']:.2%})")
    grid.add_column("family")
    for cap in SUMMARY_CAPS:
        grid.add_column(f"≤{cap} B", justify="right")
    for family, fam in result["families"].items():
        by_cap = {row["cap_bytes"]: row for row in fam["caps"]}
        grid.add_row(family, *(f"{by_cap[c]['accuracy']:.2%}" if c in by_cap else "-" for c in SUMMARY_CAPS))
    console.print(grid)
    for cap, best in result["best"].items():
        if best:
            lo, hi = best["ci95"]
            console.print(f"best at ≤{cap} B on the wire: {best['family']} {best['accuracy']:.2%} "
                          f"[{lo:.2%}, {hi:.2%}], {best['share_sent']:.1%} sent, "
                          f"{best['mean_wire_bytes'] or 0:.0f} B mean")


def register(evaluate_app: typer.Typer) -> None:
    """Add ``images`` to the ``nairbus evaluate`` group."""
    evaluate_app.command("images")(evaluate_images_cmd)
