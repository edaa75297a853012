"""The committed JSON Schema files are current, and check_current notices stale, missing and stray files."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.export import JSON_SCHEMA_DIR, check_current, export_json_schemas, main
from schemas.messages import MESSAGE_TYPES


def test_committed_schemas_are_current() -> None:
    stale = check_current()
    assert stale == [], f"JSON schemas out of date: {stale}; run `python -m schemas.export`"


def test_one_file_per_kind() -> None:
    names = sorted(p.name for p in JSON_SCHEMA_DIR.glob("*.schema.json"))
    assert names == sorted(f"{kind}.schema.json" for kind in MESSAGE_TYPES)
    for name in names:
        text = (JSON_SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert text.endswith("}\n")
        schema = json.loads(text)
        assert schema["additionalProperties"] is False
        assert schema["properties"]["v"]["const"] == 1


def test_check_current_reports_problems(tmp_path: Path) -> None:
    assert len(check_current(tmp_path)) == len(MESSAGE_TYPES)  # all missing
    written = export_json_schemas(tmp_path / "out")
    assert len(written) == len(MESSAGE_TYPES)
    directory = tmp_path / "out"
    assert check_current(directory) == []
    (directory / "frag.schema.json").write_text("{}\n", encoding="utf-8")
    (directory / "status.schema.json").unlink()
    (directory / "old.schema.json").write_text("{}\n", encoding="utf-8")
    assert check_current(directory) == ["frag.schema.json", "status.schema.json", "old.schema.json"]


def test_cli(tmp_path: Path) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    assert main(["--bogus"]) == 2
