"""Variant Parallelism over a real private Mosquitto: shared frames, top-k fusion, a variant stopped mid-stream.

The family here is trained for one epoch on 256 training images (it exercises the joint-training code); what is
asserted holds for any weights: the live results equal the offline fusion rule on the same frames, they list the
variants that contributed and the lean wire bytes of their votes, and a stopped variant costs no frame more than
the deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import numpy as np
import pytest

from nairbus.agents.nair.outgoing import alias_wire_bytes
from nairbus.agents.runtime.config import AgentConfig, FusionSettings, SensorSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.vp.capture import CaptureAgent, CaptureSettings
from nairbus.agents.vp.common import topk_message_bytes
from nairbus.agents.vp.fusion import VpFusionAgent, read_family_manifest
from nairbus.agents.vp.sensor import VpSensorAgent
from nairbus.models.data.fashion_mnist import Dataset, load_split
from nairbus.models.store import save_model
from nairbus.models.vp.family import LoadedVariant, load_family, softmax_outputs
from nairbus.models.vp.fusion import fuse_batch
from nairbus.models.vp.training import VpTrainSettings, train_family
from nairbus.schemas import Result, TopK
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.lean import LeanContext, encode_lean
from nairbus.schemas.topics import TopicTree
from tests.agents.running import running

pytestmark = [pytest.mark.broker, pytest.mark.slow]
K = 3


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vp-weights")
    train, test = load_split("train"), load_split("test")
    # A stand-in "mature model" manifest so the family manifest can record one (no teacher: distill off).
    from nairbus.models.architectures.resnet import ResNet, ResNetConfig

    save_model(ResNet(ResNetConfig(widths=(8, 8, 8), blocks=(1, 1, 1))), "base", {"test_accuracy": 0.1}, out)
    settings = VpTrainSettings(epochs=1, restart_epochs=0, distill_weight=0.0, batch_size=32, compile=False)
    train_family(settings, out_dir=out,
                 train=Dataset(train.images[:256], train.labels[:256]),
                 test=Dataset(test.images[:100], test.labels[:100]), command="test")
    return out


@pytest.fixture(scope="module")
def variants(family_dir: Path) -> dict[str, LoadedVariant]:
    return load_family(family_dir)[1]


def _config(broker: PrivateMosquitto, root: str, **sections: Any) -> AgentConfig:
    return AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                       topics=TopicSettings(root=root, site="lab"), **sections)


class Listener:
    def __init__(self, broker: PrivateMosquitto, topics: TopicTree) -> None:
        self.comm = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"t-{uuid.uuid4().hex[:8]}",
                                 None, lambda state: b"{}")
        self.comm.subscribe(topics.all_results(), qos=1)
        self.topics = topics
        self.results: dict[int, Result] = {}
        self.arrived: dict[int, float] = {}

    def collect(self, want: set[int], timeout: float) -> None:
        end = time.monotonic() + timeout
        while not want <= self.results.keys() and time.monotonic() < end:
            msg = self.comm.get(timeout=0.1)
            if msg is not None and (p := self.topics.parse(msg.topic)) and p.kind == "result":
                r = wire_decode(msg.payload, Result)
                self.results[r.frame_id] = r
                self.arrived[r.frame_id] = time.monotonic()


@pytest.fixture
def fusion(broker: PrivateMosquitto, topic_root: str, family_dir: Path) -> Iterator[VpFusionAgent]:
    cfg = _config(broker, topic_root, fusion=FusionSettings(mode="vp", deadline_ms=600, stats_interval_s=0.2))
    with running(VpFusionAgent(cfg, read_family_manifest(family_dir))) as agent:
        yield agent


def _sensor(broker: PrivateMosquitto, root: str, variant: LoadedVariant, **kw: Any) -> VpSensorAgent:
    # Unpaced replay by default (whole batches, nothing late): a paced sensor skips what it cannot do in time,
    # and four variants in one process on a busy 2-core host are not the point of these tests.
    settings = SensorSettings(**{"mode": "vp", "variant": variant.name, "sensor_id": f"vp-{variant.name}",
                                 "stream_id": "cam", "k": K, "count": 40, **kw})
    agent = VpSensorAgent(_config(broker, root, sensor=settings), variant)
    agent.start()
    return agent


def _offline(variants: dict[str, LoadedVariant], ids: np.ndarray, subset: list[str]) -> np.ndarray:
    images = load_split("test").images[ids]
    probs = {n: softmax_outputs(v.model, images) for n, v in variants.items()}
    return np.asarray(fuse_batch(probs, {n: v.weight for n, v in variants.items()}, K, subset).argmax(1))


def test_replay_fusion_equals_offline_rule(broker: PrivateMosquitto, topic_root: str,
                                           variants: dict[str, LoadedVariant], fusion: VpFusionAgent) -> None:
    listener = Listener(broker, TopicTree(topic_root, "lab"))
    listener.comm.start()
    sensors = [_sensor(broker, topic_root, v) for v in variants.values()]
    counters: list[dict[str, int]] = []
    threads = [threading.Thread(target=lambda s=s: counters.append(s.run_replay())) for s in sensors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    listener.collect(set(range(40)), timeout=20)
    for s in sensors:
        s.stop()
    listener.comm.stop()
    assert set(listener.results) == set(range(40))
    names = sorted(variants)
    assert all(list(r.variants) == names and r.complete for r in listener.results.values())
    live = np.array([listener.results[i].class_index for i in range(40)])
    assert np.array_equal(live, _offline(variants, np.arange(40), names))
    assert all(len(r.sensors) == len(names) and r.fraction_received == 1.0 for r in listener.results.values())
    # Lean on the wire: every result counts its votes' PUBLISH bytes (topic alias), as the sensors counted them.
    per_vote = topk_message_bytes(K)
    topic_bytes = sum(len(TopicTree(topic_root, "lab").sensor_topk(f"vp-{n}")) for n in names)
    for i, r in sorted(listener.results.items()):
        # The first vote of each sensor taught the broker its topic alias: it carried the topic as well.
        first = topic_bytes if i == 0 else 0
        assert r.representation == "vp"
        assert r.wire_bytes == r.bytes_received + len(names) * alias_wire_bytes(0) + first  # 8 B of PUBLISH per vote
        assert r.wire_bytes <= len(names) * per_vote + first
    assert len(counters) == len(names)
    for c in counters:
        assert c["frames"] == c["published"] == 40
        assert c["frames_skipped"] == 0
        assert 0 < c["wire_bytes"] <= 40 * (per_vote + 6) + 60  # the first publish carries the topic once


def test_stopped_variant_never_stalls_and_remaining_subset_decides(
        broker: PrivateMosquitto, topic_root: str, variants: dict[str, LoadedVariant], fusion: VpFusionAgent) -> None:
    topics = TopicTree(topic_root, "lab")
    listener = Listener(broker, topics)
    listener.comm.start()
    names = sorted(variants)
    sensors = {n: _sensor(broker, topic_root, variants[n], source="mqtt", count=None) for n in names}
    threads = {n: threading.Thread(target=s.run_mqtt) for n, s in sensors.items()}
    for t in threads.values():
        t.start()
    time.sleep(0.3)
    capture = CaptureAgent(_config(broker, topic_root), CaptureSettings(stream_id="cam", count=60, fps=200.0))
    capture.start()
    for i in range(30):
        capture.publish(i, load_split("test").images[i].tobytes())
    listener.collect(set(range(30)), timeout=20)
    victim = names[0]
    sensors[victim].stop()  # clean stop: offline status, fusion stops waiting for it
    threads[victim].join(timeout=10)
    time.sleep(0.3)
    for i in range(30, 60):
        capture.publish(i, load_split("test").images[i].tobytes())
    listener.collect(set(range(60)), timeout=20)
    capture.stop()
    for n in names[1:]:
        sensors[n].stop()
        threads[n].join(timeout=10)
    listener.comm.stop()
    assert set(listener.results) == set(range(60))
    before = [listener.results[i] for i in range(30)]
    after = [listener.results[i] for i in range(30, 60)]
    assert all(list(r.variants) == names for r in before)
    assert all(list(r.variants) == names[1:] for r in after)
    # The fusion knew the variant went offline: it expects only the remaining ones, so each frame is complete
    # (decided as soon as both voted, not at the deadline).
    assert all(r.complete and r.fraction_received == 1.0 and len(r.sensors) == len(names) - 1 for r in after)
    live_after = np.array([r.class_index for r in after])
    assert np.array_equal(live_after, _offline(variants, np.arange(30, 60), names[1:]))


def test_silent_variant_costs_at_most_the_deadline_and_garbage_is_counted(
        broker: PrivateMosquitto, topic_root: str, variants: dict[str, LoadedVariant], fusion: VpFusionAgent) -> None:
    """A variant that is online but never reports: frames wait for it only until the deadline."""
    topics = TopicTree(topic_root, "lab")
    listener = Listener(broker, topics)
    listener.comm.start()
    names = sorted(variants)
    silent = _sensor(broker, topic_root, variants[names[0]])  # born and online, sends nothing
    talking = [_sensor(broker, topic_root, variants[n], count=10) for n in names[1:]]
    attacker = Communicator(BrokerSettings(host=broker.host, port=broker.port), f"a-{uuid.uuid4().hex[:6]}", None,
                            lambda s: b"{}")
    attacker.start()
    time.sleep(0.3)
    started = time.monotonic()
    bad_topic = topics.sensor_topk(f"vp-{names[1]}")
    victim_ctx = talking[0].ctx
    attacker.publish(bad_topic, b"\xc1garbage", qos=1, content_type=None)
    attacker.publish(bad_topic, msgpack.packb({"v": 1, "kind": "topk"}), qos=1, content_type=None)
    attacker.publish(bad_topic, msgpack.packb([1, victim_ctx.tag, 1, 1, 1000, [1], [0.5]]), qos=1, content_type=None)
    attacker.publish(bad_topic, msgpack.packb([2, (victim_ctx.tag + 1) % 128, 1, 1, 1000, [1], [0.5]]), qos=1,
                     content_type=None)
    now = time.time()
    ghost = LeanContext("ghost", "s", now - 60, 10.0)
    unknown = TopK(sensor_id="ghost", session="s", seq=1, frame_id=1, capture_ts=now, expires_ts=now + 10,
                   classes=(1,), scores=(0.5,))
    attacker.publish(topics.sensor_topk("ghost"), encode_lean(unknown, ghost), qos=0, content_type=None, alias=True)
    attacker.wait_published()
    threads = [threading.Thread(target=s.run_replay) for s in talking]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    listener.collect(set(range(10)), timeout=10)
    elapsed = time.monotonic() - started
    for s in [*talking, silent]:
        s.stop()
    attacker.stop()
    listener.comm.stop()
    assert set(listener.results) == set(range(10))
    assert all(list(r.variants) == names[1:] and not r.complete for r in listener.results.values())
    assert elapsed < 0.6 + 5.0
    assert fusion.rejected["malformed"] >= 2
    assert fusion.rejected["version"] >= 1
    assert fusion.rejected["session"] >= 1
    end = time.monotonic() + 10  # the ghost's vote waits 5 s (PARK_S) for a birth that never comes, then counts
    while fusion.rejected["unknown_sensor"] < 1 and time.monotonic() < end:
        time.sleep(0.1)
    assert fusion.rejected["unknown_sensor"] >= 1
