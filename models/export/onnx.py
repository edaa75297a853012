"""The device part of a model exported to ONNX, for a sensor that runs it without torch.

What a device runs is one of two things: the **head** of a split model up to a split point (the IR the NAIR
transform consumes, :meth:`~nairbus.models.architectures.split.SplitModel.head`), or the **whole** model to its
logits (the decision mode, and each VP variant, whose sensor publishes the top-k of its softmax). Both are exported
from the same :class:`DevicePart` wrapper, so any :class:`~nairbus.models.architectures.split.SplitModel` — the
native ResNet and MobileNetV2 families, the VP variants (whose head resizes the frame with an antialiased bilinear
filter) and imported ``torch.export`` programs — exports the same way.

The exporter is torch's ``torch.export``-based one (``torch.onnx.export(..., dynamo=True)``) at a fixed opset
(:data:`OPSET`): the TorchScript exporter (``dynamo=False``) is deprecated, cannot export the variants' antialiased
resize (``aten::_upsample_bilinear2d_aa``) and fails on the imported MobileNet's whole program (it switches the model
to training mode, which an imported program refuses), while both give the same outputs where both work (within a few
1e-6 of torch). The batch dimension is dynamic. The file's bytes are deterministic for a given
model, torch and onnxscript (the protobuf is serialised deterministically), so its sha256 can name it in a manifest
or a birth; a few ``nairbus.*`` metadata entries (model hash, part, split, input spec) let a torch-free runner check
what it was given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nairbus.models.architectures.split import InputSpec, SplitModel, check_split

__all__ = ["INPUT_NAME", "MAX_BATCH", "OPSET", "DevicePart", "ExportedPart", "export_model", "export_part",
           "export_sensor_parts", "export_variants", "part_file_name", "sensor_splits"]

OPSET = 18
"""ONNX opset of every export: the first with ``Resize``'s ``antialias`` (the variants' resize), and one that
onnxruntime has run since 1.14."""
MAX_BATCH = 4096
"""Largest batch the exported graph is traced for (ONNX itself keeps the batch dimension symbolic)."""
INPUT_NAME = "x"
"""The input of every exported part: the normalised float32 batch ``(N, C, H, W)`` of the model's input spec."""
OUTPUT_NAMES: dict[str, str] = {"head": "ir", "whole": "logits"}
META_PREFIX = "nairbus."

PartKind = Literal["head", "whole"]


class DevicePart(nn.Module):
    """What the device runs of ``model``: its head up to ``split``, or (``split`` None) the whole model to logits."""

    def __init__(self, model: SplitModel, split: str | None) -> None:
        super().__init__()
        if split is not None:
            check_split(split, model.split_points)
        self.model = model
        self.split = split
        self.eval()  # batch-norm statistics as trained, never the batch's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x) if self.split is None else self.model.head(x, self.split)
        return out


@dataclass(frozen=True)
class ExportedPart:
    """One exported device part: the ONNX file's bytes and the metadata written into it."""

    kind: PartKind
    split: str | None
    data: bytes = field(repr=False)
    metadata: dict[str, str]

    @property
    def sha256(self) -> str:
        """sha256 of the ONNX file (what a manifest or a birth names it by)."""
        return hashlib.sha256(self.data).hexdigest()

    def save(self, path: Path) -> Path:
        """Write the ONNX file to ``path`` (its parent created); the path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return path


def part_file_name(model_name: str, split: str | None) -> str:
    """``<model>.<split>.onnx`` for a head, ``<model>.whole.onnx`` for the whole model."""
    return f"{model_name}.{split or 'whole'}.onnx"


def _metadata(spec: InputSpec, kind: PartKind, split: str | None, model_name: str,
              model_sha256: str) -> dict[str, str]:
    input_spec = {"channels": spec.channels, "height": spec.height, "width": spec.width,
                  "mean": list(spec.mean), "std": list(spec.std)}
    return {f"{META_PREFIX}{key}": value for key, value in {
        "part": kind, "split": split or "", "model_name": model_name, "model_sha256": model_sha256,
        "input_spec": json.dumps(input_spec, sort_keys=True), "opset": str(OPSET),
    }.items()}


def _onnx_proto(part: DevicePart, spec: InputSpec, kind: PartKind) -> Any:
    """The ONNX ``ModelProto`` of ``part`` from torch's ``torch.export``-based exporter, batch dimension dynamic."""
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # The exporter warns once per torchvision operator it cannot register (torchvision is not installed beside this
    # torch): a screenful on every export, about operators no nairbus model uses.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        # torch's own deprecation chatter while tracing (tree specs, ...): nothing the caller can act on.
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        program = torch.onnx.export(part, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAMES[kind]], dynamic_shapes=({0: batch},),
                                    external_data=False, optimize=True, verbose=False)
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def export_part(model: SplitModel, split: str | None, *, model_name: str = "", model_sha256: str = "") -> ExportedPart:
    """Export the device part of ``model``: its head at ``split`` (output ``ir``, the IR the NAIR transform takes),
    or with ``split`` None the whole model (output ``logits``); input ``x``, the normalised batch ``(N, C, H, W)``.

    ``model_name`` and ``model_sha256`` (the manifest's) go into the file's metadata, so a runner can refuse a part
    exported from another model.
    """
    kind: PartKind = "whole" if split is None else "head"
    part = DevicePart(model, split)
    proto = _onnx_proto(part, model.input_spec, kind)
    metadata = _metadata(model.input_spec, kind, split, model_name, model_sha256)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return ExportedPart(kind, split, proto.SerializeToString(deterministic=True), metadata)


