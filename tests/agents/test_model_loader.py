"""The loader of models births name by hash, and the bound on discovered models (fast, no broker)."""

from __future__ import annotations

import threading
import time

from nairbus.agents.nair.discovery import LoadedModels, ModelLoader


def test_lookups_are_bounded_and_each_hash_is_retried_only_after_a_while() -> None:
    gate = threading.Event()
    loaded: list[str] = []

    def load(sha: str) -> str:
        gate.wait(5)
        loaded.append(sha)
        return sha.upper()

    loader: ModelLoader[str] = ModelLoader(load, retry_s=30.0, max_pending=3)
    assert loader.request("a", now=0.0)
    assert loader.request("a", now=0.1)  # pending: the same request
    accepted = [loader.request(h, now=0.0) for h in "bcdefgh"]
    assert accepted.count(True) <= 3  # a crowd of invented hashes queues bounded work
    gate.set()
    deadline = time.monotonic() + 5
    done: list[str] = []
    while len(done) < 1 + accepted.count(True) and time.monotonic() < deadline:
        done += [f.sha256 for f in loader.finished()]
        time.sleep(0.01)
    assert "a" in done
    assert not loader.request("a", now=10.0)  # looked up 10 s ago
    assert loader.request("a", now=31.0)


def test_a_broken_load_is_a_miss_not_a_dead_loader() -> None:
    def load(sha: str) -> str:
        if sha == "bad":
            raise OSError("truncated file")
        return sha

    loader: ModelLoader[str] = ModelLoader(load)
    loader.request("bad", now=0.0)
    loader.request("good", now=0.0)
    deadline = time.monotonic() + 5
    results: dict[str, str | None] = {}
    while len(results) < 2 and time.monotonic() < deadline:
        results |= {f.sha256: f.loaded for f in loader.finished()}
        time.sleep(0.01)
    assert results == {"bad": None, "good": "good"}


def test_discovered_models_stay_within_their_bound_and_one_in_use_stays() -> None:
    models = LoadedModels(limit=2)
    assert models.admit("a", in_use=()) == []
    assert models.admit("b", in_use=()) == []
    models.used("a")  # b is now the least recently used
    assert models.admit("c", in_use=()) == ["b"]
    assert models.admit("d", in_use={"a", "c"}) == []  # every older one is in use: over the bound for now
    assert models.admit("e", in_use={"a"}) == ["c", "d"]
    assert "a" in models
    assert "e" in models
