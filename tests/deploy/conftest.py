"""Fixtures for the deployment tests: a private broker running the production config, and a tiny NAIR pipeline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from nairbus.agents.tools.secure_broker import SecureBroker
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.calibration import CalibrationSettings, calibrate
from nairbus.models.nair.pipeline import NairPipeline
from tests.manifests import in_memory_manifest

TINY_MANIFEST = in_memory_manifest("tiny", "d" * 64, labels=tuple(f"class{i}" for i in range(10)))


@pytest.fixture(scope="session")
def secure() -> Iterator[SecureBroker]:
    """broker/mosquitto.prod.conf + broker/acl on a private Mosquitto; users and certificates by broker/scripts."""
    with SecureBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def tiny_pipeline() -> NairPipeline:
    """An untrained tiny ResNet calibrated on 300 training images: plumbing only, as in tests/agents/test_bus.py."""
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval()
    train = load_split("train")
    artifact = calibrate(model, "tiny", TINY_MANIFEST.sha256, train.images[:300],
                         CalibrationSettings(first_fragment=16))
    return NairPipeline(model, TINY_MANIFEST, artifact)
