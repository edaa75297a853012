"""Frame sources for sensor agents: data-set replay with stable frame ids."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.data import Dataset


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Frames read together: ids ``(B,)``, uint8 images ``(B, 28, 28)``."""

    frame_ids: np.ndarray
    images: np.ndarray


def replay_indices(total: int, start: int = 0, count: int | None = None,
                   shard: tuple[int, int] | None = None) -> np.ndarray:
    """Data-set indices a replaying sensor sends: ``[start, start+count)``, then every n-th from i for shard (i, n)."""
    if start >= total:
        raise ValueError(f"start {start} is past the end of a data set of {total} frames")
    stop = total if count is None else min(total, start + count)
    indices = np.arange(start, stop)
    if shard is not None:
        i, n = shard
        indices = indices[i::n]
    return indices


def replay(data: Dataset, indices: np.ndarray, batch: int) -> Iterator[FrameBatch]:
    """Yield the frames at ``indices`` in batches; the frame id is the data-set index."""
    for pos in range(0, len(indices), batch):
        ids = indices[pos : pos + batch]
        yield FrameBatch(ids, data.images[ids])
