"""A user's own model, played end to end: a 5-class CNN on 64 x 64 RGB frames that are not Fashion-MNIST, brought
in the way ``docs/your-model.md`` tells a user to (``nairbus import-model`` with a factory and a state dict, then a
label-free ``nairbus calibrate`` on a folder of unlabeled snapshots).

The frames are drawn here: a filled circle, square, triangle, cross or ring of random colour, size, place and turn on
a noisy background of another colour (:func:`draw_shape`), deterministic per seed. The same drawing makes the training
set (never written out), the calibration folder (unlabeled files) and the bench's test files, from disjoint seeds.
``build`` is the user's factory (``--factory nairbus.agents.tools.ownmodel:build``). The benches (``nairbus bench
files``) call :func:`prepare_own_model`, which trains it (about a minute on two cores), imports and calibrates it
through the CLI, and reuses the result when the folder already holds a model made with the same settings.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    import torch

__all__ = ["SHAPES", "OwnModelSettings", "build", "draw_shape", "prepare_own_model", "shapes", "write_shapes"]

SHAPES = ("circle", "square", "triangle", "cross", "ring")
"""The classes, in the model's output order."""
SIZE = 64
"""Frames are ``SIZE x SIZE`` RGB."""
SPLIT = "features.9"
"""The cut the import names: after the third convolution (a 32 x 8 x 8 IR, 2 048 values)."""
TRAIN_SEED, CALIBRATION_SEED, TEST_SEED, VALIDATION_SEED = 1, 2, 3, 4
"""Disjoint seeds: training frames, the unlabeled calibration folder, the bench's test files, the labelled
validation folder (scored with ``nairbus evaluate folder``)."""


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour at least 120 apart (L1) from ``avoid``."""
    while True:
        colour = rng.integers(0, 256, 3)
        if avoid is None or int(np.abs(colour - avoid).sum()) >= 120:
            return colour


def _polygon(cx: float, cy: float, r: float, turn: float, corners: int) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(turn + 2 * math.pi * k / corners), cy + r * math.sin(turn + 2 * math.pi * k / corners))
            for k in range(corners)]


def draw_shape(rng: np.random.Generator, label: int) -> np.ndarray:
    """One ``(SIZE, SIZE, 3)`` uint8 frame of class ``label`` (an index into :data:`SHAPES`)."""
    background = _colour(rng)
    fill = tuple(int(c) for c in _colour(rng, background))
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)
    r = float(rng.uniform(6, 20))
    cx, cy = (float(rng.uniform(r + 2, SIZE - r - 2)) for _ in range(2))
    turn = float(rng.uniform(0, 2 * math.pi))
    name = SHAPES[label]
    if name in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        if name == "ring":
            draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=tuple(int(c) for c in background))
    elif name in ("square", "triangle"):
        draw.polygon(_polygon(cx, cy, r, turn, 4 if name == "square" else 3), fill=fill)
    else:
        w = r / 3
        for angle in (turn, turn + math.pi / 2):
            dx, dy = math.cos(angle), math.sin(angle)
            draw.polygon([(cx - r * dx - w * dy, cy - r * dy + w * dx), (cx + r * dx - w * dy, cy + r * dy + w * dx),
                          (cx + r * dx + w * dy, cy + r * dy - w * dx), (cx - r * dx + w * dy, cy - r * dy - w * dx)],
                         fill=fill)
    noisy = np.asarray(image, dtype=np.int16) + rng.integers(-48, 49, (SIZE, SIZE, 3))
    out: np.ndarray = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def shapes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames ``(N, SIZE, SIZE, 3)`` and their labels, classes in turn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(SHAPES)
    return np.stack([draw_shape(rng, int(y)) for y in labels]), labels


def write_shapes(folder: Path, count: int, seed: int, *, labelled: bool = False) -> tuple[list[str], np.ndarray]:
    """Write ``count`` frames as PNG files (``labelled``: one sub-folder per class); their names (relative to
    ``folder``) and labels, in order."""
    images, labels = shapes(count, seed)
    names = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = f"{SHAPES[label]}/shape-{i:05d}.png" if labelled else f"shape-{i:05d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name)
        names.append(name)
    return names, labels


def build() -> torch.nn.Module:
    """The user's network, untrained (the factory ``nairbus import-model --factory`` calls)."""
    from torch import nn

    class ShapesNet(nn.Module):
        """Per-frame colour normalisation, four convolutions, a max pool and a linear layer: 64 x 64 RGB in, 5 logits
        out (about 33 k parameters)."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.InstanceNorm2d(3),
                nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.AdaptiveMaxPool2d(1), nn.Flatten())
            self.classifier = nn.Linear(64, len(SHAPES))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))  # type: ignore[no-any-return]

    return ShapesNet()


MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
"""The input normalisation the user trained with (pixels scaled to [0, 1]), written into the import's spec."""


