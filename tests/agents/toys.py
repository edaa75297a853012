"""A toy frame source and a toy method: each one module (this one) plus one registration, to show the seams.

``ToySource`` yields numbered frames of one grey level; ``TOY`` is a method whose sensor publishes each frame's
mean grey level as a JSON result and whose fusion agent does nothing but connect — enough for the CLI to run both
without knowing the method.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.frames import FrameBatch, SourceContext, SourceSettings
from nairbus.agents.runtime.methods import Method
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.sources import RegisteredSource, open_source
from nairbus.models.architectures.split import InputSpec
from nairbus.schemas.topics import TopicTree

TOY_FRAMES = 7


@dataclass
class ToySource:
    """``TOY_FRAMES`` frames of the model's input size, frame ``i`` all of grey level ``i``."""

    spec: InputSpec
    counters: Counter[str] = field(default_factory=Counter)
    skip_late: bool = False
    source_paced: bool = True

    def batches(self, batch: int) -> Iterator[FrameBatch]:
        h, w = self.spec.height, self.spec.width
        for start in range(0, TOY_FRAMES, batch):
            ids = np.arange(start, min(start + batch, TOY_FRAMES), dtype=np.int64)
            yield FrameBatch(ids, np.stack([np.full((h, w), i, dtype=np.uint8) for i in ids]))


class ToySettings(SourceSettings):
    """The toy source takes no options."""


def toy_source(_settings: ToySettings, ctx: SourceContext) -> ToySource:
    """The factory the source registry holds."""
    return ToySource(ctx.spec)


TOY_SOURCE = RegisteredSource(ToySettings, toy_source)
"""The toy source as the registry holds it: its settings model and its factory."""


def _run_toy_sensor(config: AgentConfig) -> dict[str, int]:
    """Publish each toy frame's mean grey level on the sensor's result topic, as JSON."""
    import threading

    spec = InputSpec(channels=1, height=4, width=4, mean=(0.0,), std=(1.0,), labels=("dark", "light"))
    stop = threading.Event()
    source = open_source(config.sensor, SourceContext(spec, stop))
    topics = TopicTree(config.topics.root, config.topics.site)
    comm = Communicator(config.broker, f"toy-{config.sensor.sensor_id}", None, lambda _s: b"{}")
    comm.start()
    sent = 0

    def emit(frame_id: int, image: np.ndarray, _result: object, _ts: float) -> None:
        nonlocal sent
        payload = json.dumps({"frame_id": frame_id, "mean": float(image.mean())}).encode()
        comm.publish(topics.result(config.sensor.stream), payload, qos=1, content_type="application/json")
        sent += 1

    try:
        run_paced(source.batches(3), Pacing(fps=None), stop, lambda _b: None, emit, lambda _f: None)
        comm.wait_published(timeout=10.0)
    finally:
        comm.stop()
    return {"frames_sent": sent}


def _run_toy_fusion(_config: AgentConfig) -> None:
    """A fusion agent with nothing to fuse."""


def check_toy_sensor(settings: SensorSettings) -> None:
    """The toy method takes the toy source only."""
    if settings.source != "toy":
        raise ValueError("mode 'toy' takes --source toy")


TOY = Method(name="toy", summary="a toy method (tests)", sensor_modes=("toy",), run_sensor=_run_toy_sensor,
             run_fusion=_run_toy_fusion, check_sensor=check_toy_sensor)
