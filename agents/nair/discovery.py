"""Models a sensor's birth names by hash, found in the model search path and loaded off the worker thread.

With ``discover_models`` a fusion agent serves sensors whose model is on its disk but was not named at start. Loading
a model (and the NAIR artifacts beside it) takes seconds; done on the worker thread it stalled every other stream for
as long (8.7 s measured). :class:`ModelLoader` does the lookups and loads one at a time on a thread of its own: the
worker asks (:meth:`ModelLoader.request`), goes on deciding, and picks up what finished (:meth:`ModelLoader.finished`)
once a round. Requests are bounded (a crowd of invented hashes cannot queue unbounded work) and each hash is looked up
at most every ``retry_s``. :class:`LoadedModels` keeps the discovered models within a bound, least recently used first
out, never one a known sensor still uses.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from nairbus.agents.runtime.logging import get_logger

__all__ = ["DISCOVERY_RETRY_S", "MAX_DISCOVERED", "MAX_PENDING", "LoadedModels", "ModelLoader"]

log = get_logger("nairbus.fusion")

DISCOVERY_RETRY_S = 30.0
"""How often an unknown model hash named by a birth is looked up again."""
MAX_PENDING = 8
"""Lookups that may wait for the loader thread; more are refused until it catches up."""
MAX_DISCOVERED = 4
"""Discovered models kept loaded at once (the least recently used one that no sensor uses goes first)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finished(Generic[T]):
    """A lookup done: what was loaded (None: no model with that hash on disk, or it could not be loaded)."""

    sha256: str
    loaded: T | None


class ModelLoader(Generic[T]):
    """Runs ``load(sha256)`` for requested hashes on one daemon thread; results are collected by the worker."""

    def __init__(self, load: Callable[[str], T | None], retry_s: float = DISCOVERY_RETRY_S,
                 max_pending: int = MAX_PENDING) -> None:
        self._load = load
        self.retry_s = retry_s
        self._requests: queue.Queue[str] = queue.Queue(maxsize=max_pending)
        self._done: queue.Queue[Finished[T]] = queue.Queue()
        self._asked: dict[str, float] = {}
        self.pending: set[str] = set()
        """Hashes requested and not yet picked up as finished."""
        self._thread: threading.Thread | None = None

    def request(self, sha256: str, now: float) -> bool:
        """Ask for ``sha256`` to be looked up and loaded; False when it was asked within ``retry_s`` (and is not
        pending) or the queue is full."""
        if sha256 in self.pending:
            return True
        if now - self._asked.get(sha256, -self.retry_s) < self.retry_s:
            return False
        if len(self._asked) >= 1024:
            self._asked.clear()
        try:
            self._requests.put_nowait(sha256)
        except queue.Full:
            return False
        self._asked[sha256] = now
        self.pending.add(sha256)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nairbus-model-loader", daemon=True)
            self._thread.start()
        return True

    def finished(self) -> list[Finished[T]]:
        """The lookups done since the last call (worker thread)."""
        out: list[Finished[T]] = []
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return out
            self.pending.discard(done.sha256)
            out.append(done)

    def _run(self) -> None:
        while True:
            sha256 = self._requests.get()
            try:
                loaded = self._load(sha256)
            except Exception as exc:  # a broken file on disk must not end the loader
                log.warning("model_not_loaded", sha256=sha256[:12], reason=f"{type(exc).__name__}: {exc}"[:200])
                loaded = None
            self._done.put(Finished(sha256, loaded))


class LoadedModels:
    """The discovered models' hashes in use order, bounded: :meth:`admit` names the ones to unload."""

    def __init__(self, limit: int = MAX_DISCOVERED) -> None:
        self.limit = limit
        self._order: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._order

    def used(self, sha256: str) -> None:
        """A birth was served by this discovered model."""
        if sha256 in self._order:
            self._order.move_to_end(sha256)

    def admit(self, sha256: str, in_use: Collection[str]) -> list[str]:
        """Add a newly loaded model; the least recently used ones not ``in_use`` that must go to stay in bound."""
        self._order[sha256] = None
        self._order.move_to_end(sha256)
        evict: list[str] = []
        for old in list(self._order):
            if len(self._order) - len(evict) <= self.limit:
                break
            if old != sha256 and old not in in_use:
                evict.append(old)
        for old in evict:
            del self._order[old]
        return evict
