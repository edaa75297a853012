"""The retrained tail-drop baseline: the mature model fine-tuned so that any prefix of its IR channels works.

This is the state-of-the-art approach NAIR is measured against (stochastic tail-drop / nested dropout, as in
Progressive Neural Compression): during fine-tuning, each training image keeps only its first ``k`` IR channels at
the split, ``k`` drawn uniformly, and the rest are zeroed. At run time the receiver zero-fills the channels that
did not arrive. It costs a second training run and a second model; NAIR costs neither.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.data import Dataset
from models.loop import ProgressFn, Schedule, one_cycle
from models.resnet import ResNet, preprocess
from models.training import augment


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
    """Copy ``mature`` and fine-tune the copy with stochastic tail-drop at ``settings.split`` (``mature`` untouched)."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = copy.deepcopy(mature).train()
    x_all = preprocess(torch.from_numpy(train.images))
    y_all = torch.from_numpy(train.labels)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = augment(x_all[idx], settings.crop_padding, generator)
        y = y_all[idx]
        ir = model.head(x, settings.split)
        ir = ir * tail_drop_mask(len(idx), ir.shape[1], settings.full_probability, generator)
        logits = model.tail(ir, settings.split)
        return F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing), logits, y

    one_cycle([model], len(train), step, Schedule(settings.epochs, settings.batch_size, settings.max_lr,
                                                   settings.weight_decay, pct_start=0.15), generator, progress)
    return model.eval()
