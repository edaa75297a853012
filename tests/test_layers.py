"""The stack the imports keep (tests/layers.py): no import goes up or sideways between layers, no cycle; and the
check itself fails when a forbidden import is added."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.layers import PACKAGES, cycles, layer_of, violations

REPO = Path(__file__).resolve().parents[1]


def test_no_import_goes_up_or_sideways() -> None:
    assert violations(REPO) == []


def test_no_import_cycles() -> None:
    assert cycles(REPO) == []


def test_an_untouched_copy_passes(tree: Path) -> None:
    assert violations(tree) == []
    assert cycles(tree) == []


def test_every_module_has_a_layer() -> None:
    modules = [p.relative_to(REPO) for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    assert [m for m in modules if layer_of(".".join(m.with_suffix("").parts)) is None] == []


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    return tmp_path


def _add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


FORBIDDEN = [
    ("agents/runtime/agent.py", "from nairbus.agents.nair.sensor import SensorAgent",
     "agents.runtime may not import agents.nair"),
    ("agents/runtime/pacing.py", "import nairbus.agents.sources.folder",
     "agents.runtime may not import agents.sources"),
    ("agents/runtime/fusion_base.py", "from nairbus.agents.home import discovery",
     "agents.runtime may not import agents.home"),
    ("agents/vp/common.py", "from nairbus.agents.nair.outgoing import bit_bands",
     "agents.vp may not import agents.nair"),
    ("agents/sources/folder.py", "from nairbus.agents.home.entities import LABELS",
     "agents.sources may not import agents.home"),
    ("agents/nair/allocation.py", "from nairbus.agents.tools import wire_eval",
     "agents.nair may not import agents.tools"),
    ("models/store.py", "from nairbus.agents.runtime.mqtt import Communicator", "models may not import agents.runtime"),
    ("models/store.py", "import paho.mqtt.client", "models may not use paho"),
    ("schemas/wire.py", "import torch", "schemas may not use torch"),
    ("schemas/ids.py", "from nairbus.models.store import WEIGHTS_DIR", "schemas may not import models"),
]
"""(file, the import added to it, what the check must say)."""


@pytest.mark.parametrize(("module", "line", "expected"), FORBIDDEN)
def test_the_check_fails_on_a_forbidden_import(tree: Path, module: str, line: str, expected: str) -> None:
    _add_line(tree / module, line)
    found = violations(tree)
    assert len(found) == 1
    assert expected in found[0]


def test_the_check_finds_a_cycle_inside_a_layer(tree: Path) -> None:
    _add_line(tree / "agents/runtime/logging.py", "from nairbus.agents.runtime.mqtt import Communicator")
    assert any("agents.runtime.logging" in group and "agents.runtime.mqtt" in group for group in cycles(tree))
