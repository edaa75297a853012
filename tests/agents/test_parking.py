"""Messages held until their sensor's birth: bounded by time and bytes, released in order (fast, no broker)."""

from __future__ import annotations

from dataclasses import dataclass

from nairbus.agents.runtime.parking import Parking


@dataclass
class Msg:
    topic: str
    payload: bytes


def test_held_messages_come_back_in_order_once() -> None:
    parking: Parking[Msg] = Parking()
    for i in range(300):  # more than the old fixed 64 per sensor: a restart at 20 fps queues more
        assert parking.park("cam", Msg(f"s/cam/{i}", b"x" * 100), now=0.0) == []
    assert [m.topic for m in parking.release("cam")] == [f"s/cam/{i}" for i in range(300)]
    assert parking.release("cam") == []
    assert parking.held_bytes == 0


def test_what_waited_too_long_is_dropped_and_returned() -> None:
    parking: Parking[Msg] = Parking(hold_s=2.0)
    parking.park("a", Msg("t/1", b"1"), now=0.0)
    parking.park("a", Msg("t/2", b"2"), now=1.5)
    assert [m.topic for m in parking.expire(2.5)] == ["t/1"]
    assert [m.topic for m in parking.release("a")] == ["t/2"]


def test_bytes_bound_each_sensor_and_the_whole() -> None:
    parking: Parking[Msg] = Parking(bytes_per_sensor=1000, total_bytes=2500)
    dropped = [m for t in range(20) for m in parking.park("a", Msg("t", bytes(99)), now=float(t))]
    assert len(dropped) == 10  # its own oldest went
    assert parking.held_bytes == 1000
    assert parking.park("big", Msg("t", bytes(5000)), now=0.0) == [Msg("t", bytes(5000))]  # cannot fit at all
    for _ in range(10):
        parking.park("b", Msg("t", bytes(99)), now=0.0)
    # The whole is full (a 1000, b 1000): c's message makes the biggest holder give up its oldest.
    for _ in range(6):
        parking.park("c", Msg("t", bytes(99)), now=0.0)
    assert parking.held_bytes <= 2500
    assert len(parking.release("c")) == 6


def test_a_crowd_of_sensors_is_bounded() -> None:
    parking: Parking[Msg] = Parking(max_sensors=3)
    for name in "abc":
        assert parking.park(name, Msg("t", b"x"), now=0.0) == []
    assert parking.park("d", Msg("t", b"x"), now=0.0) == [Msg("t", b"x")]
    assert parking.park("a", Msg("t", b"y"), now=0.0) == []  # a known one still may
