"""`nairbus bench files`: its settings and command line, and a tiny run of every scenario end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.agents.tools.filebench import SCENARIOS, FileBenchSettings, command_line


def test_settings_refuse_unknown_scenarios_and_empty_counts() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        FileBenchSettings(scenarios=("oneshot", "nope"))
    with pytest.raises(ValueError, match="at least 1"):
        FileBenchSettings(files=0)
    with pytest.raises(ValueError, match="runtime"):
        FileBenchSettings(runtime="tflite")


def test_the_command_line_names_what_differs_from_the_defaults() -> None:
    assert command_line(FileBenchSettings()) == "nairbus bench files"
    assert command_line(FileBenchSettings(own_model=False)) == "nairbus bench files --no-own-model"
    assert command_line(FileBenchSettings(files=20, write_s=0.5, scenarios=("oneshot",))) == \
        "nairbus bench files --files 20 --write-s 0.5 --scenario oneshot"
    light = FileBenchSettings(scenarios=("oneshot",), runtime="onnx", report=Path("reports/files-light.json"))
    assert command_line(light) == \
        "nairbus bench files --scenario oneshot --runtime onnx --report reports/files-light.json"


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(600)
def test_a_tiny_run_of_every_scenario(tmp_path: Path) -> None:
    report = tmp_path / "files.json"
    done = subprocess.run(
        [sys.executable, "-m", "nairbus.agents.cli", "bench", "files", "--model", "base", "--no-own-model", "--files",
         "24", "--burst",
         "12", "--slow-files", "4", "--write-s", "0.6", "--live-frames", "15", "--replay-frames", "40", "--hogs", "1",
         "--report", str(report), "--run-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=580, check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert set(SCENARIOS) <= set(result)
    oneshot = result["oneshot"]
    assert oneshot["decided"] == oneshot["files"] == 24
    assert oneshot["named_right"] == 24
    assert oneshot["sensor"]["frames_skipped"] == 0
    assert result["watch_burst"]["decided"] == 12
    assert result["slow_writes"]["decided"] == 4
    assert result["slow_writes"]["files_refused"] == 0
    assert result["qos1_replay"]["received_qos1"] == result["qos1_replay"]["sensor"]["frames_sent"]
    for run in ("quiet", "busy"):
        assert result["live"][run]["sensor"]["frames"] == 15
        assert "skipped_link" not in result["live"][run]["skipped"]
