"""Frame sources: a folder of your own image files — conversion at the edge, bad files counted, --watch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nairbus.agents.sources.folder import FolderSource
from nairbus.agents.sources.images import read_image_file
from nairbus.models.architectures.registry import fashion_mnist_spec


def _png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


def test_files_are_read_in_name_order_and_converted_to_the_model_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    _png(tmp_path / "b.png", grey)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "a.jpg", quality=95)  # colour JPEG
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(tmp_path / "c.webp")  # a camera frame
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    source = FolderSource(tmp_path)
    got = list(source.files())
    assert [p.name for _, p, _ in got] == ["a.jpg", "b.png", "c.webp"]
    assert [i for i, _, _ in got] == [0, 1, 2]
    assert all(img.shape == (28, 28) and img.dtype == np.uint8 for _, _, img in got)
    assert np.array_equal(got[1][2], grey)  # a 28x28 grey PNG arrives untouched
    assert np.abs(got[0][2].astype(int) - grey).mean() < 12  # JPEG: lossy, but the same picture
    [batch] = list(FolderSource(tmp_path).batches(8))
    assert batch.frame_ids.tolist() == [0, 1, 2]
    assert batch.images.shape == (3, 28, 28)


def test_bad_files_are_counted_and_skipped_never_raised(tmp_path: Path) -> None:
    _png(tmp_path / "0-good.png", np.zeros((28, 28), np.uint8))
    (tmp_path / "1-empty.png").write_bytes(b"")
    (tmp_path / "2-text.png").write_text("hello")
    good = (tmp_path / "0-good.png").read_bytes()
    (tmp_path / "3-truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (100, 100)).save(tmp_path / "4.jpg")
    data = (tmp_path / "4.jpg").read_bytes()
    (tmp_path / "4.jpg").write_bytes(data[:200] + bytes(50) + data[250:300])  # corrupt JPEG
    # A decompression bomb: a tiny file claiming 20000 x 20000 pixels.
    Image.new("1", (20000, 20000)).save(tmp_path / "5-bomb.png", optimize=True)
    _png(tmp_path / "6-good.png", np.full((28, 28), 200, np.uint8))
    source = FolderSource(tmp_path)
    ids = [(i, p.name) for i, p, _ in source.files()]
    assert ids == [(0, "0-good.png"), (1, "6-good.png")]
    refused = {k: v for k, v in source.counters.items() if k.startswith("bad_")}
    assert sum(refused.values()) == 5, refused
    assert refused["bad_empty"] == 1
    assert refused["bad_too_large"] == 1
    assert source.counters["files"] == 2


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderSource(tmp_path / "nope")
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match=r"not_an_image|corrupt"):
        read_image_file(tmp_path / "x.png", fashion_mnist_spec())


def test_watch_takes_new_files_as_they_appear(tmp_path: Path) -> None:
    _png(tmp_path / "000.png", np.zeros((28, 28), np.uint8))
    source = FolderSource(tmp_path, watch=True, poll_s=0.02)
    got: list[int] = []

    def consume() -> None:
        for batch in source.batches(4):
            got.extend(batch.frame_ids.tolist())

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(1, 4):
        time.sleep(0.1)
        _png(tmp_path / f"{i:03d}.png", np.full((28, 28), i, np.uint8))
    deadline = time.monotonic() + 5
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop.set()
    worker.join(timeout=5)
    assert got == [0, 1, 2, 3]
    assert not worker.is_alive()
