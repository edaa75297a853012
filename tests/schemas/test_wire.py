"""Bytes on the wire (nairbus.schemas.wire): publish_size against PUBLISH packets built by paho-mqtt itself and by hand
from the MQTT 5 specification, and the msgpack length helpers against msgpack."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import msgpack  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nairbus.schemas.messages import U64_MAX
from nairbus.schemas.wire import (
    ALIAS_PROPERTIES_LEN,
    EXPIRY_PROPERTY_LEN,
    msgpack_bin_len,
    msgpack_uint_len,
    publish_size,
    varint_len,
)

VARINT_BOUNDS = [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4),
                 (268_435_455, 4)]


# -- a PUBLISH packet by hand (MQTT 5.0, sections 1.5.5, 2.1, 3.3) ----------------------------------------------------
def varint(n: int) -> bytes:
    """An MQTT Variable Byte Integer: 7 bits a byte, least significant first, high bit set on all but the last."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def spec_publish(topic: bytes, payload: bytes, *, qos: int = 0, mid: int = 1, properties: bytes = b"") -> bytes:
    """The whole PUBLISH: fixed header, topic name (UTF-8 string), packet id (QoS > 0), properties, payload."""
    variable = struct.pack("!H", len(topic)) + topic
    if qos:
        variable += struct.pack("!H", mid)
    variable += varint(len(properties)) + properties
    remaining = variable + payload
    return bytes([0x30 | qos << 1]) + varint(len(remaining)) + remaining


def alias_property(alias: int) -> bytes:
    return b"\x23" + struct.pack("!H", alias)


def expiry_property(seconds: int) -> bytes:
    return b"\x02" + struct.pack("!I", seconds)


# -- the same packet by paho ----------------------------------------------------------------------------------------
class _NoSocket:
    """Enough of a socket for paho to believe it is connected (it only checks for one, and closes it)."""

    def close(self) -> None:
        pass


@pytest.fixture
def paho_publish() -> Iterator[PahoPublish]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    packets: list[bytes] = []

    def capture(command: int, packet: bytes | bytearray, mid: int, qos: int, info: object = None) -> int:
        assert command == mqtt.PUBLISH
        packets.append(bytes(packet))
        return 0

    client._sock = _NoSocket()  # type: ignore[assignment]
    client._packet_queue = capture  # type: ignore[method-assign,assignment]
    yield PahoPublish(client, packets)
    client._sock = None


class PahoPublish:
    """Builds PUBLISH packets with paho's own encoder (``Client._send_publish``), without a broker."""

    def __init__(self, client: mqtt.Client, packets: list[bytes]) -> None:
        self.client = client
        self.packets = packets

    def __call__(self, topic: bytes, payload: bytes, *, qos: int = 0, mid: int = 1, alias: int | None = None,
                 expiry: int | None = None, content_type: str | None = None) -> bytes:
        props = None
        if alias is not None or expiry is not None or content_type is not None:
            props = Properties(PacketTypes.PUBLISH)
            if expiry is not None:
                props.MessageExpiryInterval = expiry
            if content_type is not None:
                props.ContentType = content_type
            if alias is not None:
                props.TopicAlias = alias
        assert self.client._send_publish(mid, topic, payload, qos, properties=props) == 0
        return self.packets[-1]


def payload_lens_around_boundaries(variable_len: int) -> list[int]:
    """Payload lengths that put the remaining length on either side of every varint boundary."""
    lens = {0, 1, 300}
    for bound, _ in VARINT_BOUNDS[1:-1]:
        for delta in (-1, 0, 1):
            if bound + delta - variable_len >= 0:
                lens.add(bound + delta - variable_len)
    return sorted(lens)


TOPIC = b"nairbus/v1/default/sensors/cam-01/frag"


# -- tests ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "length"), VARINT_BOUNDS)
def test_varint_len(n: int, length: int) -> None:
    assert varint_len(n) == length == len(varint(n))


@pytest.mark.parametrize("n", [-1, 268_435_456, 2**32])
def test_varint_len_range(n: int) -> None:
    with pytest.raises(ValueError, match="variable byte integer"):
        varint_len(n)


@given(n=st.integers(0, 268_435_455))
def test_varint_len_matches_encoding(n: int) -> None:
    assert varint_len(n) == len(varint(n))


def test_hand_encoder_against_the_spec_examples() -> None:
    # MQTT 5.0 section 1.5.5: 0 -> 0x00, 127 -> 0x7F, 128 -> 0x80 0x01, 16383 -> 0xFF 0x7F, 16384 -> 0x80 0x80 0x01.
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(16_383) == b"\xff\x7f"
    assert varint(16_384) == b"\x80\x80\x01"
    assert varint(268_435_455) == b"\xff\xff\xff\x7f"


