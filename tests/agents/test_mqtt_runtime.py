"""The MQTT runtime against a real, private Mosquitto: status and will, reconnects, bounds, properties."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from nairbus.agents.runtime.mosquitto import PrivateMosquitto, free_port
from nairbus.agents.runtime.mqtt import JSON_CONTENT_TYPE, Communicator, InboundMessage
from nairbus.agents.runtime.settings import BrokerSettings

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


def _status(state: str) -> bytes:
    return json.dumps({"state": state}).encode()


def _state(message: InboundMessage) -> str:
    state: str = json.loads(message.payload)["state"]
    return state


@pytest.fixture
def make() -> Iterator[Callable[..., Communicator]]:
    """Build communicators (fast reconnects) and stop them all after the test."""
    made: list[Communicator] = []

    def _make(broker: PrivateMosquitto, name: str, root: str, *, session_expiry_s: int = 0, replay_s: float = 0.0,
              **overrides: object) -> Communicator:
        values: dict[str, object] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, **overrides}
        settings = BrokerSettings(host=broker.host, port=broker.port, **values)  # type: ignore[arg-type]
        comm = Communicator(settings, f"{root}/{name}".replace("/", "-"), f"{root}/{name}/status", _status,
                            session_expiry_s=session_expiry_s, replay_s=replay_s)
        made.append(comm)
        return comm

    yield _make
    for comm in made:
        comm.stop(timeout=1.0)


def _next(comm: Communicator, timeout: float = 5.0) -> InboundMessage:
    message = comm.get(timeout=timeout)
    assert message is not None, f"no message within {timeout} s"
    return message


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_start_stop_publishes_online_then_offline(
    broker: PrivateMosquitto, topic_root: str, make: Callable[..., Communicator]
) -> None:
    agent = make(broker, "agent", topic_root)
    observer = make(broker, "observer", topic_root)
    observer.subscribe(agent.status_topic)
    observer.start()

    agent.start()
    assert agent.connected.is_set()
    online = _next(observer)
    assert (online.topic, _state(online), online.content_type) == (agent.status_topic, "online", JSON_CONTENT_TYPE)

    agent.stop()
    agent.stop()  # idempotent
    assert not agent.connected.is_set()
    offline = _next(observer)
    assert _state(offline) == "offline"
    assert observer.get(timeout=0.3) is None  # a clean stop sends no will after the offline status
    assert agent.counters["disconnects"] == 0
    assert agent.counters["published"] == 2

    late = make(broker, "late", topic_root)
    late.subscribe(agent.status_topic)
    late.start()
    retained = _next(late)
    assert (_state(retained), retained.retain) == ("offline", True)
    assert agent.publish(f"{topic_root}/after", b"x", content_type="text/plain") is False


def test_unclean_loss_sends_will_then_reconnects(
    broker: PrivateMosquitto, topic_root: str, make: Callable[..., Communicator]
) -> None:
    agent = make(broker, "agent", topic_root)
    observer = make(broker, "observer", topic_root)
    agent.start()
    observer.subscribe(agent.status_topic)
    observer.start()
    assert _state(_next(observer)) == "online"

    # Cut the TCP connection without an MQTT DISCONNECT: the broker must publish the will.
    sock = agent._client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)

    will = _next(observer)
    assert (_state(will), will.content_type) == ("offline", JSON_CONTENT_TYPE)
    assert _state(_next(observer)) == "online"  # paho reconnected, the agent announced itself again
    _wait(lambda: agent.counters["reconnects"] == 1)
    assert agent.counters["disconnects"] == 1
    assert agent.connected.is_set()


def test_subscriptions_restored_after_broker_restart(topic_root: str, make: Callable[..., Communicator]) -> None:
    # A broker of its own: restarting the suite's shared broker would disturb other tests.
    with PrivateMosquitto() as broker:
        consumer = make(broker, "consumer", topic_root)
        consumer.subscribe(f"{topic_root}/in/#")
        consumer.start()
        producer = make(broker, "producer", topic_root, max_outgoing=3)
        producer.start()
        assert producer.publish(f"{topic_root}/in/a", b"before", qos=1, content_type="text/plain")
        assert _next(consumer).payload == b"before"

        broker.stop()
        _wait(lambda: not producer.connected.is_set() and not consumer.connected.is_set())
        # While disconnected: QoS 0 is refused, QoS 1 is queued up to max_outgoing, then refused.
        assert not producer.publish(f"{topic_root}/in/q0", b"x", content_type="text/plain")
        queued = [producer.publish(f"{topic_root}/in/q1", b"x", qos=1, content_type="text/plain") for _ in range(5)]
        assert queued == [True, True, True, False, False]
        counters = producer.counters
        assert (counters["offline_dropped"], counters["outgoing_dropped"]) == (1, 2)

        broker.start()
        _wait(lambda: producer.connected.is_set() and consumer.connected.is_set())
        assert producer.wait_published(timeout=5.0)  # the queued QoS 1 messages went out after the reconnect

        # The consumer's subscription was made again in on_connect: fresh messages arrive.
        deadline = time.monotonic() + 10.0
        while True:
            producer.publish(f"{topic_root}/in/b", b"after", qos=1, content_type="text/plain")
            message = consumer.get(timeout=0.2)
            if message is not None and message.payload == b"after":
                break
            assert time.monotonic() < deadline, "subscription not restored after the broker restart"
        assert consumer.counters["reconnects"] == 1
        assert consumer.counters["disconnects"] == 1


def test_announcements_are_published_again_after_a_broker_restart(
        topic_root: str, make: Callable[..., Communicator]) -> None:
    # The private broker runs without persistence, so a restart forgets every retained message: a sensor's birth
    # must come back by itself, or a fusion agent that joins later never learns the sensor (issue 17).
    with PrivateMosquitto() as broker:
        sensor = make(broker, "sensor", topic_root)
        sensor.start()
        birth_topic = f"{topic_root}/sensors/cam/birth"
        assert sensor.announce(birth_topic, b"birth-1", content_type="text/plain")
        assert sensor.wait_published(timeout=5.0)
        broker.stop()
        _wait(lambda: not sensor.connected.is_set())
        broker.start()
        _wait(sensor.connected.is_set)
        assert sensor.wait_published(timeout=5.0)
        late = make(broker, "late-fusion", topic_root)
        late.subscribe(birth_topic)
        late.start()
        message = _next(late)
        assert (message.payload, message.retain) == (b"birth-1", True)
        # Clearing it stops the re-publishing: after the next restart nothing is retained.
        assert sensor.announce(birth_topic, b"", content_type="text/plain")
        assert sensor.wait_published(timeout=5.0)
        late.stop(timeout=1.0)
        broker.stop()
        _wait(lambda: not sensor.connected.is_set())
        broker.start()
        _wait(sensor.connected.is_set)
        again = make(broker, "late-fusion-2", topic_root)
        again.subscribe(birth_topic)
        again.start()
        assert again.get(timeout=1.0) is None


def test_a_flooding_sender_overflows_only_its_own_inbox_queue(
        broker: PrivateMosquitto, topic_root: str, make: Callable[..., Communicator]) -> None:
    from nairbus.agents.runtime.fusion_base import sender_of

    settings = BrokerSettings(host=broker.host, port=broker.port, inbox_per_key=200, inbox_size=1000)
    consumer = Communicator(settings, f"{topic_root}-fair".replace("/", "-"), None, _status, inbox_key=sender_of)
    consumer.subscribe(f"{topic_root}/sensors/+/frag", qos=0)
    consumer.start()
    try:
        flood, quiet = make(broker, "flood", topic_root), make(broker, "quiet", topic_root)
        flood.start()
        quiet.start()
        # The consumer's worker is busy (reads nothing) while one device floods and another sends its 50 frames.
        for i in range(5000):
            flood.publish(f"{topic_root}/sensors/flood/frag", b"f%d" % i, content_type=None)
            if i % 100 == 0:
                quiet.publish(f"{topic_root}/sensors/quiet/frag", b"q%d" % (i // 100), qos=1, content_type=None)
        assert quiet.wait_published(timeout=10.0)
        assert flood.wait_published(timeout=10.0)
        settled, last = time.monotonic(), -1
        while consumer.counters["received"] != last or time.monotonic() - settled < 0.5:  # until delivery ends
            if consumer.counters["received"] != last:
                last, settled = consumer.counters["received"], time.monotonic()
            time.sleep(0.05)
        got = [m.payload for m in iter(lambda: consumer.get(timeout=0.5), None)]
        assert [p for p in got if p.startswith(b"q")] == [b"q%d" % i for i in range(50)]  # all, in order
        assert sum(p.startswith(b"f") for p in got) == 200  # the flooder kept only its own queue's worth
        assert consumer.counters["inbox_dropped"] >= 4000
    finally:
        consumer.stop(timeout=1.0)


def test_content_type_and_expiry_reach_the_broker(
    broker: PrivateMosquitto, topic_root: str, make: Callable[..., Communicator]
) -> None:
    sender = make(broker, "sender", topic_root)
    receiver = make(broker, "receiver", topic_root)
    receiver.subscribe(f"{topic_root}/live")
    receiver.start()
    sender.start()

    assert sender.publish(f"{topic_root}/live", b"\x81\xa1k\x01", qos=1, content_type="application/x-msgpack")
    message = _next(receiver)
    assert (message.payload, message.content_type, message.retain) == (
        b"\x81\xa1k\x01",
        "application/x-msgpack",
        False,
    )
    assert message.received_ts == pytest.approx(time.time(), abs=5.0)

    # Retained messages, one expiring after 1 s: a subscriber arriving later sees only the other.
    assert sender.publish(
        f"{topic_root}/kept/expiring", b"1", qos=1, retain=True, content_type="text/plain", expiry_s=0.2
    )
    assert sender.publish(f"{topic_root}/kept/lasting", b"2", qos=1, retain=True, content_type="text/plain")
    assert sender.wait_published()
    time.sleep(2.1)
    late = make(broker, "late", topic_root)
    late.subscribe(f"{topic_root}/kept/#")
    late.start()
    assert _next(late).topic == f"{topic_root}/kept/lasting"
    assert late.get(timeout=0.3) is None

    # Larger than the broker's advertised maximum packet size: refused locally, connection kept.
    assert not sender.publish(f"{topic_root}/live", b"\0" * 70_000, content_type="application/octet-stream")
    assert sender.counters["oversize_dropped"] == 1
    assert sender.connected.is_set()


def test_full_inbox_drops_and_counts(
    broker: PrivateMosquitto, topic_root: str, make: Callable[..., Communicator]
) -> None:
    consumer = make(broker, "consumer", topic_root, inbox_size=3)
    consumer.subscribe(f"{topic_root}/data")
    consumer.start()
    producer = make(broker, "producer", topic_root)
    producer.start()

    for i in range(10):
        assert producer.publish(f"{topic_root}/data", str(i).encode(), qos=1, content_type="text/plain")
    assert producer.wait_published()
    _wait(lambda: consumer.counters["received"] == 10)
    assert consumer.counters["inbox_dropped"] == 7
    # The oldest go: what waits is the newest (latest frame wins).
    assert [_next(consumer).payload for _ in range(3)] == [b"7", b"8", b"9"]
    assert consumer.get(timeout=0) is None
    assert consumer.connected.is_set()  # the network thread never blocked


def test_start_fails_fast_when_nothing_listens(topic_root: str) -> None:
    port = free_port()
    comm = Communicator(BrokerSettings(port=port), "nobody", f"{topic_root}/status", _status)
    began = time.monotonic()
    with pytest.raises(ConnectionError, match=f"unreachable at 127.0.0.1:{port}"):
        comm.start(timeout=10.0)
    assert time.monotonic() - began < 3.0
    comm.stop()


def test_a_persistent_session_gets_what_arrived_while_it_was_away(
        broker: PrivateMosquitto, topic_root: str, make: Callable[..., Communicator]) -> None:
    # Issue 17: the fusion agent's session survives a restart, so QoS 0 fragments sent while it is away are queued
    # by the broker (queue_qos0_messages) and delivered when it comes back — without it they are dropped.
    topic = f"{topic_root}/sensors/cam/frag"
    for expiry, expect in ((60, [b"m0", b"m1", b"m2"]), (0, [])):
        first = make(broker, f"fusion-{expiry}", topic_root, session_expiry_s=expiry)
        first.subscribe(topic, qos=1)
        first.start()
        first.stop(timeout=1.0)  # a clean disconnect: the session stays only with a session expiry
        sender = make(broker, f"sender-{expiry}", topic_root)
        sender.start()
        for i in range(3):
            assert sender.publish(topic, f"m{i}".encode(), qos=0, content_type=None)
        marker = make(broker, f"marker-{expiry}", topic_root)  # once the marker is in, so are the three messages
        marker.subscribe(topic, qos=1)
        marker.start()
        assert sender.publish(topic, b"marker", qos=0, content_type=None)
        assert _next(marker).payload in (b"m0", b"m1", b"m2", b"marker")
        back = make(broker, f"fusion-{expiry}", topic_root, session_expiry_s=expiry)
        back.start()  # no subscribe: the session remembers it
        got = []
        while (m := back.get(timeout=1.0)) is not None and m.payload != b"marker":
            got.append(m.payload)
        assert got == expect


def test_a_sender_replays_its_last_messages_after_the_broker_comes_back(
        topic_root: str, make: Callable[..., Communicator]) -> None:
    # Issue 17: a broker killed mid-stream loses the QoS 0 messages in its socket buffers. A sender with a replay
    # window publishes the ones of the last replay_s seconds again after the reconnect (only those it asked for).
    topic = f"{topic_root}/sensors/cam/frag"
    with PrivateMosquitto() as broker:
        # The sensor reconnects no sooner than 1.5 s after the loss, so the receiver below is subscribed by then.
        sensor = make(broker, "sensor", topic_root, replay_s=2.0, reconnect_min_s=1.5, reconnect_max_s=2.0)
        sensor.start()
        for i in range(5):
            assert sensor.publish(topic, f"m{i}".encode(), qos=0, content_type=None, alias=True, replay=True)
        assert sensor.publish(topic, b"not-replayed", qos=0, content_type=None, alias=True)
        time.sleep(0.2)
        broker.kill()
        _wait(lambda: not sensor.connected.is_set())
        broker.start()
        fusion = make(broker, "fusion", topic_root)
        fusion.subscribe(topic, qos=1)
        fusion.start()
        assert not sensor.connected.is_set(), "the sensor reconnected before the receiver subscribed"
        got = [_next(fusion).payload for _ in range(5)]
        assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert fusion.get(timeout=0.5) is None
        assert sensor.counters["replayed"] == 5
        # Messages older than the window before a loss are not replayed.
        old = make(broker, "sensor-old", topic_root, replay_s=0.3, reconnect_min_s=1.5, reconnect_max_s=2.0)
        old.start()
        assert old.publish(topic, b"stale", qos=0, content_type=None, alias=True, replay=True)
        time.sleep(0.6)
        broker.kill()
        _wait(lambda: not old.connected.is_set())
        broker.start()
        _wait(old.connected.is_set)
        assert old.counters["replayed"] == 0


def test_a_receiver_whose_session_the_broker_forgot_is_told_once_subscribed_again(
        topic_root: str, make: Callable[..., Communicator]) -> None:
    # Issue 17: a broker restarted without persistence forgets the fusion agent's session. A sensor that reconnects
    # first publishes (and replays) into the void until fusion has subscribed again; fusion is told, once its
    # subscriptions are back, how long it was away, and asks the sensor to replay that (replay_since).
    topic = f"{topic_root}/sensors/cam/frag"
    with PrivateMosquitto() as broker:
        sensor = make(broker, "sensor", topic_root, replay_s=1.0)
        # The receiver reconnects late (1.5 s or more after the loss): the sensor is back and has replayed by then.
        fusion = make(broker, "fusion", topic_root, session_expiry_s=60, reconnect_min_s=1.5, reconnect_max_s=2.0)
        told: list[float] = []
        subscribed_when_told: list[bool] = []

        def lost(down_s: float) -> None:
            told.append(down_s)
            subscribed_when_told.append(fusion._ready)
            sensor.replay_since(down_s + 1.0)

        fusion.on_session_lost(lost)
        fusion.subscribe(topic, qos=0)
        fusion.start()
        sensor.start()
        for i in range(3):
            assert sensor.publish(topic, f"m{i}".encode(), qos=0, content_type=None, alias=True, replay=True)
        assert [_next(fusion).payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
        broker.kill()
        _wait(lambda: not sensor.connected.is_set() and not fusion.connected.is_set())
        broker.start()
        _wait(sensor.connected.is_set)
        assert sensor.publish(topic, b"m3", qos=0, content_type=None, alias=True, replay=True)  # to nobody yet
        assert not fusion.connected.is_set(), "the receiver reconnected before the sensor published"
        _wait(lambda: bool(told))
        got = set()
        while (m := fusion.get(timeout=1.0)) is not None:
            got.add(m.payload)
        assert {b"m0", b"m1", b"m2", b"m3"} <= got
        assert len(told) == 1
        assert 1.0 <= told[0] < 10.0
        assert subscribed_when_told == [True]
