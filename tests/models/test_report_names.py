"""Report names and recorded ``--model`` options come from the model (``models/zoo.py``): the shipped default model
keeps the plain names and an empty option, exactly the committed reports' names and commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nairbus.models.zoo import BASE_NAME, is_default_model, model_option, report_path

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("kind", "model", "path"), [
    ("nair", "base", "reports/nair.json"),
    ("images", "base", "reports/images.json"),
    ("wire", "base", "reports/wire.json"),
    ("nair", "mobilenet", "reports/nair-mobilenet.json"),
    ("images", "mobilenet", "reports/images-mobilenet.json"),
    ("images", "cam-v2", "reports/images-cam-v2.json"),
])
def test_report_path(kind: str, model: str, path: str) -> None:
    assert report_path(kind, model) == Path(path)


def test_model_option() -> None:
    assert BASE_NAME == "base"
    assert is_default_model("base")
    assert not is_default_model("mobilenet")
    assert model_option("base") == ""
    assert model_option("mobilenet") == " --model mobilenet"
    assert "nairbus evaluate wire" + model_option("mobilenet") == "nairbus evaluate wire --model mobilenet"


@pytest.mark.parametrize(("kind", "model"), [("nair", "base"), ("images", "base"), ("nair", "mobilenet"),
                                             ("images", "mobilenet")])
def test_the_committed_reports_have_these_names_and_commands(kind: str, model: str) -> None:
    report = json.loads((REPO / report_path(kind, model)).read_text())
    command = report["command"]
    assert command.startswith(f"nairbus evaluate {kind}" + model_option(model))
    assert ("--model" in command) == (not is_default_model(model))
