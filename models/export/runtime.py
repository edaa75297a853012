"""Run an exported device part without torch: onnxruntime on one thread, numpy in and out.

This module imports numpy and onnxruntime only — nothing of ``nairbus`` that imports torch — so a sensor installed
without torch runs the ONNX files :mod:`nairbus.models.export.onnx` wrote (``nairbus.models.__init__`` and
``nairbus.models.export.__init__`` import nothing). :func:`normalise` is the numpy twin of
:meth:`~nairbus.models.architectures.split.InputSpec.preprocess`, bit for bit, so a frame goes from uint8 pixels to
the part's input without torch too.

One intra-op and one inter-op thread, sequential execution: a sensor is a Pi-class device with one core to spare, and
a single thread keeps each run's cost steady and its outputs reproducible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

__all__ = ["OnnxRunner", "PartMismatchError", "normalise", "session_options", "softmax"]

META_PREFIX = "nairbus."
MAX_RUN = 8
"""Frames per session run. onnxruntime's arena keeps the activations of the largest run it has seen: 13 MB for a
batch of 32 28 × 28 frames of the base model, 3 MB for 8 — a tenth of a Pi-class sensor's memory — at the same CPU
per frame, and the outputs are bit-identical whatever the chunk (tests/models/test_onnx_export.py)."""


class PartMismatchError(RuntimeError):
    """An exported part was paired with a model it was not exported from, or given input it does not take."""


def session_options(threads: int = 1) -> ort.SessionOptions:
    """onnxruntime options: ``threads`` intra-op threads, one inter-op thread, sequential execution."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers on a device's log
    return options


class OnnxRunner:
    """An exported device part (an ONNX file, or its bytes) in an onnxruntime CPU session: a float32 batch
    ``(N, C, H, W)`` in, a float32 array ``(N, ...)`` out (the IR at the split, or the logits)."""

    def __init__(self, model: Path | bytes, threads: int = 1, max_run: int = MAX_RUN) -> None:
        if max_run < 1:
            raise ValueError(f"max_run must be >= 1, not {max_run}")
        self.max_run = max_run
        """The most frames one session run takes: a longer batch runs in chunks of this many."""
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        """sha256 of the ONNX file: what a birth or a manifest names it by."""
        self._session = ort.InferenceSession(data, sess_options=session_options(threads),
                                             providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise PartMismatchError(f"an exported part has one input and one output, not {len(inputs)} and "
                                    f"{len(outputs)}")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in inputs[0].shape[1:])
        """One frame's input shape ``(C, H, W)`` (the batch dimension is dynamic)."""
        meta = self._session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, str] = {k[len(META_PREFIX):]: v for k, v in meta.items()
                                         if k.startswith(META_PREFIX)}
        """The ``nairbus.*`` metadata the exporter wrote (``part``, ``split``, ``model_sha256``, ``input_spec``...)."""

    @property
    def model_sha256(self) -> str:
        """sha256 of the model weights this part was exported from ("" when the file does not say)."""
        return self.metadata.get("model_sha256", "")

    def check_model(self, model_sha256: str) -> None:
        """Refuse a part exported from another model than the one whose hash is ``model_sha256``."""
        if self.model_sha256 != model_sha256:
            raise PartMismatchError(f"ONNX part {self.sha256[:12]} was exported from model "
                                    f"{self.model_sha256[:12] or '(unnamed)'}…, not {model_sha256[:12]}…; "
                                    "export it again from this model")

    def input_spec(self) -> dict[str, object]:
        """The input spec recorded at export (channels, height, width, mean, std); empty when the file has none."""
        text = self.metadata.get("input_spec")
        return dict(json.loads(text)) if text else {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The part's output for a normalised float32 batch ``(N, *input_shape)``."""
        if batch.dtype != np.float32:
            raise PartMismatchError(f"an exported part takes float32 input, not {batch.dtype}")
        if batch.ndim != 1 + len(self.input_shape) or tuple(batch.shape[1:]) != self.input_shape:
            raise PartMismatchError(f"input of shape {tuple(batch.shape)} does not fit (N, "
                                    f"{', '.join(map(str, self.input_shape))})")
        outs = [self._session.run([self.output_name], {self.input_name: np.ascontiguousarray(chunk)})[0]
                for chunk in np.split(batch, range(self.max_run, len(batch), self.max_run))]
        return np.asarray(outs[0] if len(outs) == 1 else np.concatenate(outs), dtype=np.float32)


def normalise(images: np.ndarray, channels: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Converted uint8 images — grey ``(N, H, W)``, RGB ``(N, H, W, 3)`` or already ``(N, C, H, W)`` — of a
    ``channels``-channel input spec as the normalised float32 batch ``(N, C, H, W)``: ``(x / 255 - mean) / std`` in
    float32 (``mean`` and ``std``: one value, or one per channel), the same numbers as
    :meth:`~nairbus.models.architectures.split.InputSpec.preprocess`."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise ValueError(f"images must be uint8 pixels, not {x.dtype}")
    if x.ndim == 3 and channels == 1:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] == channels and x.shape[1] != channels:
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"images of shape {x.shape[1:]} are not {channels}-channel frames")
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x.astype(np.float32) / np.float32(255.0) - m) / s, dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float32, the largest logit subtracted first (torch's ``F.softmax`` to float32 rounding)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)
