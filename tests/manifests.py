"""Manifests of the small models tests build in memory (no weights file on disk, one split point)."""

from __future__ import annotations

from typing import Any

from nairbus.models.manifest import ModelManifest


def in_memory_manifest(name: str, sha256: str, **fields: Any) -> ModelManifest:
    """A valid manifest for an untrained model built by a test: ``name``, a made-up ``sha256``, split at stage2."""
    return ModelManifest(name=name, sha256=sha256, weights_file=f"{name}.pt", split_points=("stage2",), **fields)
