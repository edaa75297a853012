"""The shipped variant family as a deployment loads it: the family manifest, each variant's weights (sha256-checked)
and its softmax outputs. What a VP sensor, fusion agent or evaluator needs — nothing of training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.architectures.resnet import ResNet
from nairbus.models.architectures.spec import InputSpec
from nairbus.models.manifest import ModelManifest
from nairbus.models.store import WEIGHTS_DIR, load_model
from nairbus.models.vp.manifest import FamilyManifest

__all__ = ["LoadedVariant", "load_family", "softmax_outputs"]


def softmax_outputs(model: nn.Module, images: np.ndarray, batch_size: int = 1000, temperature: float = 1.0,
                    flip: bool = False, spec: InputSpec | None = None) -> np.ndarray:
    """Softmax of ``model`` on uint8 images as float32 ``(N, C)`` (optionally mirrored, softened).

    ``images``: grey ``(N, H, W)`` or RGB ``(N, H, W, 3)`` of any size, converted to the model's input spec (``spec``,
    else the model's own ``input_spec`` — a variant's manifest gives it —, else 28x28 grey Fashion-MNIST) the way every
    frame entering nairbus is (:meth:`InputSpec.prepare`); images already in that spec go in as they are.
    """
    spec = spec or getattr(model, "input_spec", None) or fashion_mnist_spec()
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = spec.prepare(images[start : start + batch_size]).to(device)
            if flip:
                x = x.flip(-1)
            out.append(F.softmax(model(x) / temperature, dim=1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, spec.num_classes), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class LoadedVariant:
    """One shipped variant: model in eval mode, its fusion weight and its per-variant manifest."""

    name: str
    model: ResNet
    weight: float
    manifest: ModelManifest


def load_family(directory: Path = WEIGHTS_DIR) -> tuple[FamilyManifest, dict[str, LoadedVariant]]:
    """The family manifest and every variant (sha256-checked against its manifest), in family order."""
    family = FamilyManifest.load(directory)
    out = {}
    for entry in family.variants:
        model, manifest = load_model(entry.weights_name, directory)
        if manifest.sha256 != entry.sha256:
            raise RuntimeError(f"variant {entry.name}: weights sha256 {manifest.sha256[:12]}… differs from the "
                               f"family manifest's {entry.sha256[:12]}…")
        out[entry.name] = LoadedVariant(entry.name, model, entry.fusion_weight, manifest)
    return family, out
