"""Seeded training of the mature model: SGD with a one-cycle schedule, crop-and-flip augmentation.

Training sees the 60 000 training images only; the test split is read once, after the last epoch, to record the
accuracy in the manifest. Uses a GPU when one is present and never requires one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.data import Dataset
from models.resnet import ResNet, ResNetConfig, preprocess

ProgressFn = Callable[[str, int, int, dict[str, float]], None]


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


def augment(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding plus random horizontal flip, on a normalised ``(N, 1, H, W)`` batch."""
    n, _, h, w = batch.shape
    if padding:
        padded = F.pad(batch, (padding,) * 4, value=float(batch.min()))
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(batch.device)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(batch.device)
        idx = torch.arange(n, device=batch.device).view(n, 1, 1)
        batch = padded[:, 0][idx, rows.view(n, h, 1), cols.view(n, 1, w)].unsqueeze(1)
    flip = (torch.rand(n, generator=generator) < 0.5).to(batch.device)
    return torch.where(flip.view(n, 1, 1, 1), batch.flip(-1), batch)


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
    model = ResNet(config).to(device).to(memory_format=torch.channels_last)
    x_all = preprocess(torch.from_numpy(train.images))
    y_all = torch.from_numpy(train.labels)
    steps_per_epoch = (len(train) + settings.batch_size - 1) // settings.batch_size
    optimiser = torch.optim.SGD(
        model.parameters(), lr=settings.max_lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.max_lr, epochs=settings.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        seen, loss_sum, correct, started = 0, 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x = augment(x_all[idx], settings.crop_padding, generator).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            y = y_all[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if progress is not None:
                progress(
                    "step",
                    epoch * steps_per_epoch + step + 1,
                    settings.epochs * steps_per_epoch,
                    {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen},
                )
        if progress is not None:
            progress(
                "epoch",
                epoch + 1,
                settings.epochs,
                {"loss": loss_sum / seen, "train_acc": correct / seen, "seconds": time.perf_counter() - started},
            )
    model.eval()
    return model.to(memory_format=torch.contiguous_format)


def numpy_seed_everything(seed: int) -> None:
    """Seed numpy and torch global generators (for code paths that use them)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
