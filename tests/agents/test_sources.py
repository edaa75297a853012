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
    source = FolderSource(tmp_path, settle_s=0.0)
    got = list(source.files())
    assert [p.name for _, p, _ in got] == ["a.jpg", "b.png", "c.webp"]
    assert [i for i, _, _ in got] == [0, 1, 2]
    assert all(img.shape == (28, 28) and img.dtype == np.uint8 for _, _, img in got)
    assert np.array_equal(got[1][2], grey)  # a 28x28 grey PNG arrives untouched
    assert np.abs(got[0][2].astype(int) - grey).mean() < 12  # JPEG: lossy, but the same picture
    [batch] = list(FolderSource(tmp_path, settle_s=0.0).batches(8))
    assert batch.frame_ids.tolist() == [0, 1, 2]
    assert batch.images.shape == (3, 28, 28)


def test_bad_files_are_counted_and_skipped_never_raised(tmp_path: Path) -> None:
    # A decompression bomb: a tiny file claiming 20000 x 20000 pixels (written first: it takes a while to make).
    Image.new("1", (20000, 20000)).save(tmp_path / "5-bomb.png", optimize=True)
    _png(tmp_path / "0-good.png", np.zeros((28, 28), np.uint8))
    (tmp_path / "1-empty.png").write_bytes(b"")
    (tmp_path / "2-text.png").write_text("hello")
    good = (tmp_path / "0-good.png").read_bytes()
    (tmp_path / "3-truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (100, 100)).save(tmp_path / "4.jpg")
    data = (tmp_path / "4.jpg").read_bytes()
    (tmp_path / "4.jpg").write_bytes(data[:200] + bytes(50) + data[250:300])  # corrupt JPEG
    last_bad_written = time.monotonic()
    _png(tmp_path / "6-good.png", np.full((28, 28), 200, np.uint8))
    source = FolderSource(tmp_path, settle_s=0.0, retry_s=0.3)  # fresh files: bad ones are retried for 0.3 s
    ids = [(i, p.name) for i, p, _ in source.files()]
    # The window runs from when the files were written (on a loaded machine writing them takes part of it).
    assert time.monotonic() - last_bad_written >= 0.2
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


def test_a_watched_folder_decides_every_file_it_is_not_a_live_view(tmp_path: Path) -> None:
    assert FolderSource(tmp_path, watch=True).skip_late is False
    assert FolderSource(tmp_path).skip_late is False


def _write_slowly(path: Path, data: bytes, seconds: float, pieces: int = 10) -> None:
    """A camera, an FTP upload or ``cp`` of a large file: the file grows in place over ``seconds``."""
    with path.open("wb") as out:
        for i in range(pieces):
            out.write(data[i * len(data) // pieces:(i + 1) * len(data) // pieces])
            out.flush()
            time.sleep(seconds / pieces)


def test_files_written_in_place_over_seconds_are_read_once_complete(tmp_path: Path) -> None:
    """Twenty JPEGs, each written in place over 2 s (eight at a time): every one is read whole, none refused."""
    import io

    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(20)]
    blobs = []
    for picture in pictures:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    source = FolderSource(tmp_path, watch=True, poll_s=0.05)
    got: list[str] = []

    def consume() -> None:
        got.extend(path.name for _, path, _ in source.files())

    worker = threading.Thread(target=consume)
    worker.start()
    writers = [threading.Thread(target=_write_slowly, args=(tmp_path / f"cam-{i:02d}.jpg", blob, 2.0))
               for i, blob in enumerate(blobs)]
    for start in range(0, len(writers), 8):
        for w in writers[start:start + 8]:
            w.start()
        for w in writers[start:start + 8]:
            w.join()
    deadline = time.monotonic() + 10
    while len(got) < len(blobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    source.stop.set()
    worker.join(timeout=5)
    assert sorted(got) == [f"cam-{i:02d}.jpg" for i in range(20)]
    assert not {k: v for k, v in source.counters.items() if k.startswith("bad_")}


def test_a_file_that_stays_corrupt_is_refused_once_it_has_settled(tmp_path: Path) -> None:
    source = FolderSource(tmp_path, watch=True, poll_s=0.02, settle_s=0.05, retry_s=0.5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.extend(p.name for _, p, _ in source.files()))
    worker.start()
    time.sleep(0.25)
    assert source.counters["bad_corrupt"] + source.counters["bad_not_an_image"] == 0  # still in its retry window
    deadline = time.monotonic() + 5
    while not any(k.startswith("bad_") for k in source.counters) and time.monotonic() < deadline:
        time.sleep(0.02)
    _png(tmp_path / "later.png", np.zeros((28, 28), np.uint8))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop.set()
    worker.join(timeout=5)
    assert sum(n for k, n in source.counters.items() if k.startswith("bad_")) == 1  # refused once, not per poll
    assert got == ["later.png"]


def test_count_takes_the_first_files_in_name_order(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / f"{i}.png", np.full((28, 28), i, np.uint8))
    source = FolderSource(tmp_path, settle_s=0.0, count=3)
    assert [p.name for _, p, _ in source.files()] == ["0.png", "1.png", "2.png"]
