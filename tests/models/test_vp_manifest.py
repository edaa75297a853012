"""The variant family's manifest as a typed model: the committed one validates, it is read without torch, a manifest
that drifts from the model is refused naming the field, and the kept epoch is found in the selection history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from nairbus.models.vp.manifest import FamilyManifest, family_manifest_path


def test_the_committed_manifest_validates_and_names_its_variants() -> None:
    family = FamilyManifest.load()
    assert family.names() == tuple(v.weights_name.removeprefix("variants-") for v in family.variants)
    assert family.variant(family.names()[0]).sha256 == family.variants[0].sha256
    assert 1 <= family.k <= len(family.labels)
    with pytest.raises(KeyError, match="the family has"):
        family.variant("nope")
    assert family.selection is not None
    kept = family.selection.kept()
    assert kept is not None
    assert kept.epochs == family.selection.kept_epochs


def test_the_manifest_is_read_without_torch() -> None:
    code = ("import sys; from nairbus.models.vp.manifest import FamilyManifest; FamilyManifest.load(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_drifting_or_missing_manifest_is_refused_clearly(tmp_path: Path) -> None:
    data = json.loads(family_manifest_path().read_text())
    data["variants"][0]["surprise"] = 1
    family_manifest_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(ValidationError, match="surprise"):
        FamilyManifest.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="nairbus train variants"):
        FamilyManifest.load(tmp_path / "empty")
