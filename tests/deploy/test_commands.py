"""Commands to a running sensor: validation and effect without a broker, then through a real Mosquitto — the
answer echoes its transaction, the birth names the new budget and deadline, frames follow the new settings, and
a fusion agent that sees frames of a sensor it has no birth for asks for one (rebirth) and then decides them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.commands import SensorControl
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator, InboundMessage
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.runtime.state import ControlsMemory
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas import CONTENT_TYPE_JSON, Birth, Command, CommandResponse, Controls, Result, Tally
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree

TOPICS = TopicTree("unit", "lab")


class RecordingBus:
    """Stands in for the communicator: routes, subscriptions and publishes are recorded, nothing is sent."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.published: list[tuple[str, bytes]] = []
        self.replays: list[float] = []

    def route(self, topic: str, handler: Any, qos: int = 1) -> None:
        self.routes[topic] = handler

    def publish(self, topic: str, payload: bytes, **_: Any) -> bool:
        self.published.append((topic, payload))
        return True

    def replay_since(self, seconds: float) -> int:
        self.replays.append(seconds)
        return 0


def _control(**settings: Any) -> tuple[SensorControl, RecordingBus, list[SensorSettings], list[int]]:
    bus, applied, births = RecordingBus(), [], []
    control = SensorControl(bus, TOPICS, SensorSettings(sensor_id="cam", **settings),  # type: ignore[arg-type]
                            applied.append, lambda: births.append(1))
    return control, bus, applied, births


def _request(bus: RecordingBus, payload: bytes) -> CommandResponse:
    bus.routes[TOPICS.sensor_set("cam")](InboundMessage(TOPICS.sensor_set("cam"), payload, CONTENT_TYPE_JSON, False,
                                                         time.time()))
    topic, answer = bus.published[-1]
    assert topic == TOPICS.sensor_response("cam")
    return wire_decode(answer, CommandResponse)


def test_a_valid_command_changes_what_it_names_and_echoes_its_transaction() -> None:
    control, bus, applied, births = _control(deadline_ms=1000)
    response = _request(bus, wire_encode(Command(transaction="t-1", budget_bytes=300, deadline_ms=250, fps=2)))
    assert (response.status, response.transaction) == ("ok", "t-1")
    assert response.controls is not None
    assert (response.controls.budget_bytes, response.controls.deadline_ms, response.controls.fps) == (300, 250, 2)
    assert applied[-1].budget_bytes == 300
    assert applied[-1].deadline_ms == 250
    assert births == [1]  # the birth names the budget and the deadline: published again
    controls = [wire_decode(p, Controls) for t, p in bus.published if t == TOPICS.sensor_controls("cam")]
    assert controls[-1].budget_bytes == 300
    # The frame-rate cap (2 fps): of 10 frames a second offered for 2 s, four go out.
    admitted = [control.admit(now=i * 0.1) for i in range(20)]
    assert admitted.count(None) == 4
    assert set(admitted) == {None, "skipped_rate"}
    assert _request(bus, b'{"paused": true}').status == "ok"
    assert control.admit() == "skipped_paused"
    assert _request(bus, b'{"paused": false, "fps": 0}').status == "ok"
    assert control.admit() is None
    assert control.max_fps is None
    # A replay request (a fusion agent whose session the broker lost) re-sends; it changes no setting.
    assert _request(bus, b'{"replay_s": 2.5, "transaction": "replay-hub"}').status == "ok"
    assert bus.replays == [2.5]
    assert births == [1]


@pytest.mark.parametrize("payload", [
    b"not json", b"{}" * 40000, b'{"budget_bytes": 300, "budget_fraction": 0.5}', b'{"deadline_ms": -1}',
    b'{"budget_bytes": 3}', b'{"fps": 1e9}', b'{"replay_s": 0}',
    b'{"replay_s": 1e6}', b'{"paused": "yes"}', b'{"reboot": true}', b'[1, 2]',
    b'{"v": 2, "kind": "command"}', b'{"kind": "birth"}', b'{"transaction": "' + b"x" * 200 + b'"}',
])
def test_a_bad_command_is_answered_and_changes_nothing(payload: bytes) -> None:
    control, bus, applied, births = _control(budget_bytes=500)
    response = _request(bus, payload)
    assert response.status == "error"
    assert response.error
    assert response.controls is not None
    assert response.controls.budget_bytes == 500
    assert (applied, births, control.paused, control.max_fps, bus.replays) == ([], [], False, None, [])


