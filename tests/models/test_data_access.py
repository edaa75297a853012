"""Every data access goes through the data-set registry (``models/data/registry.py``), by the data set's name: no
module outside ``models/data/`` reads a loader's split function directly, and the registry's convenience functions
give what the loader gives."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import numpy as np
import pytest

from nairbus.models.data.fashion_mnist import LABELS, load_split
from nairbus.models.data.registry import DEFAULT_DATASET, dataset_labels, get_dataset, load_data

REPO = Path(__file__).resolve().parents[2]
LOADER_FUNCTION = "load_split"
"""The Fashion-MNIST loader's split function: only the registry (``models/data/``) may name it."""


def direct_loader_uses(root: Path) -> list[str]:
    """``path:line`` of every import, call or other reference of :data:`LOADER_FUNCTION` in ``agents/`` and
    ``models/`` under ``root``, ``models/data/`` left out."""
    found = []
    for package in ("agents", "models"):
        for path in sorted((root / package).rglob("*.py")):
            if path.is_relative_to(root / "models" / "data"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                named = (isinstance(node, ast.alias) and node.name == LOADER_FUNCTION) or (
                    isinstance(node, ast.Name) and node.id == LOADER_FUNCTION) or (
                    isinstance(node, ast.Attribute) and node.attr == LOADER_FUNCTION)
                if named:
                    found.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}")
    return found


def test_no_module_outside_models_data_reads_the_loader_directly() -> None:
    assert direct_loader_uses(REPO) == []


def test_the_check_finds_a_direct_read(tmp_path: Path) -> None:
    (tmp_path / "agents" / "tools").mkdir(parents=True)
    (tmp_path / "models" / "data").mkdir(parents=True)
    (tmp_path / "agents" / "tools" / "sneaky.py").write_text(
        "from nairbus.models.data import fashion_mnist\n"
        "from nairbus.models.data.fashion_mnist import load_split\n"
        "from nairbus.models.architectures.imported import load_split_model\n"
        "\n"
        "def f():\n"
        "    return fashion_mnist.load_split('test'), load_split_model\n")
    (tmp_path / "models" / "data" / "registry.py").write_text("from .fashion_mnist import load_split\n")
    assert direct_loader_uses(tmp_path) == ["agents/tools/sneaky.py:2", "agents/tools/sneaky.py:6"]


def test_load_data_reads_the_named_data_set(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([3, 7]))
    data = load_data("test", data_dir=tmp_path)
    assert np.array_equal(data.images, images)
    assert data.labels.tolist() == [3, 7]
    same = load_data("test", DEFAULT_DATASET, tmp_path)
    assert np.array_equal(same.images, load_split("test", tmp_path).images)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        load_data("test", "imagenet", tmp_path)


def test_labels_come_from_the_registered_spec() -> None:
    assert DEFAULT_DATASET == "fashion-mnist"
    assert dataset_labels() == get_dataset(DEFAULT_DATASET).spec.labels == LABELS
    with pytest.raises(ValueError, match="registered: fashion-mnist"):
        dataset_labels("imagenet")
