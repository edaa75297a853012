"""The device part of a NAIR-method sensor without torch: exported ONNX parts in ONNX Runtime, NAIR in numpy.

:class:`OnnxPipeline` is the ``onnx`` :class:`~nairbus.models.device.DevicePipeline`: the head at the NAIR artifact's
split and the whole model run from the files ``nairbus export-onnx`` wrote beside the model's manifest
(``<model>.<split>.onnx``, ``<model>.whole.onnx``, listed with their sha256 in ``<model>.onnx.json``) in an
:class:`~nairbus.models.export.runtime.OnnxRunner`, frames are normalised in numpy
(:meth:`~nairbus.models.architectures.spec.InputSpec.normalise`, bit for bit torch's) and the IR is transformed and
quantised by :class:`~nairbus.models.nair.forward.ForwardTransform`. It imports no torch.

A part is refused unless the record and the file itself both say they were exported from the weights the manifest
names (sha256), and the file's own sha256 is the record's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Literal

import numpy as np

from nairbus.models.architectures.spec import InputSpec
from nairbus.models.catalog import default_artifact_path, input_spec, locate_model, read_manifest
from nairbus.models.export.parts import ExportedParts, PartRecord, parts_record_path, read_parts
from nairbus.models.export.runtime import OnnxRunner, PartMismatchError, softmax
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.artifact import NairArtifact
from nairbus.models.nair.forward import ForwardTransform

__all__ = ["PARTS", "OnnxPipeline", "load_part"]


def load_part(record: ExportedParts, part: PartRecord, directory: Path, manifest: ModelManifest,
              threads: int = 1) -> OnnxRunner:
    """The exported ``part`` of ``record`` (a file in ``directory``) in a runner, after checking that the record,
    the file's metadata and its bytes all belong to the weights ``manifest`` names."""
    path = directory / part.file
    if record.model_sha256 != manifest.sha256:
        raise PartMismatchError(f"the ONNX parts recorded in {directory / (record.model_name + '.onnx.json')} were "
                                f"exported from model sha256 {record.model_sha256[:12]}…, but {manifest.name}'s "
                                f"manifest names {manifest.sha256[:12]}…; export them again with 'nairbus "
                                f"export-onnx --model {manifest.name}'")
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX part {path}; export it with 'nairbus export-onnx --model {manifest.name}'")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != part.sha256:  # before ONNX Runtime parses it: a damaged file is named as one
        raise PartMismatchError(f"{path} has sha256 {sha256[:12]}…, its record says {part.sha256[:12]}…; "
                                f"export it again with 'nairbus export-onnx --model {manifest.name}'")
    runner = OnnxRunner(data, threads=threads)
    runner.check_model(manifest.sha256)
    return runner


PARTS: tuple[str, ...] = ("whole", "head")
"""The parts a pipeline may run: the whole model (decision, auto) and the head at its artifact's split (nair, auto)."""


