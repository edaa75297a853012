"""The device part of every shipped model, exported to ONNX and run by onnxruntime without torch, gives the torch
sensor's answers.

For each shipped model and each of its split points the head, for each the whole model (the decision mode) and for
each VP variant the whole variant are exported (:mod:`nairbus.models.export.onnx`) and run by the torch-free runner
(:mod:`nairbus.models.export.runtime`) on Fashion-MNIST test frames normalised by numpy: the input is bit-identical
to torch's, the output within float32 rounding of torch's, the decisions (argmax, top-k) the same, and where the split
has a NAIR artifact the quantised codes the sensor sends are compared code by code. The fast tier checks the runner's
import without torch and the numpy normalisation on every pixel value; the export of a tiny model (deterministic
bytes, dynamic batch, metadata, refusals) and the shipped models are slow (seconds per export).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.architectures.split import InputSpec
from nairbus.models.data.registry import load_data
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import NairArtifact
from nairbus.models.store import load_model, read_manifest

pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra (onnxscript, torch's ONNX exporter) is not installed")

from nairbus.models.evaluation.light import artifacts_for, code_differences, compare, shipped_models
from nairbus.models.export.onnx import export_part
from nairbus.models.export.runtime import OnnxRunner, PartMismatchError, normalise

REPO = Path(__file__).resolve().parents[2]
FRAMES = 300
"""Test frames each part is compared on."""
def _parts() -> list[Any]:
    """``(model, split)`` for every split point of every shipped model other than a variant, and ``(model, None)``
    (the whole model) for every shipped model: a variant's sensor runs the whole variant. The parts a shipped sensor
    runs (a split with a shipped NAIR artifact, the whole model, each variant) are in the slow tier; the rest of the
    matrix (about two minutes more) runs in the reproduction tier, CI's second stage."""
    parts: list[Any] = []
    for name in shipped_models():
        if not name.startswith("variants-"):
            parts += [pytest.param(name, split, marks=() if artifacts_for(name, split) else pytest.mark.reproduction)
                      for split in read_manifest(name).split_points]
        parts.append(pytest.param(name, None, marks=() if "taildrop" not in name else pytest.mark.reproduction))
    return parts


@cache
def _model(name: str) -> Any:
    return load_model(name)


@cache
def _frames() -> np.ndarray:
    return load_data("test").images[:FRAMES]


def _tiny() -> ResNet:
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(4, 8, 8), blocks=(1, 1, 1), resolution=24))
    with torch.no_grad():  # batch-norm statistics that are not the identity, so eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


# -- the fast tier ---------------------------------------------------------------------------------------------------
def test_the_runner_imports_without_torch() -> None:
    code = ("import sys, nairbus.models.export.runtime\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pydantic', 'paho'))\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize("spec", [fashion_mnist_spec(), fashion_mnist_spec(channels=3, size=32),
                                  InputSpec(channels=3, height=4, width=4, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25),
                                            labels=("a", "b"))])
def test_numpy_normalisation_is_torch_preprocessing_bit_for_bit(spec: InputSpec) -> None:
    every_value = np.arange(256, dtype=np.uint8).reshape(-1, *[1] * len(spec.pixel_shape))
    noise = np.random.default_rng(0).integers(0, 256, size=(3, *spec.pixel_shape), dtype=np.uint8)
    images = np.concatenate([np.broadcast_to(every_value, (256, *spec.pixel_shape)), noise])
    ours = normalise(images, spec.channels, spec.mean, spec.std)
    assert ours.dtype == np.float32
    assert np.array_equal(ours, spec.preprocess(images).numpy())


@pytest.mark.slow  # two exports: about 9 s
def test_a_tiny_models_head_exports_deterministically_and_runs_any_batch() -> None:
    model = _tiny()
    part = export_part(model, "stage2", model_name="tiny", model_sha256="ab" * 32)
    again = export_part(model, "stage2", model_name="tiny", model_sha256="ab" * 32)
    assert part.sha256 == again.sha256  # the bytes can be named by hash
    runner = OnnxRunner(part.data)
    assert runner.sha256 == part.sha256
    assert (runner.metadata["part"], runner.metadata["split"]) == ("head", "stage2")
    assert (runner.input_spec()["channels"], runner.input_shape) == (1, (1, 28, 28))
    runner.check_model("ab" * 32)
    with pytest.raises(PartMismatchError, match="exported from model"):
        runner.check_model("cd" * 32)
    x = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.head(x, "stage2").numpy()
    for n in (1, 7):
        np.testing.assert_allclose(runner.run(x[:n].numpy()), ref[:n], rtol=1e-5, atol=1e-5)
    # A batch longer than one run goes in chunks (the arena keeps the largest run's activations): bit-identical.
    big = torch.randn(21, 1, 28, 28, generator=torch.Generator().manual_seed(2)).numpy()
    whole_run = OnnxRunner(part.data, max_run=64).run(big)
    assert np.array_equal(OnnxRunner(part.data, max_run=4).run(big), whole_run)
    assert np.array_equal(runner.run(big), whole_run)
    with pytest.raises(ValueError, match="max_run"):
        OnnxRunner(part.data, max_run=0)
    with pytest.raises(PartMismatchError, match="float32"):
        runner.run(x.numpy().astype(np.float64))
    with pytest.raises(PartMismatchError, match="does not fit"):
        runner.run(np.zeros((2, 1, 24, 24), dtype=np.float32))


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown split point"):
        export_part(_tiny(), "stage9")


# -- every shipped model ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("name", "split"), _parts(), ids=lambda v: v or "whole")
def test_the_exported_part_gives_the_torch_sensors_answers(name: str, split: str | None,
                                                         record_property: Any) -> None:
    model, manifest = _model(name)
    spec = model.input_spec
    images = spec.convert(_frames())
    x = spec.prepare(images)
    assert np.array_equal(normalise(images, spec.channels, spec.mean, spec.std), x.numpy())
    part = export_part(model, split, model_name=manifest.name, model_sha256=manifest.sha256)
    runner = OnnxRunner(part.data)
    runner.check_model(manifest.sha256)
    agreement, (ref, out), _logits = compare(model, runner, split, x)
    record_property("agreement", asdict(agreement))
    assert agreement.max_abs <= 1e-4 * max(1.0, agreement.scale)
    assert agreement.argmax_agree == 1.0
    assert agreement.topk_agree >= 0.99  # a near-tie among the lower ranks may swap two of them
    for path in artifacts_for(name, split) if split is not None else []:
        codes = code_differences(NairPipeline(model, manifest, NairArtifact.load(path)), ref, out)
        record_property(f"codes {path.name}", codes)
        assert codes["max_delta"] <= 1, codes  # a code one step off, where a value sits on a rounding boundary
        assert codes["differ"] <= 1e-3 * codes["codes"], codes
