"""Predicted fill (``calibrate --predict-fill``): the estimator, its place in the artifact and in the hub's
reconstruction — no broker, no shipped weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.nair.calibration import CalibrationSettings, calibrate, calibration_ir
from nairbus.models.nair.prediction import fit_predictor, leading_run
from nairbus.models.nair.transform import ArtifactMismatchError, NairArtifact, NairTransform

pytestmark = pytest.mark.unit


def test_what_the_prefix_determines_is_predicted() -> None:
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(4000, 8))
    values = factors @ rng.normal(size=(8, 600)) + 0.01 * rng.normal(size=(4000, 600))
    predictor = fit_predictor(values, values, rank=16, lengths=(4, 16, 64))
    assert predictor.lengths.tolist() == [4, 16, 64]
    assert predictor.weights.shape == (3, 64, 16)
    assert predictor.basis.shape == (16, 600)
    assert np.allclose(predictor.basis @ predictor.basis.T, np.eye(16), atol=1e-4)  # orthonormal directions
    for index, length in enumerate((16, 64)):  # eight factors: any prefix of at least 8 components determines all
        guess = values[:, :length] @ predictor.weights[index + 1, :length] @ predictor.basis
        rest = slice(length, None)
        assert np.mean((guess[:, rest] - values[:, rest]) ** 2) < 0.01 * np.mean(values[:, rest] ** 2)
    assert fit_predictor(values, values, rank=16).lengths.max() < 600  # lengths beyond the IR are left out


def test_the_leading_run_is_what_arrived_before_the_first_gap() -> None:
    received = np.array([[True, True, False, True], [True, True, True, True], [False, True, True, True]])
    assert leading_run(received).tolist() == [2, 4, 0]


def test_a_predicted_fill_is_closer_to_the_ir_and_leaves_a_whole_frame_alone(tiny_model: ResNet, images: np.ndarray,
                                                                             tmp_path: Path) -> None:
    plain = calibrate(tiny_model, "tiny", "a" * 64, images, CalibrationSettings(split="stage2"))
    predicted = calibrate(tiny_model, "tiny", "a" * 64, images,
                          CalibrationSettings(split="stage2", predict_fill=True))
    assert predicted.predicts_fill
    assert not plain.predicts_fill
    assert "predict_fill" not in plain.meta["settings"]  # the artifacts made before it keep their sha256
    assert predicted.sha256 != plain.sha256
    again = NairArtifact.load(predicted.save(tmp_path / "p.npz"))
    assert again.sha256 == predicted.sha256
    assert np.array_equal(again.predict_basis, predicted.predict_basis)
    ir, _ = calibration_ir(tiny_model, images[:100], "stage2")
    truth = torch.from_numpy(ir).float()
    errors = {}
    for name, artifact in (("mean", plain), ("predicted", predicted)):
        transform = NairTransform(artifact)
        comps = transform.forward(truth)
        whole = torch.ones_like(comps, dtype=torch.bool)
        assert torch.allclose(transform.reconstruct(comps, whole), truth, atol=1e-3)  # nothing missing: the IR
        prefix = torch.zeros_like(whole)
        prefix[:, :40] = True  # 40 of 1 024 components: the estimator of 32 fills the rest
        errors[name] = float(((transform.reconstruct(comps, prefix) - truth) ** 2).mean())
    assert errors["predicted"] < 0.9 * errors["mean"], errors


def test_a_broken_estimator_is_refused_and_zero_fill_has_none(tiny_model: ResNet, images: np.ndarray,
                                                            tmp_path: Path) -> None:
    predicted = calibrate(tiny_model, "tiny", "a" * 64, images[:100],
                          CalibrationSettings(split="stage2", predict_fill=True))
    broken = replace(predicted, predict_basis=predicted.predict_basis[:, :10])
    with pytest.raises(ArtifactMismatchError, match="fill estimator"):
        NairArtifact.load(broken.save(tmp_path / "broken.npz"))
    with pytest.raises(ValueError, match="fill must be mean"):
        calibrate(tiny_model, "tiny", "a" * 64, images[:100],
                  CalibrationSettings(split="stage2", predict_fill=True, fill="zero"))
