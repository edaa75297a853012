"""The full-strength tail-drop baseline's pieces: prefix masks over the sending order, the fit/validation split,
and a short fine-tune that picks its checkpoint and fill on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import Dataset, fit_split, validation_split
from nairbus.models.nair.calibration import format_bit_bands, parse_bit_bands
from nairbus.models.nair.taildrop import TailDropSettings, element_drop_mask, fine_tune_tail_drop, prefix_mask


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


def test_a_short_fine_tune_of_an_rgb_model_at_a_mobilenet_split() -> None:
    # The baseline is not ResNet's: any native split model fine-tunes on images converted to its own input spec.
    from nairbus.models.architectures.mobilenet import MobileNetConfig, MobileNetV2
    from nairbus.models.architectures.registry import fashion_mnist_spec

    spec = fashion_mnist_spec(channels=3, size=32)
    model = MobileNetV2(MobileNetConfig(stem=8, stages=((1, 8, 1, 2), (2, 8, 1, 2)), last=16, channels=3,
                                        resolution=32), spec).eval()
    rng = np.random.default_rng(0)
    train = Dataset(spec.convert(rng.integers(0, 255, (64, 28, 28), dtype=np.uint8)), rng.integers(0, 10, 64))
    val = Dataset(spec.convert(rng.integers(0, 255, (32, 28, 28), dtype=np.uint8)), rng.integers(0, 10, 32))
    result = fine_tune_tail_drop(model, train, val, TailDropSettings(split="block1", epochs=2, batch_size=32))
    assert result.epochs_run == 2
    assert result.model is not model
    assert set(result.history[0]["validation_prefix_accuracy"]) == {"0.05", "0.1", "0.25", "0.5"}


def test_the_shipped_base_baselines_settings_follow_from_its_own_training() -> None:
    # Derived, not tuned: the base model's own training gives exactly the settings its shipped baseline was made with,
    # so 'nairbus train taildrop' reproduces it; another model's come from its training the same way.
    import json

    from nairbus.models.store import WEIGHTS_DIR, read_manifest
    from nairbus.models.zoo import taildrop_name, taildrop_settings

    base = read_manifest("base")
    shipped = json.loads((WEIGHTS_DIR / "taildrop.json").read_text())
    assert taildrop_settings(base) == TailDropSettings(**shipped["settings"])
    mobilenet = read_manifest("mobilenet")
    derived = taildrop_settings(mobilenet.model_copy(update={"settings": (mobilenet.exported_from or {})["settings"]}))
    assert (derived.split, derived.epochs, derived.max_lr, derived.weight_decay) == ("block6", 30, 0.015, 0.0002)
    assert (taildrop_name("base"), taildrop_name("mobilenet")) == ("taildrop", "mobilenet-taildrop")


@pytest.mark.slow
def test_an_imported_program_of_a_registered_architecture_is_rebuilt_for_training() -> None:
    from nairbus.models.store import load_model
    from nairbus.models.zoo import trainable_mature

    native, manifest, architecture = trainable_mature("mobilenet")
    program, _ = load_model("mobilenet")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(native.head(x, "block6"), program.head(x, "block6"))
    assert architecture == "mobilenetv2"
    assert (manifest.settings or {})["epochs"] == 30
    assert any(p.requires_grad for p in native.parameters())
