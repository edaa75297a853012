"""The MQTT 5 topic-alias table of one connection.

The high-rate topics may use topic aliases (``Communicator.publish(..., alias=True)``): the first message on a
connection carries the topic and the alias, later ones only the two-byte alias. The broker says in its CONNACK how
many aliases it accepts (``TopicAliasMaximum``); the table starts anew on every connection (the broker forgets the
aliases with the connection) and is only used for QoS 0, never for QoS 1/2: paho would resend those after a
reconnect, where the alias is gone.
"""

from __future__ import annotations

import threading

from nairbus.schemas.wire import ALIAS_PROPERTIES_LEN, alias_wire_bytes, publish_size

__all__ = ["TopicAliases"]

_VARINT_EDGES = (128, 16_384, 2_097_152)
"""Where an MQTT remaining length takes one byte more."""


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

    def extra_bytes(self, topic: str, payload_len: int) -> int:
        """Wire bytes the next aliased QoS 0 publish of ``payload_len`` bytes on ``topic`` takes beyond one under an
        established alias (:func:`~nairbus.schemas.wire.alias_wire_bytes`): 0 once the broker knows the alias; else
        the topic too (the publish that teaches the alias carries both), or, with no alias left to give, the topic
        instead of the alias property. The most that any payload of up to ``payload_len`` bytes needs: the topic can
        push the packet's remaining length over a varint boundary (one byte more) for a shorter payload only."""
        with self._lock:
            if topic in self._aliases:
                return 0
            teaches = len(self._aliases) < self._alias_max
        props = ALIAS_PROPERTIES_LEN if teaches else 0
        topic_len = len(topic.encode())

        def extra(n: int) -> int:
            return publish_size(topic_len, n, properties_len=props) - alias_wire_bytes(n)

        near_boundaries = (n for edge in _VARINT_EDGES for n in range(max(0, edge - 16), min(payload_len, edge) + 1))
        return max([extra(payload_len), *(extra(n) for n in near_boundaries)])

    def forget(self, topic: str) -> None:
        """Drop the alias just assigned to ``topic``: the publish that was to teach it to the broker did not go out."""
        with self._lock:
            self._aliases.pop(topic, None)

    def reset(self, alias_max: int) -> None:
        """A new connection (``alias_max``: the broker's ``TopicAliasMaximum``) or none (0): no alias is known."""
        with self._lock:
            self._aliases.clear()
            self._alias_max = alias_max
