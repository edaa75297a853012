"""VP pieces that need no broker: the vote buffer's deadlines and bounds, the Frame message, settings, wire sizes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.config import SensorSettings
from agents.vp import VoteBuffer, topk_message_bytes
from models.vp import Vote
from schemas import Frame, TopK, WireError, decode, encode
from schemas.topics import ParsedTopic, TopicTree


def _vote(name: str) -> Vote:
    return Vote(name, (1, 2), (0.6, 0.3), 1.0)


def test_frame_waits_for_every_online_sensor_then_decides() -> None:
    buf = VoteBuffer(deadline_s=0.5)
    online = {"a", "b", "c"}
    assert buf.add("cam", 7, "a", _vote("a"), 20, 1.0, online, now=10.0) == "added"
    assert buf.add("cam", 7, "b", _vote("b"), 20, 1.0, online, now=10.1) == "added"
    assert buf.pop_ready(10.2) == []
    assert buf.add("cam", 7, "c", _vote("c"), 20, 1.0, online, now=10.2) == "added"
    (frame,) = buf.pop_ready(10.2)
    assert sorted(frame.votes) == ["a", "b", "c"]
    assert frame.nbytes == 60
    assert frame.expected == 3
    assert buf.add("cam", 7, "c", _vote("c"), 20, 1.0, online, now=10.3) == "late"


def test_silent_sensor_costs_at_most_the_deadline() -> None:
    buf = VoteBuffer(deadline_s=0.5)
    buf.add("cam", 1, "a", _vote("a"), 20, 1.0, {"a", "b"}, now=10.0)
    assert buf.next_deadline() == pytest.approx(10.5)
    assert buf.pop_ready(10.49) == []
    (frame,) = buf.pop_ready(10.5)
    assert list(frame.votes) == ["a"]


def test_offline_sensor_is_no_longer_waited_for() -> None:
    buf = VoteBuffer(deadline_s=5.0)
    buf.add("cam", 1, "a", _vote("a"), 20, 1.0, {"a", "b"}, now=10.0)
    buf.sensor_gone("b")
    (frame,) = buf.pop_ready(10.0)
    assert list(frame.votes) == ["a"]
    assert frame.expected == 2


def test_duplicates_and_memory_bound() -> None:
    buf = VoteBuffer(deadline_s=5.0, max_frames=2)
    online = {"a", "b"}
    buf.add("cam", 1, "a", _vote("a"), 20, 1.0, online, now=0.0)
    assert buf.add("cam", 1, "a", _vote("a"), 20, 1.0, online, now=0.0) == "duplicate"
    buf.add("cam", 2, "a", _vote("a"), 20, 1.0, online, now=0.0)
    buf.add("cam", 3, "a", _vote("a"), 20, 1.0, online, now=0.0)  # forces frame 1 out
    assert len(buf) == 2
    (forced,) = buf.pop_ready(0.0)
    assert forced.frame_id == 1
    assert forced.evicted
    assert buf.add("cam", 1, "b", _vote("b"), 20, 1.0, online, now=0.0) == "late"
    assert {f.frame_id for f in buf.flush()} == {2, 3}


def test_streams_do_not_mix() -> None:
    buf = VoteBuffer(deadline_s=5.0)
    buf.add("cam1", 1, "a", _vote("a"), 20, 1.0, {"a"}, now=0.0)
    buf.add("cam2", 1, "x", _vote("x"), 20, 1.0, {"x", "y"}, now=0.0)
    ready = buf.pop_ready(0.0)
    assert [(f.stream_id, f.frame_id) for f in ready] == [("cam1", 1)]


def test_frame_message_round_trip_and_validation() -> None:
    frame = Frame(stream_id="cam", session="s1", seq=1, frame_id=3, capture_ts=1.0, expires_ts=2.0, height=28,
                  width=28, pixels=bytes(784))
    assert decode(encode(frame), Frame) == frame
    with pytest.raises(ValidationError, match="784"):
        Frame(stream_id="cam", session="s1", seq=1, frame_id=3, capture_ts=1.0, expires_ts=2.0, height=28,
              width=28, pixels=bytes(700))
    with pytest.raises(WireError) as err:
        decode(encode(frame), TopK)
    assert err.value.reason == "kind"
    tree = TopicTree("root", "site")
    assert tree.frames("cam") == "root/v1/site/frames/cam"
    assert tree.parse(tree.frames("cam")) == ParsedTopic(kind="frame", ident="cam")
    assert tree.all_frames() == "root/v1/site/frames/+"


def test_vp_sensor_settings_need_a_variant() -> None:
    with pytest.raises(ValidationError, match="variant"):
        SensorSettings(mode="vp")
    assert SensorSettings(mode="vp", variant="w44r28", k=2).k == 2


def test_topk_messages_are_small_and_grow_with_k() -> None:
    sizes = [topk_message_bytes(k) for k in range(1, 6)]
    assert sizes == sorted(sizes)
    assert sizes[-1] < 784 // 3
