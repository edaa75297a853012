"""Committed model weights and their manifests: save, load, and verify by sha256.

The lookups that need no torch (where a model is, its manifest, the artifact beside it) are in
:mod:`nairbus.models.catalog` and re-exported here.

Each shipped model is ``models/weights/<name>.pt`` (a plain ``state_dict``) beside ``<name>.json`` (its manifest:
architecture, config, split points, sha256, accuracy on the test split, the command that produced it, wall time).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nairbus.models.architectures.resnet import ResNet, count_macs, count_params
from nairbus.models.architectures.spec import InputSpec
from nairbus.models.catalog import (  # re-exported: the torch-free lookups, where they always were
    MODEL_DIR_ENV,
    OUTPUT_DIR,
    WEIGHTS_DIR,
    artifact_output_path,
    default_artifact_path,
    find_model,
    input_spec,
    locate_model,
    model_search_path,
    read_manifest,
    sensor_artifact_path,
    sha256_file,
)
from nairbus.models.manifest import ModelManifest, SensorDefaults

__all__ = ["MODEL_DIR_ENV", "OUTPUT_DIR", "WEIGHTS_DIR", "ModelIntegrityError", "artifact_output_path",
           "compute_threads", "default_artifact_path", "find_model", "import_model", "input_spec", "load_model",
           "locate_model", "model_search_path", "read_manifest", "save_model", "sensor_artifact_path",
           "set_sensor_defaults", "sha256_file"]

class ModelIntegrityError(RuntimeError):
    """Weights on disk do not match their manifest."""


def save_model(model: Any, name: str, manifest: dict[str, Any], directory: Path = WEIGHTS_DIR,
               architecture_id: str = "resnet") -> Path:
    """Write weights and manifest; the manifest gains sha256, architecture, input spec, params and MACs.

    ``model`` is a native architecture (:mod:`nairbus.models.architectures.registry`) with ``config``, ``input_spec``
    and
    ``split_points``. Returns the manifest path.
    """
    from nairbus.models.architectures.registry import ARCHITECTURES

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, weights)
    full = {
        "name": name,
        "architecture": ARCHITECTURES[architecture_id].description,
        "architecture_id": architecture_id,
        "config": model.config.to_dict(),
        "input_spec": (model.input_spec.model_copy(update={"labels": tuple(manifest["labels"])})
                       if "labels" in manifest else model.input_spec).model_dump(mode="json"),
        "split_points": list(model.split_points),
        "params": count_params(model),
        "macs": count_macs(model),
        "weights_file": weights.name,
        "sha256": sha256_file(weights),
        "torch_version": torch.__version__,
        **manifest,
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(full, indent=2) + "\n")
    return path


@contextlib.contextmanager
def compute_threads(threads: int) -> Iterator[None]:
    """Run this process's model work on ``threads`` compute threads (the framework's intra-op pool) inside the
    block, then restore the count it had."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_sensor_defaults(name: str, defaults: SensorDefaults, directory: Path | None = None) -> Path:
    """Write ``defaults`` into the manifest of model ``name`` (every other field kept as it is); its path."""
    name, directory = locate_model(name, directory)
    path = directory / f"{name}.json"
    manifest = json.loads(path.read_text())
    manifest["sensor_defaults"] = defaults.model_dump(mode="json")
    ModelManifest.model_validate(manifest)  # still a manifest
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_model(name: str, directory: Path | None = None) -> tuple[ResNet, ModelManifest]:
    """Load a model (native, or imported with ``nairbus import-model``) in eval mode after checking its sha256
    against the manifest. The result is a :class:`nairbus.models.architectures.split.SplitModel`."""
    from nairbus.models.architectures.registry import build

    name, directory = locate_model(name, directory)
    manifest = read_manifest(name, directory)
    weights = directory / manifest.weights_file
    if not weights.is_file():
        raise ModelIntegrityError(f"{directory / (name + '.json')}: weights file {manifest.weights_file!r} is not "
                                  f"a file beside the manifest")
    actual = sha256_file(weights)
    if actual != manifest.sha256:
        raise ModelIntegrityError(f"{weights} has sha256 {actual[:12]}…, manifest says {manifest.sha256[:12]}…")
    if manifest.kind == "imported":
        from nairbus.models.architectures.imported import load_split_model

        assert manifest.format is not None  # the manifest's validator requires it of an imported model
        imported: Any = load_split_model(weights, manifest.format, manifest.split_points, input_spec(manifest))
        return imported, manifest
    model: Any = build(manifest.architecture_id, manifest.config, input_spec(manifest))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, manifest


