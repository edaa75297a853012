"""What a new user meets first, run as they run it: --version, --broker, help and errors that keep their brackets,
a model factory in the current directory, --list-splits with the IR each point sends, a random file given as a
state dict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.agents.runtime.settings import parse_broker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NAIRBUS = Path(sys.executable).with_name("nairbus")
FACTORY = """import torch.nn as nn


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 14 * 14, 3))
"""
SPEC = 'channels = 1\nheight = 28\nwidth = 28\nmean = [0.5]\nstd = [0.25]\nlabels = ["a", "b", "c"]\n'


def _nairbus(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(NAIRBUS), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=240,
                          env={**os.environ, "COLUMNS": "200"})


def test_version_help_and_errors_keep_their_brackets(tmp_path: Path) -> None:
    version = _nairbus("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("nairbus ")
    helped = _nairbus("sensor", "--help", cwd=tmp_path)
    assert "nairbus[camera]" in helped.stdout
    assert "mqtt://[user@]host[:port]" in " ".join(helped.stdout.split())
    refused = _nairbus("sensor", "--broker", "http://hub", cwd=tmp_path)
    assert refused.returncode == 2
    assert "mqtt:// or mqtts://" in " ".join(refused.stderr.split())


def test_broker_values() -> None:
    assert parse_broker("hub:1884") == {"host": "hub", "port": 1884}
    assert parse_broker("mqtts://hub") == {"host": "hub", "port": 8883, "tls": True}
    assert parse_broker("mqtt://cam-1@10.0.0.2") == {"host": "10.0.0.2", "port": 1883, "username": "cam-1"}
    for bad in ("http://hub", "mqtt://u:secret@hub", "hub:0x", "mqtt://hub/path", ""):
        with pytest.raises(ValueError, match="broker"):
            parse_broker(bad)


def test_a_factory_in_the_current_directory_and_the_splits_it_offers(tmp_path: Path) -> None:
    (tmp_path / "mymodel.py").write_text(FACTORY)
    (tmp_path / "spec.toml").write_text(SPEC)
    subprocess.run([sys.executable, "-c", "import torch, mymodel; torch.save(mymodel.build().state_dict(), 'w.pt')"],
                   cwd=tmp_path, check=True, timeout=120)
    listed = _nairbus("import-model", "w.pt", "--factory", "mymodel:build", "--name", "mine", "--spec", "spec.toml",
                      "--list-splits", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1:] for line in listed.stderr.splitlines()[2:] if line.strip()}
    assert rows["0"] == ["4x28x28", "3136"]  # the conv's output: 4 channels of 28 x 28
    assert rows["2"] == ["4x14x14", "784"]  # after the pooling

    (tmp_path / "random.pt").write_bytes(os.urandom(5000))
    refused = _nairbus("import-model", "random.pt", "--factory", "mymodel:build", "--name", "mine", "--spec",
                       "spec.toml", "--split-at", "2", cwd=tmp_path)
    assert refused.returncode == 2
    assert "is not a PyTorch checkpoint" in " ".join(refused.stderr.split())
    assert "Traceback" not in refused.stderr
    done = _nairbus("import-model", "w.pt", "--factory", "mymodel:build", "--name", "mine", "--spec", "spec.toml",
                    "--split-at", "2", "--out-dir", "models", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "models" / "mine.json").is_file()
