"""One VP variant as a sensor's device runs it, in torch or ONNX Runtime: :class:`DeviceVariant`.

A VP sensor asks its variant for its name, fusion weight and manifest (they go into the birth) and for the class
probabilities of a batch of frames. Two implementations give them:

* ``torch``: the variant's weights (:func:`nairbus.models.vp.family.load_family`'s :class:`LoadedVariant`), as the
  hub and the offline evaluator run them (the reference);
* ``onnx``: the whole variant exported by ``nairbus export-onnx --variants`` (``<weights>.whole.onnx`` and its record
  ``<weights>.onnx.json`` beside the variant's manifest) in ONNX Runtime, the softmax in numpy: no torch.

The family is found where models are (:func:`family_directory`: ``$NAIRBUS_MODEL_DIR``, then the shipped weights), so
a light sensor points ``NAIRBUS_MODEL_DIR`` at the folder ``export-onnx --variants --out-dir`` wrote. This module
imports no torch; :func:`load_device_variant` imports the implementation it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nairbus.models.architectures.spec import InputSpec
from nairbus.models.catalog import input_spec, model_search_path, read_manifest
from nairbus.models.device import RUNTIMES, Runtime
from nairbus.models.export.runtime import softmax
from nairbus.models.manifest import ModelManifest
from nairbus.models.vp.manifest import FamilyManifest, VariantEntry, family_manifest_path

if TYPE_CHECKING:
    from nairbus.models.vp.family import LoadedVariant

__all__ = ["DeviceVariant", "family_directory", "load_device_variant", "softmax", "torch_variant"]


@dataclass(frozen=True, slots=True)
class DeviceVariant:
    """A variant of the family on a runtime: what its sensor names in the birth, and its class probabilities."""

    name: str
    weight: float
    """Its fusion weight (the family manifest's)."""
    manifest: ModelManifest
    runtime: Runtime
    probs_of: Callable[[np.ndarray], np.ndarray]
    """float32 class probabilities ``(N, classes)`` of uint8 frames already in :attr:`spec`."""
    part_hashes: tuple[str, ...] = ()
    """sha256 of the exported file it runs (onnx); empty for torch, which runs the weights."""

    @property
    def spec(self) -> InputSpec:
        """What the variant takes (its manifest): every frame is converted to it at the edge."""
        return input_spec(self.manifest)

    def probs(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of uint8 frames in the variant's input spec."""
        return self.probs_of(images)


def family_directory() -> Path:
    """The first folder of :func:`~nairbus.models.catalog.model_search_path` that holds a variant family's manifest
    (the shipped weights when none of ``$NAIRBUS_MODEL_DIR`` does)."""
    places = model_search_path()
    return next((place for place in places if family_manifest_path(place).is_file()), places[-1])


def _entry(directory: Path, variant: str) -> tuple[VariantEntry, ModelManifest]:
    """The family's entry for ``variant`` and the variant's manifest, whose weights must be the family's."""
    family = FamilyManifest.load(directory)
    try:
        entry = family.variant(variant)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from exc
    manifest = read_manifest(entry.weights_name, directory)
    if manifest.sha256 != entry.sha256:
        raise RuntimeError(f"variant {entry.name}: weights sha256 {manifest.sha256[:12]}… differs from the family "
                           f"manifest's {entry.sha256[:12]}…")
    return entry, manifest


def torch_variant(loaded: LoadedVariant) -> DeviceVariant:
    """A variant whose weights are loaded in torch (:func:`nairbus.models.vp.family.load_family`) as a
    :class:`DeviceVariant`."""
    from nairbus.models.vp.family import softmax_outputs

    spec = input_spec(loaded.manifest)
    return DeviceVariant(loaded.name, loaded.weight, loaded.manifest, "torch",
                         lambda images: softmax_outputs(loaded.model, images, spec=spec))


def _torch_variant(variant: str, directory: Path) -> DeviceVariant:
    from nairbus.models.store import load_model
    from nairbus.models.vp.family import LoadedVariant

    entry, manifest = _entry(directory, variant)
    model, _ = load_model(entry.weights_name, directory)
    return torch_variant(LoadedVariant(entry.name, model, entry.fusion_weight, manifest))


def _onnx_variant(variant: str, directory: Path, threads: int) -> DeviceVariant:
    from nairbus.models.export.parts import read_parts
    from nairbus.models.export.pipeline import load_part

    entry, manifest = _entry(directory, variant)
    record = read_parts(directory / f"{entry.weights_name}.onnx.json")
    whole = record.parts.get("whole")
    if whole is None:
        raise FileNotFoundError(f"{directory / (entry.weights_name + '.onnx.json')} records no whole model; export "
                                "it with 'nairbus export-onnx --variants'")
    runner = load_part(record, whole, directory, manifest, threads)
    spec = input_spec(manifest)
    return DeviceVariant(entry.name, entry.fusion_weight, manifest, "onnx",
                         lambda images: softmax(runner.run(spec.normalise(images))), (whole.sha256,))


def load_device_variant(runtime: Runtime, variant: str, directory: Path | None = None,
                        threads: int = 1) -> DeviceVariant:
    """Variant ``variant`` of the family in ``directory`` (default :func:`family_directory`) on ``runtime``: its
    weights (sha256-checked against the family) in torch, or its exported whole model (sha256-checked against the
    record, the file and the manifest) in ONNX Runtime on ``threads`` threads."""
    where = directory if directory is not None else family_directory()
    if runtime == "torch":
        return _torch_variant(variant, where)
    if runtime == "onnx":
        return _onnx_variant(variant, where, threads)
    raise ValueError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
