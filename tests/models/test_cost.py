"""The pure core of ``nairbus evaluate cost``: what each representation puts on the device in MACs, the per-frame work
functions, the frame timer and the summary (no process is started here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import count, pairwise

import numpy as np
import pytest

from nairbus.models.architectures.resnet import count_macs as resnet_macs
from nairbus.models.evaluation.cost import (
    FrameTimes,
    classifier_work,
    count_macs,
    equivalent_artifact,
    image_work,
    model_macs,
    model_probs,
    nair_work,
    representations,
    run_frames,
    summarise,
    transform_macs,
)
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import WEIGHTS_DIR, load_model


@pytest.fixture(scope="module")
def base() -> tuple[object, object, tuple[int, dict[str, int], dict[str, tuple[int, ...]]]]:
    model, manifest = load_model("base")
    return model, manifest, model_macs(model)


def test_shares_image_nothing_decision_everything_and_device_plus_hub_add_up() -> None:
    reps = representations(1000, {"a": 10, "b": 400, "c": 990}, {"b": "m.nair.npz"}, {"v1": 150})
    by_name = {r.name: r for r in reps}
    assert [r.name for r in reps] == ["image", "nair-a", "nair-b", "nair-c", "decision", "vp-v1"]
    assert by_name["image"].mac_share == 0.0
    assert by_name["decision"].mac_share == 1.0
    assert by_name["vp-v1"].mac_share == pytest.approx(0.15)
    for rep in reps:
        if rep.kind != "vp":  # a VP variant is a model of its own: fusion only applies a rule to the votes
            assert rep.macs_device + rep.macs_hub == rep.macs_model
    assert by_name["nair-b"].as_json()["artifact"] == "m.nair.npz"
    assert by_name["nair-a"].as_json()["artifact"].startswith("no artifact")
    json.dumps([r.as_json() for r in reps])


def test_impossible_mac_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        representations(0, {}, {}, {})
    with pytest.raises(ValueError, match="is outside"):
        representations(100, {"deep": 101}, {}, {})


def test_the_shipped_model_counts_agree_and_shares_grow_with_the_split(base: tuple) -> None:  # type: ignore[type-arg]
    model, manifest, (total, heads, shapes) = base
    assert total == manifest.macs == resnet_macs(model)
    assert heads == {split: resnet_macs(model, split) for split in model.split_points}
    assert shapes["stage2"] == (64, 14, 14)
    shares = [r.mac_share for r in representations(total, heads, {}, {}) if r.kind == "nair"]
    assert len(shares) == len(model.split_points) == 4
    assert all(a < b for a, b in pairwise(shares))
    assert shares[0] > 0
    assert shares[-1] <= 1.0


def test_vp_shares_are_the_family_manifest_ratios() -> None:
    family = json.loads((WEIGHTS_DIR / "variants.json").read_text())
    variants = {v["name"]: v["macs"] for v in family["variants"]}
    reps = representations(family["base"]["macs"], {}, {}, variants)
    for v in family["variants"]:
        assert next(r for r in reps if r.variant == v["name"]).mac_share == pytest.approx(v["macs_ratio"], abs=1e-4)


def test_an_equivalent_artifact_costs_what_the_calibrated_one_costs(base: tuple) -> None:  # type: ignore[type-arg]
    model, manifest, (_total, _heads, shapes) = base
    shipped = NairArtifact.load(WEIGHTS_DIR / "base.nair.npz")
    twin = equivalent_artifact(manifest.name, manifest.sha256, shipped.split, shapes[shipped.split])
    assert transform_macs(twin) == transform_macs(shipped) > 0
    assert twin.total_bytes() == shipped.total_bytes()
    assert np.array_equal(twin.plan, shipped.plan)
    frames = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    assert NairPipeline(model, manifest, twin).encode(frames).shape == (2, twin.n_components)


def test_count_macs_counts_matrix_products() -> None:
    import torch

    a, b = torch.ones(3, 4), torch.ones(4, 5)
    assert count_macs(lambda: a @ b) == 3 * 4 * 5


def test_work_functions_hand_the_sensor_result_to_send(base: tuple) -> None:  # type: ignore[type-arg]
    model, _manifest, _ = base
    frame = np.zeros((28, 28), dtype=np.uint8)
    sent: list[tuple] = []  # type: ignore[type-arg]
    nair = nair_work(lambda images: np.arange(6).reshape(1, 6) + images.shape[0],
                     lambda codes, fid: sent.append(("nair", codes.tolist(), fid)) or 7)
    assert nair(frame, 3) == 7
    assert sent[-1] == ("nair", [1, 2, 3, 4, 5, 6], 3)
    decision = classifier_work(model_probs(model), 2, lambda c, s, fid: sent.append(("top", c, s, fid)) or 24)
    assert decision(frame, 4) == 24
    _, classes, scores, fid = sent[-1]
    assert classes.shape == scores.shape == (2,)
    assert scores[0] >= scores[1]
    assert fid == 4
    assert image_work(lambda f, fid: f.size + fid)(frame, 1) == 785


def _clock(step: float) -> Iterator[float]:
    return (i * step for i in count())


def test_run_frames_warms_up_untimed_then_times_each_frame() -> None:
    seen: list[int] = []
    cpu, wall = _clock(0.002), _clock(0.004)

    def work(frame: np.ndarray, frame_id: int) -> int:
        seen.append(frame_id)
        return int(frame[0, 0])

    frames = np.arange(3, dtype=np.uint8).reshape(3, 1, 1)
    times = run_frames(work, frames, 4, lambda: next(cpu), lambda: next(wall))
    assert seen == [3, 4, 5, 6, 0, 1, 2]  # warm-up ids after the measured frames'
    assert times.cpu_ms == pytest.approx([2.0] * 3)
    assert times.wall_ms == pytest.approx([4.0] * 3)
    assert times.wire_bytes == [0, 1, 2]
    with pytest.raises(ValueError, match="no frames"):
        run_frames(work, frames[:0], 0)


def test_summarise_gives_median_p90_and_megabytes() -> None:
    times = FrameTimes(cpu_ms=[float(i) for i in range(1, 11)], wall_ms=[4.0] * 10, wire_bytes=[100, 200] * 5)
    out = summarise(times, {"peak": 2048, "imports": 1024, "python": 512})
    assert out["frames"] == 10
    assert out["cpu_ms_per_frame"] == {"median": 5.5, "p90": 9.1, "mean": 5.5}
    assert out["wall_ms_per_frame"]["mean"] == 4.0
    assert out["frames_per_s"] == 250.0
    assert out["wire_bytes_per_frame"] == 150.0
    assert (out["rss_mb_peak"], out["rss_mb_imports"], out["rss_mb_python"]) == (2.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="nothing was measured"):
        summarise(FrameTimes(), {"peak": 1})
