"""The input spec: validation, the edge conversion (grey/RGB, resizing) and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.architectures.resnet import preprocess
from nairbus.models.architectures.split import InputSpec

LABELS = ("a", "b", "c")


@pytest.mark.parametrize("fields", [
    {"channels": 2, "mean": (0.5,), "std": (0.5,)},
    {"channels": 3, "mean": (0.5, 0.5), "std": (0.5,)},
    {"channels": 1, "mean": (0.5,), "std": (0.0,)},
    {"channels": 1, "mean": (0.5,), "std": (0.5,), "labels": ("a", "a")},
    {"channels": 1, "mean": (0.5,), "std": (0.5,), "height": 0},
])
def test_inconsistent_specs_are_refused(fields: dict[str, object]) -> None:
    values: dict[str, object] = {"height": 8, "width": 8, "labels": LABELS, **fields}
    with pytest.raises(ValidationError):
        InputSpec.model_validate(values)


def test_grey_frames_are_resized_and_replicated_for_an_rgb_model() -> None:
    spec = InputSpec(channels=3, height=32, width=32, mean=(0.5,) * 3, std=(0.25,) * 3, labels=LABELS)
    grey = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    converted = spec.convert(grey)
    assert converted.shape == (4, 32, 32, 3)
    assert (converted[..., 0] == converted[..., 1]).all()
    assert (converted[..., 1] == converted[..., 2]).all()
    x = spec.prepare(grey)
    assert x.shape == (4, 3, 32, 32)
    assert x.dtype == torch.float32
    assert spec.convert(converted) is converted  # already in the model's shape: untouched


def test_rgb_frames_become_luma_for_a_grey_model() -> None:
    spec = fashion_mnist_spec()
    red = np.zeros((1, 28, 28, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert spec.convert(red).shape == (1, 28, 28)
    assert int(spec.convert(red)[0, 0, 0]) == 76  # ITU-R 601: 0.299 * 255


def test_the_shipped_spec_normalises_exactly_like_the_old_constants() -> None:
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    assert torch.equal(fashion_mnist_spec().prepare(images), preprocess(torch.from_numpy(images)))


def test_a_wrong_shape_is_a_clear_error() -> None:
    spec = fashion_mnist_spec()
    with pytest.raises(ValueError, match="do not fit the input spec"):
        spec.preprocess(np.zeros((2, 3, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        spec.convert(np.zeros((2, 28, 28), dtype=np.float32))


def test_the_data_set_registry_names_fashion_mnist_and_refuses_others() -> None:
    from nairbus.models.data.registry import get_dataset

    info = get_dataset("fashion-mnist")
    assert info.spec == fashion_mnist_spec()
    assert len(info.load("test", None)) == 10000
    with pytest.raises(ValueError, match="registered: fashion-mnist"):
        get_dataset("imagenet")
