"""The models nairbus ships, as data: their configs and the commands that train them."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nairbus.models.architectures.imported import load_exported
from nairbus.models.architectures.mobilenet import MobileNetConfig, MobileNetV2
from nairbus.models.architectures.resnet import ResNet, ResNetConfig, preprocess
from nairbus.models.data.fashion_mnist import Dataset, fit_split, validation_split
from nairbus.models.data.registry import dataset_labels, load_data
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.taildrop import TailDropSettings, fine_tune_tail_drop
from nairbus.models.store import WEIGHTS_DIR, load_model, save_model
from nairbus.models.training.mature import (
    ProgressFn,
    Selected,
    TrainSettings,
    evaluate_accuracy,
    pick_device,
    train_with_validation,
)

BASE_NAME = "base"
BASE_CONFIG = ResNetConfig(widths=(24, 64, 128), blocks=(1, 1, 1), resolution=28)
BASE_SETTINGS = TrainSettings(epochs=24, label_smoothing=0.1)
DEFAULT_SPLIT = "stage2"
REPORTS_DIR = Path("reports")
"""Where the evaluation commands write their reports by default (relative to the working directory)."""


def is_default_model(model: str) -> bool:
    """Whether ``model`` is the shipped default model (:data:`BASE_NAME`), the one ``--model`` means when not given."""
    return model == BASE_NAME


def report_path(kind: str, model: str) -> Path:
    """The default report of kind ``kind`` (``nair``, ``images``, ``wire``, ...) for ``model``:
    ``reports/<kind>.json`` for the shipped default model, ``reports/<kind>-<model>.json`` for another."""
    return REPORTS_DIR / (f"{kind}.json" if is_default_model(model) else f"{kind}-{model}.json")


def model_option(model: str) -> str:
    """``--model`` as a recorded command line gives it: nothing for the shipped default model (the option's default),
    `` --model <model>`` (with its leading space) for another."""
    return "" if is_default_model(model) else f" --model {model}"


def train_base(
    settings: TrainSettings = BASE_SETTINGS,
    data_dir: str | Path | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: ProgressFn | None = None,
    command: str = "nairbus train base",
) -> Path:
    """Train the mature model on the training images outside the validation split (so that every choice made on
    validation -- operating points, artifacts, the map -- is made on frames it never learnt), keep the epoch most
    accurate on validation, measure it on the test split, and write weights plus manifest."""
    everything = load_data("train", data_dir=data_dir)
    train, validation = fit_split(everything), validation_split(everything)
    started = time.perf_counter()
    result = train_with_validation(ResNet(BASE_CONFIG), _resnet_input, train, validation, settings, progress)
    wall = time.perf_counter() - started
    accuracy = evaluate_accuracy(result.model, load_data("test", data_dir=data_dir))
    return save_model(
        result.model,
        BASE_NAME,
        {"default_split": DEFAULT_SPLIT, "selection": _selection(result, len(train), len(validation)),
         **_provenance(accuracy, command, asdict(settings), wall)},
        out_dir,
    )


def _resnet_input(images: np.ndarray) -> torch.Tensor:
    """The ResNet family's normalised input from uint8 images."""
    return preprocess(torch.from_numpy(images))


def _selection(result: Selected, trained_on: int, validated_on: int) -> dict[str, Any]:
    """How a model's length was chosen on validation, as its manifest records it."""
    return {
        "split": f"validation: fashion_mnist.validation_split ({validated_on} training images, not fitted on; "
                 f"training used the other {trained_on})",
        "criterion": "validation accuracy after each epoch; the best epoch's weights are kept",
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "validation_accuracy": [round(a, 4) for a in result.validation_accuracy],
    }


TAILDROP_NAME = "taildrop"


def _provenance(accuracy: float, command: str, settings: dict[str, Any], wall: float) -> dict[str, Any]:
    """Manifest fields every trained model records: test accuracy, labels, how and where it was trained."""
    return {
        "test_accuracy": accuracy,
        "labels": list(dataset_labels()),
        "command": command,
        "settings": settings,
        "train_wall_seconds": round(wall, 1),
        "trained_on": f"{pick_device().type}, {torch.get_num_threads()} threads, {platform.machine()}",
    }


def taildrop_name(model: str) -> str:
    """The retrained tail-drop baseline of ``model``: ``taildrop`` for the shipped base model, else
    ``<model>-taildrop``."""
    return TAILDROP_NAME if model == BASE_NAME else f"{model}-taildrop"


def trainable_mature(model: str, directory: Path | None = None) -> tuple[torch.nn.Module, ModelManifest, str]:
    """``model`` as a native, trainable module, its manifest and architecture id.

    A native model loads as it is; a ``torch.export`` program imported from a registered architecture (its manifest's
    ``exported_from``) is rebuilt natively from the program's own state dict, and must give the same logits; any other
    imported model cannot be fine-tuned here (a ``ValueError`` that says so).
    """
    from nairbus.models.architectures.registry import build
    from nairbus.models.store import input_spec, locate_model

    mature, manifest = load_model(model, directory)
    if manifest.kind != "imported":
        return mature, manifest, manifest.architecture_id
    origin = manifest.exported_from or {}
    if manifest.format != "torch.export" or "architecture_id" not in origin:
        raise ValueError(f"model {model!r} is an imported {manifest.format} file of no registered "
                         "architecture: a tail-drop baseline needs weights nairbus can train")
    _, where = locate_model(model, directory)
    program = load_exported(where / manifest.weights_file)
    native = build(origin["architecture_id"], origin["config"], input_spec(manifest))
    native.load_state_dict(program.state_dict, strict=True)
    native.eval()
    spec = input_spec(manifest)
    probe = torch.randn(4, spec.channels, spec.height, spec.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(native(probe), mature(probe), atol=1e-5):
            raise ValueError(f"model {model!r} rebuilt from its program's weights does not give the program's logits")
    return (native, manifest.model_copy(update={"settings": origin.get("settings", {})}),
            str(origin["architecture_id"]))


def taildrop_settings(manifest: ModelManifest, epochs: int | None = None) -> TailDropSettings:
    """The tail-drop fine-tuning of a mature model, derived from its own training (not tuned): as many epochs as
    it was trained for, 0.15 of its peak learning rate (the shipped base model's 0.2 -> 0.03), its weight decay,
    label smoothing and crop padding, at its default split."""
    trained = manifest.settings or {}
    shipped = TailDropSettings()
    return TailDropSettings(
        split=manifest.default_split or DEFAULT_SPLIT,
        epochs=epochs or int(trained.get("epochs", shipped.epochs)),
        max_lr=round(0.15 * float(trained.get("max_lr", shipped.max_lr / 0.15)), 6),
        weight_decay=float(trained.get("weight_decay", shipped.weight_decay)),
        label_smoothing=float(trained.get("label_smoothing", shipped.label_smoothing)),
        crop_padding=int(trained.get("crop_padding", shipped.crop_padding)))


def train_taildrop(
    settings: TailDropSettings | None = None,
    data_dir: str | Path | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: ProgressFn | None = None,
    command: str = "nairbus train taildrop",
    say: Callable[[str], None] | None = None,
    model: str = BASE_NAME,
) -> Path:
    """Fine-tune the retrained tail-drop baseline of ``model`` (default: the shipped mature model); weights plus
    manifest, named :func:`taildrop_name`.

    It fits on the training images outside the validation split (converted to the model's input) and chooses its
    checkpoint, length and fill on that split (:func:`nairbus.models.nair.taildrop.fine_tune_tail_drop`); the test split
    is read once, at the end, for the manifest.
    """
    local = out_dir if (out_dir / f"{model}.json").is_file() else None
    mature, mature_manifest, architecture_id = trainable_mature(model, local)
    settings = settings or taildrop_settings(mature_manifest)
    spec = mature.input_spec
    everything = load_data("train", data_dir=data_dir)
    train, validation = converted(fit_split(everything), spec), converted(validation_split(everything), spec)
    started = time.perf_counter()
    result = fine_tune_tail_drop(mature, train, validation, settings, progress, say)
    wall = time.perf_counter() - started
    accuracy = _spec_accuracy(result.model, spec, converted(load_data("test", data_dir=data_dir), spec))
    return save_model(
        result.model,
        taildrop_name(model),
        {
            "default_split": settings.split,
            "baseline_of": {"name": mature_manifest.name, "sha256": mature_manifest.sha256},
            "description": f"retrained tail-drop baseline: the mature model fine-tuned with stochastic tail-drop at "
                           f"the split over the sending order ({settings.order}: a uniformly drawn prefix kept, the "
                           f"rest zeroed); {result.fill}-fill chosen on validation",
            "fill": result.fill,
            "selection": {
                "split": f"validation: fashion_mnist.validation_split ({len(validation)} training images, not fitted "
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
        architecture_id=architecture_id,
    )


MOBILENET_NAME = "mobilenet"
MOBILENET_CONFIG = MobileNetConfig(stem=16, stages=((1, 16, 1, 2), (4, 24, 2, 1), (4, 32, 3, 2), (4, 64, 2, 2),
                                                    (4, 96, 1, 1)))
MOBILENET_SETTINGS = TrainSettings(epochs=30, max_lr=0.1, weight_decay=2e-4, label_smoothing=0.1)
MOBILENET_SPLIT = "block6"


def converted(data: Dataset, spec: Any) -> Dataset:
    """The data set's frames as a model of input spec ``spec`` receives them (resized, grey replicated to RGB by the
    same conversion a sensor applies to a user's files,
    :meth:`nairbus.models.architectures.split.InputSpec.convert`)."""
    return Dataset(spec.convert(data.images), data.labels)


def train_mobilenet(
    settings: TrainSettings = MOBILENET_SETTINGS,
    data_dir: str | Path | None = None,
    out_dir: Path = Path("mobilenet-train"),
    progress: ProgressFn | None = None,
    command: str = "nairbus train mobilenet",
) -> Path:
    """Train the second architecture (MobileNetV2-style, 3x32x32 RGB input resized from the data set) on the training
    images outside the validation split, keep the epoch most accurate on validation, and write weights plus manifest.

    It is trained natively but shipped through the generic path (exported, then ``nairbus import-model``), so the
    directory it writes into is a working directory, not the shipped weights.
    """
    from nairbus.models.architectures.registry import fashion_mnist_spec

    spec = fashion_mnist_spec(channels=MOBILENET_CONFIG.channels, size=MOBILENET_CONFIG.resolution)
    everything = load_data("train", data_dir=data_dir)
    train, validation = converted(fit_split(everything), spec), converted(validation_split(everything), spec)
    started = time.perf_counter()
    result = train_with_validation(MobileNetV2(MOBILENET_CONFIG, spec), spec.preprocess, train, validation, settings,
                                   progress)
    wall = time.perf_counter() - started
    test = converted(load_data("test", data_dir=data_dir), spec)
    accuracy = _spec_accuracy(result.model, spec, test)
    return save_model(result.model, MOBILENET_NAME, {
        "default_split": MOBILENET_SPLIT,
        "selection": _selection(result, len(train), len(validation)),
        **_provenance(accuracy, command, asdict(settings), wall),
    }, out_dir, architecture_id="mobilenetv2")


def _spec_accuracy(model: torch.nn.Module, spec: Any, data: Dataset, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on converted ``data``."""
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), batch):
            logits = model(spec.preprocess(data.images[start : start + batch]))
            correct += int((logits.argmax(1).numpy() == data.labels[start : start + batch]).sum())
    return correct / len(data)
