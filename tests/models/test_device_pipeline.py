"""The device's model work behind one protocol (:mod:`nairbus.models.device`): the torch pipeline and the ONNX one
(:mod:`nairbus.models.export.pipeline`: exported parts in ONNX Runtime, the NAIR transform in numpy) give the same
answers, and what a device needs imports no torch.

The numpy NAIR transform and quantiser (:mod:`nairbus.models.nair.forward`) are compared with the torch ones code by
code on every shipped artifact: both are float32 with the same order of operations, but each calls its own BLAS, so
a component within a rounding error of a quantiser bin's edge may get the neighbouring code — measured: 24 of
12.5 M codes (base.nair.npz), 17 of 6.3 M (base.stage3.nair.npz), 40 of 2.0 M (mobilenet.nair.npz) on 1000 test
frames, each one step off. The ONNX pipeline is tested on a copy of the base model exported by
:func:`~nairbus.models.export.onnx.export_sensor_parts` (what ``nairbus export-onnx`` runs; seconds per part, so slow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from nairbus.models.architectures.spec import InputSpec
from nairbus.models.data.registry import load_data
from nairbus.models.device import DevicePipeline, load_device_pipeline
from nairbus.models.nair.artifact import NairArtifact
from nairbus.models.nair.forward import ForwardTransform
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import WEIGHTS_DIR

pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")

REPO = Path(__file__).resolve().parents[2]
FRAMES = 200
MAX_CODE_SHARE = 0.001
"""At most this share of codes may differ between the numpy and torch transforms (each by one step)."""


@cache
def _frames() -> np.ndarray:
    return load_data("test").images[:FRAMES]


def export_base_copy(directory: Path, artifacts: tuple[str, ...] = ("base.nair.npz", "base.stage3.nair.npz")) -> Path:
    """The shipped base model (manifest, weights, ``artifacts`` and their auto tables) copied into ``directory`` and
    its sensor parts exported beside it, as ``nairbus export-onnx --model <directory>/base.json`` does; the copied
    manifest's path (a model name the store and the sensor take)."""
    from nairbus.models.export.onnx import export_sensor_parts

    directory.mkdir(parents=True, exist_ok=True)
    for name in ("base.json", "base.pt", *artifacts, *(a.replace(".nair.npz", ".auto.json") for a in artifacts)):
        if (WEIGHTS_DIR / name).is_file():
            shutil.copy(WEIGHTS_DIR / name, directory / name)
    manifest = directory / "base.json"
    export_sensor_parts(str(manifest), command="test")
    return manifest


# ----- torch-free modules -------------------------------------------------------------------------------------------


def test_what_a_device_needs_imports_no_torch() -> None:
    code = ("import sys\n"
            "import nairbus.models.device, nairbus.models.export.pipeline, nairbus.models.nair.forward\n"
            "import nairbus.models.catalog, nairbus.models.architectures.spec, nairbus.models.nair.codec\n"
            "import nairbus.agents.runtime.frames\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("spec", [
    InputSpec(channels=1, height=28, width=28, mean=(0.286,), std=(0.353,), labels=("a", "b")),
    InputSpec(channels=3, height=20, width=24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
              labels=("a", "b")),
])
def test_numpy_normalisation_is_torch_preparation_bit_for_bit(spec: InputSpec) -> None:
    rng = np.random.default_rng(0)
    shape = (5, 28, 28) if spec.channels == 1 else (5, 31, 17, 3)  # RGB frames of another size: converted first
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(spec.normalise(images), spec.prepare(images).numpy())


@pytest.mark.parametrize("artifact", ["base.nair.npz", "base.stage3.nair.npz", "mobilenet.nair.npz"])
def test_the_numpy_transform_gives_the_torch_codes(artifact: str) -> None:
    model = artifact.split(".", maxsplit=1)[0]
    torch_side = NairPipeline.load(model, WEIGHTS_DIR / artifact)
    ir = torch_side.head(_frames())
    want = torch_side.encode_ir(ir)
    got = ForwardTransform(torch_side.artifact).encode(ir)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    off = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert off.max() <= 1
    assert (off > 0).mean() <= MAX_CODE_SHARE


def test_the_transform_refuses_an_ir_of_another_shape() -> None:
    forward = ForwardTransform(NairArtifact.load(WEIGHTS_DIR / "base.nair.npz"))
    with pytest.raises(ValueError, match="does not fit"):
        forward.encode(np.zeros((1, 3, 14, 14), dtype=np.float32))


def test_the_torch_pipeline_is_a_device_pipeline() -> None:
    pipeline = load_device_pipeline("torch", "base", WEIGHTS_DIR / "base.nair.npz")
    assert isinstance(pipeline, DevicePipeline)
    assert pipeline.runtime == "torch"
    shares = pipeline.head_shares()
    assert shares["stage2"] == pytest.approx(0.622, abs=0.001)
    deeper = pipeline.with_artifact(NairArtifact.load(WEIGHTS_DIR / "base.stage3.nair.npz"))
    assert deeper.artifact.split == "stage3"
    with pytest.raises(ValueError, match="unknown runtime"):
        load_device_pipeline("tflite", "base")  # type: ignore[arg-type]


def test_the_onnx_pipeline_wants_the_exported_parts(tmp_path: Path) -> None:
    for name in ("base.json", "base.pt", "base.nair.npz"):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="nairbus export-onnx --model"):
        load_device_pipeline("onnx", str(tmp_path / "base.json"))


