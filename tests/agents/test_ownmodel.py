"""The own model a bench plays a user with: its frames are deterministic, balanced and readable as a labelled folder,
its network takes 64 x 64 RGB to five logits, and its cut is where the import is told to split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nairbus.agents.sources.labelled import read_labelled_folder
from nairbus.agents.tools.ownmodel import SHAPES, SIZE, SPLIT, build, shapes, write_shapes
from nairbus.models.architectures.split import InputSpec


def test_frames_are_deterministic_per_seed_and_balanced() -> None:
    a, labels = shapes(10, seed=7)
    b, _ = shapes(10, seed=7)
    c, _ = shapes(10, seed=8)
    assert a.shape == (10, SIZE, SIZE, 3)
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels).tolist() == [2] * len(SHAPES)


def test_a_labelled_folder_reads_back_with_its_labels(tmp_path: Path) -> None:
    names, labels = write_shapes(tmp_path, 10, seed=3, labelled=True)
    assert names[1] == f"{SHAPES[1]}/shape-00001.png"
    spec = InputSpec(channels=3, height=SIZE, width=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, labels=SHAPES)
    read = read_labelled_folder(tmp_path, spec, SHAPES)
    assert sorted(read.labels.tolist()) == sorted(labels.tolist())
    assert read.images.shape == (10, SIZE, SIZE, 3)


def test_the_network_maps_rgb_frames_to_five_logits_and_has_the_named_cut() -> None:
    net = build().eval()
    with torch.no_grad():
        assert tuple(net(torch.zeros(2, 3, SIZE, SIZE)).shape) == (2, len(SHAPES))
    assert SPLIT in dict(net.named_modules())