def test_a_fusion_agents_tally_is_taken_not_answered() -> None:
    """A tally (fusion's count of a withdrawn run's decided frames) changes nothing and publishes nothing: the run
    has withdrawn its controls, which a response would put back."""
    bus, tallies = RecordingBus(), []
    SensorControl(bus, TOPICS, SensorSettings(sensor_id="cam"), lambda _s: None, lambda: None,  # type: ignore[arg-type]
                  on_tally=tallies.append)
    payload = wire_encode(Command(tally=Tally(fusion_id="f", session="s1", decided=42)))
    bus.routes[TOPICS.sensor_set("cam")](InboundMessage(TOPICS.sensor_set("cam"), payload, CONTENT_TYPE_JSON, False,
                                                         time.time()))
    assert [(t.session, t.decided) for t in tallies] == [("s1", 42)]
    assert bus.published == []
    mixed = wire_encode(Command(tally=Tally(fusion_id="f", session="s1", decided=1), paused=True))
    bus.routes[TOPICS.sensor_set("cam")](InboundMessage(TOPICS.sensor_set("cam"), mixed, CONTENT_TYPE_JSON, False,
                                                         time.time()))
    assert len(tallies) == 1  # a command that also changes something is a command, answered as one
    assert bus.published[-1][0] == TOPICS.sensor_response("cam")


def test_a_refused_command_echoes_its_transaction() -> None:
    """Issue 36: the error answer to an invalid request carries the request's transaction (where it names a valid
    one), so Home Assistant or a script can match the refusal to what it sent."""
    _, bus, applied, _births = _control()
    answer = _request(bus, b'{"budget_bytes": 3, "transaction": "ha-17"}')
    assert (answer.status, answer.transaction) == ("error", "ha-17")
    assert _request(bus, b'{"fps": -1, "transaction": ""}').transaction is None  # not a valid transaction
    assert _request(bus, b"not json").transaction is None
    assert applied == []


def test_a_vp_sensor_refuses_a_budget() -> None:
    bus = RecordingBus()
    SensorControl(bus, TOPICS, SensorSettings(sensor_id="cam", mode="vp", variant="x"),  # type: ignore[arg-type]
                  lambda _s: None, lambda: None, supports_budget=False)
    response = _request(bus, b'{"budget_bytes": 300, "transaction": "t"}')
    assert (response.status, response.transaction) == ("error", "t")
    assert "budget" in (response.error or "")


# ----- through a real broker -------------------------------------------------------------------------------------


def _config(broker: PrivateMosquitto, root: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)


