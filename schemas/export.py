"""Export the JSON Schema of every message to ``schemas/json/<kind>.schema.json``.

Regenerate after changing a model with ``python -m nairbus.schemas.export``;
``python -m nairbus.schemas.export --check`` exits 1 if the committed files are stale (the tests check the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Final

from nairbus.schemas.messages import MESSAGE_TYPES

__all__ = ["JSON_SCHEMA_DIR", "check_current", "export_json_schemas", "main", "render_schemas"]

JSON_SCHEMA_DIR: Final = Path(__file__).resolve().parent / "json"
"""Where the committed schema files live (``schemas/json``)."""
_SUFFIX: Final = ".schema.json"


def render_schemas() -> dict[str, str]:
    """File name to file text (sorted keys, two-space indent, trailing newline) for every message kind."""
    return {
        f"{kind}{_SUFFIX}": json.dumps(cls.model_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for kind, cls in sorted(MESSAGE_TYPES.items())
    }


def export_json_schemas(directory: Path = JSON_SCHEMA_DIR) -> list[Path]:
    """Write every message's schema into ``directory`` (created if needed); return the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_current(directory: Path = JSON_SCHEMA_DIR) -> list[str]:
    """File names in ``directory`` that are missing, stale, or schema files of no message kind; ``[]`` if current."""
    expected = render_schemas()
    problems = []
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            problems.append(name)
    if directory.is_dir():
        problems.extend(sorted(p.name for p in directory.glob(f"*{_SUFFIX}") if p.name not in expected))
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m nairbus.schemas.export [--check] [DIRECTORY]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    rest = [a for a in args if a != "--check"]
    if len(rest) > 1 or any(a.startswith("-") for a in rest):
        print("usage: python -m nairbus.schemas.export [--check] [DIRECTORY]", file=sys.stderr)
        return 2
    directory = Path(rest[0]) if rest else JSON_SCHEMA_DIR
    if check:
        stale = check_current(directory)
        for name in stale:
            print(f"stale: {directory / name}", file=sys.stderr)
        return 1 if stale else 0
    for path in export_json_schemas(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
