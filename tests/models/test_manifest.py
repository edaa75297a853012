"""Every manifest is validated when read: a broken one is a clear error naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nairbus.models.store import WEIGHTS_DIR, read_manifest


@pytest.mark.parametrize("name", ["base", "taildrop", "mobilenet", "variants-w44r28"])
def test_every_shipped_manifest_is_valid(name: str) -> None:
    assert read_manifest(name).name == name


@pytest.mark.parametrize(("change", "message"), [
    ({"sha256": "abc"}, "sha256"),
    ({"weights_file": "../elsewhere.pt"}, "beside the manifest"),
    ({"default_split": "stage9"}, "default_split"),
    ({"split_points": []}, "split_points"),
    ({"test_accuracy": 1.5}, "test_accuracy"),
])
def test_a_broken_manifest_is_refused_with_the_field(tmp_path: Path, change: dict[str, object], message: str) -> None:
    manifest = {**json.loads((WEIGHTS_DIR / "base.json").read_text()), **change}
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=message):
        read_manifest("m", tmp_path)