def train(images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int,
          say: Callable[[str], None] = print) -> torch.nn.Module:
    """:func:`build`'s network trained on ``images`` (Adam, batch 64, cross-entropy), in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = build()
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    y = torch.from_numpy(labels).long()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(x).argmax(1) == y).float().mean())
        say(f"own model: epoch {epoch + 1}/{epochs}, training accuracy {accuracy:.3f}")
    return net


@dataclass(frozen=True)
class OwnModelSettings:
    """How the own model is made: training frames and epochs, calibration files, the seed."""

    name: str = "shapes"
    train_images: int = 5000
    epochs: int = 5
    calibration_images: int = 1000
    validation_images: int = 500
    seed: int = 0


def _nairbus(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run ``nairbus <args>`` as a user would; its output goes to ``log``; a failure says where to look."""
    with log.open("a") as out:
        out.write(f"$ nairbus {' '.join(args)}\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", *args], env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nairbus {args[0]} failed (exit {done.returncode}); see {log}")


def prepare_own_model(directory: Path, settings: OwnModelSettings = OwnModelSettings(),
                      say: Callable[[str], None] = print) -> dict[str, object]:
    """Train, import, calibrate and score (``nairbus evaluate folder`` on a labelled validation folder) the own model
    into ``directory`` (its ``NAIRBUS_MODEL_DIR``) unless it holds one made with the same settings; how it was made
    (for a report)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"{settings.name}.made.json"
    wanted = {**asdict(settings), "classes": list(SHAPES), "input": f"3x{SIZE}x{SIZE} RGB", "split": SPLIT}
    if stamp.is_file():
        made = json.loads(stamp.read_text())
        if {k: made.get(k) for k in wanted} == wanted and (directory / f"{settings.name}.nair.npz").is_file():
            say(f"own model: {directory / settings.name} is there already")
            return dict(made)
    made = {**wanted, **_make(directory, settings, say)}
    stamp.write_text(json.dumps(made, indent=2) + "\n")
    return made


def _make(directory: Path, settings: OwnModelSettings, say: Callable[[str], None]) -> dict[str, object]:
    """Train, then run the user's commands; the validation accuracy ``nairbus evaluate folder`` reports."""
    import torch

    say(f"own model: training on {settings.train_images} drawn frames")
    images, labels = shapes(settings.train_images, TRAIN_SEED + 10 * settings.seed)
    net = train(images, labels, epochs=settings.epochs, seed=settings.seed, say=say)
    torch.save(net.state_dict(), directory / f"{settings.name}.state.pt")
    (directory / f"{settings.name}.toml").write_text(
        f"channels = 3\nheight = {SIZE}\nwidth = {SIZE}\nmean = {list(MEAN)}\nstd = {list(STD)}\n"
        f"labels = {json.dumps(list(SHAPES))}\nsplit = \"{SPLIT}\"\n")
    for sub in ("snapshots", "sorted"):
        shutil.rmtree(directory / sub, ignore_errors=True)
    write_shapes(directory / "snapshots", settings.calibration_images, CALIBRATION_SEED + 10 * settings.seed)
    write_shapes(directory / "sorted", settings.validation_images, VALIDATION_SEED + 10 * settings.seed,
                 labelled=True)
    env = {**os.environ, "NAIRBUS_MODEL_DIR": str(directory.resolve())}
    log = directory / "make.log"
    log.write_text("")
    say("own model: nairbus import-model, calibrate (unlabeled snapshots), evaluate folder (labelled validation)")
    _nairbus(["import-model", str(directory / f"{settings.name}.state.pt"), "--factory",
              "nairbus.agents.tools.ownmodel:build", "--name", settings.name, "--spec",
              str(directory / f"{settings.name}.toml"), "--out-dir", str(directory)], env, log)
    _nairbus(["calibrate", "--model", settings.name, "--images-dir", str(directory / "snapshots")], env, log)
    report = directory / f"folder-{settings.name}.json"
    _nairbus(["evaluate", "folder", str(directory / "sorted"), "--model", settings.name, "--report", str(report)],
             env, log)
    scored = json.loads(report.read_text())
    return {"validation_accuracy": scored["whole_model_accuracy"], "validation_ci95": scored["whole_model_ci95"],
            "validation_images": scored["folder"]["images"]}