# ----- the ONNX pipeline on exported parts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_base_copy(tmp_path_factory.mktemp("onnx") / "models")


@pytest.mark.slow  # three exports: about 12 s
def test_the_onnx_pipeline_gives_the_torch_pipelines_answers(exported: Path) -> None:
    from nairbus.models.export.pipeline import OnnxPipeline

    record = json.loads((exported.parent / "base.onnx.json").read_text())
    assert {name: part["split"] for name, part in record["parts"].items()} == {
        "stage2": "stage2", "stage3": "stage3", "whole": None}
    frames = _frames()
    for artifact in ("base.nair.npz", "base.stage3.nair.npz"):
        torch_side = NairPipeline.load("base", WEIGHTS_DIR / artifact)
        onnx_side = load_device_pipeline("onnx", str(exported), exported.parent / artifact)
        assert isinstance(onnx_side, OnnxPipeline)
        assert isinstance(onnx_side, DevicePipeline)
        assert onnx_side.runtime == "onnx"
        assert onnx_side.labels == torch_side.labels
        assert onnx_side.manifest.sha256 == torch_side.manifest.sha256
        assert onnx_side.input_spec == torch_side.input_spec
        assert onnx_side.artifact.sha256 == torch_side.artifact.sha256
        shares = onnx_side.head_shares()  # counted with torch at export, for the splits it exported
        assert set(shares) == {"stage2", "stage3"}
        assert shares == pytest.approx({split: torch_side.head_shares()[split] for split in shares})
        off = np.abs(onnx_side.encode(frames).astype(np.int64) - torch_side.encode(frames).astype(np.int64))
        assert off.max() <= 1
        assert (off > 0).mean() <= MAX_CODE_SHARE
    probs = onnx_side.full_model_probs(frames, batch_size=64)
    want = torch_side.full_model_probs(frames)
    assert np.array_equal(probs.argmax(1), want.argmax(1))
    assert np.abs(probs - want).max() < 1e-5
    shallower = onnx_side.with_artifact(NairArtifact.load(exported.parent / "base.nair.npz"))
    assert shallower.artifact.split == "stage2"
    assert shallower.head(frames[:2]).shape == (2, 64, 14, 14)


@pytest.mark.slow
def test_the_onnx_pipeline_refuses_parts_of_other_weights(exported: Path, tmp_path: Path) -> None:
    from nairbus.models.export.runtime import PartMismatchError

    copy = tmp_path / "base"
    shutil.copytree(exported.parent, copy)
    record_path = copy / "base.onnx.json"
    record = json.loads(record_path.read_text())
    # The record says the parts come from other weights.
    record_path.write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    with pytest.raises(PartMismatchError, match="exported from model sha256 000000000000"):
        load_device_pipeline("onnx", str(copy / "base.json"), copy / "base.nair.npz")
    # Record and manifest agree, but the part itself was exported from other weights (its metadata says so).
    manifest = json.loads((copy / "base.json").read_text())
    (copy / "base.json").write_text(json.dumps({**manifest, "sha256": "1" * 64}))
    record_path.write_text(json.dumps({**record, "model_sha256": "1" * 64}))
    with pytest.raises(PartMismatchError, match="export it again from this model"):
        load_device_pipeline("onnx", str(copy / "base.json"), copy / "none.nair.npz", optional=True)
    (copy / "base.json").write_text(json.dumps(manifest))
    record_path.write_text(json.dumps(record))
    # A part whose bytes are not the recorded ones.
    (copy / "base.whole.onnx").write_bytes((copy / "base.stage3.onnx").read_bytes())
    with pytest.raises(PartMismatchError, match="its record says"):
        load_device_pipeline("onnx", str(copy / "base.json"), copy / "none.nair.npz", optional=True)


@pytest.mark.slow
def test_the_onnx_pipeline_loads_what_a_mode_runs_and_the_rest_when_first_run(exported: Path) -> None:
    from nairbus.models.export.pipeline import OnnxPipeline

    frames = _frames()[:4]
    full = load_device_pipeline("onnx", str(exported), exported.parent / "base.stage3.nair.npz")
    head_only = load_device_pipeline("onnx", str(exported), exported.parent / "base.stage3.nair.npz", parts=("head",))
    assert isinstance(head_only, OnnxPipeline)
    assert head_only._whole is None  # a nair sensor holds one session
    assert head_only._head is not None
    assert np.array_equal(head_only.encode(frames), full.encode(frames))
    assert np.array_equal(head_only.full_model_probs(frames), full.full_model_probs(frames))  # loaded when first run
    whole_only = load_device_pipeline("onnx", str(exported), exported.parent / "base.stage3.nair.npz", parts=("whole",))
    assert isinstance(whole_only, OnnxPipeline)
    assert whole_only._head is None
    assert np.array_equal(whole_only.encode(frames), full.encode(frames))
    with pytest.raises(ValueError, match="unknown parts"):
        load_device_pipeline("onnx", str(exported), parts=("tail",))


def test_the_device_work_runs_numpys_blas_on_the_sensors_threads() -> None:
    from threadpoolctl import threadpool_info

    from nairbus.models.device import device_threads

    np.ones((64, 64)) @ np.ones((64, 64))  # BLAS loaded
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy has no BLAS thread pool here")
    before = [pool["num_threads"] for pool in blas]
    for runtime in ("onnx", "torch"):
        with device_threads(runtime, 1):
            assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == {1}
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == before
    with pytest.raises(ValueError, match="threads"), device_threads("onnx", 0):
        pass
