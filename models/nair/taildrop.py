"""The retrained tail-drop baseline: the mature model fine-tuned so that any prefix of its IR works.

This is the state-of-the-art approach NAIR is measured against (stochastic tail-drop / nested dropout, as in
Progressive Neural Compression): during fine-tuning, each training image keeps only a uniformly drawn prefix of its
IR at the split and the rest is zeroed. The prefix runs over the order the bytes are actually sent in: with
``order="elements"`` (the default) the flattened channel-major IR, element by element — exactly what a byte prefix
of the naive codec carries, partial channel included; ``order="channels"`` keeps whole channels only (the first,
weaker version of this baseline).

It is trained at full strength: from the mature model, for as long as the mature model's own training (for the shipped
base model 24 epochs of one one-cycle schedule; :func:`nairbus.models.zoo.taildrop_settings` derives the settings of any
model from its own training), on the training images outside the validation split, keeping the epoch with the best mean
validation accuracy over the 5/10/25/50 % prefixes (``patience`` can stop it early once that has not improved for so
many epochs; off by default, since under a one-cycle schedule the score rises mostly while the rate anneals). The fill
of the missing part (zero, as trained, or the calibration mean) is chosen on the validation split too. It costs a second
training run and a second model; NAIR costs neither.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.nair.calibration import head_outputs
from nairbus.models.training.loop import ProgressFn, Schedule, one_cycle
from nairbus.models.training.mature import augment

DropOrder = Literal["elements", "channels"]
VALIDATION_PREFIXES: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50)
"""The shares of the IR the validation score averages over (the NAIR bars' prefixes)."""


@dataclass(frozen=True, slots=True)
class TailDropSettings:
    """Hyper-parameters of the tail-drop fine-tuning (the manifest records all of them)."""

    split: str = "stage2"
    epochs: int = 24
    batch_size: int = 256
    max_lr: float = 0.03
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    full_probability: float = 0.1
    crop_padding: int = 2
    order: DropOrder = "elements"
    patience: int | None = None
    seed: int = 0


def tail_drop_mask(n: int, channels: int, full_probability: float, generator: torch.Generator) -> torch.Tensor:
    """Per-image channel masks ``(n, channels, 1, 1)``: a uniformly drawn prefix kept, sometimes all of it."""
    keep = torch.randint(1, channels + 1, (n,), generator=generator)
    keep = torch.where(torch.rand(n, generator=generator) < full_probability, torch.full_like(keep, channels), keep)
    return (torch.arange(channels).view(1, channels) < keep.view(n, 1)).float().view(n, channels, 1, 1)


def element_drop_mask(n: int, shape: tuple[int, int, int], full_probability: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Per-image element masks ``(n, C, H, W)``: a uniformly drawn prefix of the channel-major flattened IR kept
    (what a byte prefix of the naive codec delivers), sometimes all of it."""
    k = int(np.prod(shape))
    keep = torch.randint(1, k + 1, (n,), generator=generator)
    keep = torch.where(torch.rand(n, generator=generator) < full_probability, torch.full_like(keep, k), keep)
    return (torch.arange(k).view(1, k) < keep.view(n, 1)).float().view(n, *shape)


def prefix_mask(share: float, shape: tuple[int, int, int], order: DropOrder) -> torch.Tensor:
    """The fixed mask ``(1, C, H, W)`` of a ``share`` of the IR in the sending order (at least one element)."""
    c, h, w = shape
    k = c * h * w
    flat = torch.zeros(k)
    if order == "channels":
        flat[: max(1, round(share * c)) * h * w] = 1.0
    else:
        flat[: max(1, round(share * k))] = 1.0
    return flat.view(1, c, h, w)


def head_ir(model: Any, images: np.ndarray, split: str, batch_size: int = 1000) -> torch.Tensor:
    """The IR of ``images`` at ``split`` in eval mode (``calibration.head_outputs``), as a tensor."""
    model.eval()
    return torch.from_numpy(head_outputs(model, images, split, batch_size))


def prefix_accuracies(model: Any, ir: torch.Tensor, labels: np.ndarray, split: str, order: DropOrder,
                      fill: torch.Tensor | None = None, prefixes: tuple[float, ...] = VALIDATION_PREFIXES,
                      batch_size: int = 1000) -> dict[str, float]:
    """Accuracy per prefix share of ``ir`` (missing part zero, or ``fill``), model in eval mode."""
    model.eval()
    y = torch.from_numpy(labels)
    out = {}
    with torch.no_grad():
        for share in prefixes:
            mask = prefix_mask(share, tuple(ir.shape[1:]), order)  # type: ignore[arg-type]
            correct = 0
            for s in range(0, len(ir), batch_size):
                x = ir[s : s + batch_size] * mask
                if fill is not None:
                    x = x + fill * (1.0 - mask)
                correct += int((model.tail(x, split).argmax(1) == y[s : s + batch_size]).sum())
            out[f"{share:g}"] = correct / len(ir)
    return out


@dataclass
class TailDropResult:
    """The fine-tuned model and how it was chosen (all of it goes into the manifest)."""

    model: Any
    """The fine-tuned model (a native split model, e.g. nairbus.models.architectures.resnet.ResNet)."""
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    fill: Literal["zero", "mean"]
    fill_validation: dict[str, dict[str, float]]


def _score(accuracies: dict[str, float]) -> float:
    return float(np.mean(list(accuracies.values())))


def fine_tune_tail_drop(
    mature: Any, train: Dataset, validation: Dataset, settings: TailDropSettings,
    progress: ProgressFn | None = None, say: Callable[[str], None] | None = None,
) -> TailDropResult:
    """Copy ``mature`` and fine-tune the copy with stochastic tail-drop at ``settings.split`` (``mature`` untouched).

    ``train`` must not contain ``validation``; the checkpoint, the stopping epoch and the fill are chosen on
    ``validation`` (mean accuracy over :data:`VALIDATION_PREFIXES`); the checkpoint is the best epoch's.
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = copy.deepcopy(mature).train()
    x_all = mature.input_spec.preprocess(train.images)  # images already converted to the model's input
    y_all = torch.from_numpy(train.labels)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = augment(x_all[idx], settings.crop_padding, generator)
        y = y_all[idx]
        ir = model.head(x, settings.split)
        if settings.order == "channels":
            mask = tail_drop_mask(len(idx), ir.shape[1], settings.full_probability, generator)
        else:
            c, h, w = ir.shape[1:]
            mask = element_drop_mask(len(idx), (c, h, w), settings.full_probability, generator)
        logits = model.tail(ir * mask, settings.split)
        return F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing), logits, y

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": 0, "state": copy.deepcopy(model.state_dict())}

    def after_epoch(epoch: int) -> bool:
        ir = head_ir(model, validation.images, settings.split)
        accuracies = prefix_accuracies(model, ir, validation.labels, settings.split, settings.order)
        score = _score(accuracies)
        history.append({"epoch": epoch, "validation_prefix_accuracy": accuracies, "validation_score": score})
        if say:
            say(f"epoch {epoch}: validation mean over prefixes {score:.4f} "
                + " ".join(f"{k}:{v:.4f}" for k, v in accuracies.items()))
        if score > best["score"]:
            best.update(score=score, epoch=epoch, state=copy.deepcopy(model.state_dict()))
        return settings.patience is not None and epoch - best["epoch"] >= settings.patience

    one_cycle([model], len(train), step, Schedule(settings.epochs, settings.batch_size, settings.max_lr,
                                                   settings.weight_decay, pct_start=0.15), generator, progress,
              after_epoch=after_epoch)
    model.load_state_dict(best["state"])
    model.eval()
    fill, fill_validation = choose_fill(model, train, validation, settings)
    return TailDropResult(model, best["epoch"], len(history), history, fill, fill_validation)


def choose_fill(model: Any, train: Dataset, validation: Dataset, settings: TailDropSettings,
                fit_images: int = 10000) -> tuple[Literal["zero", "mean"], dict[str, dict[str, float]]]:
    """Zero-fill (as trained) or mean-fill (the mean IR of ``fit_images`` training images), whichever has the better
    mean validation accuracy over the prefixes (ties: zero)."""
    mean = head_ir(model, train.images[:fit_images], settings.split).mean(dim=0, keepdim=True)
    ir = head_ir(model, validation.images, settings.split)
    zero = prefix_accuracies(model, ir, validation.labels, settings.split, settings.order)
    filled = prefix_accuracies(model, ir, validation.labels, settings.split, settings.order, fill=mean)
    return ("mean" if _score(filled) > _score(zero) else "zero"), {"zero": zero, "mean": filled}
