"""The retrained tail-drop baseline: the mature model fine-tuned so that any prefix of its IR channels works.

This is the state-of-the-art approach NAIR is measured against (stochastic tail-drop / nested dropout, as in
Progressive Neural Compression): during fine-tuning, each training image keeps only its first ``k`` IR channels at
the split, ``k`` drawn uniformly, and the rest are zeroed. At run time the receiver zero-fills the channels that
did not arrive. It costs a second training run and a second model; NAIR costs neither.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.data import Dataset
from models.resnet import ResNet, preprocess
from models.training import ProgressFn, augment


@dataclass(frozen=True, slots=True)
class TailDropSettings:
    """Hyper-parameters of the tail-drop fine-tuning (the manifest records all of them)."""

    split: str = "stage2"
    epochs: int = 4
    batch_size: int = 256
    max_lr: float = 0.03
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    full_probability: float = 0.2
    crop_padding: int = 2
    seed: int = 0


def tail_drop_mask(n: int, channels: int, full_probability: float, generator: torch.Generator) -> torch.Tensor:
    """Per-image channel masks ``(n, channels, 1, 1)``: a uniformly drawn prefix kept, sometimes all of it."""
    keep = torch.randint(1, channels + 1, (n,), generator=generator)
    keep = torch.where(torch.rand(n, generator=generator) < full_probability, torch.full_like(keep, channels), keep)
    return (torch.arange(channels).view(1, channels) < keep.view(n, 1)).float().view(n, channels, 1, 1)


def fine_tune_tail_drop(
    mature: ResNet, train: Dataset, settings: TailDropSettings, progress: ProgressFn | None = None
) -> ResNet:
    """Copy ``mature`` and fine-tune the copy with stochastic tail-drop at ``settings.split``; ``mature`` is untouched."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = copy.deepcopy(mature).train()
    x_all = preprocess(torch.from_numpy(train.images))
    y_all = torch.from_numpy(train.labels)
    steps = (len(train) + settings.batch_size - 1) // settings.batch_size
    optimiser = torch.optim.SGD(model.parameters(), lr=settings.max_lr, momentum=0.9, nesterov=True,
                                weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.max_lr, epochs=settings.epochs,
                                                   steps_per_epoch=steps, pct_start=0.15)
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        seen, loss_sum, correct, started = 0, 0.0, 0, time.perf_counter()
        for step in range(steps):
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x = augment(x_all[idx], settings.crop_padding, generator)
            y = y_all[idx]
            ir = model.head(x, settings.split)
            ir = ir * tail_drop_mask(len(idx), ir.shape[1], settings.full_probability, generator)
            logits = model.tail(ir, settings.split)
            loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if progress is not None:
                progress("step", epoch * steps + step + 1, settings.epochs * steps,
                         {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen})
        if progress is not None:
            progress("epoch", epoch + 1, settings.epochs,
                     {"loss": loss_sum / seen, "train_acc": correct / seen, "seconds": time.perf_counter() - started})
    return model.eval()
