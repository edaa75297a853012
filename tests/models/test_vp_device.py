"""A VP variant as a sensor's device runs it (:mod:`nairbus.models.vp.device`): the torch weights or the exported
whole variant in ONNX Runtime give the same votes, and what does not belong together is refused in words."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nairbus.models.data.registry import load_data
from nairbus.models.store import WEIGHTS_DIR
from nairbus.models.vp.device import family_directory, load_device_variant, softmax
from nairbus.models.vp.fusion import topk
from nairbus.models.vp.manifest import FamilyManifest, family_manifest_path

FRAMES = 300


def test_numpy_softmax_is_torchs_to_float32_rounding() -> None:
    logits = torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 8
    ours = softmax(logits.numpy())
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, torch.softmax(logits, dim=1).numpy(), rtol=0, atol=1e-6)
    assert np.allclose(softmax(np.array([[1e4, 0.0]], dtype=np.float32)), [[1.0, 0.0]])  # no overflow


def test_the_family_is_found_where_models_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAIRBUS_MODEL_DIR", str(tmp_path))
    assert family_directory() == WEIGHTS_DIR  # a model folder without a family: the shipped one
    shutil.copyfile(family_manifest_path(WEIGHTS_DIR), family_manifest_path(tmp_path))
    assert family_directory() == tmp_path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One variant of the shipped family exported (``export-onnx --variants`` writes each like this) into a folder
    with the family manifest: (the folder, the variant's name)."""
    from nairbus.models.export.onnx import export_sensor_parts

    out = tmp_path_factory.mktemp("vp-onnx")
    entry = FamilyManifest.load(WEIGHTS_DIR).variants[-1]
    export_sensor_parts(entry.weights_name, out)
    shutil.copyfile(family_manifest_path(WEIGHTS_DIR), family_manifest_path(out))
    return out, entry.name


@pytest.mark.slow  # an export: a few seconds
def test_the_exported_variant_votes_as_its_weights_do(exported: tuple[Path, str]) -> None:
    folder, name = exported
    light = load_device_variant("onnx", name, folder)
    reference = load_device_variant("torch", name)
    assert (light.runtime, reference.runtime) == ("onnx", "torch")
    assert (light.name, light.weight, light.manifest.sha256) == (reference.name, reference.weight,
                                                                 reference.manifest.sha256)
    from nairbus.models.export.parts import read_parts

    entry = next(v for v in FamilyManifest.load(folder).variants if v.name == name)
    record = read_parts(folder / f"{entry.weights_name}.onnx.json")
    assert (light.part_hashes, reference.part_hashes) == ((record.parts["whole"].sha256,), ())  # what a birth names
    images = light.spec.convert(load_data("test").images[:FRAMES])
    ours, theirs = light.probs(images), reference.probs(images)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert np.array_equal(topk(ours, 5)[0], topk(theirs, 5)[0])  # the same classes, in the same order


@pytest.mark.slow
def test_what_does_not_belong_together_is_refused(exported: tuple[Path, str], tmp_path: Path) -> None:
    folder, name = exported
    with pytest.raises(ValueError, match="unknown variant 'nope'; the family has"):
        load_device_variant("onnx", "nope", folder)
    with pytest.raises(ValueError, match="unknown runtime"):
        load_device_variant("tflite", name, folder)  # type: ignore[arg-type]
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights_name = FamilyManifest.load(folder).variant(name).weights_name
    (broken / f"{weights_name}.onnx.json").unlink()
    with pytest.raises(FileNotFoundError, match="export-onnx"):
        load_device_variant("onnx", name, broken)
    shutil.copytree(folder, broken, dirs_exist_ok=True)
    part = broken / f"{weights_name}.whole.onnx"
    part.write_bytes(part.read_bytes() + b"\0")  # not the bytes the record names
    with pytest.raises(RuntimeError, match="sha256"):
        load_device_variant("onnx", name, broken)
    family = json.loads(family_manifest_path(folder).read_text())
    family["variants"][-1]["sha256"] = "0" * 64  # the family names other weights than the variant's manifest
    family_manifest_path(broken).write_text(json.dumps(family))
    with pytest.raises(RuntimeError, match="differs from the family"):
        load_device_variant("onnx", name, broken)
