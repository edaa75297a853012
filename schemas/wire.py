"""Bytes on the wire: the size of an MQTT 5 PUBLISH packet, counted the way the broker receives it.

nairbus counts what a constrained uplink actually carries, not the payload alone: the fixed header (packet type and
the variable-length "remaining length"), the topic name (two length bytes plus the name, or no name at all when a
topic alias stands for it), the packet identifier (QoS 1/2 only), the properties (their own variable-length length
plus each property) and the payload.

>>> publish_size(45, 300)  # full topic, no properties, QoS 0
351
>>> publish_size(0, 300, properties_len=ALIAS_PROPERTIES_LEN)  # topic alias instead of the topic
309
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALIAS_PROPERTIES_LEN",
    "EXPIRY_PROPERTY_LEN",
    "alias_wire_bytes",
    "lean_fragment_payload_len",
    "lean_image_payload_len",
    "msgpack_bin_len",
    "msgpack_uint_len",
    "publish_size",
    "varint_len",
]

ALIAS_PROPERTIES_LEN: Final = 3
"""A Topic Alias property: identifier byte (0x23) and a two-byte alias."""
EXPIRY_PROPERTY_LEN: Final = 5
"""A Message Expiry Interval property: identifier byte (0x02) and four bytes of seconds."""


def varint_len(n: int) -> int:
    """Bytes of an MQTT variable byte integer (1-4)."""
    if n < 0 or n > 268_435_455:
        raise ValueError(f"{n} is outside the MQTT variable byte integer range")
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def publish_size(topic_len: int, payload_len: int, *, qos: int = 0, properties_len: int = 0,
                 mqtt5: bool = True) -> int:
    """Bytes of a whole MQTT 5 PUBLISH packet (``mqtt5=False``: MQTT 3.1.1, which has no properties at all).

    ``topic_len`` is the UTF-8 length of the topic name (0 when a topic alias replaces it), ``properties_len`` the
    bytes of the properties themselves (without their length prefix), e.g. :data:`ALIAS_PROPERTIES_LEN`.
    """
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
    if not mqtt5 and properties_len:
        raise ValueError("an MQTT 3.1.1 PUBLISH has no properties")
    props = varint_len(properties_len) + properties_len if mqtt5 else 0
    variable = 2 + topic_len + (2 if qos else 0) + props
    remaining = variable + payload_len
    return 1 + varint_len(remaining) + remaining


def msgpack_uint_len(n: int) -> int:
    """Bytes msgpack takes for a non-negative integer (1, 2, 3, 5 or 9)."""
    if n < 0:
        raise ValueError("msgpack_uint_len takes non-negative integers")
    return 1 if n < 128 else 2 if n < 256 else 3 if n < 65_536 else 5 if n < 2**32 else 9


def msgpack_bin_len(n: int) -> int:
    """Bytes msgpack takes for a binary of ``n`` bytes, header included."""
    return n + (2 if n < 256 else 3 if n < 65_536 else 5)


def lean_image_payload_len(data_len: int, seq: int, frame_id: int, capture_ms: int, codec: int = 0) -> int:
    """Payload bytes of a lean image message ``[2, tag, seq, frame_id, capture_ms, codec, data]`` (tag < 128)."""
    return 1 + 1 + 1 + msgpack_uint_len(seq) + msgpack_uint_len(frame_id) + msgpack_uint_len(capture_ms) + \
        msgpack_uint_len(codec) + msgpack_bin_len(data_len)


def lean_fragment_payload_len(data_len: int, seq: int, frame_id: int, capture_ms: int, start: int, end: int,
                              frame_end: int) -> int:
    """Payload bytes of a lean fragment ``[2, tag, seq, frame_id, capture_ms, start, end, frame_end, data]``."""
    return 1 + 1 + 1 + sum(msgpack_uint_len(n) for n in (seq, frame_id, capture_ms, start, end, frame_end)) + \
        msgpack_bin_len(data_len)


def alias_wire_bytes(payload_len: int) -> int:
    """Wire bytes of a QoS 0 PUBLISH that carries ``payload_len`` bytes under an established topic alias."""
    return publish_size(0, payload_len, properties_len=ALIAS_PROPERTIES_LEN)
