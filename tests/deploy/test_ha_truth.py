"""The pure parts of ``deploy/homeassistant/ha_truth.py`` (the real-Home-Assistant run itself is in
``test_home_assistant.py``): the still picture its camera publishes, the reading of Home Assistant's database (bytes
in use per table, the recorder's horizon) and the timing of a state."""

from __future__ import annotations

import importlib.util
import io
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "homeassistant" / "ha_truth.py"


@pytest.fixture(scope="module")
def truth() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nairbus_ha_truth", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_still_picture_is_a_valid_grey_png(truth: ModuleType) -> None:
    image = Image.open(io.BytesIO(truth.still_png()))
    image.load()
    assert (image.size, image.mode) == ((28, 28), "L")
    assert image.getextrema() == (0, 200)


def test_database_growth_counts_the_rows_written_between_two_readings(truth: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "home-assistant_v2.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE states (state_id INTEGER PRIMARY KEY, state TEXT, last_updated_ts REAL)")
    con.execute("CREATE INDEX ix_states_last_updated_ts ON states (last_updated_ts)")
    con.commit()
    assert truth.db_horizon(db) == 0.0
    before = truth.db_usage(db)
    con.executemany("INSERT INTO states (state, last_updated_ts) VALUES (?, ?)",
                    [(f"label-{i % 7}", 100.0 + i) for i in range(2000)])
    con.commit()
    after = truth.db_usage(db)
    grown = truth.growth(before, after)
    assert grown["_total"] == sum(v for k, v in grown.items() if k != "_total")
    assert set(grown) == {"_total", "states", "ix_states_last_updated_ts"}
    assert 2000 * 10 < grown["states"] < 2000 * 40  # ~20 B a row: the bytes in use, not whole pages
    assert truth.db_horizon(db) == 2099.0
    assert truth.growth(after, after) == {}
    con.close()


def test_the_first_matching_state_after_a_moment(truth: ModuleType) -> None:
    rows = [(1.0, "cat"), (5.0, "unavailable"), (9.0, "dog"), (12.0, "unknown")]
    assert truth.first_state_after(rows, 2.0, {"unknown", "unavailable"}) == 5.0
    assert truth.first_state_after(rows, 6.0, {"unknown", "unavailable"}) == 12.0
    assert truth.first_state_after(rows, 13.0, {"unknown"}) is None