def export_model(name: str, directory: Path | None = None,
                 splits: Collection[str] | None = None) -> Iterator[tuple[str, ExportedPart]]:
    """Every device part of model ``name`` (sha256-checked by the store): ``(split, part)`` for each of its split
    points (or only those in ``splits``), then ``("whole", part)``."""
    from nairbus.models.store import load_model

    model, manifest = load_model(name, directory)
    for split in manifest.split_points:
        if splits is None or split in splits:
            yield split, export_part(model, split, model_name=manifest.name, model_sha256=manifest.sha256)
    yield "whole", export_part(model, None, model_name=manifest.name, model_sha256=manifest.sha256)


def export_variants(directory: Path | None = None) -> Iterator[tuple[str, ExportedPart]]:
    """Each shipped VP variant as the whole model its sensor runs: ``(variant name, part)`` in family order."""
    from nairbus.models.store import WEIGHTS_DIR
    from nairbus.models.vp.family import load_family

    _family, variants = load_family(directory or WEIGHTS_DIR)
    for name, variant in variants.items():
        yield name, export_part(variant.model, None, model_name=variant.manifest.name,
                                model_sha256=variant.manifest.sha256)


def sensor_splits(name: str) -> list[str]:
    """The splits a sensor of model ``name`` may run a head at: those of the NAIR artifacts beside its manifest
    (``<name>*.nair.npz``) calibrated for its weights, in split-point order."""
    from nairbus.models.catalog import locate_model, read_manifest
    from nairbus.models.nair.artifact import NairArtifact

    name, directory = locate_model(name)
    manifest = read_manifest(name, directory)
    found: set[str] = set()
    for path in sorted(directory.glob(f"{name}*.nair.npz")):
        try:
            artifact = NairArtifact.load(path)
        except (OSError, ValueError, KeyError):
            continue
        if artifact.model_sha256 == manifest.sha256 and artifact.split in manifest.split_points:
            found.add(artifact.split)
    return [split for split in manifest.split_points if split in found]


def export_sensor_parts(name: str, out_dir: Path | None = None, command: str | None = None) -> Path:
    """Export what a sensor of model ``name`` runs on ONNX Runtime — the whole model and the head at the split of
    each NAIR artifact beside its manifest (:func:`sensor_splits`) — as ``<model>.<split|whole>.onnx`` files in
    ``out_dir`` (default: beside the manifest), with the record ``<model>.onnx.json`` (each part's file, sha256 and
    split, and each split's share of the model's MACs). Returns the record's path.

    An ``out_dir`` elsewhere becomes a model directory for a light sensor (``NAIRBUS_MODEL_DIR``, or ``--model
    <out_dir>/<model>.json``): the manifest, the NAIR artifacts and their auto tables are copied beside the parts —
    everything a sensor reads but the torch weights."""
    from nairbus.models.catalog import locate_model
    from nairbus.models.evaluation.cost import model_macs
    from nairbus.models.export.parts import ExportedParts, PartRecord
    from nairbus.models.store import load_model

    name, directory = locate_model(name)
    out = out_dir or directory
    model, manifest = load_model(name, directory)
    if out.resolve() != directory.resolve():
        copy_sensor_files(name, directory, out)
    parts: dict[str, PartRecord] = {}
    for split in [*sensor_splits(str(directory / f"{name}.json")), None]:  # by path: found wherever it lies
        part = export_part(model, split, model_name=manifest.name, model_sha256=manifest.sha256)
        file_name = part_file_name(name, split)
        part.save(out / file_name)
        parts[split or "whole"] = PartRecord(file=file_name, sha256=part.sha256, split=split)
    try:
        total, heads, _shapes = model_macs(model)
        shares = {split: macs / total for split, macs in heads.items()}
    except Exception:  # an imported model the counter cannot walk: a device then assumes the worst
        shares = {}
    record = ExportedParts(model_name=name, model_sha256=manifest.sha256, opset=OPSET, parts=parts,
                           head_shares=shares, command=command)
    path = out / f"{name}.onnx.json"
    path.write_text(json.dumps(record.model_dump(mode="json"), indent=2) + "\n")
    return path


def export_family_parts(out_dir: Path | None = None, command: str | None = None) -> list[Path]:
    """Export each variant of the VP family (the first in ``$NAIRBUS_MODEL_DIR``, else the shipped one) as the whole
    model its sensor runs (:func:`export_sensor_parts`), into ``out_dir`` (default: beside the family); an
    ``out_dir`` elsewhere gets the family manifest too, so a light VP sensor finds its variant there
    (``NAIRBUS_MODEL_DIR=<out_dir>``). Returns the records' paths, in family order."""
    import shutil

    from nairbus.models.vp.device import family_directory
    from nairbus.models.vp.manifest import FamilyManifest, family_manifest_path

    directory = family_directory()
    family = FamilyManifest.load(directory)
    records = [export_sensor_parts(str(directory / f"{entry.weights_name}.json"), out_dir, command)
               for entry in family.variants]
    if out_dir is not None and out_dir.resolve() != directory.resolve():
        shutil.copyfile(family_manifest_path(directory), family_manifest_path(out_dir))
    return records


def copy_sensor_files(name: str, directory: Path, out: Path) -> None:
    """Copy what a sensor of model ``name`` reads besides its exported parts — the manifest, the NAIR artifacts
    (``<name>*.nair.npz``) and their auto tables (``<name>*.auto.json``) — from ``directory`` into ``out``."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for path in [directory / f"{name}.json", *sorted(directory.glob(f"{name}*.nair.npz")),
                 *sorted(directory.glob(f"{name}*.auto.json"))]:
        shutil.copyfile(path, out / path.name)
