"""The models nairbus ships, as data: their configs and the commands that train them."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from models.data import LABELS, fit_split, load_split, validation_split
from models.resnet import ResNetConfig
from models.store import WEIGHTS_DIR, load_model, save_model
from models.taildrop import TailDropSettings, fine_tune_tail_drop
from models.training import ProgressFn, TrainSettings, evaluate_accuracy, pick_device, train_model

BASE_NAME = "base"
BASE_CONFIG = ResNetConfig(widths=(24, 64, 128), blocks=(1, 1, 1), resolution=28)
BASE_SETTINGS = TrainSettings(epochs=24, label_smoothing=0.1)
DEFAULT_SPLIT = "stage2"


def train_base(
    settings: TrainSettings = BASE_SETTINGS,
    data_dir: str | Path | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: ProgressFn | None = None,
    command: str = "nairbus train base",
) -> Path:
    """Train the mature model, measure it on the test split, and write weights plus manifest."""
    train = load_split("train", data_dir)
    started = time.perf_counter()
    model = train_model(BASE_CONFIG, train, settings, progress)
    wall = time.perf_counter() - started
    accuracy = evaluate_accuracy(model, load_split("test", data_dir))
    return save_model(
        model,
        BASE_NAME,
        {"default_split": DEFAULT_SPLIT, **_provenance(accuracy, command, asdict(settings), wall)},
        out_dir,
    )


TAILDROP_NAME = "taildrop"


def _provenance(accuracy: float, command: str, settings: dict[str, Any], wall: float) -> dict[str, Any]:
    """Manifest fields every trained model records: test accuracy, labels, how and where it was trained."""
    return {
        "test_accuracy": accuracy,
        "labels": list(LABELS),
        "command": command,
        "settings": settings,
        "train_wall_seconds": round(wall, 1),
        "trained_on": f"{pick_device().type}, {torch.get_num_threads()} threads, {platform.machine()}",
    }


def train_taildrop(
    settings: TailDropSettings | None = None,
    data_dir: str | Path | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: ProgressFn | None = None,
    command: str = "nairbus train taildrop",
    say: Callable[[str], None] | None = None,
) -> Path:
    """Fine-tune the retrained tail-drop baseline from the shipped mature model; weights plus manifest.

    It fits on the training images outside the validation split and chooses its checkpoint, length and fill on that
    split (:func:`models.taildrop.fine_tune_tail_drop`); the test split is read once, at the end, for the manifest.
    """
    settings = settings or TailDropSettings(split=DEFAULT_SPLIT)
    mature, mature_manifest = load_model(BASE_NAME, out_dir)
    everything = load_split("train", data_dir)
    train, validation = fit_split(everything), validation_split(everything)
    started = time.perf_counter()
    result = fine_tune_tail_drop(mature, train, validation, settings, progress, say)
    wall = time.perf_counter() - started
    accuracy = evaluate_accuracy(result.model, load_split("test", data_dir))
    return save_model(
        result.model,
        TAILDROP_NAME,
        {
            "default_split": settings.split,
            "baseline_of": {"name": BASE_NAME, "sha256": mature_manifest["sha256"]},
            "description": f"retrained tail-drop baseline: the mature model fine-tuned with stochastic tail-drop at "
                           f"the split over the sending order ({settings.order}: a uniformly drawn prefix kept, the "
                           f"rest zeroed); {result.fill}-fill chosen on validation",
            "fill": result.fill,
            "selection": {
                "split": f"validation: models.data.validation_split ({len(validation)} training images, not fitted "
                         f"on; training used the other {len(train)})",
                "criterion": "mean validation accuracy over the 5/10/25/50 % prefixes",
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "stopped_early": result.epochs_run < settings.epochs,
                "history": result.history,
                "fill_validation": result.fill_validation,
            },
            **_provenance(accuracy, command, asdict(settings), wall),
        },
        out_dir,
    )
