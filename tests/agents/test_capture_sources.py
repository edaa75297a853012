"""The capture agent publishes frames from any registered source: here a folder of colour PNG files, converted to the
variants' 28x28 grey input at the edge and published once for every VP sensor of the stream."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.vp.capture import CaptureAgent, CaptureSettings
from nairbus.models.architectures.registry import fashion_mnist_spec
from nairbus.models.data.fashion_mnist import load_split
from nairbus.schemas import Frame
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.topics import TopicTree

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


def test_a_capture_agent_publishes_a_folders_files(broker: PrivateMosquitto, topic_root: str, tmp_path: Path) -> None:
    images = load_split("test").images[:12]
    for i, image in enumerate(images):
        Image.fromarray(image).convert("RGB").resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "999-broken.png").write_bytes(b"not a png")
    base = BrokerSettings(host=broker.host, port=broker.port)
    cfg = AgentConfig(broker=base, topics=TopicSettings(root=topic_root, site="lab"))
    topics = TopicTree(topic_root, "lab")
    listener = Communicator(base, "test-capture-listener", None, lambda s: b"{}")
    listener.subscribe(topics.frames("cam-folder"), qos=1)
    listener.start()
    agent = CaptureAgent(cfg, CaptureSettings(stream_id="cam-folder", source="folder", folder=tmp_path, fps=50.0))
    try:
        agent.start()
        sent = agent.run()
        frames: dict[int, Frame] = {}
        end = time.monotonic() + 10
        while len(frames) < 12 and time.monotonic() < end:
            msg = listener.get(timeout=0.2)
            if msg is not None:
                frame = wire_decode(msg.payload, Frame)
                frames[frame.frame_id] = frame
    finally:
        agent.stop()
        listener.stop()
    assert sent["sent"] == 12
    assert sorted(frames) == list(range(12))
    for i, frame in frames.items():
        assert (frame.height, frame.width, frame.channels) == (28, 28, 1)
        pixels = np.frombuffer(frame.pixels, dtype=np.uint8).reshape(28, 28)
        with Image.open(tmp_path / f"{i:03d}.png") as file:
            assert np.array_equal(pixels, fashion_mnist_spec().convert_image(file))  # the edge conversion
        distance = np.abs(images.astype(int) - pixels.astype(int)).mean(axis=(1, 2))
        assert int(distance.argmin()) == i  # frame i is test image i (blurred by the round trip, nothing else)
