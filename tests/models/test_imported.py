"""Bring your own model: torch.export programs cut at a named module, TorchScript, Python factories.

The shipped ResNet goes through the generic path (exported, imported, cut) and must give exactly the native model's
IR and logits; cuts that leave other values crossing, unknown points and specs that do not fit are refused clearly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nairbus.models.architectures.imported import (
    ModelImportError,
    SplitProgram,
    TorchScriptSplit,
    cut_points,
    export_module,
    load_split_model,
    split_program,
)
from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.store import import_model, load_model, sha256_file


@pytest.fixture(scope="module")
def base() -> tuple[nn.Module, dict[str, object]]:
    return load_model("base")


@pytest.fixture(scope="module")
def program(base: tuple[nn.Module, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "base.pt2"
    torch.export.save(export_module(base[0], fashion_mnist_spec()), str(path))
    return path


@pytest.mark.slow
def test_the_shipped_resnet_through_the_generic_path_is_the_native_model(
        base: tuple[nn.Module, dict[str, object]], program: Path) -> None:
    native = base[0]
    spec = fashion_mnist_spec()
    model = load_split_model(program, "torch.export", ["stage2", "stage3"], spec)
    x = spec.prepare(load_split("test").images[:1000])
    with torch.no_grad():
        for point in ("stage2", "stage3"):
            assert torch.equal(model.head(x, point), native.head(x, point))
            ir = native.head(x, point)
            assert torch.equal(model.tail(ir, point), native.tail(ir, point))
        assert torch.equal(model(x), native(x))


def test_cut_points_are_the_block_boundaries(program: Path) -> None:
    points = cut_points(torch.export.load(str(program)))
    assert {"stem", "stage1", "stage2", "stage3"} <= set(points)
    assert "stage2.0.conv1" not in points  # the block's shortcut crosses there


def test_a_cut_inside_a_residual_block_is_refused_naming_the_crossing_value(program: Path) -> None:
    with pytest.raises(ModelImportError, match="crossing the cut") as info:
        split_program(torch.export.load(str(program)), "stage2.0.conv1")
    assert "stage2" in str(info.value)  # suggests the valid points


def test_an_unknown_split_point_is_refused(program: Path) -> None:
    with pytest.raises(ModelImportError, match="no module or graph node 'layer9'"):
        split_program(torch.export.load(str(program)), "layer9")
    with pytest.raises(ModelImportError, match="last computation"):
        split_program(torch.export.load(str(program)), "fc")


def test_a_graph_node_name_is_a_split_point_too(base: tuple[nn.Module, dict[str, object]], program: Path) -> None:
    head, tail = split_program(torch.export.load(str(program)), "relu_4")  # the output of stage2's block
    x = fashion_mnist_spec().prepare(load_split("test").images[:8])
    with torch.no_grad():
        assert torch.equal(head(x), base[0].head(x, "stage2"))
        assert torch.equal(tail(head(x)), base[0](x))


@pytest.mark.slow
def test_a_program_exported_for_a_fixed_batch_runs_any_batch(base: tuple[nn.Module, dict[str, object]]) -> None:
    native = base[0].eval()
    fixed = torch.export.export(native, (torch.zeros(4, 1, 28, 28),))
    model = SplitProgram(fixed, ["stage2"], fashion_mnist_spec())
    x = fashion_mnist_spec().prepare(load_split("test").images[:10])
    with torch.no_grad():
        assert torch.allclose(model.tail(model.head(x, "stage2"), "stage2"), native(x), atol=1e-5)
        assert model(x).shape == (10, 10)


class _WithHeadTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 10)

    @torch.jit.export
    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @torch.jit.export
    def tail(self, ir: torch.Tensor) -> torch.Tensor:
        return self.fc(ir.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(x))


def test_torchscript_with_head_and_tail_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "net.ts.pt"
    torch.jit.save(torch.jit.script(_WithHeadTail().eval()), str(path))
    manifest = json.loads(import_model(path, "ts", ["features"], fashion_mnist_spec(), tmp_path / "models").read_text())
    assert manifest["format"] == "torchscript"
    assert manifest["ir_shapes"] == {"features": [4, 28, 28]}
    model, _ = load_model("ts", tmp_path / "models")
    assert isinstance(model, TorchScriptSplit)


@pytest.mark.slow
def test_torchscript_without_head_and_tail_is_converted_and_cut_at_a_graph_node(
        base: tuple[nn.Module, dict[str, object]], tmp_path: Path) -> None:
    # The shipped ResNet traced to TorchScript (no head/tail, no module boundaries in its graph): converted to a
    # torch.export program, its cut points are node names, each after the module whose weights it follows; cut at
    # the end of stage2 it gives exactly the native model's stage2 IR and logits.
    path = tmp_path / "resnet.ts.pt"
    torch.jit.save(torch.jit.trace(base[0].eval(), torch.zeros(2, 1, 28, 28)), str(path))
    from nairbus.models.architectures.imported import load_program, node_modules

    program, model_format = load_program(path, (1, 28, 28))
    assert model_format == "torchscript"
    points, owner = cut_points(program), node_modules(program)
    stage2_end = [p for p in points if owner[p].startswith("stage2")][-1]
    manifest = json.loads(import_model(path, "ts-resnet", [stage2_end], fashion_mnist_spec(),
                                       tmp_path / "models").read_text())
    assert manifest["format"] == "torch.export"
    assert manifest["source"]["format"] == "torchscript"
    assert manifest["ir_shapes"] == {stage2_end: [64, 14, 14]}
    model, _ = load_model("ts-resnet", tmp_path / "models")
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.head(x, stage2_end), base[0].head(x, "stage2"), atol=1e-5)
        assert torch.allclose(model(x), base[0](x), atol=1e-4)
    with pytest.raises(ModelImportError, match="channels and size"):
        load_program(path, None)


def test_an_unknown_node_of_a_converted_torchscript_file_is_refused_and_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "plain.ts.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))), str(path))
    with pytest.raises(ModelImportError):
        import_model(path, "plain", ["nope"], fashion_mnist_spec(), tmp_path / "models")
    assert not (tmp_path / "models" / "plain.json").exists()


FACTORY = '''
import torch
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
'''


def test_a_python_factory_and_state_dict_are_exported_then_cut(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usermodel.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("usermodel", None)
    import usermodel  # type: ignore[import-not-found]

    trained = usermodel.build().eval()
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    spec = fashion_mnist_spec(channels=3, size=16).model_copy(update={"labels": ("a", "b", "c", "d", "e")})
    path = import_model(tmp_path / "weights.pt", "cam", ["2"], spec, tmp_path / "models", factory="usermodel:build")
    manifest = json.loads(path.read_text())
    assert manifest["source"]["sha256"] == sha256_file(tmp_path / "weights.pt")
    assert manifest["sha256"] == sha256_file(tmp_path / "models" / "cam.pt2")
    assert manifest["ir_shapes"] == {"2": [8, 16, 16]}
    assert manifest["labels"] == list("abcde")
    model, _ = load_model(str(path))  # by manifest path
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.tail(model.head(x, "2"), "2"), trained(x), atol=1e-5)


def test_a_spec_that_does_not_fit_the_model_is_refused_and_nothing_is_written(program: Path, tmp_path: Path) -> None:
    five = fashion_mnist_spec().model_copy(update={"labels": ("a", "b", "c", "d", "e")})
    with pytest.raises(ModelImportError, match="names 5 labels"):
        import_model(program, "bad", ["stage2"], five, tmp_path)
    rgb = fashion_mnist_spec(channels=3)
    with pytest.raises(ModelImportError, match="does not run on input"):
        import_model(program, "bad", ["stage2"], rgb, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_changed_model_file_is_refused_by_its_hash(program: Path, tmp_path: Path) -> None:
    import_model(program, "b", ["stage2"], fashion_mnist_spec(), tmp_path)
    stored = tmp_path / "b.pt2"
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(RuntimeError, match="sha256"):
        load_model("b", tmp_path)


@pytest.mark.slow
def test_imported_model_predictions_match_on_the_test_frames(base: tuple[nn.Module, dict[str, object]],
                                                             program: Path, tmp_path: Path) -> None:
    import_model(program, "base-imported", ["stage2"], fashion_mnist_spec(), tmp_path)
    model, manifest = load_model("base-imported", tmp_path)
    images = load_split("test").images[:2000]
    with torch.no_grad():
        ours = model(fashion_mnist_spec().prepare(images)).argmax(1).numpy()
        theirs = base[0](fashion_mnist_spec().prepare(images)).argmax(1).numpy()
    assert np.array_equal(ours, theirs)
    assert manifest.input_spec is not None
    assert manifest.input_spec.channels == 1


def test_any_file_that_is_not_a_checkpoint_is_refused_in_words(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A random or truncated file fails torch's unpickler in any of its steps (an IndexError, a KeyError, ...):
    every one is the same clear refusal, never a traceback; a file that cannot be read says so."""
    from nairbus.models.architectures.imported import ModelImportError, load_python_factory

    (tmp_path / "usermodel2.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("usermodel2", None)
    rng = np.random.default_rng(0)
    good = tmp_path / "good.pt"
    torch.save(load_python_factory("usermodel2:build", None).state_dict(), good)
    blobs = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (0, 1, 7, 100, 5000)]
    blobs += [good.read_bytes()[:cut] for cut in (10, 200, len(good.read_bytes()) // 2)]
    blobs += [bytes([0x80, 0x02]) + rng.integers(0, 256, 300, dtype=np.uint8).tobytes() for _ in range(20)]
    for i, blob in enumerate(blobs):
        path = tmp_path / f"bad-{i}.pt"
        path.write_bytes(blob)
        with pytest.raises(ModelImportError, match="is not a PyTorch checkpoint"):
            load_python_factory("usermodel2:build", path)
    with pytest.raises(ModelImportError, match="cannot be read"):
        load_python_factory("usermodel2:build", tmp_path)  # a directory
