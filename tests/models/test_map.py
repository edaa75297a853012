"""The map's pure core (models/evaluation/map.py): caps to per-frame choices, budgets, the front chosen on
validation (never test), McNemar on known counts, and the PNG drawn from a synthetic report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nairbus.models.evaluation.map import (
    Budget,
    CapArrays,
    DeviceCost,
    MapEntry,
    budgets,
    cap_label,
    entry_json,
    fixed_arrays,
    front_row,
    front_summary,
    ladder_arrays,
    memo_predictor,
    pareto_front,
    ranked,
)
from nairbus.models.evaluation.map_plot import plot_map

CAPS = (40, 100, None)


def _entry(name: str, validation: list[bool], test: list[bool], *, share: float = 0.0, cpu_ms: float | None = None,
           wire: int = 30, kind: str = "decision", devices: int = 1) -> MapEntry:
    """A representation whose every frame is sent at ``wire`` bytes at every cap, right where the lists say."""
    def arrays(correct: list[bool]) -> CapArrays:
        c = np.array([correct] * len(CAPS), dtype=bool)
        return CapArrays(c, np.full(c.shape, wire, dtype=np.int64))

    cost = DeviceCost(round(share * 1000), 1000, cpu_ms, 100.0 if cpu_ms else None, devices=devices)
    return MapEntry(name, kind, cost, arrays(validation), arrays(test))  # type: ignore[arg-type]


def test_a_ladder_sends_per_frame_the_highest_rung_that_fits_and_nothing_below_the_smallest() -> None:
    # rungs (rows) lowest quality first; frame 2's top rung is smaller than its middle one (sizes are not monotone)
    wire = np.array([[30, 45, 60], [50, 90, 70], [120, 150, 65]])
    correct = np.array([[False, True, False], [True, False, True], [True, True, False]])
    out = ladder_arrays(wire, correct, (20, 40, 100, None))
    assert out.wire.tolist() == [[0, 0, 0], [30, 0, 0], [50, 90, 65], [120, 150, 65]]
    assert out.correct.tolist() == [[False, False, False], [False, False, False], [True, False, False],
                                    [True, True, False]]
    assert out.row(1) == {"accuracy": 0.0, "ci95": pytest.approx([0.0, 0.5615], abs=1e-4), "share_sent": 1 / 3,
                          "mean_wire_bytes": 30.0}
    assert out.mean_wire(0) is None


def test_a_fixed_message_is_sent_where_it_fits_and_is_wrong_where_it_does_not() -> None:
    out = fixed_arrays(np.array([25, 41, 30]), np.array([True, True, False]), CAPS)
    assert out.wire.tolist() == [[25, 0, 30], [25, 41, 30], [25, 41, 30]]
    assert out.correct.tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert [cap_label(c) for c in CAPS] == [40, 100, "unlimited"]


def test_the_front_chooses_on_validation_even_where_test_disagrees() -> None:
    # a is better on validation (4/5 against 2/5) but worse on test (1/5 against 5/5): a wins, b is runner-up
    a = _entry("a", [True, True, True, True, False], [True, False, False, False, False])
    b = _entry("b", [True, True, False, False, False], [True] * 5)
    row = front_row([b, a], Budget("all"), 0, 40)
    assert row["winner"]["name"] == "a"
    assert row["runner_up"]["name"] == "b"
    assert row["winner"]["test_accuracy"] == 0.2
    assert row["margin_test"] == pytest.approx(-0.8)
    assert row["margin_validation"] == pytest.approx(0.4)
    assert row["discordant"] == [0, 4]


def test_mcnemar_on_known_discordant_counts() -> None:
    # 10 frames only the winner gets right, 2 only the runner-up, 88 both: exact two-sided p = 2 P(X <= 2 | 12, 1/2)
    n = 100
    win = np.ones(n, dtype=bool)
    second = np.ones(n, dtype=bool)
    win[:2] = False
    second[2:12] = False
    row = front_row([_entry("w", [True], win.tolist()), _entry("r", [False], second.tolist())], Budget("all"), 0, 40)
    expected = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12
    assert row["mcnemar_p"] == pytest.approx(expected)  # 0.0386
    assert row["verdict"] == "outside the noise"
    same = front_row([_entry("w", [True], win.tolist()), _entry("r", [False], win.tolist())], Budget("all"), 0, 40)
    assert same["mcnemar_p"] == 1.0
    assert same["verdict"] == "inside the noise"


def test_budgets_admit_by_mac_share_or_measured_cpu_ms() -> None:
    light = _entry("light", [False], [False], share=0.2, cpu_ms=0.5)
    heavy = _entry("heavy", [True], [True], share=0.62, cpu_ms=1.2)
    unmeasured = _entry("unmeasured", [True], [True], share=0.0)
    everyone = [light, heavy, unmeasured]
    by = {b.label: b for b in budgets((0.0, 0.3, 0.7), (1.0,))}
    assert [e.name for e in everyone if by["<= 0% of the MACs"].allows(e.cost)] == ["unmeasured"]
    assert [e.name for e in everyone if by["<= 30% of the MACs"].allows(e.cost)] == ["light", "unmeasured"]
    assert [e.name for e in everyone if by["<= 70% of the MACs"].allows(e.cost)] == ["light", "heavy", "unmeasured"]
    assert [e.name for e in everyone if by["<= 1 ms CPU"].allows(e.cost)] == ["light"]  # not measured: not admitted
    rows = pareto_front(everyone, list(by.values()), CAPS)
    assert len(rows) == 4 * len(CAPS)
    assert rows[0]["winner"]["name"] == "unmeasured"
    assert rows[0]["runner_up"] is None
    assert "nothing fits" not in "\n".join(front_summary(rows))
    assert front_row([], Budget("none", max_share=0.0), 0, 40)["winner"] is None


def test_ties_on_validation_go_to_the_lighter_device_then_fewer_bytes() -> None:
    image = _entry("image", [True], [True], share=0.0, wire=200, kind="image")
    deep = _entry("nair-stage3", [True], [True], share=0.99996, wire=40, kind="nair")
    decision = _entry("decision", [True], [True], share=1.0, wire=25)
    assert [e.name for e in ranked([decision, deep, image], 0)] == ["image", "decision", "nair-stage3"]


def test_the_memo_runs_the_model_once_per_distinct_frame() -> None:
    calls: list[int] = []

    def predict(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return images.reshape(len(images), -1).sum(axis=1) % 10

    memo = memo_predictor(predict)
    frames = np.array([[[1, 2]], [[3, 4]], [[1, 2]]], dtype=np.uint8)
    assert memo(frames).tolist() == [3, 7, 3]
    assert memo(frames[::-1]).tolist() == [3, 7, 3]
    assert calls == [2]


def _synthetic_report() -> dict[str, object]:
    entries = [_entry("image grey+zstd", [True, False], [True, False], kind="image", wire=90),
               _entry("nair-stage2", [True, True], [True, False], share=0.62, cpu_ms=1.2, kind="nair", wire=100),
               _entry("decision", [True, True], [True, True], share=1.0, cpu_ms=1.1),
               _entry("vp-ensemble", [True, True], [True, True], share=0.2, cpu_ms=0.6, kind="vp", devices=4)]
    budget_list = budgets((0.0, 1.0), (1.0,))
    return {"model": {"name": "toy"}, "frames": {"test": 2, "validation": 2}, "caps": [cap_label(c) for c in CAPS],
            "budgets": [b.as_json() for b in budget_list], "representations": [entry_json(e, CAPS) for e in entries],
            "front": pareto_front([e for e in entries if e.cost.devices == 1], budget_list, CAPS)}


def test_entry_json_keeps_cost_and_per_cap_figures_without_per_frame_arrays() -> None:
    rep = _synthetic_report()["representations"][1]  # type: ignore[index]
    assert rep["name"] == "nair-stage2"
    assert rep["mac_share"] == 0.62
    assert rep["cpu_ms"] == 1.2
    assert [row["cap_bytes"] for row in rep["caps"]] == [40, 100, "unlimited"]
    assert set(rep["caps"][0]) == {"cap_bytes", "validation_accuracy", "test_accuracy", "ci95", "mean_wire_bytes",
                                   "share_sent"}
    assert _synthetic_report()["representations"][0]["cpu_ms"] == "not measured"  # type: ignore[index]


def test_the_plot_is_written(tmp_path: Path) -> None:
    path = plot_map(_synthetic_report(), tmp_path / "map.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nair_is_set_against_the_image_best_on_validation_at_each_cap() -> None:
    from nairbus.models.evaluation.map import versus_best_image

    right, wrong = [True] * 40, [False] * 40
    mixed = [True] * 20 + [False] * 20
    weak = _entry("image weak", mixed, right, kind="image")  # best on test, not on validation
    strong = _entry("image strong", right, mixed, kind="image")
    nair = _entry("nair-stage2", mixed, right, kind="nair", share=0.6)
    rows = versus_best_image([weak, strong, nair, _entry("decision", right, right)], CAPS)
    assert [r["name"] for r in rows] == ["nair-stage2"]
    assert rows[0]["mac_share"] == 0.6
    cap = rows[0]["caps"][0]
    assert cap["image"] == "image strong"  # chosen on validation, not on test
    assert cap["discordant"] == [20, 0]
    assert cap["verdict"] == "NAIR better"
    assert cap["mcnemar_p"] < 0.05
    same = versus_best_image([strong, _entry("nair-x", wrong, mixed, kind="nair")], CAPS)[0]["caps"][0]
    assert same["verdict"] == "inside the noise"
    assert same["margin_test"] == 0.0
    assert versus_best_image([nair], CAPS) == [{"name": "nair-stage2", "split": None, "mac_share": 0.6, "caps": []}]
