"""Task importance (``calibrate --importance task``): label-free scores from the model's own output, an order that
follows them, recorded and hashed — no broker, no shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.nair.calibration import CalibrationSettings, calibrate, calibration_ir
from nairbus.models.nair.importance import task_scores
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairTransform
from tests.manifests import in_memory_manifest

pytestmark = pytest.mark.unit


def test_a_component_the_model_does_not_read_scores_nothing(tiny_model: ResNet, images: np.ndarray) -> None:
    variance = calibrate(tiny_model, "tiny", "a" * 64, images, CalibrationSettings(split="stage2"))
    transform = NairTransform(variance, torch.float64)
    ir, _ = calibration_ir(tiny_model, images[:40], "stage2")
    with torch.no_grad():
        comps = transform.forward(torch.from_numpy(ir)).numpy()
    double = tiny_model.double()
    try:
        scores = task_scores(double, "stage2", transform, comps)
        assert scores.shape == (variance.n_components,)
        assert np.all(scores >= 0)
        assert scores.max() == 1.0
        silent = comps.copy()
        silent[:, 0] = 0.0  # a component that is always at its fill moves nothing when it goes missing
        assert task_scores(double, "stage2", transform, silent)[0] == 0.0
    finally:
        tiny_model.float()


def test_task_order_is_recorded_hashed_and_its_prefixes_follow_the_model(tiny_model: ResNet,
                                                                        images: np.ndarray) -> None:
    variance = calibrate(tiny_model, "tiny", "a" * 64, images, CalibrationSettings(split="stage2"))
    task = calibrate(tiny_model, "tiny", "a" * 64, images, CalibrationSettings(split="stage2", importance="task"))
    again = calibrate(tiny_model, "tiny", "a" * 64, images, CalibrationSettings(split="stage2", importance="task"))
    assert "importance" not in variance.meta["settings"]  # the artifacts made before it keep their sha256
    assert task.meta["settings"]["importance"] == "task"
    assert task.sha256 == again.sha256
    assert task.sha256 != variance.sha256
    assert sorted(task.order.tolist()) == list(range(task.n_components))  # a permutation
    assert not np.array_equal(task.order, variance.order)
    # Both send the same IR whole; the task order is the one whose short prefixes keep the model's own answer.
    pipe_v = NairPipeline(tiny_model, in_memory_manifest("tiny", "a" * 64), variance)
    pipe_t = NairPipeline(tiny_model, in_memory_manifest("tiny", "a" * 64), task)
    full = pipe_v.full_model_probs(images).argmax(1)
    agree = {}
    for name, pipe in (("variance", pipe_v), ("task", pipe_t)):
        codes = pipe.encode_all(images)
        ends = np.full(len(images), task.n_components // 50)
        agree[name] = float((pipe.prefix_probs(codes, ends).argmax(1) == full).mean())
    assert agree["task"] >= agree["variance"], agree


def test_task_importance_is_for_nairs_own_order_only(tiny_model: ResNet, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="task importance"):
        calibrate(tiny_model, "tiny", "a" * 64, images[:50],
                  CalibrationSettings(split="stage2", method="pca", importance="task"))
