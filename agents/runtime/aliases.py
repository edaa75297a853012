"""The MQTT 5 topic-alias table of one connection.

The high-rate topics may use topic aliases (``Communicator.publish(..., alias=True)``): the first message on a
connection carries the topic and the alias, later ones only the two-byte alias. The broker says in its CONNACK how
many aliases it accepts (``TopicAliasMaximum``); the table starts anew on every connection (the broker forgets the
aliases with the connection) and is only used for QoS 0, never for QoS 1/2: paho would resend those after a
reconnect, where the alias is gone.
"""

from __future__ import annotations

import threading

__all__ = ["TopicAliases"]


class TopicAliases:
    """Topic to alias for the current connection, numbered from 1 up to the broker's maximum; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aliases: dict[str, int] = {}
        self._alias_max = 0

    def assign(self, topic: str) -> tuple[str, int | None]:
        """The topic to send and the alias to carry: ``("", n)`` once ``n`` stands for ``topic``.

        A topic not in the table gets the next alias while there is one (``(topic, n)``: this publish teaches the
        broker ``n``); when the broker allows no more, ``(topic, None)``.
        """
        with self._lock:
            known = self._aliases.get(topic)
            if known is not None:
                return "", known
            if len(self._aliases) >= self._alias_max:
                return topic, None
            alias = len(self._aliases) + 1
            self._aliases[topic] = alias
            return topic, alias

    def forget(self, topic: str) -> None:
        """Drop the alias just assigned to ``topic``: the publish that was to teach it to the broker did not go out."""
        with self._lock:
            self._aliases.pop(topic, None)

    def reset(self, alias_max: int) -> None:
        """A new connection (``alias_max``: the broker's ``TopicAliasMaximum``) or none (0): no alias is known."""
        with self._lock:
            self._aliases.clear()
            self._alias_max = alias_max
