"""The shared training loop steers clear of the oneDNN kernel that hangs on narrow strided 1x1 convolutions."""

from __future__ import annotations

import torch
from torch import nn

from nairbus.models.training.loop import safe_kernels


def test_a_narrow_strided_shortcut_trains_with_onednn_off() -> None:
    narrow = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 1, stride=2))
    with safe_kernels([narrow]):
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled


def test_other_models_keep_the_framework_kernels() -> None:
    wide = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 1, stride=2), nn.Conv2d(16, 4, 1))
    with safe_kernels([wide]):
        assert torch.backends.mkldnn.enabled


def test_compute_threads_are_set_for_the_block_and_restored() -> None:
    import pytest

    from nairbus.models.store import compute_threads

    before = torch.get_num_threads()
    with compute_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), compute_threads(0):
        pass
