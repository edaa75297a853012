"""Collecting the results a fusion agent publishes, for the bus tests."""

from __future__ import annotations

import time

from nairbus.agents.runtime.mqtt import Communicator
from nairbus.schemas import Result
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.topics import TopicTree


def collect_results(listener: Communicator, topics: TopicTree, want: int, timeout: float) -> dict[tuple[str, int],
                                                                                                   Result]:
    """Results by ``(stream, frame id)`` until ``want`` have arrived or ``timeout`` seconds passed."""
    out: dict[tuple[str, int], Result] = {}
    end = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < end:
        msg = listener.get(timeout=0.2)
        parsed = topics.parse(msg.topic) if msg else None
        if msg is not None and parsed is not None and parsed.kind == "result":
            result = wire_decode(msg.payload, Result)
            out[(result.stream_id, result.frame_id)] = result
    return out
