"""``nairbus train base | taildrop | mobilenet``: the seeded training commands of the models nairbus ships."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nairbus.agents.cli.common import (
    DataDirOpt,
    _fail,
    _training_progress,
    console,
    train_app,
)


@train_app.command("base")
def train_base_cmd(
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the shipped model's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where weights and manifest go.")] = None,
) -> None:
    """Train the mature model (ResNet family, 28x28) and write weights plus manifest with its test accuracy."""
    from dataclasses import replace

    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.manifest import ModelManifest
    from nairbus.models.store import OUTPUT_DIR
    from nairbus.models.zoo import BASE_SETTINGS, train_base

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
    manifest = ModelManifest.model_validate_json(path.read_text())
    console.print(f"test accuracy {manifest.test_accuracy:.4f}, {manifest.train_wall_seconds} s -> {path}")


@train_app.command("mobilenet")
def train_mobilenet_cmd(
    epochs: Annotated[int | None, typer.Option(
        help="Epochs (default 30); the weights kept are the epoch most accurate on the validation split.")] = None,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Path, typer.Option(help="Working directory for the native weights and manifest (export "
                                                "them with 'nairbus export-model').")] = Path("mobilenet-train"),
) -> None:
    """Train the second architecture: MobileNetV2-style, 3x32x32 RGB input resized from the data set."""
    from dataclasses import replace

    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.manifest import ModelManifest
    from nairbus.models.zoo import MOBILENET_SETTINGS, train_mobilenet

    settings = replace(MOBILENET_SETTINGS, epochs=epochs or MOBILENET_SETTINGS.epochs)
    command = "nairbus train mobilenet" + ("" if settings == MOBILENET_SETTINGS else f" --epochs {settings.epochs}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        try:
            path = train_mobilenet(settings, data_dir, out_dir, _training_progress(progress, "mobilenet"), command)
        except DatasetMissingError as exc:
            _fail(str(exc))
    manifest = ModelManifest.model_validate_json(path.read_text())
    chosen = manifest.selection or {}
    console.print(f"best epoch on validation {chosen.get('best_epoch')} of {chosen.get('epochs_run')}; test accuracy "
                  f"{manifest.test_accuracy:.4f}, {manifest.train_wall_seconds} s -> {path}")


@train_app.command("taildrop")
def train_taildrop_cmd(
    model: Annotated[str, typer.Option(
        help="The mature model to fine-tune: base (shipped), or one imported from a registered architecture "
             "(e.g. mobilenet); the baseline is saved as 'taildrop' for base, '<model>-taildrop' otherwise.")]
        = "base",
    epochs: Annotated[int | None, typer.Option(
        help="Fine-tuning epochs (default: as many as the mature model's own training); the checkpoint kept is the "
             "epoch with the best validation score.")] = None,
    data_dir: DataDirOpt = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where weights and manifest go.")] = None,
) -> None:
    """Fine-tune the retrained tail-drop baseline (the state of the art NAIR is measured against) from the mature
    model, with settings derived from the mature model's own training."""
    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.manifest import ModelManifest
    from nairbus.models.store import OUTPUT_DIR
    from nairbus.models.zoo import model_option, taildrop_settings, train_taildrop, trainable_mature

    try:
        _, manifest, _ = trainable_mature(model)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    shipped = taildrop_settings(manifest)
    settings = taildrop_settings(manifest, epochs)
    command = ("nairbus train taildrop" + model_option(model)
               + ("" if settings == shipped else f" --epochs {settings.epochs}"))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        try:
            path = train_taildrop(settings, data_dir, out_dir or OUTPUT_DIR, _training_progress(progress, "taildrop"),
                                  command, say=progress.console.print, model=model)
        except (DatasetMissingError, FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
    manifest = ModelManifest.model_validate_json(path.read_text())
    chosen = manifest.selection or {}
    console.print(f"best epoch on validation {chosen.get('best_epoch')} of {chosen.get('epochs_run')} run, "
                  f"{manifest.extra('fill')}-fill; full-bandwidth test accuracy {manifest.test_accuracy:.4f}, "
                  f"{manifest.train_wall_seconds} s -> {path}")
