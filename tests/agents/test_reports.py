"""Every committed report matches its typed model, and a report that drifts from its model is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from nairbus.agents.tools.reports import REPORTS, DemoReport, LinkReport, load_report, model_for, report_json
from nairbus.models.evaluation.reports import McNemarTest, NairReport, ReportModel, write_report

REPORTS_DIR = Path(__file__).resolve().parents[2] / "reports"
COMMITTED = sorted(REPORTS_DIR.glob("*.json")) + sorted((REPORTS_DIR / "next").glob("*.json"))
"""The shipped reports and those remade from the staged retrained base (``reports/next``, issue 30's swap)."""


def _same(a: object, b: object) -> bool:
    """Equal JSON values, NaN equal to NaN, an int never equal to a float (a figure must come back as written)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_every_committed_report_has_a_model() -> None:
    assert COMMITTED, "no committed reports"
    for path in COMMITTED:
        assert issubclass(model_for(path), ReportModel), path.name


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPORTS_DIR)))
def test_a_committed_report_validates_and_keeps_every_figure(path: Path) -> None:
    report = load_report(path)
    assert isinstance(report, model_for(path))
    assert _same(json.loads(report_json(report)), json.loads(path.read_text())), \
        f"{path.name}: its model loses or changes a field"


def test_an_unknown_report_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match=r"no report model for 'mystery\.json'"):
        model_for(tmp_path / "mystery.json")
    assert {pattern for pattern, _model in REPORTS} >= {"demo*.json", "link*.json", "nair*.json", "map*.json"}


def test_a_report_with_an_extra_field_is_refused() -> None:
    data = json.loads((REPORTS_DIR / "demo.json").read_text())
    data["budgets"][0]["surprise"] = 1
    with pytest.raises(ValidationError, match=r"budgets\.0\.surprise\n  Extra inputs are not permitted"):
        DemoReport.model_validate(data)


def test_a_report_with_a_missing_field_is_refused() -> None:
    data = json.loads((REPORTS_DIR / "nair.json").read_text())
    del data["bars"]["nair_share_of_mature_at_10pct"]
    with pytest.raises(ValidationError, match=r"bars\.nair_share_of_mature_at_10pct\n  Field required"):
        NairReport.model_validate(data)


def test_a_report_of_the_wrong_type_is_refused_on_load(tmp_path: Path) -> None:
    data = json.loads((REPORTS_DIR / "link-decision.json").read_text())
    data["runs"][0]["fps"] = "fast"
    (tmp_path / "link.json").write_text(json.dumps(data))
    with pytest.raises(ValidationError, match=r"runs\.0\.fps"):
        load_report(tmp_path / "link.json")


def test_a_writer_validates_before_it_writes(tmp_path: Path) -> None:
    data = json.loads((REPORTS_DIR / "link-decision.json").read_text())
    path = tmp_path / "reports" / "link.json"
    settings = data["settings"]
    write_report(path, LinkReport.from_data({**data, "settings": {**settings, "fps": (30.0, 10.0)}}))
    assert load_report(path) == LinkReport.model_validate({**data, "settings": {**settings, "fps": [30.0, 10.0]}})
    with pytest.raises(ValidationError, match="complete"):
        LinkReport.from_data({k: v for k, v in data.items() if k != "complete"})


def test_a_mcnemar_row_takes_only_its_discordant_counts() -> None:
    row = {"a": "nair", "b": "mature", "frames": 10, "only_nair_correct": 1, "only_mature_correct": 2,
           "difference": -0.1, "p_value": 1.0, "within_noise": True, "test": "McNemar"}
    assert McNemarTest.model_validate(row).model_extra == {"only_nair_correct": 1, "only_mature_correct": 2}
    with pytest.raises(ValidationError, match="unexpected fields"):
        McNemarTest.model_validate({**row, "surprise": 1})
