"""Methods and sources are plug-ins: a toy source and a toy method (tests/agents/toys.py, one module) each take one
registration, and the CLI runs them as it runs the shipped ones — nothing else changes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from nairbus.agents.cli import app
from nairbus.agents.methods import METHODS
from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.runtime.config import SensorSettings
from nairbus.agents.runtime.frames import SourceContext
from nairbus.agents.runtime.fusion_base import FusionBase
from nairbus.agents.runtime.methods import UnknownMethodError, wire_unknowns
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.agents.sources import SOURCES, open_source
from nairbus.agents.vp.fusion import VpFusionAgent
from nairbus.models.architectures.split import InputSpec
from nairbus.schemas.topics import TopicTree
from tests.agents.toys import TOY, TOY_FRAMES, TOY_SOURCE, ToySource


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The toy source and the toy method, each registered with one line, removed afterwards."""
    monkeypatch.setitem(SOURCES, "toy", TOY_SOURCE)
    METHODS.register(TOY)
    try:
        yield
    finally:
        METHODS.unregister("toy")


def test_a_registered_source_is_opened_by_name(registered: None) -> None:
    spec = InputSpec(channels=1, height=5, width=6, mean=(0.0,), std=(1.0,), labels=("a", "b"))
    source = open_source(SensorSettings(source="toy"), SourceContext(spec, threading.Event()))
    assert isinstance(source, ToySource)
    batches = list(source.batches(4))
    assert [b.frame_ids.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6]]
    assert batches[1].images.shape == (3, 5, 6)


def test_an_unregistered_source_or_mode_gets_a_clear_error() -> None:
    spec = InputSpec(channels=1, height=5, width=6, mean=(0.0,), std=(1.0,), labels=("a", "b"))
    with pytest.raises(ValueError, match="unknown frame source 'toy'; registered: replay"):
        open_source(SensorSettings(source="toy"), SourceContext(spec, threading.Event()))
    with pytest.raises(UnknownMethodError,
                       match="unknown sensor mode 'toy'; registered: nair, image, auto, decision, vp"):
        METHODS.for_sensor(SensorSettings(mode="toy"))


def test_a_method_checks_its_own_settings(registered: None) -> None:
    with pytest.raises(ValueError, match="mode 'toy' takes --source toy"):
        METHODS.for_sensor(SensorSettings(mode="toy"))
    with pytest.raises(ValueError, match="needs a variant"):
        METHODS.for_sensor(SensorSettings(mode="vp"))
    assert METHODS.for_sensor(SensorSettings(mode="auto")).name == "nair"
    with pytest.raises(ValueError, match="taken"):
        METHODS.register(TOY)


@pytest.mark.broker
def test_the_cli_runs_a_registered_method_and_source(registered: None, broker: PrivateMosquitto,
                                                      topic_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
                       "NAIRBUS_TOPICS__ROOT": topic_root, "NAIRBUS_TOPICS__SITE": "lab"}.items():
        monkeypatch.setenv(key, value)
    topics = TopicTree(topic_root, "lab")
    got: list[dict[str, float]] = []
    done = threading.Event()

    def on_result(message: object) -> None:
        got.append(json.loads(message.payload))  # type: ignore[attr-defined]
        if len(got) == TOY_FRAMES:
            done.set()

    listener = Communicator(BrokerSettings(host=broker.host, port=broker.port), "toy-listener", None,
                            lambda _s: b"{}")
    listener.route(topics.result("cam-toy"), on_result)
    listener.start()
    try:
        run = CliRunner().invoke(app, ["sensor", "--mode", "toy", "--source", "toy", "--sensor-id", "cam-toy"])
        assert run.exit_code == 0, run.output
        assert json.loads(run.output.strip().splitlines()[-1]) == {"frames_sent": TOY_FRAMES}
        assert done.wait(10)
    finally:
        listener.stop()
    assert [r["mean"] for r in sorted(got, key=lambda r: r["frame_id"])] == [float(i) for i in range(TOY_FRAMES)]
    fusion = CliRunner().invoke(app, ["fusion", "--mode", "toy"])
    assert fusion.exit_code == 0, fusion.output


def test_the_registry_refuses_a_method_the_wire_does_not_know() -> None:
    """A method names its birth sections and topic leaves; what is not in ``nairbus.schemas`` is refused at
    registration, with what is missing named, so a new method adds its wire first."""
    toy_with_wire = replace(TOY, name="toy-wire", sensor_modes=("toy-wire",), birth_sections=("toy",),
                            data_leaves=("blob",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="topic leaf 'blob'; birth section 'toy'; birth mode 'toy-wire'"):
        METHODS.register(toy_with_wire)
    assert "toy-wire" not in METHODS.names()
    assert wire_unknowns(replace(TOY, data_leaves=("topk",))) == []


@pytest.mark.parametrize(("name", "agent"), [("nair", FusionAgent), ("vp", VpFusionAgent)])
def test_each_fusion_agent_serves_what_its_method_registers(name: str, agent: type[FusionBase]) -> None:
    method = METHODS.for_fusion(name)
    assert agent.sensor_modes == method.sensor_modes
    assert agent.data_leaves == method.data_leaves
    assert method.birth_sections
    assert not wire_unknowns(method)
