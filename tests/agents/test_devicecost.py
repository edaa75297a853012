"""``nairbus evaluate cost``: the plan of what to measure, the child's protocol pieces, and (slow) the command on a
handful of frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.agents.tools.devicecost import CostSettings, child_spec, find_artifacts, plan_costs
from nairbus.agents.tools.devicecost_child import ChildSpec, parse_memory
from nairbus.models.store import WEIGHTS_DIR, read_manifest

NAIRBUS = Path(sys.executable).with_name("nairbus")


def test_memory_is_read_from_proc_status() -> None:
    status = "Name:\tpython\nVmHWM:\t  402000 kB\nVmRSS:\t  301000 kB\nThreads:\t1\n"
    assert parse_memory(status) == {"VmRSS": 301000, "VmHWM": 402000}
    assert parse_memory("") == {"VmRSS": 0, "VmHWM": 0}


def test_a_child_spec_survives_its_json_line() -> None:
    spec = ChildSpec(representation="nair-stem", kind="nair", model="base", frames_path="/tmp/f.npy", warmup=3,
                     wire_bytes=200, split="stem", ir_shape=(24, 28, 28), image_codecs=("png",))
    assert ChildSpec.from_json(spec.to_json()) == spec


def test_the_shipped_artifacts_are_found_per_split() -> None:
    manifest = read_manifest("base")
    found = find_artifacts("base", manifest.sha256, ("stem", "stage1", "stage2", "stage3"))
    assert found == {"stage2": WEIGHTS_DIR / "base.nair.npz", "stage3": WEIGHTS_DIR / "base.stage3.nair.npz"}
    assert find_artifacts("base", "0" * 64, ("stage2",)) == {}  # another model's weights: none is its


def test_the_plan_for_base_lists_every_representation(tmp_path: Path) -> None:
    plan = plan_costs(CostSettings())
    names = [r.name for r in plan.items]
    assert names[:6] == ["image", "nair-stem", "nair-stage1", "nair-stage2", "nair-stage3", "decision"]
    assert {n for n in names if n.startswith("vp-")} == {f"vp-{v}" for v in plan.variant_weights}
    assert plan.skipped == []
    stem = child_spec(plan.items[1], plan, CostSettings(), tmp_path / "frames.npy")
    assert stem.artifact is None
    assert stem.ir_shape == (24, 28, 28)
    deep = child_spec(plan.items[4], plan, CostSettings(), tmp_path / "frames.npy")
    assert deep.artifact == str(WEIGHTS_DIR / "base.stage3.nair.npz")
    with pytest.raises(ValueError, match="unknown representation"):
        plan_costs(CostSettings(only=("nair-nowhere",)))


@pytest.mark.slow
def test_the_command_measures_every_representation_of_base(tmp_path: Path) -> None:
    report = tmp_path / "cost.json"
    env = {**os.environ, "COLUMNS": "160", "TERM": "dumb"}
    done = subprocess.run([str(NAIRBUS), "evaluate", "cost", "--frames", "6", "--warmup", "2", "--report",
                           str(report)], capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert result["command"] == "nairbus evaluate cost --frames 6 --warmup 2"
    assert result["frames"] == 6
    assert result["model"] == "base"
    assert "kind" in result["isolation"]
    assert {"cpu", "cpus", "kernel"} <= set(result["machine"])
    rows = {row["name"]: row for row in result["representations"]}
    assert {"image", "nair-stem", "nair-stage1", "nair-stage2", "nair-stage3", "decision"} <= set(rows)
    assert any(name.startswith("vp-") for name in rows)
    for row in rows.values():
        assert "error" not in row, row
        assert {"name", "split", "mac_share", "macs_device", "cpu_ms_per_frame", "wall_ms_per_frame",
                "rss_mb_peak", "rss_mb_imports"} <= set(row)
        assert set(row["cpu_ms_per_frame"]) == {"median", "p90", "mean"}
        assert row["frames"] == 6
        assert row["rss_mb_peak"] >= row["rss_mb_imports"] > 0
    assert rows["image"]["mac_share"] == 0.0
    assert rows["decision"]["mac_share"] == 1.0
    assert rows["nair-stem"]["split"] == "stem"
    assert rows["decision"]["cpu_ms_per_frame"]["median"] > rows["nair-stem"]["cpu_ms_per_frame"]["median"]
