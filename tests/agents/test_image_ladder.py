"""The image mode's default codec ladder: the strongest ladder of the image baseline's evaluation, best first, and
every rung of it announced in a birth that validates and decoded by the fusion agent.

No broker: the fusion agent is handed a bus that only records (as in ``test_fusion_units``), and the sensor's own
encoder (:class:`~nairbus.agents.nair.outgoing.ImageFrameEncoder`) builds the messages under shrinking budgets, so
each frame goes with the first rung that fits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.outgoing import ImageFrameEncoder
from nairbus.agents.nair.settings import DEFAULT_IMAGE_CODECS
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.settings import TopicSettings
from nairbus.models.data.registry import load_data
from nairbus.models.evaluation.image import FAMILY_LADDERS
from nairbus.models.image.codec import get_image_codec
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.schemas import Birth, ImageBirth, ModelRef
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree
from tests.agents.test_fusion_units import RecordingBus

ROOT = Path(__file__).resolve().parents[2]
LADDER_FAMILY = "grey-front"
"""The family of ``models/experiments/images.toml`` the sensor ships (lowest quality first there)."""


@pytest.fixture(scope="module")
def pipeline() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


def test_the_default_ladder_is_the_evaluated_front_best_first() -> None:
    assert tuple(reversed(FAMILY_LADDERS[LADDER_FAMILY])) == DEFAULT_IMAGE_CODECS
    assert len(set(DEFAULT_IMAGE_CODECS)) == len(DEFAULT_IMAGE_CODECS)
    assert get_image_codec(DEFAULT_IMAGE_CODECS[0]).lossless  # an unlimited budget sends the frame as it is


def test_the_shipped_ladder_is_the_reports_strongest_at_the_caps_that_bind() -> None:
    # At every cap below the whole frame's size the report ranks the shipped family first, or within the 95 %
    # interval of the first (above it, every lossless family ties).
    report = json.loads((ROOT / "reports" / "images.json").read_text())
    for cap, best in report["best"].items():
        if best is None or int(cap) > 500:
            continue
        ours = next(row for row in report["families"][LADDER_FAMILY]["caps"] if row["cap_bytes"] == int(cap))
        assert best["family"] == LADDER_FAMILY or ours["ci95"][1] >= best["accuracy"], (cap, best["family"])


def _birth(pipeline: NairPipeline, codecs: tuple[str, ...], size: int) -> bytes:
    return wire_encode(Birth(
        sensor_id="cam", session="s1", ts=time.time(), mode="image", stream_id="cam", labels=pipeline.labels,
        model=ModelRef(name=pipeline.manifest.name, sha256=pipeline.manifest.sha256),
        image=ImageBirth(codecs=codecs, height=size, width=size), deadline_ms=500.0,
        epoch_ts=float(int(time.time())), expiry_ms=10_000))


def _message(topic: str, payload: bytes) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, content_type=None, retain=False, received_ts=time.time())


def test_fusion_decodes_every_rung_the_sensor_sends_under_shrinking_budgets(pipeline: NairPipeline) -> None:
    spec = pipeline.input_spec
    agent = FusionAgent(AgentConfig(topics=TopicSettings(root="unit", site="lab")), pipeline,
                        bus=RecordingBus())  # type: ignore[arg-type]
    topics = TopicTree("unit", "lab")
    agent.handle(_message(topics.sensor_birth("cam"), _birth(pipeline, DEFAULT_IMAGE_CODECS, spec.height)),
                 time.monotonic())
    assert "cam" in agent.sensors
    ctx = agent.sensors["cam"].ctx
    assert ctx is not None
    assert [c.name for c in agent.sensors["cam"].codecs] == list(DEFAULT_IMAGE_CODECS)
    encoder = ImageFrameEncoder([get_image_codec(c) for c in DEFAULT_IMAGE_CODECS], ctx, topics.sensor_image("cam"))
    image = load_data("test").images[0]
    used: set[str | None] = set()
    sent = 0
    for seq, budget in enumerate(range(600, 30, -6), start=1):
        out = encoder.message(image, seq, seq, ctx.epoch_ts + seq / 30, budget)
        if out is None:
            continue
        assert out.wire_bytes <= budget
        used.add(out.codec)
        agent.handle(_message(topics.sensor_image("cam"), out.payload), time.monotonic())
        sent += 1
    assert sent > 0
    assert not agent.rejected, dict(agent.rejected)
    assert agent.counts["fragments"] == sent
    assert len(used) >= len(DEFAULT_IMAGE_CODECS) // 2  # most rungs were taken, down-sampled ones included
    assert any(name and name.startswith("down") for name in used)
