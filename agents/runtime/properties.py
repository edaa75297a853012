"""The MQTT 5 properties the communicator sends: of its publishes (packed once), its last will and its CONNECT."""

from __future__ import annotations

import functools
from typing import Final

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nairbus.schemas.wire import varint_len

__all__ = ["JSON_CONTENT_TYPE", "connect_properties", "properties_len", "publish_properties", "will_properties"]

JSON_CONTENT_TYPE: Final = "application/json"
"""The content type of the JSON messages (statuses, births, commands)."""


class _PackedProperties(Properties):
    """PUBLISH properties that never change once made, packed once.

    paho builds and packs a ``Properties`` for every publish; at hundreds of fragments a second that was a
    fifth of a sensor's time. The bus only ever sends a handful of (content type, expiry) pairs, so each is
    built once, packed once, and shared (paho only reads it).
    """

    _packed: bytes

    def pack(self) -> bytes:
        return self._packed


@functools.lru_cache(maxsize=256)
def publish_properties(content_type: str | None, expiry_s: int | None, alias: int | None = None) -> Properties:
    """The (shared, packed once) PUBLISH properties: content type, message expiry and topic alias, each optional."""
    props = _PackedProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type is not None:
        props.ContentType = content_type
    if expiry_s is not None:
        props.MessageExpiryInterval = expiry_s
    if alias is not None:
        props.TopicAlias = alias
    packed = Properties.pack(props)  # type: ignore[no-untyped-call]
    object.__setattr__(props, "_packed", packed)
    return props


def properties_len(props: Properties) -> int:
    """Bytes of the properties themselves (the packed form starts with their variable-length length)."""
    packed: bytes = props.pack()  # type: ignore[no-untyped-call]
    return len(packed) - varint_len(max(0, len(packed) - 1))


def will_properties(content_type: str) -> Properties:
    """The last will's properties: its content type."""
    props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    return props


def connect_properties(session_expiry_s: int) -> Properties | None:
    """CONNECT properties asking the broker to keep the session ``session_expiry_s`` seconds (None: a clean one)."""
    if not session_expiry_s:
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    return props