def _drain(comm: Communicator, seconds: float) -> list[InboundMessage]:
    """Everything ``comm`` receives for ``seconds`` (a running sensor never falls silent: bounded by time)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        m = comm.get(timeout=0.05)
        if m is not None:
            out.append(m)
    return out


@pytest.mark.broker
def test_commands_change_a_running_sensor_through_the_broker(broker: PrivateMosquitto, topic_root: str,
                                                             tiny_pipeline: NairPipeline) -> None:
    topics = TopicTree(topic_root, "lab")
    sensor = SensorAgent(_config(broker, topic_root, sensor=SensorSettings(
        sensor_id="cam", count=100_000, fps=50.0, link_fit=False, deadline_ms=1000)), tiny_pipeline)
    hub = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"t-hub-{uuid.uuid4().hex[:6]}", None,
                       lambda _s: b"")
    for topic in (topics.sensor_response("cam"), topics.sensor_birth("cam"), topics.sensor_controls("cam"),
                  topics.sensor_frag("cam")):
        hub.subscribe(topic, qos=1)
    hub.start()
    sensor.start()
    worker = threading.Thread(target=sensor.run_replay, daemon=True)
    worker.start()
    got: list[InboundMessage] = []

    def wait_for(topic: str, predicate: Any, timeout: float = 10.0) -> InboundMessage:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in got:
                if m.topic == topic and predicate(m):
                    return m
            m = hub.get(timeout=0.05)
            if m is not None:
                got.append(m)
        raise AssertionError(f"nothing on {topic} in time")

    try:
        hub.publish(topics.sensor_set("cam"), wire_encode(Command(transaction="abc", budget_bytes=200,
                                                                   deadline_ms=400)), qos=1,
                    content_type=CONTENT_TYPE_JSON)
        answer = wire_decode(wait_for(topics.sensor_response("cam"), lambda m: True).payload, CommandResponse)
        assert (answer.status, answer.transaction) == ("ok", "abc")
        birth = wait_for(topics.sensor_birth("cam"), lambda m: wire_decode(m.payload, Birth).budget_bytes == 200)
        assert wire_decode(birth.payload, Birth).deadline_ms == 400
        wait_for(topics.sensor_controls("cam"), lambda m: json.loads(m.payload)["budget_bytes"] == 200)
        time.sleep(0.5)  # frames built before the command may still be on their way: let them pass
        _drain(hub, 0.3)
        frames_after = [m for m in _drain(hub, 1.0) if m.topic == topics.sensor_frag("cam")]
        assert frames_after, f"no frames after the command: {sensor.counters}"
        assert max(len(m.payload) for m in frames_after) < 200  # each frame within its new wire budget
        # Paused: nothing goes out; resumed: frames again.
        hub.publish(topics.sensor_set("cam"), b'{"paused": true, "transaction": "p"}', qos=1,
                    content_type=CONTENT_TYPE_JSON)
        wait_for(topics.sensor_response("cam"), lambda m: json.loads(m.payload).get("transaction") == "p")
        time.sleep(0.5)
        _drain(hub, 0.3)
        time.sleep(0.5)
        assert all(m.topic != topics.sensor_frag("cam") for m in _drain(hub, 0.5))
        assert sensor.counters["skipped_paused"] > 0
    finally:
        sensor.stop_event.set()
        worker.join(timeout=20)
        sensor.stop()
        hub.stop()
    # Restarted with the same configuration, the sensor is still paused at the budget and deadline the commands
    # set (its state file), and its first birth says so.
    again = SensorAgent(_config(broker, topic_root, sensor=SensorSettings(
        sensor_id="cam", count=100_000, fps=50.0, link_fit=False, deadline_ms=1000)), tiny_pipeline)
    again.start()
    try:
        assert (again.birth().budget_bytes, again.birth().deadline_ms) == (200, 400)
        assert again.control.paused
    finally:
        again.stop()


def test_the_controls_a_command_set_are_re_applied_at_the_next_start(tmp_path: Path) -> None:
    memory = ControlsMemory.for_sensor("cam", tmp_path)
    bus, applied = RecordingBus(), []
    control = SensorControl(bus, TOPICS, SensorSettings(sensor_id="cam", deadline_ms=1000),
                            applied.append, lambda: None, memory=memory)  # type: ignore[arg-type]
    assert control.restore() is None  # nothing remembered yet
    _request(bus, b'{"rebirth": true}')
    _request(bus, b'{"replay_s": 1}')
    assert not memory.path.exists()  # a fusion agent's requests set no control: nothing to remember
    _request(bus, wire_encode(Command(budget_bytes=300, deadline_ms=250, fps=2, paused=True)))
    assert memory.path.is_file()
    again = SensorControl(RecordingBus(), TOPICS, SensorSettings(sensor_id="cam", deadline_ms=1000),
                          applied.append, lambda: None, memory=memory)  # type: ignore[arg-type]
    restored = again.restore()
    assert restored is not None
    assert (again.settings.budget_bytes, again.settings.deadline_ms, again.max_fps, again.paused) == (300, 250, 2, True)
    assert applied[-1].budget_bytes == 300  # the sensor was handed the settings
    # A VP sensor has no budget: the rest is restored.
    vp = SensorControl(RecordingBus(), TOPICS, SensorSettings(sensor_id="cam", mode="vp", variant="x"),
                       lambda _s: None, lambda: None, supports_budget=False, memory=memory)  # type: ignore[arg-type]
    vp.restore()
    assert (vp.settings.budget_bytes, vp.settings.deadline_ms, vp.paused) == (None, 250, True)


@pytest.mark.parametrize("content", [b"", b"not json", b'{"kind": "controls"}', b"\xff" * 10])
def test_a_damaged_or_foreign_controls_file_is_no_memory(tmp_path: Path, content: bytes) -> None:
    memory = ControlsMemory.for_sensor("cam", tmp_path)
    memory.path.write_bytes(content)
    assert memory.load("cam") is None
    memory.save(Controls(agent_id="other", deadline_ms=100, ts=1.0))
    assert memory.load("cam") is None  # another sensor's file
    assert memory.load("other") is not None
    memory.forget()
    memory.forget()  # twice: nothing to remove is fine
    assert memory.load("other") is None


def test_a_controls_file_that_cannot_be_written_does_not_stop_the_sensor(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    memory = ControlsMemory.for_sensor("cam", blocker)  # its directory is a file
    memory.save(Controls(agent_id="cam", deadline_ms=100, ts=1.0))  # logged, not raised
    assert memory.load("cam") is None


@pytest.mark.broker
def test_fusion_asks_a_sensor_it_has_no_birth_for_to_publish_it_again(broker: PrivateMosquitto, topic_root: str,
                                                                      tiny_pipeline: NairPipeline) -> None:
    topics = TopicTree(topic_root, "lab")
    sensor = SensorAgent(_config(broker, topic_root, sensor=SensorSettings(
        sensor_id="cam", count=300, fps=30.0, link_fit=False, deadline_ms=2000)), tiny_pipeline)
    sensor.start()
    # The broker forgets the birth (as a broker without persistence does on a restart the sensor never noticed).
    eraser = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"t-er-{uuid.uuid4().hex[:6]}", None,
                          lambda _s: b"")
    eraser.start()
    eraser.publish(topics.sensor_birth("cam"), b"", qos=1, retain=True, content_type=CONTENT_TYPE_JSON)
    assert eraser.wait_published()
    fusion = FusionAgent(_config(broker, topic_root, fusion=FusionSettings(deadline_ms=500, stats_interval_s=0.5)),
                         tiny_pipeline)
    fusion.start()
    threads = [threading.Thread(target=fusion.run, daemon=True), threading.Thread(target=sensor.run_replay,
                                                                                   daemon=True)]
    listener = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"t-l-{uuid.uuid4().hex[:6]}", None,
                            lambda _s: b"")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    for t in threads:
        t.start()
    try:
        result = None
        end = time.monotonic() + 20
        while result is None and time.monotonic() < end:
            m = listener.get(timeout=0.1)
            if m is not None:
                result = wire_decode(m.payload, Result)
        assert result is not None, "fusion never learned the sensor"
        assert fusion.counts["rebirth_requested"] >= 1
        # The frames that came before the birth waited for it (parked) instead of being refused.
        assert fusion.rejected["unknown_sensor"] == 0
    finally:
        sensor.stop_event.set()
        fusion.stop()
        for t in threads:
            t.join(timeout=20)
        fusion.close()
        sensor.stop()
        listener.stop()
        eraser.stop()


@pytest.mark.broker
def test_only_the_hubs_accounts_may_command_a_sensor(secure: Any, tiny_pipeline: NairPipeline) -> None:
    # Production ACL: Home Assistant's account may write a sensor's set topic; another sensor may not (its QoS 1
    # publish is answered "not authorised" and never reaches the sensor).
    site = f"s{uuid.uuid4().hex[:8]}"
    topics = TopicTree("nairbus", site)
    sensor = SensorAgent(AgentConfig(broker=secure.settings("cam-a", tls=True),
                                     topics=TopicSettings(root="nairbus", site=site),
                                     sensor=SensorSettings(sensor_id="cam-a", count=1)), tiny_pipeline)
    sensor.start()
    intruder = Communicator(secure.settings("cam-b", tls=True), "t-intruder", None, lambda _s: b"")
    ha = Communicator(secure.settings("ha.homeassistant"), "t-ha", None, lambda _s: b"")
    ha.subscribe(topics.sensor_response("cam-a"), qos=1)
    intruder.start()
    ha.start()
    try:
        assert intruder.publish(topics.sensor_set("cam-a"), b'{"paused": true, "transaction": "evil"}', qos=1,
                                content_type=CONTENT_TYPE_JSON)
        assert intruder.wait_published()
        assert intruder.counters["publish_rejected"] == 1
        assert ha.publish(topics.sensor_set("cam-a"), b'{"deadline_ms": 700, "transaction": "ok"}', qos=1,
                          content_type=CONTENT_TYPE_JSON)
        answers = []
        end = time.monotonic() + 10
        while not any(a.transaction == "ok" for a in answers) and time.monotonic() < end:
            m = ha.get(timeout=0.1)
            if m is not None:
                answers.append(wire_decode(m.payload, CommandResponse))
        assert [a.transaction for a in answers] == ["ok"]  # the intruder's never arrived
        assert sensor.control.paused is False
        assert sensor.settings.deadline_ms == 700
    finally:
        sensor.stop()
        intruder.stop()
        ha.stop()
