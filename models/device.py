"""What a sensor's device runs of a model, behind one protocol: :class:`DevicePipeline`, in torch or ONNX Runtime.

A NAIR-method sensor (``nair``, ``decision``, ``auto``, ``image``) asks its model for a handful of things: the IR at
its NAIR artifact's split for a batch of frames and its quantised codes, the whole model's class probabilities, the
input spec its frames are converted to, the labels, the manifest (the model's name and sha256 go into the birth)
and the artifact. Two implementations give them:

* ``torch``: :class:`nairbus.models.nair.pipeline.NairPipeline` — the model's weights in torch, as the hub and the
  offline evaluator run them (the reference);
* ``onnx``: :class:`nairbus.models.export.pipeline.OnnxPipeline` — the device parts exported by ``nairbus
  export-onnx`` (the head at the artifact's split, the whole model) in ONNX Runtime, and the NAIR transform in
  numpy: no torch.

This module imports no torch; :func:`load_device_pipeline` imports the implementation it is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from nairbus.models.architectures.spec import InputSpec
from nairbus.models.manifest import ModelManifest
from nairbus.models.nair.artifact import NairArtifact

__all__ = ["RUNTIMES", "DevicePipeline", "Runtime", "device_threads", "load_device_pipeline"]

Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx")
"""The runtimes a sensor's device part runs on: torch (the model's weights) or onnx (its exported parts)."""


@runtime_checkable
class DevicePipeline(Protocol):
    """A model as a sensor's device runs it, with the NAIR artifact it sends features of (or none: decision and
    image need the whole model only)."""

    @property
    def runtime(self) -> Runtime:
        """What runs the model: ``torch`` or ``onnx``."""
        ...

    @property
    def part_hashes(self) -> tuple[str, ...]:
        """sha256 of each exported file it may run (the whole model, the head at the artifact's split); empty for
        torch, which runs the weights the manifest names. A birth names them."""
        ...

    @property
    def manifest(self) -> ModelManifest:
        """The model's manifest (its name and sha256 name it in the birth)."""
        ...

    @property
    def labels(self) -> tuple[str, ...]:
        """The class labels, in class order."""
        ...

    @property
    def input_spec(self) -> InputSpec:
        """What the model takes (frames are converted to it at the edge)."""
        ...

    @property
    def has_artifact(self) -> bool:
        """Whether this pipeline can make NAIR features (else: the whole model only)."""
        ...

    @property
    def artifact(self) -> NairArtifact:
        """The NAIR artifact (a ``FileNotFoundError`` when the model was loaded without one)."""
        ...

    def head(self, images: np.ndarray) -> np.ndarray:
        """The IR ``(N, C, H, W)`` at the artifact's split of uint8 images (any size, grey or RGB)."""
        ...

    def encode_ir(self, ir: np.ndarray) -> np.ndarray:
        """Transform and quantise an IR batch to the artifact's codes ``(N, K)``."""
        ...

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 images to the artifact's codes ``(N, K)``: :meth:`head`, then :meth:`encode_ir`."""
        ...

    def full_model_probs(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """The whole model's class probabilities ``(N, classes)`` of uint8 images."""
        ...

    def head_shares(self) -> dict[str, float]:
        """The share of the model's MACs each split's head runs (the splits it can run a head at); an exception
        when the model cannot be counted."""
        ...

    def with_artifact(self, artifact: NairArtifact) -> DevicePipeline:
        """The same model paired with another artifact (of another split)."""
        ...


def load_device_pipeline(runtime: Runtime, model_name: str, artifact_path: Path | None = None, *,
                         optional: bool = False, threads: int = 1,
                         parts: Collection[str] = ("whole", "head")) -> DevicePipeline:
    """Model ``model_name`` (name or manifest path) on ``runtime`` with its artifact (default ``<model>.nair.npz``
    beside the manifest; with ``optional``, none when that file is missing). ``threads``: the ONNX Runtime sessions'
    intra-op threads (torch's pool is the process's: :func:`device_threads`). ``parts``: what ONNX Runtime loads at
    once, of ``whole`` and ``head`` (the rest when first run; torch holds one model)."""
    if runtime == "torch":
        from nairbus.models.nair.pipeline import NairPipeline

        return NairPipeline.load(model_name, artifact_path, optional=optional)
    if runtime == "onnx":
        from nairbus.models.export.pipeline import OnnxPipeline

        return OnnxPipeline.load(model_name, artifact_path, optional=optional, threads=threads, parts=parts)
    raise ValueError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")


@contextlib.contextmanager
def device_threads(runtime: Runtime, threads: int) -> Iterator[None]:
    """Run the model work of a ``runtime`` pipeline on ``threads`` compute threads inside the block: numpy's BLAS pool
    (the NAIR transform's matrix products in numpy) is limited to ``threads`` and restored (threadpoolctl: OpenBLAS
    otherwise runs a matrix product on every core, twice the CPU per frame of one thread on a device held to a
    quarter of one); torch's intra-op pool is set and restored (:func:`nairbus.models.store.compute_threads`); ONNX
    Runtime takes its count per session (:func:`load_device_pipeline`'s ``threads``), so for ``onnx`` torch is not
    imported."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        if runtime == "onnx":
            yield
            return
        from nairbus.models.store import compute_threads

        with compute_threads(threads):
            yield
