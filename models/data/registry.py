"""The registry of data sets, by name: how to load each split, its labels and its native input spec.

Fashion-MNIST is the one data set here (Debian's ``dataset-fashion-mnist``; nothing is downloaded). A new data set is
one loader plus one :func:`register` line; commands that take ``--dataset`` look it up here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nairbus.models.architectures.resnet import MEAN, STD
from nairbus.models.architectures.split import InputSpec
from nairbus.models.data.fashion_mnist import LABELS, Dataset, Split, load_split

__all__ = ["DATASETS", "DatasetInfo", "get_dataset", "register"]


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """A registered data set: its name, what it is, how to load a split, and the input spec its images have."""

    name: str
    description: str
    load: Callable[[Split, str | Path | None], Dataset]
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


register(DatasetInfo("fashion-mnist", "Fashion-MNIST: 70 000 28x28 grey images, 10 classes (Debian's "
                     "dataset-fashion-mnist)", load_split,
                     InputSpec(channels=1, height=28, width=28, mean=(MEAN,), std=(STD,), labels=LABELS)))
