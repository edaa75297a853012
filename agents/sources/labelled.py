"""A labelled folder of image files: one sub-folder per class, as a user sorts a few hundred of their own camera's
frames to choose settings on (``nairbus calibrate --wire-bytes N --validation-dir DIR``). Not a frame source: it is
read once, whole, with the labels its sub-folders give.

A sub-folder names its class by the label (any character outside ``A-Za-z0-9._-`` written as ``_``: ``T-shirt_top`` for
"T-shirt/top") or by the class index (``0``); ``nairbus export-images --labelled`` writes the first form. Files that
cannot be used are counted by reason (as :class:`nairbus.agents.sources.folder.FolderSource` counts them), never fatal;
a sub-folder that names no class is an error that lists the names expected.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nairbus.agents.sources.folder import FolderSource
from nairbus.models.architectures.spec import InputSpec

__all__ = ["LabelledFolderError", "LabelledImages", "class_folder_name", "read_labelled_folder"]


class LabelledFolderError(ValueError):
    """The folder is missing, or is not one sub-folder per class of the model."""


def class_folder_name(label: str) -> str:
    """The sub-folder name of a class: its label with every run of characters outside ``A-Za-z0-9._-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "_"


@dataclass(frozen=True)
class LabelledImages:
    """The usable images in the model's input spec, their class indices, and a sha256 of the ``class/file`` names
    read (what a choice made on them saw)."""

    images: np.ndarray
    labels: np.ndarray
    names_sha256: str
    counters: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _class_of(folders: Sequence[Path], labels: Sequence[str]) -> dict[Path, int]:
    names = [class_folder_name(label) for label in labels]
    named = {name: i for i, name in enumerate(names) if names.count(name) == 1}  # a shared name: indices only
    by_name = {**named, **{str(i): i for i in range(len(labels))}}
    unknown = [p.name for p in folders if p.name not in by_name]
    if unknown:
        raise LabelledFolderError(
            f"sub-folders {', '.join(sorted(unknown))} name no class of the model; expected one sub-folder per class, "
            f"named {', '.join(named)} (or 0..{len(labels) - 1})")
    return {p: by_name[p.name] for p in folders}


def read_labelled_folder(folder: Path, spec: InputSpec, labels: Sequence[str],
                         advance: Callable[[], None] | None = None) -> LabelledImages:
    """Every usable image of ``folder``'s class sub-folders (classes in index order, files in name order), converted
    to ``spec``; ``advance`` is called once per file read (a progress bar)."""
    if not folder.is_dir():
        raise LabelledFolderError(f"labelled folder {folder} does not exist or is not a directory")
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise LabelledFolderError(f"{folder} has no sub-folders: put each class's images in a sub-folder named by "
                                  f"its label ({', '.join(class_folder_name(label) for label in labels)})")
    classes = _class_of(folders, labels)
    images: list[np.ndarray] = []
    targets: list[int] = []
    names = hashlib.sha256()
    counters: Counter[str] = Counter()
    for sub in sorted(folders, key=lambda p: (classes[p], p.name)):
        source = FolderSource(sub, spec=spec)
        for _frame_id, path, image in source.files():
            images.append(image)
            targets.append(classes[sub])
            names.update(f"{sub.name}/{path.name}".encode() + b"\0")
            if advance:
                advance()
        counters.update(source.counters)
    return LabelledImages(np.stack(images) if images else np.zeros((0, *spec.pixel_shape), dtype=np.uint8),
                          np.asarray(targets, dtype=np.int64), names.hexdigest(), counters)
