"""Data-set replay: the test (or training) images in order, frame id = data-set index, shared or sharded between
sensors so every frame can be scored against its label."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nairbus.agents.runtime.frames import FrameBatch, SourceContext
from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.data.registry import load_data

if TYPE_CHECKING:
    from nairbus.agents.runtime.config import SensorSettings

__all__ = ["ReplaySource", "replay", "replay_indices"]


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


@dataclass
class ReplaySource:
    """The data set as a camera: frames converted to the model's input spec; late frames are skipped."""

    data: Dataset
    indices: np.ndarray
    ctx: SourceContext
    skip_late: bool = True
    source_paced: bool = False
    counters: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_settings(cls, s: SensorSettings, ctx: SourceContext) -> ReplaySource:
        data = load_data(s.split, data_dir=s.data_dir)
        return cls(data, replay_indices(len(data), s.start, s.count, s.shard), ctx)

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        for frames in replay(self.data, self.indices, batch):
            yield FrameBatch(frames.frame_ids, self.ctx.spec.convert(frames.images))
