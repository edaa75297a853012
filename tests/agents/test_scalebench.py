"""``nairbus bench scale`` as a user runs it, small: every part measured, the report valid, the figures sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.agents.tools.reports import ScaleReport, load_report
from nairbus.agents.tools.scalebench import CpuSampler, ScaleSettings, cpu_seconds, latency_summary, rss_mb
from nairbus.agents.tools.swarm import SENSORS_PER_PROCESS, split

NAIRBUS = Path(sys.executable).with_name("nairbus")


@pytest.mark.unit
def test_process_figures_come_from_proc_and_vanish_with_the_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time\nx = 0\nfor _ in range(3_000_000): x += 1\n"
                             "time.sleep(5)"])
    try:
        with CpuSampler({"busy": proc.pid}, interval=0.05) as sampler:
            while (cpu_seconds(proc.pid) or 0.0) < 0.1:
                pass
        assert (rss_mb(proc.pid) or 0) > 1
        spent = sampler.between(sampler.samples[0][0], sampler.samples[-1][0])
        assert spent["busy"] >= 0.05
        assert spent["_seconds"] > 0
    finally:
        proc.kill()
        proc.wait()
    assert cpu_seconds(proc.pid) is None
    assert rss_mb(proc.pid) is None


@pytest.mark.unit
def test_a_swarm_is_split_into_processes_that_select_can_serve() -> None:
    assert split(12) == [(0, 12)]
    parts = split(1000)
    assert len(parts) == 4
    assert all(count <= SENSORS_PER_PROCESS for _, count in parts)
    assert sum(count for _, count in parts) == 1000
    assert [first for first, _ in parts] == [0, 250, 500, 750]
    assert SENSORS_PER_PROCESS * 3 < 1000  # three descriptors per paho client, select() takes < 1024


@pytest.mark.unit
def test_latency_summary_and_settings_are_checked() -> None:
    summary = latency_summary([float(x) for x in range(1, 101)], deadline_ms=90)
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["within_deadline"] == 0.9
    assert latency_summary([], 500)["p99_ms"] is None
    with pytest.raises(ValueError, match="swarm sizes"):
        ScaleSettings(swarm=(0,))
    with pytest.raises(ValueError, match="swarm_seconds"):
        ScaleSettings(swarm_seconds=1)


@pytest.mark.broker
@pytest.mark.slow
def test_bench_scale_measures_every_part_as_a_user_runs_it(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    done = subprocess.run([str(NAIRBUS), "bench", "scale", "--frames", "40", "--fps", "20", "--swarm", "12",
                           "--swarm-fps", "2", "--swarm-seconds", "5", "--overload-sensors", "10",
                           "--overload-fps", "20", "--fleet-sensors", "12", "--report", str(report),
                           "--run-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    loaded = load_report(report)
    assert isinstance(loaded, ScaleReport)
    assert [p.cap for p in loaded.pipeline] == [None, 300] == [b.cap for b in loaded.bus]
    for p in loaded.pipeline:
        assert p.decided_one_at_a_time == p.decided_batched == 40
        assert 0 < p.batched_ms.total <= p.one_at_a_time_ms.total * 1.5
    assert loaded.pipeline[1].payload_bytes_per_frame < 300 < loaded.pipeline[0].payload_bytes_per_frame
    for b in loaded.bus:
        assert b.decided == b.frames_sent == 80
        assert b.cpu_ms_per_frame.fusion > 0
        assert b.cpu_ms_per_frame.sensors > 0
        assert b.ratio_to_one_at_a_time > 0.5
    (swarm,) = loaded.swarm
    assert swarm.sensors == swarm.sensors_known == 12
    assert swarm.frames_sent >= 100
    assert swarm.decided == swarm.frames_sent
    assert swarm.latency.p99_ms is not None
    assert "--swarm 12" in loaded.command
    fleet = loaded.fleet
    assert fleet is not None
    assert fleet.agents == 2
    assert fleet.decided == fleet.frames_sent
    assert fleet.decided_twice == 0
    assert set(fleet.decided_by_agent) == {"fusion-1", "fusion-2"}
    assert sum(fleet.decided_by_agent.values()) == fleet.decided
    overload = loaded.overload
    assert overload is not None
    assert overload.fusion_args == ["--shed-late"]
    assert overload.offered_fps > 100
    assert overload.decided + overload.shed <= overload.frames_sent
    assert overload.latency.p99_ms is not None
    assert overload.latency.p99_ms <= loaded.deadline_ms  # what it decides is on time
    assert json.loads(report.read_text())["shared_machine"]
