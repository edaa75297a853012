"""The package owns its names: every folder of agents/, models/, schemas/ and broker/ with an ``__init__.py`` is
listed in ``pyproject.toml`` under its ``nairbus.`` name (a folder left out would be missing from a non-editable
install), and nothing is installed as a top-level ``agents``, ``models``, ``schemas`` or ``broker``."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("agents", "models", "schemas", "broker")
DATA = {"nairbus.broker.scripts", "nairbus.models.experiments", "nairbus.models.weights", "nairbus.schemas.json"}
"""Folders of data files, listed so that setuptools installs them without warning that it was not told of them."""


def _config() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["setuptools"]  # type: ignore[no-any-return]


def test_every_package_folder_is_listed_under_nairbus() -> None:
    folders = {"nairbus." + ".".join(p.parent.relative_to(REPO).parts)
               for top in FOLDERS for p in (REPO / top).rglob("__init__.py")}
    assert set(_config()["packages"]) == folders | DATA  # type: ignore[arg-type]
    for name in DATA:
        folder = REPO.joinpath(*name.split(".")[1:])
        assert folder.is_dir()
        assert not list(folder.glob("*.py"))


def test_each_folder_maps_to_its_nairbus_name_and_nothing_is_top_level() -> None:
    config = _config()
    assert config["package-dir"] == {f"nairbus.{top}": top for top in FOLDERS}
    assert all(name.startswith("nairbus.") for name in config["packages"])  # type: ignore[attr-defined]


def test_the_installed_modules_are_the_nairbus_ones() -> None:
    import nairbus.agents.cli
    import nairbus.models.store
    import nairbus.schemas

    for module, folder in ((nairbus.agents.cli, "agents"), (nairbus.models.store, "models"),
                           (nairbus.schemas, "schemas")):
        assert module.__name__.startswith(f"nairbus.{folder}")
