"""The registry of data sets, by name: how to load each split, its labels and its native input spec.

Fashion-MNIST is the one data set here (Debian's ``dataset-fashion-mnist``; nothing is downloaded). A new data set is
one loader plus one :func:`register` line; commands that take ``--dataset`` look it up here. Every caller outside
``models/data/`` gets its images and labels through here, by the data set's name (:data:`DEFAULT_DATASET` when it
knows no other): :func:`load_data` and :func:`dataset_labels`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nairbus.models.architectures.spec import InputSpec
from nairbus.models.data.fashion_mnist import LABELS, MEAN, STD, Dataset, Split, load_split

__all__ = ["DATASETS", "DEFAULT_DATASET", "DatasetInfo", "dataset_labels", "fashion_mnist_spec", "get_dataset",
           "load_data", "register"]

DEFAULT_DATASET = "fashion-mnist"
"""The data set every shipped model was trained on: the one a caller means when it names none."""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """A registered data set: its name, what it is, how to load a split, and the input spec its images have."""

    name: str
    description: str
    load: Callable[[Split, str | Path | None, int | None], Dataset]
    """``(split, data directory or None for the default, limit)`` → the split, or its first ``limit`` items."""
    spec: InputSpec


DATASETS: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Make a data set available by name."""
    if info.name in DATASETS:
        raise ValueError(f"data set {info.name!r} is registered twice")
    DATASETS[info.name] = info
    return info


def get_dataset(name: str) -> DatasetInfo:
    """A registered data set; a clear error naming the registered ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; registered: {', '.join(DATASETS)}") from None


def load_data(split: Split, dataset: str = DEFAULT_DATASET, data_dir: str | Path | None = None,
              limit: int | None = None) -> Dataset:
    """A split (``train`` or ``test``) of a registered data set, read from ``data_dir`` (else the loader's default);
    ``limit``: only its first ``limit`` items (a sensor replaying the first frames holds those, not the split)."""
    return get_dataset(dataset).load(split, data_dir, limit)


def dataset_labels(dataset: str = DEFAULT_DATASET) -> tuple[str, ...]:
    """The class names of a registered data set, in class order (its input spec's labels)."""
    return get_dataset(dataset).spec.labels


register(DatasetInfo(DEFAULT_DATASET, "Fashion-MNIST: 70 000 28x28 grey images, 10 classes (Debian's "
                     "dataset-fashion-mnist)", load_split,
                     InputSpec(channels=1, height=28, width=28, mean=(MEAN,), std=(STD,), labels=LABELS)))


def fashion_mnist_spec(channels: int = 1, size: int = 28) -> InputSpec:
    """The data set's input spec (:data:`nairbus.models.data.registry.DATASETS`): 28x28 grey, or resized and replicated
    to RGB with the same normalisation per channel."""
    native = get_dataset(DEFAULT_DATASET).spec
    return native.model_copy(update={"channels": channels, "height": size, "width": size,
                                     "mean": native.mean * channels, "std": native.std * channels})
