"""Seeded training of the mature model: SGD with a one-cycle schedule (:mod:`nairbus.models.training.loop`),
crop-and-flip augmentation.

Training sees the 60 000 training images only; the test split is read once, after the last epoch, to record the
accuracy in the manifest. Uses a GPU when one is present and never requires one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nairbus.models.architectures.resnet import ResNet, ResNetConfig, preprocess, with_memory_format
from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.training.loop import ProgressFn, Schedule, one_cycle

__all__ = ["ProgressFn", "Selected", "TrainSettings", "augment", "augment_with_flip", "evaluate_accuracy",
           "pick_device", "train_model", "train_with_validation"]


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Hyper-parameters of one training run (all of them: the manifest records this object)."""

    epochs: int = 12
    batch_size: int = 256
    max_lr: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    crop_padding: int = 2
    seed: int = 0
    threads: int = 0


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def augment_with_flip(batch: torch.Tensor, padding: int, generator: torch.Generator) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """Random crop after padding plus random horizontal flip, on a normalised ``(N, C, H, W)`` batch.

    Returns the batch and which images were mirrored (on the CPU), so distillation can pick the teacher's output
    for the mirror image.
    """
    n, _, h, w = batch.shape
    if padding:
        padded = F.pad(batch, (padding,) * 4, value=float(batch.min()))
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(batch.device)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(batch.device)
        idx = torch.arange(n, device=batch.device).view(n, 1, 1)
        # advanced indices around the channel slice put the channel last: (N, H, W, C)
        batch = padded[idx, :, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip.view(n, 1, 1, 1).to(batch.device), batch.flip(-1), batch), flip


def augment(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after padding plus random horizontal flip (:func:`augment_with_flip` without the flips)."""
    return augment_with_flip(batch, padding, generator)[0]


def evaluate_accuracy(model: torch.nn.Module, data: Dataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = preprocess(torch.from_numpy(data.images[start : start + batch_size])).to(device)
            pred = model(x).argmax(1).cpu().numpy()
            correct += int((pred == data.labels[start : start + batch_size]).sum())
    return correct / len(data)


def train_model(
    config: ResNetConfig,
    train: Dataset,
    settings: TrainSettings,
    progress: ProgressFn | None = None,
) -> ResNet:
    """Train a fresh model of ``config`` on ``train`` and return it in eval mode."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = pick_device()
    model = with_memory_format(ResNet(config).to(device), torch.channels_last)
    x_all = preprocess(torch.from_numpy(train.images))
    y_all = torch.from_numpy(train.labels)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = augment(x_all[idx], settings.crop_padding, generator).to(device)
        y = y_all[idx].to(device)
        logits = model(x.contiguous(memory_format=torch.channels_last))
        return F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing), logits, y

    one_cycle([model], len(train), step, Schedule(settings.epochs, settings.batch_size, settings.max_lr,
                                                   settings.weight_decay), generator, progress)
    model.eval()
    return with_memory_format(model, torch.contiguous_format)


def numpy_seed_everything(seed: int) -> None:
    """Seed numpy and torch global generators (for code paths that use them)."""
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True, slots=True)
class Selected:
    """A model trained with its length chosen on validation: the best validation epoch's weights and the history."""

    model: torch.nn.Module
    best_epoch: int
    epochs_run: int
    validation_accuracy: list[float]


def train_with_validation(
    model: torch.nn.Module,
    preprocess_fn: Callable[[np.ndarray], torch.Tensor],
    train: Dataset,
    validation: Dataset,
    settings: TrainSettings,
    progress: ProgressFn | None = None,
    patience: int | None = None,
) -> Selected:
    """Train ``model`` (any classifier) on ``train`` and keep the weights of the epoch most accurate on
    ``validation``; with ``patience``, stop after that many epochs without a better one.

    ``preprocess_fn`` turns the data set's uint8 images into the model's normalised input (its input spec's
    :meth:`~nairbus.models.architectures.split.InputSpec.preprocess`). The test split is never seen here.
    """
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = pick_device()
    model = with_memory_format(model.to(device), torch.channels_last)
    x_all = preprocess_fn(train.images)
    y_all = torch.from_numpy(train.labels)
    x_val = preprocess_fn(validation.images)
    history: list[float] = []
    best: dict[str, torch.Tensor] = {}

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = augment(x_all[idx], settings.crop_padding, generator).to(device)
        y = y_all[idx].to(device)
        logits = model(x.contiguous(memory_format=torch.channels_last))
        return F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing), logits, y

    def after_epoch(epoch: int) -> bool:
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(validation), 1000):
                x = x_val[start : start + 1000].to(device).contiguous(memory_format=torch.channels_last)
                correct += int((model(x).argmax(1).cpu().numpy() == validation.labels[start : start + 1000]).sum())
        history.append(correct / len(validation))
        if history[-1] >= max(history):
            best.clear()
            best.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        if progress is not None:
            progress("validation", epoch, settings.epochs, {"validation_acc": history[-1]})
        return patience is not None and epoch - (int(np.argmax(history)) + 1) >= patience

    one_cycle([model], len(train), step, Schedule(settings.epochs, settings.batch_size, settings.max_lr,
                                                   settings.weight_decay), generator, progress,
              after_epoch=after_epoch)
    model.load_state_dict(best)
    model.eval()
    return Selected(with_memory_format(model, torch.contiguous_format), int(np.argmax(history)) + 1, len(history),
                    history)