def import_model(
    source: Path,
    name: str,
    points: list[str],
    spec: InputSpec,
    directory: Path,
    factory: str | None = None,
    command: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Store a user's classifier as model ``name`` in ``directory``: a ``torch.export`` program (``.pt2``), a
    TorchScript file, or (``factory``) a state dict for ``package.module:function``, which is exported here so the
    runtime never imports user code. The model is cut at ``points`` and checked against ``spec`` before anything is
    written; the manifest records both files' sha256. Returns the manifest path."""
    from nairbus.models.architectures.imported import check_fits, load_split_model

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"model name {name!r} must be a plain file stem")
    if not source.is_file():
        raise FileNotFoundError(f"model file {source} does not exist")
    directory.mkdir(parents=True, exist_ok=True)
    staged = _stage_import(source, name, spec, directory, factory)
    try:
        model = load_split_model(staged.tmp, staged.model_format, points, spec, staged.scripted)
        ir_shapes = check_fits(model, spec, points)
    except BaseException:
        staged.tmp.unlink(missing_ok=True)
        raise
    staged.tmp.replace(staged.stored)
    params = model.parameter_count()  # type: ignore[operator]
    manifest = {
        "name": name,
        "kind": "imported",
        "format": staged.model_format,
        "architecture": f"imported {staged.model_format} model" + (f" ({factory})" if factory else "")
                        + (" (converted from TorchScript)" if staged.converted_from else ""),
        "weights_file": staged.stored.name,
        "sha256": sha256_file(staged.stored),
        "source": {"file": source.name, "sha256": sha256_file(source), **({"factory": factory} if factory else {}),
                   **({"format": staged.converted_from} if staged.converted_from else {})},
        "split_points": list(points),
        "default_split": points[0],
        "ir_shapes": ir_shapes,
        "input_spec": spec.model_dump(mode="json"),
        "labels": list(spec.labels),
        "params": params,
        "torch_version": torch.__version__,
        **({"command": command} if command else {}),
        **(provenance or {}),
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class _Staged:
    """A model being imported, written under a temporary name beside the file it will be stored as."""

    model_format: Any
    stored: Path
    tmp: Path
    scripted: Any
    """The loaded TorchScript module when it is stored as it is (it has a head and a tail), else None."""
    converted_from: str | None


def _stage_import(source: Path, name: str, spec: InputSpec, directory: Path, factory: str | None) -> _Staged:
    """Write the model to import under a temporary name in ``directory``: exported to a ``torch.export`` program
    (a factory's state dict, a TorchScript file without head and tail), else copied as it is."""
    from nairbus.models.architectures.imported import (
        ModelImportError,
        convert_torchscript,
        detect_format,
        export_module,
        has_head_and_tail,
        load_python_factory,
    )

    converted_from = None
    program = None
    scripted = None
    if factory is not None:
        program = export_module(load_python_factory(factory, source), spec)
    elif detect_format(source) == "torchscript":
        try:
            scripted = torch.jit.load(str(source), map_location="cpu")  # type: ignore[no-untyped-call]
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelImportError(f"{source} does not load as TorchScript: {exc}") from exc
        if not has_head_and_tail(scripted):  # cut in its graph, as a converted program
            program = convert_torchscript(scripted, (spec.channels, spec.height, spec.width))
            converted_from = "torchscript"
    if program is not None:
        tmp = directory / f".{name}.importing.pt2"  # torch.export.load wants the .pt2 ending
        torch.export.save(program, str(tmp))
        return _Staged("torch.export", directory / f"{name}.pt2", tmp, None, converted_from)
    model_format: Any = detect_format(source)
    stored = directory / (f"{name}.pt2" if model_format == "torch.export" else f"{name}.ts.pt")
    tmp = directory / f".{name}.importing{stored.name.removeprefix(name)}"
    tmp.write_bytes(source.read_bytes())
    return _Staged(model_format, stored, tmp, scripted, converted_from)
