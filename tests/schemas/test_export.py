"""The committed JSON Schema files are current, and check_current notices stale, missing and stray files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nairbus.schemas.export import JSON_SCHEMA_DIR, check_current, export_json_schemas, main
from nairbus.schemas.messages import LEAN_VERSION, MESSAGE_TYPES, SCHEMA_VERSION


def test_committed_schemas_are_current() -> None:
    stale = check_current()
    assert stale == [], f"JSON schemas out of date: {stale}; run `python -m nairbus.schemas.export`"


def test_one_file_per_kind() -> None:
    names = sorted(p.name for p in JSON_SCHEMA_DIR.glob("*.schema.json"))
    assert names == sorted(f"{kind}.schema.json" for kind in MESSAGE_TYPES)
    for name in names:
        text = (JSON_SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert text.endswith("}\n")
        schema = json.loads(text)
        assert schema["additionalProperties"] is False
        kind = name.removesuffix(".schema.json")
        assert schema["properties"]["kind"]["const"] == kind
        assert schema["properties"]["v"]["const"] == (LEAN_VERSION if kind in ("frag", "topk", "image") else
                                                      SCHEMA_VERSION)


def load(kind: str) -> dict[str, Any]:
    return json.loads((JSON_SCHEMA_DIR / f"{kind}.schema.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_lean_schemas_describe_the_new_fields() -> None:
    frag = load("frag")
    assert {"frame_end", "start", "end", "data"} <= set(frag["required"])
    assert not {"index", "bits", "frame_fragments"} & set(frag["properties"])
    image = load("image")
    assert image["properties"]["codec"]["minimum"] == 0
    assert image["properties"]["codec"]["exclusiveMaximum"] == 64
    assert {"codec", "data"} <= set(image["required"])


def test_birth_schema_describes_the_new_fields() -> None:
    birth = load("birth")
    assert {"epoch_ts", "expiry_ms"} <= set(birth["required"])
    assert birth["properties"]["mode"]["enum"] == ["nair", "vp", "image", "auto", "decision"]
    assert {"BitBand", "DecisionBirth", "ImageBirth", "NairBirth"} <= set(birth["$defs"])
    assert "FragmentSpan" not in birth["$defs"]
    nair = birth["$defs"]["NairBirth"]
    assert "bit_bands" in nair["required"]
    assert not {"bits", "fragments"} & set(nair["properties"])
    assert birth["properties"]["expiry_ms"]["maximum"] == 86_400_000


def test_result_schema_describes_the_new_fields() -> None:
    result = load("result")
    for name in ("representation", "components_received", "codec", "wire_bytes"):
        assert name in result["properties"]
        assert name not in result.get("required", [])
    assert result["properties"]["representation"]["enum"] == ["nair", "image", "vp", "decision"]


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
