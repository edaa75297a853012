"""The one training loop every model here shares: SGD with Nesterov momentum under a one-cycle schedule.

The mature model (:mod:`nairbus.models.training.mature`), the tail-drop baseline (:mod:`nairbus.models.nair.taildrop`)
and the VP family (:mod:`nairbus.models.vp.training`) differ only in what one step computes (their ``step`` function:
the loss, the scores whose arg-max counts as the training accuracy, and the labels). Each epoch draws a fresh order of
the training images from ``generator``, and the step draws its augmentation from the same generator, so a seeded run is
repeatable bit for bit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

ProgressFn = Callable[[str, int, int, dict[str, float]], None]
StepFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""Training-image indices of one batch to ``(loss, scores, labels)``."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """One one-cycle schedule: its length, peak learning rate, weight decay and warm-up share."""

    epochs: int
    batch_size: int
    max_lr: float
    weight_decay: float
    pct_start: float = 0.25


ONEDNN_MIN_STRIDED_1X1_INPUTS = 8
"""The CPU build's oneDNN (torch 2.13) hangs or aborts in the weight gradient of a strided 1x1 convolution with fewer
input channels than this (channels-last; e.g. a 4 -> 8 shortcut at stride 2): measured here, every such run of
tests/models/test_taildrop.py hung in ``jit_avx2_1x1_convolution_bwd_weights_t``, none with oneDNN off."""


def _has_onednn_hazard(models: Iterable[nn.Module]) -> bool:
    return any(
        isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride != (1, 1)
        and layer.in_channels < ONEDNN_MIN_STRIDED_1X1_INPUTS
        for m in models for layer in m.modules()
    )


@contextlib.contextmanager
def safe_kernels(models: Iterable[nn.Module]) -> Iterator[None]:
    """Train with oneDNN off where a model holds a layer whose oneDNN backward hangs (see
    :data:`ONEDNN_MIN_STRIDED_1X1_INPUTS`); otherwise leave the framework's kernels as they are."""
    if _has_onednn_hazard(models):
        with torch.backends.mkldnn.flags(enabled=False):
            yield
    else:
        yield


def one_cycle(
    models: Iterable[nn.Module],
    n_images: int,
    step: StepFn,
    schedule: Schedule,
    generator: torch.Generator,
    progress: ProgressFn | None = None,
    done: int = 0,
    total: int | None = None,
    after_epoch: Callable[[int], bool] | None = None,
) -> None:
    """Train ``models`` (all their parameters, one optimiser) through one cycle of ``schedule``.

    ``done`` and ``total`` place this cycle's epochs in a longer run for the progress reports (``total`` defaults
    to this cycle's epochs). ``after_epoch(epoch)`` (1-based, models in train mode again afterwards) runs after
    every epoch; it returning True ends the cycle there (early stopping on a validation score).
    """
    models = list(models)
    total = schedule.epochs if total is None else total
    steps = (n_images + schedule.batch_size - 1) // schedule.batch_size
    params = [p for m in models for p in m.parameters()]
    optimiser = torch.optim.SGD(params, lr=schedule.max_lr, momentum=0.9, nesterov=True,
                                weight_decay=schedule.weight_decay)
    lr = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=schedule.max_lr, epochs=schedule.epochs,
                                             steps_per_epoch=steps, pct_start=schedule.pct_start)
    with safe_kernels(models):
        _run_cycle(models, n_images, step, schedule, generator, optimiser, lr, progress, done, total, after_epoch)


def _run_cycle(
    models: list[nn.Module], n_images: int, step: StepFn, schedule: Schedule, generator: torch.Generator,
    optimiser: torch.optim.Optimizer, lr: torch.optim.lr_scheduler.LRScheduler, progress: ProgressFn | None,
    done: int, total: int, after_epoch: Callable[[int], bool] | None,
) -> None:
    steps = (n_images + schedule.batch_size - 1) // schedule.batch_size
    for epoch in range(schedule.epochs):
        for m in models:
            m.train()
        order = torch.randperm(n_images, generator=generator)
        seen, loss_sum, correct, started = 0, 0.0, 0, time.perf_counter()
        for i in range(steps):
            idx = order[i * schedule.batch_size : (i + 1) * schedule.batch_size]
            loss, scores, y = step(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            lr.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((scores.argmax(1) == y).sum())
            if progress is not None:
                progress("step", (done + epoch) * steps + i + 1, total * steps,
                         {"epoch": done + epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen})
        if progress is not None:
            progress("epoch", done + epoch + 1, total, {"loss": loss_sum / seen, "train_acc": correct / seen,
                                                        "seconds": time.perf_counter() - started})
        if after_epoch is not None and after_epoch(epoch + 1):
            break
