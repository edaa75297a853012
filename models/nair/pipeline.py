"""The NAIR split model as two halves: ``encode`` on the sensor, ``decode`` on the fusion node.

``decode(encode(x))`` is the split model. The offline evaluator and the live agents call the same two methods, so
the bus reproduces the evaluator frame for frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.architectures.spec import InputSpec
from nairbus.models.loss import LossModel
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.codec import NairCodec, dequantise, quantise
from nairbus.models.nair.transform import NairArtifact, NairTransform
from nairbus.models.store import default_artifact_path, load_model


@dataclass(frozen=True, slots=True)
class Received:
    """What the receiver got for a batch of frames: dequantised values and masks ``(N, K)``, payload bytes ``(N,)``."""

    values: np.ndarray
    mask: np.ndarray
    payload_bytes: np.ndarray


class NoArtifactError(FileNotFoundError):
    """A pipeline loaded without a NAIR artifact was asked for NAIR features (it runs the whole model only)."""


class NairPipeline:
    """A mature model paired with a NAIR artifact calibrated for it — or with none, for what needs only the whole
    model (its decision, a received image, its labels): :attr:`has_artifact` says which.

    It is the ``torch`` :class:`~nairbus.models.device.DevicePipeline` a sensor runs (and the reference the ``onnx``
    one, :class:`~nairbus.models.export.pipeline.OnnxPipeline`, is tested against), and the fusion side's model."""

    runtime: Literal["torch"] = "torch"
    """What runs the model (:data:`nairbus.models.device.RUNTIMES`)."""
    part_hashes: tuple[str, ...] = ()
    """The exported files it runs: none, torch runs the weights the manifest names."""

    def __init__(self, model: ResNet, manifest: ModelManifest, artifact: NairArtifact | None) -> None:
        if artifact is not None:
            artifact.check_model(manifest.name, manifest.sha256)
        self.model = model
        self.manifest = manifest
        self._artifact = artifact
        self._transform = NairTransform(artifact) if artifact is not None else None
        self._codec = NairCodec(artifact) if artifact is not None else None
        self.labels: tuple[str, ...] = tuple(manifest.labels
                                             or [str(i) for i in range(model.config.num_classes)])

    @classmethod
    def load(cls, model_name: str = "base", artifact_path: Path | None = None, *,
             optional: bool = False) -> NairPipeline:
        """Load a model and its artifact (default ``<model>.nair.npz`` beside the model's manifest); with
        ``optional``, a missing artifact file leaves the pipeline without one instead of failing."""
        model, manifest = load_model(model_name)
        path = artifact_path or default_artifact_path(model_name)
        if optional and not path.is_file():
            return cls(model, manifest, None)
        return cls(model, manifest, NairArtifact.load(path))

    @property
    def has_artifact(self) -> bool:
        """Whether this pipeline can make and decode NAIR features (else: the whole model only)."""
        return self._artifact is not None

    @property
    def artifact(self) -> NairArtifact:
        """The NAIR artifact (:class:`NoArtifactError` when the model was loaded without one)."""
        if self._artifact is None:
            raise NoArtifactError(f"model {self.manifest.name} has no NAIR artifact here; create one with "
                                  f"'nairbus calibrate --model {self.manifest.name}' (decision and image need none)")
        return self._artifact

    @property
    def transform(self) -> NairTransform:
        """The artifact's transform (:class:`NoArtifactError` without an artifact)."""
        if self._transform is None:
            raise NoArtifactError(self.artifact.sha256)  # raises the artifact's own message
        return self._transform

    @property
    def codec(self) -> NairCodec:
        """The artifact's codec (:class:`NoArtifactError` without an artifact)."""
        if self._codec is None:
            raise NoArtifactError(self.artifact.sha256)
        return self._codec

    @property
    def input_spec(self) -> InputSpec:
        """What the model takes (frames are converted to it at the edge)."""
        return self.model.input_spec

    def head(self, images: np.ndarray) -> np.ndarray:
        """The IR at the artifact's split for uint8 images (the model's input shape, or any size, grey or RGB: they
        are converted by the input spec first)."""
        with torch.no_grad():
            x = self.model.input_spec.prepare(images)
            return self.model.head(x, self.artifact.split).numpy()

    def encode_ir(self, ir: np.ndarray) -> np.ndarray:
        """Transform and quantise an IR batch ``(N, C, H, W)`` to codes ``(N, K)``."""
        with torch.no_grad():
            comps = self.transform.forward(torch.from_numpy(ir)).numpy()
        a = self.artifact
        return quantise(comps, a.lo, a.step, a.bits)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Sensor half: uint8 images ``(N, ...)`` to quantiser codes ``(N, K)``."""
        return self.encode_ir(self.head(images))

    def decode(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Fusion half: received component values and mask ``(N, K)`` to class probabilities ``(N, classes)``."""
        with torch.no_grad():
            ir = self.transform.reconstruct(torch.from_numpy(values), torch.from_numpy(mask))
            logits = self.model.tail(ir, self.artifact.split)
            return torch.softmax(logits, dim=1).numpy()

    def head_shares(self) -> dict[str, float]:
        """The share of the model's MACs each split point's head runs (counted with torch; an exception for an
        imported model the counter cannot walk)."""
        from nairbus.models.evaluation.cost import model_macs

        total, heads, _shapes = model_macs(self.model)
        return {split: macs / total for split, macs in heads.items()}

    def with_artifact(self, artifact: NairArtifact) -> NairPipeline:
        """The same model paired with ``artifact`` (checked against it)."""
        return NairPipeline(self.model, self.manifest, artifact)

    def full_model_probs(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """The mature model's own class probabilities (no split, no codec)."""
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = self.model.input_spec.prepare(images[start : start + batch_size])
                out.append(torch.softmax(self.model(x), dim=1).numpy())
        return np.concatenate(out)

    def receive(self, codes: np.ndarray, frame_ids: np.ndarray, budget_bytes: int | None, loss: LossModel) -> Received:
        """Offline channel: what fusion would hold for each frame under a byte budget and injected loss.

        Every frame goes through the same codec as on the bus (:class:`~nairbus.models.nair.codec.NairCodec`): the
        prefix the budget buys is packed into runs (one run; under injected loss cut along the artifact's plan, each
        piece lost or kept as a live sensor does), and fusion's decode turns what arrived into values and a mask.
        """
        by_plan = loss.kind != "none"
        values = np.zeros(codes.shape, dtype=np.float32)
        mask = np.zeros(codes.shape, dtype=bool)
        payload = np.zeros(len(codes), dtype=np.int64)
        for row, frame_id in enumerate(frame_ids.tolist()):
            runs = self.codec.encode(codes[row], end=self.codec.fit(codes[row], budget_bytes), by_plan=by_plan)
            if by_plan and runs:
                runs = [run for run, gone in zip(runs, loss.lost(int(frame_id), len(runs)).tolist(), strict=True)
                        if not gone]
            values[row], mask[row] = self.codec.decode(runs)
            payload[row] = sum(len(run.data) for run in runs)
        return Received(values, mask, payload)

    def prefix_probs(self, codes: np.ndarray, ends: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Probabilities when frame ``i`` delivered the prefix ``[0, ends[i])`` of its components (offline twin of a
        live run whose budgets varied frame by frame)."""
        a = self.artifact
        out = []
        positions = np.arange(a.n_components)[None, :]
        for start in range(0, len(codes), batch_size):
            sl = slice(start, start + batch_size)
            mask = positions < np.asarray(ends[sl])[:, None]
            values = np.where(mask, dequantise(codes[sl], a.lo, a.step), 0.0).astype(np.float32)
            out.append(self.decode(values, mask))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def encode_all(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """:meth:`encode` over many images, in batches."""
        return np.concatenate([self.encode(images[s : s + batch_size]) for s in range(0, len(images), batch_size)])

    def offline_probs(
        self,
        codes: np.ndarray,
        frame_ids: np.ndarray,
        budget_bytes: int | None,
        loss: LossModel | None = None,
        batch_size: int = 500,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, fraction of the IR received and payload bytes per frame, as the live bus would see them.

        ``codes`` are the sensor half's output (:meth:`encode_all`), so many channel conditions share one head pass.
        ``loss`` defaults to no injected loss.
        """
        loss = loss if loss is not None else LossModel()
        probs, fractions, payloads = [], [], []
        for start in range(0, len(codes), batch_size):
            sl = slice(start, start + batch_size)
            got = self.receive(codes[sl], frame_ids[sl], budget_bytes, loss)
            probs.append(self.decode(got.values, got.mask))
            fractions.append(got.mask.mean(axis=1))
            payloads.append(got.payload_bytes)
        return np.concatenate(probs), np.concatenate(fractions), np.concatenate(payloads)
