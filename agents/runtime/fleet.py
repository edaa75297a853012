"""A fusion fleet: which agents are in it (from their retained statuses) and which of them owns a key.

Several fusion agents with the same ``FusionSettings.fleet`` share the sensors. A frame that travels as one message
(a NAIR prefix, an image, a decision) reaches one member through an MQTT 5 shared subscription: the broker balances
and fails over, nothing here takes part. VP, whose votes for one frame come from several sensors, is partitioned by
stream over the members online with rendezvous (highest random weight) hashing: every member computes the same owner
from the same set of retained statuses, and a member that goes or comes moves only its own streams.

Pure: no MQTT, no clock; the fusion agent tells it of statuses (on the network thread) and asks it about keys (on its
worker thread), so it is thread-safe.
"""

from __future__ import annotations

import hashlib
import threading

__all__ = ["Fleet", "rendezvous_owner", "shared_filter"]


def shared_filter(fleet: str, topic_filter: str) -> str:
    """The MQTT 5 shared subscription of ``fleet`` for ``topic_filter`` (each message goes to one member)."""
    return f"$share/{fleet}/{topic_filter}"


def _weight(member: str, key: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(members: frozenset[str] | set[str], key: str) -> str:
    """The member that owns ``key``: the one of highest weight hash(member, key) (ties: the greater name)."""
    if not members:
        raise ValueError("a fleet has at least one member")
    return max(members, key=lambda m: (_weight(m, key), m))


class Fleet:
    """The members of one fleet as this agent knows them, and the keys this agent owns among them."""

    def __init__(self, name: str, me: str, now: float = 0.0) -> None:
        self.name = name
        self.me = me
        self._lock = threading.Lock()
        self._peers: set[str] = set()
        self._before: frozenset[str] = frozenset()
        """The members before the last change; none while this agent has not been asked about a key yet (the
        retained statuses that greet it come before any frame: it owned nothing before them)."""
        self._asked = False
        self.changed_at = now
        """When (wall clock) the members last changed, or this agent joined."""
        self._owned: dict[str, bool] = {}

    @property
    def members(self) -> frozenset[str]:
        """This agent and the peers whose last status said ``online``."""
        with self._lock:
            return frozenset(self._peers | {self.me})

    def note_status(self, agent_id: str, fleet: str | None, online: bool, now: float) -> bool:
        """A fusion agent's retained status (its last will says offline; a cleared one: ``online=False``); True when
        it changed the members."""
        if agent_id == self.me:
            return False
        joined = online and fleet == self.name
        with self._lock:
            if joined == (agent_id in self._peers):
                return False
            self._before = frozenset(self._peers | {self.me}) if self._asked else frozenset()
            self.changed_at = now
            if joined:
                self._peers.add(agent_id)
            else:
                self._peers.discard(agent_id)
            self._owned = {}
            return True

    def joined(self, now: float) -> None:
        """This agent's subscriptions took effect at ``now``: of the keys it owns it takes the frames captured since
        (those before are their former owner's)."""
        with self._lock:
            if not self._asked:
                self.changed_at = now

    def owns(self, key: str) -> bool:
        """Whether this agent owns ``key`` among the members now (cached until they change)."""
        self._asked = True
        cache = self._owned
        owned = cache.get(key)
        if owned is None:
            with self._lock:
                members, cache = frozenset(self._peers | {self.me}), self._owned
            if len(cache) >= 65_536:
                cache.clear()
            owned = cache[key] = rendezvous_owner(members, key) == self.me
        return owned

    def owned_before(self, key: str) -> bool:
        """Whether this agent owned ``key`` before the members' last change (False before any: it had just joined)."""
        with self._lock:
            before = self._before
        return bool(before) and rendezvous_owner(before, key) == self.me
