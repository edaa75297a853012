"""The NAIR evaluator and the tail-drop baseline, on a tiny untrained model (plumbing; figures come from the CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import Dataset, load_split
from nairbus.models.evaluation.nair import (
    EvalSettings,
    Evaluator,
    ablation_specs,
    bars,
    fewest_bytes_within,
    method_specs,
    run_evaluation,
)
from nairbus.models.evaluation.nair_plots import write_plots
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.taildrop import tail_drop_mask
from tests.manifests import in_memory_manifest


@pytest.fixture(scope="module")
def tiny() -> tuple[ResNet, ModelManifest]:
    torch.manual_seed(0)
    return ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval(), in_memory_manifest(
        "tiny", "d" * 64, test_accuracy=0.1)


def test_tail_drop_mask_keeps_a_prefix_of_channels() -> None:
    mask = tail_drop_mask(500, 16, 0.2, torch.Generator().manual_seed(0))[:, :, 0, 0]
    kept = mask.sum(1)
    assert torch.all(kept >= 1)
    assert torch.all(mask == (torch.arange(16)[None, :] < kept[:, None]).float())
    assert 0.15 < float((kept == 16).float().mean()) < 0.35
    assert len(torch.unique(kept)) > 10


@pytest.mark.slow
def test_evaluation_report_has_every_section_and_sane_figures(tiny: tuple[ResNet, ModelManifest],
                                                              tmp_path) -> None:
    train, test = load_split("train"), load_split("test")
    settings = EvalSettings(frames=60, calibration_images=200,
                            rate_bands=(("8 bit", ((1.0, 8),)), ("4/2 bit", ((0.1, 4), (1.0, 2)))),
                            rate_budgets=(50, 400),
                            methods=("nair", "naive-mean", "naive-zero"), loss_rates=(0.2,))
    models = {"base": tiny, "taildrop": tiny}
    validation = Dataset(train.images[-150:], train.labels[-150:])
    report = run_evaluation(Evaluator(models, train.images[:200], test, settings, validation=validation,
                                      validation_source="last 150 training images"), "stage2")
    assert set(report["methods"]) == {"nair", "naive-mean", "naive-zero"}
    json.dumps(report)  # nothing per-frame is left in it
    lo, hi = report["mature_ci95"]
    assert lo <= report["mature_accuracy"] <= hi
    for key, (lo, hi) in report["methods"]["nair"]["prefix_ci95"].items():
        assert lo <= report["methods"]["nair"]["prefix"][key] <= hi
    assert all(0.0 <= row["p_value"] <= 1.0 for row in report["comparisons"]["nair_vs_mature"].values())
    assert report["comparisons"]["nair_vs_mature"]["1"]["within_noise"]
    assert report["validation"]["source"] == "last 150 training images"
    assert all("validation_accuracy" in p and p["command"].startswith("nairbus calibrate")
               for p in report["rate_accuracy"])
    chosen = report["fewest_bytes_within_1pt"]
    assert chosen["chosen_on"] == "validation"
    if chosen["point"] is not None:
        assert chosen["point"]["validation_accuracy"] >= report["validation"]["mature_accuracy"] - 0.01
    for method in report["methods"].values():
        assert set(method["prefix"]) == {"0.05", "0.1", "0.25", "0.5", "0.75", "1"}
        assert all(0.0 <= a <= 1.0 for a in method["prefix"].values())
        bytes_ = list(method["prefix_bytes"].values())
        assert bytes_ == sorted(bytes_)
    # Everything received: the exactly invertible transform gives the mature model's predictions.
    assert report["nair_full"]["agreement_with_mature_transform_only"] == 1.0
    assert report["methods"]["nair"]["prefix"]["1"] == pytest.approx(report["mature_accuracy"], abs=0.05)
    assert {p["quantisation"] for p in report["rate_accuracy"]} == {"8 bit", "4/2 bit"}
    assert [p["budget_bytes"] for p in report["rate_accuracy"] if p["quantisation"] == "8 bit"][:2] == [50, 400]
    assert all(p["bytes"] <= p["budget_bytes"] for p in report["rate_accuracy"])
    assert all({"bytes", "accuracy"} <= p.keys() for p in report["rate_accuracy"])
    assert len(report["ablation"]) >= 5
    assert report["bars"]["nair_over_naive_mean_at_10pct"] == pytest.approx(
        report["methods"]["nair"]["prefix"]["0.1"] / report["methods"]["naive-mean"]["prefix"]["0.1"])
    paths = write_plots(report, tmp_path)
    assert all(p.stat().st_size > 10_000 for p in paths)
    joint = report["joint_klt_validation"]
    assert set(joint["validation_accuracy"]) == {"0", "256", "512", "1024"}
    assert joint["evaluated"] == 0
    assert joint["evaluated_is_best"] == (joint["best"] == 0)
    means = {k: np.mean(list(v.values())) for k, v in joint["validation_accuracy"].items()}
    assert means[str(joint["best"])] == max(means.values())


def test_a_joint_klt_reaches_nair_and_its_ablation_step_but_no_baseline() -> None:
    plain, joint = method_specs("stage2"), method_specs("stage2", joint_klt=512)
    assert plain["nair"].calibration.joint_klt == 0
    assert joint["nair"].calibration.joint_klt == 512
    assert "joint KLT of the leading 512" in joint["nair"].description
    assert all(spec.calibration.joint_klt == 0 for name, spec in joint.items() if name != "nair")
    steps = ablation_specs("stage2")
    assert "+ spatial DCT (= NAIR)" in steps
    assert not any("joint" in name for name in steps)
    assert all(spec.calibration.joint_klt == 0 for spec in steps.values())
    steps = ablation_specs("stage2", joint_klt=512)
    names = list(steps)
    assert names.index("+ spatial DCT") + 1 == names.index("+ joint KLT of the leading 512 components (= NAIR)")
    assert steps["+ spatial DCT"].calibration.joint_klt == 0
    assert steps["NAIR with zero-fill instead of mean-fill"].calibration.joint_klt == 512
    assert steps["+ channel KLT"].calibration.joint_klt == 0


def test_bars_are_computed_from_the_figures() -> None:
    report = {
        "mature_accuracy": 0.9,
        "methods": {"nair": {"prefix": {"0.05": 0.85, "0.1": 0.88, "0.25": 0.9, "0.5": 0.9}},
                    "naive-mean": {"prefix": {"0.1": 0.4}},
                    "taildrop": {"prefix": {"0.05": 0.8, "0.1": 0.89, "0.25": 0.9, "0.5": 0.91}}},
        "nair_full": {"agreement_with_mature_transform_only": 1.0, "agreement_with_mature_8bit": 0.999},
        "rate_accuracy": [{"bytes": 200.0, "accuracy": 0.85}, {"bytes": 280.0, "accuracy": 0.895},
                          {"bytes": 900.0, "accuracy": 0.9}],
        "fewest_bytes_within_1pt": {"chosen_on": "validation", "point": {
            "bytes": 280.0, "accuracy": 0.895, "ci95": [0.88, 0.91], "quantisation": "3 bit",
            "command": "nairbus calibrate --bit-bands 1:3"}},
    }
    out = bars(report)
    assert out["min_bytes_within_1pt_chosen_on"] == "validation"
    assert out["min_bytes_within_1pt_command"] == "nairbus calibrate --bit-bands 1:3"
    assert out["nair_share_of_mature_at_10pct"] == pytest.approx(0.88 / 0.9)
    assert out["nair_over_naive_mean_at_10pct"] == pytest.approx(2.2)
    assert out["nair_minus_taildrop"]["0.1"] == pytest.approx(-0.01)
    assert out["min_bytes_within_1pt_of_mature"] == 280.0
    assert np.isclose(out["nair_share_of_mature_at_25pct"], 1.0)


def test_the_highlighted_rate_point_is_chosen_by_validation_accuracy() -> None:
    points = [{"bytes": 200.0, "accuracy": 0.95, "validation_accuracy": 0.80},   # best on test, poor on validation
              {"bytes": 300.0, "accuracy": 0.85, "validation_accuracy": 0.895},
              {"bytes": 900.0, "accuracy": 0.90, "validation_accuracy": 0.90}]
    chosen = fewest_bytes_within(points, 0.9, key="validation_accuracy")
    assert chosen is not None
    assert chosen["bytes"] == 300.0
    assert fewest_bytes_within(points, 0.9)["bytes"] == 200.0  # type: ignore[index]
