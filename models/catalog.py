"""Where a model's files are, and its manifest, without torch: the lookups a device needs.

A model is found by name in ``$NAIRBUS_MODEL_DIR`` and the shipped weights (:func:`locate_model`), its manifest read
and validated (:func:`read_manifest`), the NAIR artifact and the exported device parts sit beside it. Nothing here
imports torch, so a sensor installed without torch finds its model's ONNX parts and artifact the way the torch one
finds its weights; :mod:`nairbus.models.store` (weights, loading, importing: torch) re-exports all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nairbus.models.architectures.spec import InputSpec
from nairbus.models.manifest import ModelManifest

__all__ = ["MODEL_DIR_ENV", "OUTPUT_DIR", "WEIGHTS_DIR", "artifact_output_path", "default_artifact_path",
           "find_model", "input_spec", "locate_model", "model_search_path", "read_manifest", "sensor_artifact_path",
           "sha256_file"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
OUTPUT_DIR = Path("models/weights")
"""Where commands write models and artifacts by default: relative to the working directory (in a source checkout
that is the shipped weights; an installed package is never written into)."""
MODEL_DIR_ENV = "NAIRBUS_MODEL_DIR"
"""Directories (``:``-separated) searched for a model's manifest before the shipped weights: where
``nairbus import-model`` put the user's own models."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_search_path() -> list[Path]:
    """Where models are looked up by name: ``$NAIRBUS_MODEL_DIR`` (``:``-separated), then the shipped weights."""
    extra = [Path(p) for p in os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep) if p]
    return [*extra, WEIGHTS_DIR]


def locate_model(name: str, directory: Path | None = None) -> tuple[str, Path]:
    """``(name, directory)`` of a model given by name (searched in ``directory``, else :func:`model_search_path`) or
    by the path of its manifest (``my-models/cam.json``); a clear error when there is none."""
    as_path = Path(name)
    if as_path.suffix == ".json" and as_path.is_file():
        return as_path.stem, as_path.parent
    if "/" in name or not name or name.startswith("."):
        raise FileNotFoundError(f"no model manifest {name}")
    places = [directory] if directory is not None else model_search_path()
    for place in places:
        if (place / f"{name}.json").is_file():
            return name, place
    looked = ", ".join(str(p) for p in places)
    raise FileNotFoundError(f"no model manifest {name}.json in {looked}; train it with 'nairbus train {name}' or "
                            f"import your own with 'nairbus import-model' (and set ${MODEL_DIR_ENV} to its directory)")


def find_model(sha256: str) -> Path | None:
    """The manifest, in :func:`model_search_path`, of the model whose weights have this sha256 (None: none has)."""
    for place in model_search_path():
        for path in sorted(place.glob("*.json")) if place.is_dir() else ():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("sha256") == sha256 and "weights_file" in data:
                return path
    return None


def read_manifest(name: str, directory: Path | None = None) -> ModelManifest:
    """The manifest of a model (see :func:`locate_model`), validated; a clear error when it is missing, not JSON or
    not a manifest."""
    name, directory = locate_model(name, directory)
    path = directory / f"{name}.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"model manifest {path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or "sha256" not in manifest:
        raise FileNotFoundError(f"{path} is not a model manifest (no sha256)")
    manifest.setdefault("name", name)
    try:
        return ModelManifest.model_validate(manifest)
    except ValidationError as exc:
        raise FileNotFoundError(f"{path} is not a valid model manifest: {exc}") from exc


def default_artifact_path(name: str, directory: Path | None = None) -> Path:
    """``<name>.nair.npz`` beside the model's manifest: the artifact agents pair with the model by default."""
    name, directory = locate_model(name, directory)
    return directory / f"{name}.nair.npz"


def artifact_output_path(name: str) -> Path:
    """Where ``nairbus calibrate`` writes a model's artifact by default: beside the manifest of a user's model,
    under :data:`OUTPUT_DIR` for a shipped one (never into an installed package)."""
    name, directory = locate_model(name)
    shipped = directory.resolve() == WEIGHTS_DIR.resolve()
    return (OUTPUT_DIR if shipped else directory) / f"{name}.nair.npz"


def sensor_artifact_path(name: str, directory: Path | None = None) -> Path:
    """The NAIR artifact a sensor of model ``name`` uses when none is named.

    The manifest's ``sensor_artifact`` (a file beside it, chosen on the validation split and recorded with the
    evidence in ``sensor_artifact_chosen``), else ``<name>.nair.npz``.
    """
    name, directory = locate_model(name, directory)
    chosen = read_manifest(name, directory).sensor_artifact  # validated: a plain file name beside the manifest
    return directory / (chosen or f"{name}.nair.npz")


def input_spec(manifest: ModelManifest) -> InputSpec:
    """The manifest's input spec (manifests from before input specs: 28x28 grey Fashion-MNIST with its labels)."""
    if manifest.input_spec is not None:
        return manifest.input_spec
    from nairbus.models.data.registry import fashion_mnist_spec

    spec = fashion_mnist_spec()
    return spec.model_copy(update={"labels": tuple(manifest.labels)}) if manifest.labels else spec
