"""A hub that falls behind: with ``--shed-late`` the fusion agent, frozen for 2 s while two sensors stream 20 fps
each, sheds the backlog that can no longer be on time and decides every later frame within the deadline; without it
(the default) it decides the backlog, late. Against a real Mosquitto, the fusion agent run as users run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.tools.results import Results
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.schemas.topics import TopicTree
from tests.agents.test_fleet import Devices, _decision_births, base  # noqa: F401  (base: a fixture)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
NAIRBUS = Path(sys.executable).with_name("nairbus")
DEADLINE_MS = 500.0


@pytest.mark.parametrize("shed", [True, False])
def test_a_frozen_hub_sheds_its_late_backlog_only_when_asked(broker: PrivateMosquitto, topic_root: str,
                                                             base: NairPipeline, shed: bool) -> None:  # noqa: F811
    topics = TopicTree(topic_root, "lab")
    env = {**os.environ, "NAIRBUS_TOPICS__ROOT": topic_root, "NAIRBUS_TOPICS__SITE": "lab"}
    env.pop("NAIRBUS_CONFIG", None)
    args = [str(NAIRBUS), "fusion", "--broker", f"{broker.host}:{broker.port}", "--deadline-ms", str(DEADLINE_MS),
            "--shed-late" if shed else "--no-shed-late"]
    fusion = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    births = _decision_births(base, 2)
    try:
        with Results(broker, topics, qos=1) as results, Devices(broker, topics, births) as devices:
            frame_id = 0
            end = time.monotonic() + 120
            while not results.got and time.monotonic() < end:  # until the agent is up
                devices.send(frame_id)
                frame_id += 1
                time.sleep(0.05)
            first = frame_id
            for step in range(120):  # 6 s at 20 fps; frozen from 2 s to 4 s
                if step == 40:
                    fusion.send_signal(signal.SIGSTOP)
                if step == 80:
                    fusion.send_signal(signal.SIGCONT)
                devices.send(frame_id)
                frame_id += 1
                time.sleep(0.05)
            time.sleep(2.0)
    finally:
        fusion.send_signal(signal.SIGCONT)
        fusion.terminate()
        fusion.wait(timeout=20)
    got = {(r.stream_id, r.frame_id): r for _, r in results.got if r.frame_id >= first}
    sent = {(b.stream_id, f) for b in births for f in range(first, frame_id)}
    latency = np.array([r.latency_ms for r in got.values()])
    after = [r.latency_ms for (_s, f), r in got.items() if f >= first + 90]  # half a second after the thaw
    assert after, "nothing decided after the freeze"
    if shed:
        assert len(got) < len(sent) - 40  # the frozen seconds' backlog (80 frames) was mostly shed
        assert float(np.percentile(latency, 99)) <= DEADLINE_MS
        assert max(after) <= DEADLINE_MS
    else:
        assert set(got) == sent  # every frame decided ...
        assert float(latency.max()) > 1500  # ... the backlog about 2 s late