class OnnxPipeline:
    """A model's exported device parts paired with a NAIR artifact (or with none: the whole model only).

    ``parts`` are loaded (and checked) at once; a part not named there is loaded, with the same checks, when first run
    — a sensor loads what its mode runs (a decision sensor the whole model, a nair sensor its head), so it holds one
    session, not two."""

    runtime: Literal["onnx"] = "onnx"
    """What runs the model (:data:`nairbus.models.device.RUNTIMES`)."""

    def __init__(self, manifest: ModelManifest, record: ExportedParts, directory: Path,
                 artifact: NairArtifact | None, threads: int = 1, parts: Collection[str] = PARTS) -> None:
        if artifact is not None:
            artifact.check_model(manifest.name, manifest.sha256)
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; one of {', '.join(PARTS)}")
        self.manifest = manifest
        self.record = record
        self.directory = directory
        self.threads = threads
        self.parts = tuple(parts)
        self._artifact = artifact
        spec = input_spec(manifest)
        self.labels: tuple[str, ...] = tuple(manifest.labels or spec.labels)
        self._spec = spec
        self._whole: OnnxRunner | None = None
        self._head: OnnxRunner | None = None
        self._forward: ForwardTransform | None = None
        whole = record.parts.get("whole")
        if whole is None or whole.split is not None:
            raise FileNotFoundError(f"{directory / (record.model_name + '.onnx.json')} lists no whole-model part; "
                                    f"export it with 'nairbus export-onnx --model {manifest.name}'")
        if artifact is not None and record.head(artifact.split) is None:
            raise FileNotFoundError(f"no ONNX head of {manifest.name} at split {artifact.split} in "
                                    f"{directory / (record.model_name + '.onnx.json')}; export it with 'nairbus "
                                    f"export-onnx --model {manifest.name}' (it exports the split of every NAIR "
                                    "artifact beside the manifest)")
        if "whole" in parts:
            self._whole = load_part(record, whole, directory, manifest, threads)
        if artifact is not None:
            self._forward = ForwardTransform(artifact)
            if "head" in parts:
                _ = self.head_runner

    @property
    def part_hashes(self) -> tuple[str, ...]:
        """sha256 of the whole model's file and, with an artifact, of the head's at its split (what a birth names)."""
        head = self.record.head(self._artifact.split) if self._artifact is not None else None
        return (self.record.parts["whole"].sha256, *((head.sha256,) if head is not None else ()))

    @property
    def whole(self) -> OnnxRunner:
        """The whole model's runner (loaded and checked on first use when it was not among ``parts``)."""
        if self._whole is None:
            part = self.record.parts["whole"]
            self._whole = load_part(self.record, part, self.directory, self.manifest, self.threads)
        return self._whole

    @property
    def head_runner(self) -> OnnxRunner:
        """The head at the artifact's split (loaded and checked on first use when it was not among ``parts``)."""
        if self._head is None:
            artifact = self.artifact  # the artifact's own error when there is none
            head = self.record.head(artifact.split)
            assert head is not None, artifact.split  # checked when the pipeline was made
            self._head = load_part(self.record, head, self.directory, self.manifest, self.threads)
        return self._head

    @classmethod
    def load(cls, model_name: str = "base", artifact_path: Path | None = None, *, optional: bool = False,
             threads: int = 1, parts: Collection[str] = PARTS) -> OnnxPipeline:
        """Model ``model_name``'s exported parts (from ``<model>.onnx.json`` beside its manifest) and its artifact
        (default ``<model>.nair.npz`` beside the manifest); with ``optional``, a missing artifact file leaves the
        pipeline without one. ``parts``: what is loaded at once (the rest when first run)."""
        name, directory = locate_model(model_name)
        manifest = read_manifest(name, directory)
        record = read_parts(parts_record_path(name, directory))
        path = artifact_path or default_artifact_path(name, directory)
        artifact = None if optional and not path.is_file() else NairArtifact.load(path)
        return cls(manifest, record, directory, artifact, threads, parts)

    @property
    def has_artifact(self) -> bool:
        return self._artifact is not None

    @property
    def artifact(self) -> NairArtifact:
        if self._artifact is None:
            raise FileNotFoundError(f"model {self.manifest.name} has no NAIR artifact here; create one with "
                                    f"'nairbus calibrate --model {self.manifest.name}' (decision and image need none)")
        return self._artifact

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    def head(self, images: np.ndarray) -> np.ndarray:
        """The IR at the artifact's split of uint8 images (converted by the input spec first)."""
        return self.head_runner.run(self._spec.normalise(images))

    def encode_ir(self, ir: np.ndarray) -> np.ndarray:
        """Transform (numpy) and quantise an IR batch ``(N, C, H, W)`` to codes ``(N, K)``."""
        artifact = self.artifact
        assert self._forward is not None, artifact.split
        return self._forward.encode(ir)

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self.encode_ir(self.head(images))

    def full_model_probs(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """The whole model's class probabilities (softmax of its logits, float32)."""
        out = []
        for start in range(0, len(images), batch_size):
            out.append(softmax(self.whole.run(self._spec.normalise(images[start : start + batch_size]))))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def head_shares(self) -> dict[str, float]:
        """The recorded MAC share of each split with an exported head (a ``ValueError`` when none was counted)."""
        if not self.record.head_shares:
            raise ValueError(f"the export of {self.manifest.name} could not count its MACs")
        return {split: share for split, share in self.record.head_shares.items() if self.record.head(split)}

    def with_artifact(self, artifact: NairArtifact) -> OnnxPipeline:
        return OnnxPipeline(self.manifest, self.record, self.directory, artifact, self.threads, self.parts)