def test_property_lengths_are_paho_s() -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = 7
    assert props.pack() == varint(ALIAS_PROPERTIES_LEN) + alias_property(7)
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 30
    assert props.pack() == varint(EXPIRY_PROPERTY_LEN) + expiry_property(30)


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize(("topic", "alias"), [(TOPIC, None), (b"", 1), (TOPIC, 65535), (b"t", None)])
@pytest.mark.parametrize("expiry", [None, 10])
def test_publish_size_against_paho(paho_publish: PahoPublish, qos: int, topic: bytes, alias: int | None,
                                   expiry: int | None) -> None:
    props = (expiry_property(expiry) if expiry is not None else b"") + (
        alias_property(alias) if alias is not None else b"")
    props_len = len(props)
    assert props_len == (EXPIRY_PROPERTY_LEN if expiry is not None else 0) + (
        ALIAS_PROPERTIES_LEN if alias is not None else 0)
    variable = 2 + len(topic) + (2 if qos else 0) + 1 + props_len
    for n in payload_lens_around_boundaries(variable):
        payload = bytes(n)
        by_paho = paho_publish(topic, payload, qos=qos, mid=513, alias=alias, expiry=expiry)
        by_hand = spec_publish(topic, payload, qos=qos, mid=513, properties=props)
        assert by_paho == by_hand
        assert publish_size(len(topic), n, qos=qos, properties_len=props_len) == len(by_paho), n


@pytest.mark.parametrize("ct_len", [0, 10, 122, 123, 124, 125, 126, 200, 16_380, 16_381])
def test_publish_size_with_long_properties(paho_publish: PahoPublish, ct_len: int) -> None:
    # A content type of ct_len bytes is a 3 + ct_len byte property: its length prefix crosses 127/128 and 16383/16384.
    content = "x" * ct_len
    props = b"\x03" + struct.pack("!H", ct_len) + content.encode()
    for n in (0, 1, 127, 128, 20_000):
        by_paho = paho_publish(TOPIC, bytes(n), qos=1, content_type=content)
        assert by_paho == spec_publish(TOPIC, bytes(n), qos=1, properties=props)
        assert publish_size(len(TOPIC), n, qos=1, properties_len=len(props)) == len(by_paho)


@settings(max_examples=200, deadline=None)
@given(topic_len=st.integers(0, 300), payload_len=st.integers(0, 40_000), qos=st.sampled_from([0, 1, 2]),
       props_len=st.integers(0, 300))
def test_publish_size_against_the_spec(topic_len: int, payload_len: int, qos: int, props_len: int) -> None:
    packet = spec_publish(b"t" * topic_len, bytes(payload_len), qos=qos, properties=bytes(props_len))
    assert publish_size(topic_len, payload_len, qos=qos, properties_len=props_len) == len(packet)


def test_publish_size_doc_figures() -> None:
    assert publish_size(45, 300) == 351
    assert publish_size(0, 300, properties_len=ALIAS_PROPERTIES_LEN) == 309
    # The smallest PUBLISH: fixed header, empty topic, empty properties.
    assert publish_size(0, 0) == len(spec_publish(b"", b"")) == 5


def test_publish_size_rejects() -> None:
    for qos in (-1, 3, 4):
        with pytest.raises(ValueError, match="QoS"):
            publish_size(10, 10, qos=qos)
    with pytest.raises(ValueError, match="variable byte integer"):
        publish_size(0, 268_435_456)


def test_alias_saves_the_topic() -> None:
    full = publish_size(len(TOPIC), 300)
    aliased = publish_size(0, 300, properties_len=ALIAS_PROPERTIES_LEN)
    assert full - aliased == len(TOPIC) - ALIAS_PROPERTIES_LEN
    assert aliased - 300 == 9


UINT_BOUNDS = [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63, U64_MAX]


@pytest.mark.parametrize("n", UINT_BOUNDS)
def test_msgpack_uint_len_at_boundaries(n: int) -> None:
    assert msgpack_uint_len(n) == len(msgpack.packb(n))


@given(n=st.integers(0, U64_MAX))
def test_msgpack_uint_len(n: int) -> None:
    assert msgpack_uint_len(n) == len(msgpack.packb(n))


def test_msgpack_uint_len_rejects_negatives() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        msgpack_uint_len(-1)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 8192, 65_535, 65_536, 100_000])
def test_msgpack_bin_len(n: int) -> None:
    assert msgpack_bin_len(n) == len(msgpack.packb(bytes(n), use_bin_type=True))
