"""A labelled folder of image files (one sub-folder per class, named by label or index): read whole, with its
labels, bad files counted, sub-folders that name no class refused with the names expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nairbus.agents.sources.labelled import LabelledFolderError, class_folder_name, read_labelled_folder
from nairbus.models.architectures.registry import fashion_mnist_spec

SPEC = fashion_mnist_spec()
LABELS = list(SPEC.labels)


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((28, 28), value, dtype=np.uint8)).save(path)


def test_sub_folders_give_the_labels_by_name_or_index(tmp_path: Path) -> None:
    assert class_folder_name("T-shirt/top") == "T-shirt_top"
    _png(tmp_path / "Trouser" / "b.png", 20)
    _png(tmp_path / "T-shirt_top" / "z.png", 10)
    _png(tmp_path / "T-shirt_top" / "a.png", 11)
    _png(tmp_path / "9" / "x.png", 90)
    (tmp_path / "9" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    seen: list[int] = []
    read = read_labelled_folder(tmp_path, SPEC, LABELS, advance=lambda: seen.append(1))
    assert read.labels.tolist() == [0, 0, 1, 9]
    assert read.images[:, 0, 0].tolist() == [11, 10, 20, 90]  # classes in index order, files in name order
    assert read.images.shape == (4, 28, 28)
    assert len(seen) == 4
    assert sum(v for k, v in read.counters.items() if k.startswith("bad_")) == 1
    again = read_labelled_folder(tmp_path, SPEC, LABELS)
    assert again.names_sha256 == read.names_sha256
    (tmp_path / "9" / "x.png").rename(tmp_path / "9" / "y.png")
    assert read_labelled_folder(tmp_path, SPEC, LABELS).names_sha256 != read.names_sha256


def test_a_sub_folder_that_names_no_class_is_refused_with_the_names_expected(tmp_path: Path) -> None:
    _png(tmp_path / "Trouser" / "a.png", 1)
    _png(tmp_path / "cats" / "a.png", 1)
    with pytest.raises(LabelledFolderError, match=r"cats.*T-shirt_top, Trouser"):
        read_labelled_folder(tmp_path, SPEC, LABELS)


def test_no_folder_or_no_sub_folders_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LabelledFolderError, match="does not exist"):
        read_labelled_folder(tmp_path / "missing", SPEC, LABELS)
    _png(tmp_path / "loose.png", 1)
    with pytest.raises(LabelledFolderError, match="no sub-folders"):
        read_labelled_folder(tmp_path, SPEC, LABELS)


def test_labels_that_share_a_folder_name_go_by_index(tmp_path: Path) -> None:
    _png(tmp_path / "1" / "a.png", 1)
    _png(tmp_path / "a_b" / "a.png", 1)
    with pytest.raises(LabelledFolderError, match="a_b"):
        read_labelled_folder(tmp_path, SPEC, ["a/b", "a b", "c"])
    (tmp_path / "a_b" / "a.png").unlink()
    (tmp_path / "a_b").rmdir()
    assert read_labelled_folder(tmp_path, SPEC, ["a/b", "a b", "c"]).labels.tolist() == [1]
