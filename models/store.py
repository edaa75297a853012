"""Committed model weights and their manifests: save, load, and verify by sha256.

Each shipped model is ``models/weights/<name>.pt`` (a plain ``state_dict``) beside ``<name>.json`` (its manifest:
architecture, config, split points, sha256, accuracy on the test split, the command that produced it, wall time).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from models.resnet import SPLIT_POINTS, ResNet, ResNetConfig, count_macs, count_params

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class ModelIntegrityError(RuntimeError):
    """Weights on disk do not match their manifest."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model: ResNet, name: str, manifest: dict[str, Any], directory: Path = WEIGHTS_DIR) -> Path:
    """Write weights and manifest; the manifest gains sha256, architecture, params and MACs.

    Returns the manifest path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, weights)
    full = {
        "name": name,
        "architecture": "resnet-basic (He et al. 2016, CIFAR-style), adapted to 28x28 grey",
        "config": model.config.to_dict(),
        "split_points": list(SPLIT_POINTS),
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


def read_manifest(name: str, directory: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The manifest of a shipped model; a clear error when it is missing."""
    path = directory / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no model manifest {path}; train it with 'nairbus train {name}'")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def sensor_artifact_path(name: str, directory: Path = WEIGHTS_DIR) -> Path:
    """The NAIR artifact a sensor of model ``name`` uses when none is named.

    The manifest's ``sensor_artifact`` (a file beside it, chosen on the validation split and recorded with the
    evidence in ``sensor_artifact_chosen``), else ``<name>.nair.npz``.
    """
    path = directory / f"{name}.json"
    chosen = json.loads(path.read_text()).get("sensor_artifact") if path.is_file() else None
    if chosen is not None and (not isinstance(chosen, str) or Path(chosen).name != chosen):
        raise ValueError(f"{path}: sensor_artifact must be a file name beside the manifest, not {chosen!r}")
    return directory / (chosen or f"{name}.nair.npz")


def load_model(name: str, directory: Path = WEIGHTS_DIR) -> tuple[ResNet, dict[str, Any]]:
    """Load a shipped model in eval mode after checking its sha256 against the manifest."""
    manifest = read_manifest(name, directory)
    weights = directory / manifest["weights_file"]
    actual = sha256_file(weights)
    if actual != manifest["sha256"]:
        raise ModelIntegrityError(f"{weights} has sha256 {actual[:12]}…, manifest says {manifest['sha256'][:12]}…")
    model = ResNet(ResNetConfig.from_dict(manifest["config"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return model, manifest
