"""The README's figures are exactly what ``nairbus readme`` renders from the committed reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.readme import render, stale


def test_committed_documents_match_the_committed_reports() -> None:
    assert stale() == [], "run 'nairbus readme'"


def test_blocks_are_rendered_from_the_report_and_missing_reports_say_how_to_make_them(tmp_path: Path) -> None:
    text = "x\n<!-- nairbus:demo -->\nold\n<!-- /nairbus:demo -->\n<!-- nairbus:nair -->\n<!-- /nairbus:nair -->\n" \
           "<!-- nairbus:vp -->\n<!-- /nairbus:vp -->\n"
    demo = {"command": "nairbus demo", "wall_seconds": 123.4, "model": {"name": "base"},
            "artifact": {"ir_bytes": 12544},
            "budgets": [{"budget": 0.1, "fraction_received": 0.1, "bytes_per_frame": 1254.0, "live_accuracy": 0.93125,
                         "offline_accuracy": 0.93125, "p50_ms": 4.0, "p99_ms": 9.5, "fps": 240.0}]}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    out = render(text, tmp_path)
    assert "old" not in out
    assert "| 10% | 10.0 % | 1254 | 93.12 % | 93.12 % | 4.0 | 9.5 | 240 |" in out
    assert "run `nairbus evaluate nair`" in out and "run `nairbus train variants`" in out
    assert render(out, tmp_path) == out


def test_a_readme_without_the_markers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nairbus:demo"):
        render("no markers here\n", tmp_path)
