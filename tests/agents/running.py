"""A fusion agent running on a worker thread for the length of a test: started, then stopped, joined and closed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Runnable(Protocol):
    """What an agent run on a thread offers (every fusion agent does)."""

    def start(self) -> None: ...
    def run(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


A = TypeVar("A", bound=Runnable)


@contextmanager
def running(agent: A) -> Iterator[A]:
    """``agent`` started and run on a daemon thread inside the block; after it, stopped, its thread joined (which
    must end within 10 s) and the agent closed."""
    agent.start()
    worker = threading.Thread(target=agent.run, daemon=True)
    worker.start()
    try:
        yield agent
    finally:
        agent.stop()
        worker.join(timeout=10)
        agent.close()
    assert not worker.is_alive(), f"{type(agent).__name__} did not stop within 10 s"
