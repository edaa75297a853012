"""The full-strength tail-drop baseline's pieces: prefix masks over the sending order, the fit/validation split,
and a short fine-tune that picks its checkpoint and fill on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.calibration import format_bit_bands, parse_bit_bands
from models.data import Dataset, fit_split, validation_split
from models.resnet import ResNet, ResNetConfig
from models.taildrop import TailDropSettings, element_drop_mask, fine_tune_tail_drop, prefix_mask


def test_element_masks_keep_a_prefix_of_the_channel_major_ir() -> None:
    mask = element_drop_mask(400, (4, 3, 3), 0.1, torch.Generator().manual_seed(0)).view(400, -1)
    kept = mask.sum(1).long()
    assert kept.min() >= 1
    assert kept.max() == 36
    for row, k in zip(mask, kept, strict=True):
        assert row[:k].all()
        assert not row[k:].any()
    # Partial channels occur: the prefix is not a whole number of 3x3 maps.
    assert (kept % 9 != 0).any()


def test_prefix_mask_channels_and_elements() -> None:
    assert prefix_mask(0.25, (4, 2, 2), "elements").sum() == 4
    assert prefix_mask(0.3, (4, 2, 2), "channels").view(4, -1).sum(1).tolist() == [4, 0, 0, 0]
    assert prefix_mask(0.0, (4, 2, 2), "elements").sum() == 1


def test_fit_split_is_the_training_set_without_validation() -> None:
    train = Dataset(np.arange(1000).reshape(1000, 1, 1), np.arange(1000) % 10)
    fit, val = fit_split(train, 100), validation_split(train, 100)
    assert len(fit) == 900
    assert len(val) == 100
    assert set(fit.images.ravel()).isdisjoint(val.images.ravel())
    assert set(fit.images.ravel()) | set(val.images.ravel()) == set(range(1000))


def test_a_short_fine_tune_chooses_on_validation() -> None:
    rng = np.random.default_rng(0)
    model = ResNet(ResNetConfig(widths=(4, 8, 8), blocks=(1, 1, 1), resolution=28)).eval()
    train = Dataset(rng.integers(0, 255, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64))
    val = Dataset(rng.integers(0, 255, (32, 28, 28), dtype=np.uint8), rng.integers(0, 10, 32))
    result = fine_tune_tail_drop(model, train, val, TailDropSettings(epochs=3, batch_size=32, patience=1))
    assert 1 <= result.best_epoch <= result.epochs_run <= 3
    assert [h["epoch"] for h in result.history] == list(range(1, result.epochs_run + 1))
    best = max(result.history, key=lambda h: h["validation_score"])
    assert best["epoch"] == result.best_epoch
    assert result.fill in ("zero", "mean")
    assert set(result.fill_validation) == {"zero", "mean"}


@pytest.mark.parametrize("text", ["8", "0.02:3,0.06:2,1:1", "0.5:4, 1:2"])
def test_bit_bands_round_trip(text: str) -> None:
    bands = parse_bit_bands(text)
    assert parse_bit_bands(format_bit_bands(bands)) == bands
    assert bands[-1][0] == 1.0


@pytest.mark.parametrize("text", ["", "0.5:3", "1:17", "0:3,1:2", "a:b", "0.5:3,0.5:2,1:1"])
def test_bad_bit_bands_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bit band"):
        parse_bit_bands(text)
