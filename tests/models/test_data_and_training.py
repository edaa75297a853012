"""Data loading and training code on small inputs (the shipped model is trained by `nairbus train base`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet, ResNetConfig, count_macs, count_params
from nairbus.models.data.fashion_mnist import DatasetMissingError, load_split, parse_idx
from nairbus.models.training.mature import TrainSettings, augment, evaluate_accuracy, train_model


def test_missing_dataset_error_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        load_split("test", tmp_path)


def test_env_variable_points_at_other_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([3, 7]))
    monkeypatch.setenv("NAIRBUS_DATA_DIR", str(tmp_path))
    data = load_split("test")
    assert np.array_equal(data.images, images)
    assert data.labels.tolist() == [3, 7]


def test_the_first_frames_alone_are_read_when_asked() -> None:
    whole = load_split("test")
    head = load_split("test", limit=300)
    assert head.images.shape == (300, 28, 28)
    assert np.array_equal(head.images, whole.images[:300])
    assert np.array_equal(head.labels, whole.labels[:300])
    assert len(load_split("test", limit=50_000)) == 10_000  # a limit past the end: the whole split
    with pytest.raises(ValueError, match="limit"):
        load_split("test", limit=-1)


def test_corrupt_idx_is_refused() -> None:
    with pytest.raises(ValueError, match="IDX"):
        parse_idx(b"\x00\x00\x0d\x01junk")
    with pytest.raises(ValueError, match="header"):
        parse_idx(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"\x01")


def test_real_test_split_is_fashion_mnist() -> None:
    data = load_split("test")
    assert data.images.shape == (10000, 28, 28)
    assert np.bincount(data.labels).tolist() == [1000] * 10


def test_split_points_compose_to_the_full_model() -> None:
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 32), blocks=(1, 1, 1))).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        full = model(x)
        for split in ("stem", "stage1", "stage2", "stage3"):
            assert torch.allclose(model.tail(model.head(x, split), split), full, atol=1e-5)
    with pytest.raises(ValueError, match="unknown split point"):
        model.head(x, "nowhere")
    assert count_params(model) > 0
    assert count_macs(model) > count_params(model)


def test_augment_shifts_and_flips_only() -> None:
    x = torch.randn(6, 1, 28, 28)
    out = augment(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    inner = out[:, :, 3:-3, 3:-3]
    for i in range(6):
        best = min(
            float((inner[i, 0] - torch.roll(v, (dy, dx), (0, 1))[3:-3, 3:-3]).abs().max())
            for v in (x[i, 0], x[i, 0].flip(-1)) for dy in range(-2, 3) for dx in range(-2, 3)
        )
        assert best == 0.0


@pytest.mark.slow
def test_training_learns_on_a_few_hundred_images() -> None:
    data = load_split("train")
    from nairbus.models.data.fashion_mnist import Dataset

    small = Dataset(data.images[:600], data.labels[:600])
    model = train_model(ResNetConfig(widths=(8, 16, 32), blocks=(1, 1, 1)), small,
                        TrainSettings(epochs=6, batch_size=32, max_lr=0.1))
    held = Dataset(data.images[600:1100], data.labels[600:1100])
    assert evaluate_accuracy(model, held) > 0.5  # chance is 0.10
