"""Fashion-MNIST loading from the upstream IDX files, with a clear error when they are missing.

The files come from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``); set
``NAIRBUS_DATA_DIR`` or pass ``data_dir`` to read the same four files from elsewhere. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

MEAN = 0.2860
STD = 0.3530
"""The data set's pixel mean and standard deviation on the [0, 1] scale: the shipped models' normalisation."""

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "NAIRBUS_DATA_DIR"
LABELS: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
Split = Literal["train", "test"]


class DatasetMissingError(FileNotFoundError):
    """The Fashion-MNIST IDX files are not where we looked."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """Images as uint8 ``(N, 28, 28)`` and labels as int64 ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the directory holding the IDX files: argument, then ``$NAIRBUS_DATA_DIR``, then Debian's path."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


READ_CHUNK = 1 << 20
"""Bytes an IDX file is read in (:func:`read_idx`)."""


def _idx_path(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        path = directory / name
        if path.is_file():
            return path
    raise DatasetMissingError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install it with "
        f"'sudo apt-get install dataset-fashion-mnist' (files land in {DEFAULT_DATA_DIR}), or point "
        f"{DATA_DIR_ENV} / --data-dir at a directory holding the four upstream IDX files."
    )


def _idx_shape(head: bytes, ndim_bytes: bytes) -> tuple[int, ...]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    if len(ndim_bytes) != 4 * head[3]:
        raise ValueError("IDX header cut short")
    return tuple(int.from_bytes(ndim_bytes[4 * i : 4 * i + 4], "big") for i in range(head[3]))


def read_idx(path: Path, limit: int | None = None) -> np.ndarray:
    """An IDX file (unsigned-byte payload, gzipped or not) as an array of its declared shape, read straight into the
    array: the decompressed file is never held beside it (a sensor's peak memory). ``limit``: only the first
    ``limit`` rows are read (a replay of the first frames holds those, not the split)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        head = handle.read(4)
        declared = _idx_shape(head, handle.read(4 * head[3]) if len(head) == 4 else b"")
        shape = declared if limit is None or not declared else (min(declared[0], limit), *declared[1:])
        data = np.empty(shape, dtype=np.uint8)
        view = data.data.cast("B")
        done = 0
        while done < len(view):  # in chunks: gzip's readinto decompresses into a buffer of the size asked for
            got = handle.readinto(view[done : done + READ_CHUNK])
            if not got:
                break
            done += got
        if done != data.size or (shape == declared and handle.read(1)):
            raise ValueError(f"IDX payload of {path} is not the {data.size} bytes its header says {declared}")
    return data


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an IDX file (unsigned-byte payload) into an array of its declared shape."""
    shape = _idx_shape(raw[:4], raw[4 : 4 + 4 * raw[3]] if len(raw) >= 4 else b"")
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(shape))
    if data.size != int(np.prod(shape)):
        raise ValueError(f"IDX payload holds {data.size} bytes, header says {shape}")
    return data.reshape(shape).copy()


def load_split(split: Split, data_dir: str | Path | None = None, limit: int | None = None) -> Dataset:
    """Load the ``train`` (60 000) or ``test`` (10 000) split (``limit``: its first ``limit`` frames only)."""
    directory = resolve_data_dir(data_dir)
    image_stem, label_stem = _FILES[split]
    images = read_idx(_idx_path(directory, image_stem), limit)
    labels = read_idx(_idx_path(directory, label_stem), limit).astype(np.int64)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape} / {labels.shape} in {directory}")
    return Dataset(images=images, labels=labels)


def train_calibration_split(
    train: Dataset, holdout: int = 5000, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split the training set into (fit, holdout) deterministically; the test split is never touched."""
    order = np.random.default_rng(seed).permutation(len(train))
    hold, fit = order[:holdout], order[holdout:]
    return (
        Dataset(train.images[fit], train.labels[fit]),
        Dataset(train.images[hold], train.labels[hold]),
    )


VALIDATION_IMAGES = 5000
"""Size of the validation split (:func:`validation_split`)."""


def validation_split(train: Dataset, n: int = VALIDATION_IMAGES) -> Dataset:
    """A fixed validation split of the training images: the last ``n`` of the seed-0 permutation.

    ``nairbus calibrate`` fits on the first images of that same permutation (10 000 by default), so the two never
    overlap while ``n + images <= 60 000``; selections (the auto-mode tables) are made here, never on the test split.
    """
    hold = np.sort(_validation_indices(len(train), n))
    return Dataset(train.images[hold], train.labels[hold])


def _validation_indices(total: int, n: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(total)[total - n :]


def fit_split(train: Dataset, n: int = VALIDATION_IMAGES) -> Dataset:
    """The training images *outside* :func:`validation_split`, in their original order: what a model trained
    with a validation-based choice (length, checkpoint, fill) may fit on."""
    keep = np.ones(len(train), dtype=bool)
    keep[_validation_indices(len(train), n)] = False
    return Dataset(train.images[keep], train.labels[keep])
