"""The sensors a fusion agent knows, as a dict that counts its changes (:class:`Registry`).

A fusion agent's upkeep — Home Assistant configs, availability, figures — walks every stream. Run on every worker
round, with frames from many sensors arriving one by one (a round per frame), its cost grew as streams². The upkeep
runs when the set of sensors changed (:attr:`Registry.version`) or a timer is due, not per round.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["Registry"]

K = TypeVar("K")
V = TypeVar("V")


class Registry(dict[K, V]):
    """A dict whose :attr:`version` goes up with every change to its keys or values."""

    version: int = 0

    def __setitem__(self, key: K, value: V) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, key: K, *default: Any) -> Any:
        self.version += 1
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        self.version += 1
        super().clear()

    def setdefault(self, key: K, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        super().update(*args, **kwargs)
