"""The code base stays clean under the project's ruff rules and strict mypy (both configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", "--output-format", "concise", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    # The packages under their installed names (nairbus.agents, ...): a tree of links to the repository's folders.
    (tmp_path / "nairbus").mkdir()
    for package in ("agents", "models", "schemas", "broker"):
        (tmp_path / "nairbus" / package).symlink_to(REPO / package, target_is_directory=True)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "-p", "nairbus.agents", "-p", "nairbus.models", "-p", "nairbus.schemas"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues found" in done.stdout
