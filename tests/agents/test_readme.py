"""The README's figures are exactly what ``nairbus readme`` renders from the committed reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nairbus.agents.tools.readme import render, stale

REPORTS = Path(__file__).resolve().parents[2] / "reports"


def _committed(name: str) -> dict:
    """A committed report, as the base of a test's own (the models refuse a report with fields missing)."""
    return json.loads((REPORTS / name).read_text())


def test_committed_documents_match_the_committed_reports() -> None:
    assert stale() == [], "run 'nairbus readme'"


def test_blocks_are_rendered_from_the_report_and_missing_reports_say_how_to_make_them(tmp_path: Path) -> None:
    text = "x\n<!-- nairbus:demo -->\nold\n<!-- /nairbus:demo -->\n<!-- nairbus:nair -->\n<!-- /nairbus:nair -->\n" \
           "<!-- nairbus:vp -->\n<!-- /nairbus:vp -->\n"
    committed = _committed("demo.json")
    demo = {**committed, "command": "nairbus demo", "wall_seconds": 123.4,
            "budgets": [{**committed["budgets"][0], "budget": 0.1, "fraction_received": 0.1, "bytes_per_frame": 1254.0,
                         "wire_bytes_per_frame": 1281.0, "live_accuracy": 0.93125, "offline_accuracy": 0.93125,
                         "p50_ms": 4.0, "p99_ms": 9.5, "fps": 240.0}]}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    out = render(text, tmp_path, ("demo", "nair", "vp"))
    assert "old" not in out
    assert "| 10% | 10.0 % | 1254 | 1281 | 93.12 % | 93.12 % | 4.0 | 9.5 | 240 |" in out
    assert "run `nairbus evaluate nair`" in out
    assert "run `nairbus train variants`" in out
    assert render(out, tmp_path, ("demo", "nair", "vp")) == out


def test_a_readme_without_the_markers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nairbus:demo"):
        render("no markers here\n", tmp_path)


def test_vp_blocks_render_every_variant_and_probability(tmp_path: Path) -> None:
    committed = {k: v for k, v in _committed("vp.json").items() if k not in ("evidence", "fusion_rule_on_validation")}
    row = {"params": 57457, "macs": 5923680, "params_ratio": 0.195, "macs_ratio": 0.199, "accuracy": 0.91,
           "fusion_weight": 1.0, "width_multiplier": 0.44, "resolution": 28, "widths": [11, 28, 56],
           "blocks": [1, 1, 1], "sha256": "0" * 64}
    vp = {**committed, "command": "nairbus evaluate vp", "frames": 10000, "k": 5,
          "base": {**committed["base"], "name": "base", "params": 294770, "macs": 29774464, "accuracy": 0.9361},
          "variants": {"a": row, "b": {**row, "accuracy": 0.9}},
          "ensemble": {**committed["ensemble"], "accuracy": 0.94, "one_lost": {"a": 0.93, "b": 0.935},
                       "max_drop_one_lost": 0.01, "total_params": 114914, "total_macs": 11847360},
          "availability": {"devices": 2, "trials": 1000, "note": "no answer counts as wrong",
                           "rows": [{"p": 0.1, "vp_closed": 0.99, "vp_simulated": 0.989, "mp_closed": 0.81,
                                     "mp_simulated": 0.812, "vp_accuracy_closed": 0.93, "vp_accuracy_simulated": 0.931,
                                     "mp_accuracy_closed": 0.758, "mp_accuracy_simulated": 0.76}]},
          "payload": {"variants": 2, "raw_image_bytes": 784, "zlib_image_bytes_mean": 470.2, "nair": {"10 %": 1254.0},
                      "topk": {"5": {"numbers": 10, "data_bytes_per_frame": 80, "message_bytes_per_frame": 250}}}}
    (tmp_path / "vp.json").write_text(json.dumps(vp))
    text = "".join(f"<!-- nairbus:{n} -->\n<!-- /nairbus:{n} -->\n"
                   for n in ("vp", "vp-family", "vp-availability", "vp-payload", "vp-live"))
    out = render(text, tmp_path, required=())
    assert "| variant `b` | 57 457 | 5 923 680 | 0.195 | 0.199 | 90.00 % |" in out
    assert "without `a` 93.00 %" in out
    assert "largest drop 1.00 points" in out
    assert "| 0.1 | 99.00 % / 98.90 % | 81.00 % / 81.20 % |" in out
    assert "| 5 | 10 | 80 | 250 |" in out
    assert "10 % 1254 B" in out
    assert "run `nairbus demo`" in out  # no demo.json: the live block says how to make it


def test_the_nair_versus_image_block_names_the_split_share_and_verdict() -> None:
    from nairbus.agents.tools.readme import map_nair_vs_image_block
    from nairbus.models.evaluation.reports import MapReport

    without = {k: v for k, v in _committed("map.json").items() if k != "nair_vs_image"}
    assert map_nair_vs_image_block(MapReport.model_validate(without)) is None
    test = {"image": "grey+zstd", "mcnemar_p": 0.5, "discordant": [10, 12]}
    report = MapReport.model_validate({**without, "command": "nairbus evaluate map", "nair_vs_image": [
        {"name": "nair-stage2-coded", "split": "stage2", "mac_share": 0.622472, "caps": [
            {"cap_bytes": 200, "nair_test_accuracy": 0.915, "image_test_accuracy": 0.91, "margin_test": 0.005,
             "verdict": "inside the noise", **test},
            {"cap_bytes": 100, "nair_test_accuracy": 0.8, "image_test_accuracy": 0.836, "margin_test": -0.036,
             "verdict": "image better", **test}]}]})
    text = map_nair_vs_image_block(report)
    assert text is not None
    assert "nair-stage2-coded (62.2 %)" in text
    assert "91.5 % vs 91.0 % (+0.5, noise)" in text
    assert "(−3.6)" in text
