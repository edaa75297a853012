"""The device budget: which representations ``--mode auto`` may use, and the per-frame choice among them.

The budget rules and the choice are pure; the sensor tests build a real auto sensor on the shipped model, handed a bus
that only records (no broker), and check what its frames go out as under each budget.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from nairbus.agents.nair import sensor as sensor_module
from nairbus.agents.nair.auto import DECISION_MARGIN, AutoChooser
from nairbus.agents.nair.budget import DeviceBudget, measure_costs, parse_device_budget, plan_device
from nairbus.agents.nair.sensor import SensorAgent, split_share
from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.settings import TopicSettings
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas import DeviceRef
from tests.agents.test_fusion_units import RecordingBus

SHARES = {"image": 0.0, "nair": 0.62, "decision": 1.0}
TABLE: dict[str, Any] = {"nair": [{"payload_bytes": 16, "accuracy": 0.80}, {"payload_bytes": 128, "accuracy": 0.93}],
                         "image": {"grey2+deflate": {"accuracy": 0.70}, "grey4+deflate": {"accuracy": 0.93}},
                         "decision": {"accuracy": 0.935}}


@pytest.mark.parametrize(("text", "budget"), [("5ms", DeviceBudget(ms=5.0)), ("0.5 ms", DeviceBudget(ms=0.5)),
                                              ("62%", DeviceBudget(share=0.62)), ("0.62", DeviceBudget(share=0.62)),
                                              ("1", DeviceBudget(share=1.0)), ("0", DeviceBudget(share=0.0))])
def test_a_budget_is_milliseconds_or_a_share_of_the_model(text: str, budget: DeviceBudget) -> None:
    assert parse_device_budget(text) == budget


@pytest.mark.parametrize("text", ["fast", "-1ms", "150%", "1.5", "", "5 s"])
def test_a_budget_that_means_nothing_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"device budget|share of the model"):
        parse_device_budget(text)


@pytest.mark.parametrize(("share", "allowed"), [(0.0, ("image",)), (0.3, ("image",)), (0.62, ("image", "nair")),
                                                (0.99, ("image", "nair")), (1.0, ("image", "nair", "decision"))])
def test_a_share_allows_what_runs_within_it(share: float, allowed: tuple[str, ...]) -> None:
    assert plan_device(DeviceBudget(share=share), SHARES, {}, None).allowed == allowed


def test_milliseconds_and_the_frame_rate_allow_what_the_device_measured_it_affords() -> None:
    ms = {"image": 0.5, "nair": 4.0, "decision": 12.0}
    assert plan_device(DeviceBudget(ms=5.0), SHARES, ms, None).allowed == ("image", "nair")
    assert plan_device(None, SHARES, ms, 1 / 30).allowed == ("image", "nair", "decision")  # 26.7 ms a frame
    assert plan_device(None, SHARES, ms, 1 / 100).allowed == ("image", "nair")  # 8 ms
    assert plan_device(None, SHARES, ms, 1 / 1000).allowed == ("image",)  # not even the image: still the image
    assert plan_device(None, SHARES, {}, None).allowed == ("image", "nair", "decision")  # no rate: frames wait


def test_measured_costs_order_the_work() -> None:
    def busy(ms: float) -> Any:
        return lambda _frames: time.sleep(ms / 1000.0)

    costs = measure_costs({"light": busy(0.0), "heavy": busy(3.0)}, np.zeros((3, 2, 2), dtype=np.uint8), rounds=2)
    assert costs["light"] < costs["heavy"]
    assert costs["heavy"] >= 3.0


def test_the_decision_wins_unless_another_is_clearly_more_accurate() -> None:
    chooser = AutoChooser.from_table(TABLE)
    assert chooser.choose(nair_payload_bytes=128, codec="grey4+deflate", decision_fits=True) == "decision"
    assert chooser.choose(nair_payload_bytes=128, codec=None, decision_fits=False) == "nair"
    assert chooser.choose(nair_payload_bytes=16, codec="grey4+deflate", decision_fits=False) == "image"
    assert chooser.choose(nair_payload_bytes=None, codec=None, decision_fits=False) is None
    better = AutoChooser.from_table({**TABLE, "decision": {"accuracy": 0.93 - 2 * DECISION_MARGIN}})
    assert better.choose(nair_payload_bytes=128, codec=None, decision_fits=True) == "nair"
    old = AutoChooser.from_table({k: v for k, v in TABLE.items() if k != "decision"})
    assert old.decision_accuracy is None
    assert old.choose(nair_payload_bytes=None, codec="grey2+deflate", decision_fits=True) == "image"


# ----- the auto sensor under a budget ----------------------------------------------------------------------------


class SensorBus(RecordingBus):
    """The recording bus, with what a sensor asks of its bus besides."""

    def __init__(self) -> None:
        super().__init__()
        self.connected = __import__("threading").Event()
        self.last_wire_bytes = 0
        self.endpoint = "127.0.0.1:1883"

    def alias_extra_bytes(self, topic: str, payload_len: int) -> int:
        return 0

    def min_rtt(self) -> float:
        return 0.0

    def tcp_info(self) -> None:
        return None


@pytest.fixture(scope="module")
def base() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


def _auto_sensor(base: NairPipeline, monkeypatch: pytest.MonkeyPatch, budget: str, **kw: Any) -> SensorAgent:
    monkeypatch.setattr(sensor_module.AutoChooser, "load", classmethod(lambda cls, *_a: cls.from_table(TABLE)))
    settings = SensorSettings(sensor_id="dev-a", mode="auto", link_fit=False, method_options={"device_budget": budget},
                              **kw)
    return SensorAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab"), sensor=settings), base,
                       bus=SensorBus())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stage2(base: NairPipeline) -> NairPipeline:
    from nairbus.models.nair.transform import NairArtifact
    from nairbus.models.store import WEIGHTS_DIR

    return NairPipeline(base.model, base.manifest, NairArtifact.load(WEIGHTS_DIR / "base.nair.npz"))


@pytest.mark.parametrize(("budget", "deep", "sent"), [
    ("0%", True, "image"), ("62%", True, "image"),  # the shipped artifact is the deep split: 99.996 % of the MACs
    ("63%", False, "nair"), ("100%", True, "decision"), ("100%", False, "decision"),
])
def test_an_auto_sensor_sends_what_its_device_budget_allows(base: NairPipeline, stage2: NairPipeline,
                                                            monkeypatch: pytest.MonkeyPatch, budget: str, deep: bool,
                                                            sent: str) -> None:
    pipeline = base if deep else stage2
    assert split_share(pipeline) == pytest.approx(0.99996 if deep else 0.622, abs=0.001)
    sensor = _auto_sensor(pipeline, monkeypatch, budget)
    images = load_split("test").images[:4]
    from nairbus.agents.runtime.frames import FrameBatch

    work = sensor.device_work(FrameBatch(np.arange(4), images))
    out = sensor.build(0, images[0], None if work is None else work[0], time.time(), 400)
    assert [o.representation for o in out] == [sent]
    assert (sensor.birth().decision is not None) == (sent == "decision")
    assert sensor.birth().device == DeviceRef(runtime="torch", parts=())  # the weights the model names


def test_a_budget_in_milliseconds_is_measured_on_the_device(base: NairPipeline,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sensor = _auto_sensor(base, monkeypatch, "0.001ms")
    assert sensor.plan is not None
    assert sensor.plan.allowed == ("image",)  # nothing runs in a microsecond: the image, which needs no model
    assert set(sensor.plan.ms) == {"image", "nair", "decision"}


@pytest.mark.parametrize(("budget", "split"), [("63%", "stage2"), ("100%", "stage3"), ("30%", "stage3")])
def test_a_share_budget_picks_the_deepest_artifact_within_it(budget: str, split: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sensor_module.AutoChooser, "load", classmethod(lambda cls, *_a: cls.from_table(TABLE)))
    settings = SensorSettings(sensor_id="dev-b", mode="auto", method_options={"device_budget": budget})
    sensor = SensorAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab"), sensor=settings),
                         bus=SensorBus())  # type: ignore[arg-type]
    assert sensor.pipeline.artifact.split == split
    assert sensor.plan is not None
    assert sensor.plan.allows("nair") == (budget != "30%")  # no shipped artifact runs within 30 % of the model
