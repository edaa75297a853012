"""Every wire message at its extremes, through a real broker, while the legitimate streams are being decided.

Issue 17: no message may end a process. Hypothesis draws messages of every kind the bus carries — NAIR fragments,
image frames and VP top-k in a known sensor's own session (so they pass the envelope and reach the handlers), births
of every mode, statuses, results, stats and capture frames on the wrong topics, raw bytes on every leaf — with its
bias for boundary values (0 and 2⁶⁴−1 in ``seq``, frame ids, spans; empty and maximal data; the oldest and newest
captures). They are sent by a hostile sensor of its own (a sensor that misbehaves costs only itself) through the
test suite's Mosquitto to a running NAIR fusion agent and a running VP fusion agent, while a legitimate NAIR sensor
and a legitimate VP sensor send their frames. Both agents must stay alive, keep their stats buildable, count what
they refused, and decide every legitimate frame with the label the offline model gives it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.nair.sensor import SensorAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.vp.fusion import VpFusionAgent, read_family_manifest
from nairbus.agents.vp.sensor import VpSensorAgent
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import sensor_artifact_path
from nairbus.models.vp.family import load_family, softmax_outputs
from nairbus.schemas import CONTENT_TYPE_JSON, Result
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.lean import encode_lean
from nairbus.schemas.topics import TopicTree
from tests.schemas import strategies as S

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
LEGIT_FRAMES = 30
HOSTILE_MESSAGES = 600
LEAVES = ("status", "birth", "frag", "topk", "image")


def _config(broker: PrivateMosquitto, root: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)


def _running(agent: Any) -> tuple[Any, threading.Thread]:
    agent.start()
    worker = threading.Thread(target=agent.run, daemon=True)
    worker.start()
    return agent, worker


@pytest.fixture(scope="module")
def pipeline() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


@pytest.fixture
def fusions(broker: PrivateMosquitto, topic_root: str, pipeline: NairPipeline) -> Iterator[tuple[Any, Any]]:
    nair, nair_worker = _running(FusionAgent(_config(broker, topic_root, fusion=FusionSettings(
        fusion_id="nair-hub", deadline_ms=1000, stats_interval_s=0.2)), pipeline))
    vp, vp_worker = _running(VpFusionAgent(_config(broker, topic_root, fusion=FusionSettings(
        fusion_id="vp-hub", mode="vp", deadline_ms=1000, stats_interval_s=0.2)), read_family_manifest()))
    yield nair, vp
    for agent, worker in ((nair, nair_worker), (vp, vp_worker)):
        agent.stop()
        worker.join(timeout=10)
        agent.close()
        assert not worker.is_alive()


def test_every_wire_message_at_its_extremes_ends_nothing(broker: PrivateMosquitto, topic_root: str,
                                                         pipeline: NairPipeline,
                                                         fusions: tuple[FusionAgent, VpFusionAgent]) -> None:
    topics = TopicTree(topic_root, "lab")
    _family, variants = load_family()
    variant = next(iter(variants.values()))
    # Unpaced (whole batches as fast as they go): the barrage shares this process, and a paced sensor would skip
    # the frames it is late for — frames never sent say nothing about the fusion agents.
    vp_sensor = {"mode": "vp", "variant": variant.name, "k": 3, "count": LEGIT_FRAMES, "batch": 5}
    good = SensorAgent(_config(broker, topic_root, sensor=SensorSettings(
        sensor_id="good", count=LEGIT_FRAMES, batch=5, link_fit=False, budget_fraction=1.0)), pipeline)
    vp_good = VpSensorAgent(_config(broker, topic_root, sensor=SensorSettings(
        sensor_id="vp-good", stream_id="vp-cam", **vp_sensor)), variant)
    # The hostile devices: known sensors (valid births) of their own, whose sessions the lean messages use.
    evil = SensorAgent(_config(broker, topic_root, sensor=SensorSettings(sensor_id="evil", link_fit=False)), pipeline)
    vp_evil = VpSensorAgent(_config(broker, topic_root, sensor=SensorSettings(
        sensor_id="vp-evil", stream_id="evil-cam", **vp_sensor)), variant)
    listener = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"t-{uuid.uuid4().hex[:8]}", None,
                            lambda _s: b"{}")
    listener.subscribe(topics.all_results(), qos=0)
    listener.start()
    agents = (good, vp_good, evil, vp_evil)
    for agent in agents:
        agent.start()
    time.sleep(1.0)  # both fusion agents learn the four births
    workers = [threading.Thread(target=agent.run_replay, daemon=True) for agent in (good, vp_good)]

    legit = {"good", "vp-good"}
    ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True).filter(lambda i: i not in legit)
    sent: dict[str, int] = {}
    began = time.monotonic()

    @settings(max_examples=HOSTILE_MESSAGES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def barrage(data: st.DataObject) -> None:
        if time.monotonic() - began > 120:
            return  # bounded in time as well as in count
        if sum(sent.values()) == HOSTILE_MESSAGES // 4 and not workers[0].is_alive():
            for worker in workers:  # the legitimate frames go out in the middle of the barrage
                worker.start()
        kind = data.draw(st.sampled_from(("fragment", "image", "topk", "birth", "status", "result", "stats",
                                          "frame", "raw")))
        content_type: str | None = None
        if kind == "fragment":
            topic, payload = topics.sensor_frag("evil"), encode_lean(data.draw(S.fragments(evil.ctx)), evil.ctx)
        elif kind == "image":
            topic, payload = topics.sensor_image("evil"), encode_lean(data.draw(S.image_frames(evil.ctx)), evil.ctx)
        elif kind == "topk":
            topic, payload = topics.sensor_topk("vp-evil"), encode_lean(data.draw(S.topks(vp_evil.ctx)),
                                                                        vp_evil.ctx)
        elif kind == "birth":
            birth = data.draw(S.births())
            target = data.draw(st.sampled_from((birth.sensor_id, data.draw(ids))))
            if target in legit:
                return
            topic, payload, content_type = topics.sensor_birth(target), wire_encode(birth), CONTENT_TYPE_JSON
        elif kind == "status":
            topic, payload = topics.sensor_status(data.draw(ids)), wire_encode(data.draw(S.statuses()))
            content_type = CONTENT_TYPE_JSON
        elif kind in ("result", "stats", "frame"):
            message = data.draw({"result": S.results(), "stats": S.stats(), "frame": S.frames()}[kind])
            sid = data.draw(st.sampled_from(("evil", "vp-evil")))
            topic = f"{topics.prefix}/sensors/{sid}/{data.draw(st.sampled_from(LEAVES))}"
            payload = wire_encode(message)
        else:
            sid = data.draw(st.sampled_from(("evil", "vp-evil")) | ids)
            topic = f"{topics.prefix}/sensors/{sid}/{data.draw(st.sampled_from(LEAVES))}"
            payload = data.draw(st.binary(max_size=70_000))
        if evil.comm.publish(topic, payload, qos=0, content_type=content_type):
            sent[kind] = sent.get(kind, 0) + 1

    barrage()
    evil.comm.wait_published(timeout=10)
    assert all(worker.ident is not None for worker in workers), "the legitimate sensors never started"
    for worker in workers:
        worker.join(timeout=120)
    results: dict[tuple[str, int], Result] = {}
    end = time.monotonic() + 20
    while len(results) < 2 * LEGIT_FRAMES and time.monotonic() < end:
        msg = listener.get(timeout=0.2)
        parsed = topics.parse(msg.topic) if msg else None
        if msg is not None and parsed is not None and parsed.kind == "result":
            r = wire_decode(msg.payload, Result)
            if r.stream_id in ("good", "vp-cam"):
                results[(r.stream_id, r.frame_id)] = r
    for agent in agents:
        agent.stop()
    listener.stop()

    assert sum(sent.values()) >= HOSTILE_MESSAGES // 2, sent
    assert len(sent) == 9, sent  # every kind of message was sent
    for agent in fusions:
        assert agent.stats() is not None  # the stats can always be built
        assert sum(agent.rejected.values()) > 0
        assert agent.rejected.get("internal_error", 0) == 0, agent.rejected
    images = load_split("test").images[:LEGIT_FRAMES]
    nair_expected = pipeline.prefix_probs(pipeline.encode_all(images),
                                          np.full(LEGIT_FRAMES, pipeline.artifact.n_components)).argmax(1)
    vp_expected = softmax_outputs(variant.model, images).argmax(1)
    nair_live = [results[("good", i)].class_index if ("good", i) in results else -1 for i in range(LEGIT_FRAMES)]
    vp_live = [results[("vp-cam", i)].class_index if ("vp-cam", i) in results else -1 for i in range(LEGIT_FRAMES)]
    assert nair_live == nair_expected.tolist()
    assert vp_live == vp_expected.tolist()
