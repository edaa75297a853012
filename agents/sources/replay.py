"""Data-set replay: the test (or training) images in order, frame id = data-set index, shared or sharded between
sensors so every frame can be scored against its label."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import numpy as np
from pydantic import Field, model_validator

from nairbus.agents.runtime.frames import FrameBatch, SourceContext, SourceSettings
from nairbus.models.data.fashion_mnist import Dataset
from nairbus.models.data.registry import load_data

__all__ = ["ReplaySettings", "ReplaySource", "replay", "replay_indices"]


class ReplaySettings(SourceSettings):
    """``source="replay"``: what the replay source reads (the sensor settings of the same names by default)."""

    split: Literal["train", "test"] = Field(default="test", description="The data-set split replayed.")
    data_dir: Path | None = Field(default=None, description="Where the data set is (None: the default location).")
    start: int = Field(default=0, ge=0, description="The first data-set index replayed.")
    count: int | None = Field(default=None, ge=1, description="Frames replayed from ``start`` (None: to the end).")
    shard: tuple[int, int] | None = Field(default=None, description=(
        "``(i, n)``: replay every n-th frame starting at i (frames shared between n sensors)."))

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError("shard (i, n) needs 0 <= i < n")
        return self


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
    def from_settings(cls, s: ReplaySettings, ctx: SourceContext) -> ReplaySource:
        # Only the frames up to the last one replayed are read (300 frames: 235 kB, not the split's 7.8 MB).
        data = load_data(s.split, data_dir=s.data_dir, limit=None if s.count is None else s.start + s.count)
        return cls(data, replay_indices(len(data), s.start, s.count, s.shard), ctx)

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        for frames in replay(self.data, self.indices, batch):
            yield FrameBatch(frames.frame_ids, self.ctx.spec.convert(frames.images))
