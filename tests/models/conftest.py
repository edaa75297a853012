"""Fixtures the NAIR core tests share: a tiny untrained ResNet and random frames (no shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet, ResNetConfig

TINY = ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))


@pytest.fixture(scope="module")
def tiny_model() -> ResNet:
    torch.manual_seed(0)
    return ResNet(TINY).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
