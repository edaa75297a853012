"""``nairbus evaluate map``: the wire sizes its measurements use (the sensor's own encoders), NAIR under each cap on a
few real frames, and (slow) the command on a few hundred frames of base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nairbus.agents.tools.map_eval import MapSettings, topk_wire
from nairbus.agents.tools.map_nair import nair_arrays
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.evaluation.map import DEFAULT_CAPS, cap_limits
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import WEIGHTS_DIR

NAIRBUS = Path(sys.executable).with_name("nairbus")


def test_a_top1_message_is_22_to_32_wire_bytes_and_grows_with_the_counters() -> None:
    probs = np.full((3000, 10), 0.05, dtype=np.float32)
    probs[:, 3] = 0.55
    wire = topk_wire(probs, 1)
    assert 22 <= wire.min() <= wire.max() <= 32
    assert np.all(np.diff(wire) >= 0)  # counters only grow
    assert topk_wire(probs[:5], 5).min() > wire[:5].max()  # four more classes and scores


def test_nair_under_each_cap_fits_it_and_the_whole_ir_gives_the_mature_predictions() -> None:
    base = NairPipeline.load("base")
    stage3 = NairPipeline(base.model, base.manifest, NairArtifact.load(WEIGHTS_DIR / "base.stage3.nair.npz"))
    test = load_split("test")
    images, labels = test.images[:40], test.labels[:40]
    out = nair_arrays(stage3, stage3.encode_all(images), labels, DEFAULT_CAPS)
    limits = cap_limits(DEFAULT_CAPS)
    assert out.correct.shape == (len(DEFAULT_CAPS), 40)
    assert np.all(out.wire <= limits[:, None])
    assert np.all(out.correct <= (out.wire > 0))  # a frame not sent is wrong
    assert out.wire[-1].min() > stage3.artifact.total_bytes()  # unlimited: the whole IR and its envelopes
    mature = stage3.full_model_probs(images).argmax(1) == labels
    assert out.correct[-1].tolist() == mature.tolist()


def test_the_command_line_names_only_what_differs_from_the_defaults() -> None:
    assert MapSettings().command() == "nairbus evaluate map"
    assert MapSettings(model="mobilenet", frames=300, calibration_images=500).command() == (
        "nairbus evaluate map --model mobilenet --frames 300 --calibration-images 500")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_command_maps_every_representation_of_base(tmp_path: Path) -> None:
    report = tmp_path / "map.json"
    env = {**os.environ, "COLUMNS": "160", "TERM": "dumb"}
    done = subprocess.run([str(NAIRBUS), "evaluate", "map", "--frames", "150", "--validation-frames", "100",
                           "--calibration-images", "250", "--artifacts-dir", str(tmp_path / "artifacts"),
                           "--report", str(report)], capture_output=True, text=True, timeout=1150, env=env,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert report.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert result["command"].startswith("nairbus evaluate map --frames 150 --validation-frames 100")
    assert result["frames"]["test"] == 150
    assert result["frames"]["validation"] == 100
    assert result["model"]["name"] == "base"
    assert len(result["model"]["sha256"]) == 64
    assert result["caps"][0] == 40
    assert result["caps"][-1] == "unlimited"
    reps = {rep["name"]: rep for rep in result["representations"]}
    assert {"nair-stem", "nair-stage1", "nair-stage2", "nair-stage3", "decision", "vp-ensemble"} <= set(reps)
    assert {rep["kind"] for rep in reps.values()} == {"image", "nair", "decision", "vp"}
    assert sum(rep["kind"] == "vp" for rep in reps.values()) >= 2
    assert reps["vp-ensemble"]["devices"] >= 2
    assert reps["nair-stem"]["artifact_made_by"].startswith("calibrated by nairbus evaluate map")
    assert "--images 250" in reps["nair-stem"]["calibration"]["command"]
    assert reps["decision"]["mac_share"] == 1.0
    assert all(rep["mac_share"] == 0.0 for rep in reps.values() if rep["kind"] == "image")
    for rep in reps.values():
        assert [row["cap_bytes"] for row in rep["caps"]] == result["caps"]
        for row in rep["caps"]:
            assert 0.0 <= row["test_accuracy"] <= 1.0
            assert 0.0 <= row["validation_accuracy"] <= 1.0
            assert row["ci95"][0] <= row["test_accuracy"] <= row["ci95"][1]
            assert row["mean_wire_bytes"] is None or row["cap_bytes"] == "unlimited" or \
                row["mean_wire_bytes"] <= row["cap_bytes"]
    assert all(row["mean_wire_bytes"] <= 32 for row in reps["decision"]["caps"])
    assert reps["decision"]["caps"][0]["share_sent"] == 1.0
    cells = {(row["budget"], row["cap_bytes"]) for row in result["front"]}
    assert cells == {(b["label"], cap) for b in result["budgets"] for cap in result["caps"]}
    for row in result["front"]:
        # the image needs nothing on the device: every share budget has a candidate (an ms budget needs the cost
        # report of this very model)
        assert row["winner"] is not None or row["budget"].endswith("ms CPU")
        if row["runner_up"] is not None:
            assert 0.0 <= row["mcnemar_p"] <= 1.0
            assert row["verdict"] in ("inside the noise", "outside the noise")


def test_range_coded_nair_takes_per_cap_the_allocation_best_on_validation(tmp_path: Path) -> None:
    from nairbus.agents.tools.map_nair import coded_entry
    from nairbus.models.data.fashion_mnist import validation_split
    from nairbus.models.evaluation.map import DeviceCost

    base = NairPipeline.load("base")
    train, test = load_split("train"), load_split("test")
    validation = validation_split(train)
    validation = type(validation)(validation.images[:120], validation.labels[:120])
    test = type(test)(test.images[:80], test.labels[:80])
    caps = (60, 150, 400)
    allocations = {"2/1 bit by importance": ((0.04, 2), (1.0, 1)), "3 bit": ((1.0, 3),)}
    entry = coded_entry(base.model, base.manifest, "stage2", DeviceCost(1, 2), validation, test, caps,
                        train.images[:400], tmp_path, lambda _m: None, allocations)
    assert entry.name == "nair-stage2-coded"
    assert entry.detail["coding"] == "range"
    chosen = [row["label"] for row in entry.detail["allocation_per_cap"]]
    assert set(chosen) <= set(allocations)
    assert len(chosen) == len(caps)
    assert np.all(entry.test.wire <= np.array(caps)[:, None])  # every frame's coded message fits its cap
    alone = {name: coded_entry(base.model, base.manifest, "stage2", DeviceCost(1, 2), validation, test, caps,
                               train.images[:400], tmp_path, lambda _m: None, {name: allocations[name]})
             for name in allocations}  # each allocation on its own, for every cap at once
    for row, label in enumerate(chosen):  # the chosen one is at least as accurate on validation as the other
        other = next(name for name in allocations if name != label)
        assert entry.validation.correct[row].mean() >= alone[other].validation.correct[row].mean()
        assert entry.validation.correct[row].mean() == alone[label].validation.correct[row].mean()
    assert len(list(tmp_path.glob("base.stage2.coded-*.nair.npz"))) == 2  # calibrated once, then cached
