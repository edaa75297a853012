"""The light sensor end to end: ``nairbus sensor --runtime onnx`` from an install without torch streams to a torch hub.

The hub's install (this interpreter, torch) exports the base model's device parts with ``nairbus export-onnx --model
base --out-dir DIR`` — a model directory with the manifest, the NAIR artifacts and the ONNX parts, no weights — and
runs the NAIR fusion agent of the shipped base model on a private Mosquitto. The sensor runs as a process of the
light install: ``$NAIRBUS_LIGHT_PYTHON`` (CI's light stage, ``.ci/installed``: a fresh venv with ``pip install
nairbus``, where torch is not importable, which is asserted), else this interpreter. Either way ``python -X
importtime`` shows that it never imports torch, a plotting library or the exporter, and every result equals the
hub's offline answer on the same frames: the whole model's class in decision mode, the torch sensor's codes decided
by the model's tail in nair mode (the whole IR sent; at least 99.5 % — ONNX Runtime's codes may differ from torch's
by one quantiser step on a few components in a million), and in vp mode (a variant exported with ``export-onnx
--variants``, found through ``NAIRBUS_MODEL_DIR``) the shipped VP fusion's decision on the torch variant's votes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nairbus.agents.nair.fusion import FusionAgent
from nairbus.agents.runtime.config import AgentConfig, FusionSettings
from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.settings import BrokerSettings, TopicSettings
from nairbus.agents.vp.fusion import VpFusionAgent, read_family_manifest
from nairbus.models.data.fashion_mnist import load_split
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.store import WEIGHTS_DIR, sensor_artifact_path
from nairbus.models.vp.family import load_family, softmax_outputs
from nairbus.models.vp.fusion import fuse_batch
from nairbus.models.vp.manifest import family_manifest_path
from nairbus.schemas.topics import TopicTree
from tests.agents.running import running
from tests.agents.test_bus import Listener

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(300)]

LIGHT_ENV = "NAIRBUS_LIGHT_PYTHON"
"""The python of a light install (no torch) to run the sensor with; default: this interpreter."""
FRAMES = 200
NEVER = {"torch", "matplotlib", "onnx", "onnxscript", "sympy"}
"""What a light sensor never imports: the framework, plotting, torch's exporter and what they pull in."""


def light_python() -> str:
    return os.environ.get(LIGHT_ENV) or sys.executable


def imported_modules(importtime: str) -> set[str]:
    """The top-level packages a process imported, read from its ``python -X importtime`` lines."""
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in importtime.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``nairbus export-onnx --model base --out-dir DIR`` run by the hub's install: DIR's manifest."""
    out = tmp_path_factory.mktemp("light") / "models"
    done = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "export-onnx", "--model", "base",
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=240, check=False,
                          cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.glob("*.pt")), "a device gets no torch weights"
    return out / "base.json"


@pytest.fixture(scope="module")
def base() -> NairPipeline:
    return NairPipeline.load("base", sensor_artifact_path("base"))


@pytest.fixture
def fusion(broker: PrivateMosquitto, topic_root: str, base: NairPipeline) -> Iterator[FusionAgent]:
    cfg = AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                      topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(deadline_ms=2000, stats_interval_s=0.5, max_fps_per_sensor=100_000,
                                            max_frames=20_000))
    with running(FusionAgent(cfg, base)) as agent:
        yield agent


def test_the_light_install_has_no_torch() -> None:
    if not os.environ.get(LIGHT_ENV):
        pytest.skip(f"${LIGHT_ENV} names no light install (CI's light stage sets it)")
    done = subprocess.run([light_python(), "-c", "import importlib.util as u, sys; "
                           "sys.exit(any(u.find_spec(m) for m in ('torch', 'matplotlib')))"], check=False)
    assert done.returncode == 0, "torch or matplotlib is importable in the light install"


def run_light_sensor(broker: PrivateMosquitto, root: str, manifest: Path, mode: str, sensor_id: str,
                     *args: str) -> tuple[np.ndarray, set[str]]:
    """The light sensor of the model ``manifest`` (VP: of the family beside it) as a process, its results as the hub
    decided them, and the packages it imported."""
    listener = Listener(broker, TopicTree(root, "lab"))
    listener.comm.start()
    env = {**os.environ, "NAIRBUS_BROKER__HOST": broker.host, "NAIRBUS_BROKER__PORT": str(broker.port),
           "NAIRBUS_TOPICS__ROOT": root, "NAIRBUS_TOPICS__SITE": "lab", "NAIRBUS_MODEL_DIR": str(manifest.parent)}
    model = () if mode == "vp" else ("--model", str(manifest), "--no-link-fit")
    try:
        done = subprocess.run(
            [light_python(), "-X", "importtime", "-m", "nairbus.agents.cli", "sensor", *model, "--runtime", "onnx",
             "--mode", mode, "--count", str(FRAMES), "--deadline-ms", "10000", "--sensor-id", sensor_id,
             "--threads", "1", *args],
            capture_output=True, text=True, env=env, cwd=manifest.parent, timeout=180, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        listener.collect({(sensor_id, i) for i in range(FRAMES)}, timeout=60)
    finally:
        listener.comm.stop()
    counters = json.loads(done.stdout.strip().splitlines()[-1])
    assert counters.get("frames_sent", counters.get("published")) == FRAMES  # a VP sensor's word is 'published'
    results = [listener.results[(sensor_id, i)] for i in range(FRAMES)]
    assert all(r.complete for r in results)
    return np.array([r.class_index for r in results]), imported_modules(done.stderr)


def test_a_light_decision_sensor_gives_the_hubs_offline_decisions(broker: PrivateMosquitto, topic_root: str,
                                                                 bundle: Path, base: NairPipeline,
                                                                 fusion: FusionAgent) -> None:
    live, modules = run_light_sensor(broker, topic_root, bundle, "decision", "light-decision")
    assert {"nairbus", "onnxruntime", "paho"} <= modules
    assert not modules & NEVER, sorted(modules & NEVER)
    offline = base.full_model_probs(load_split("test").images[:FRAMES]).argmax(1)
    assert np.array_equal(live, offline)


def test_a_light_nair_sensor_gives_the_hubs_offline_answers(broker: PrivateMosquitto, topic_root: str,
                                                           bundle: Path, base: NairPipeline,
                                                           fusion: FusionAgent) -> None:
    live, modules = run_light_sensor(broker, topic_root, bundle, "nair", "light-nair")
    assert not modules & NEVER, sorted(modules & NEVER)
    codes = base.encode_all(load_split("test").images[:FRAMES])  # the torch sensor, offline, whole IR
    offline = base.offline_probs(codes, np.arange(FRAMES), None)[0].argmax(1)
    assert (live == offline).mean() >= 0.995, int((live == offline).sum())


@pytest.fixture(scope="module")
def family_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``nairbus export-onnx --variants --out-dir DIR`` run by the hub's install: DIR's family manifest."""
    out = tmp_path_factory.mktemp("light-vp") / "models"
    done = subprocess.run([sys.executable, "-m", "nairbus.agents.cli", "export-onnx", "--variants",
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=240, check=False,
                          cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.glob("*.pt")), "a device gets no torch weights"
    return family_manifest_path(out)


@pytest.fixture
def vp_fusion(broker: PrivateMosquitto, topic_root: str) -> Iterator[VpFusionAgent]:
    cfg = AgentConfig(broker=BrokerSettings(host=broker.host, port=broker.port),
                      topics=TopicSettings(root=topic_root, site="lab"),
                      fusion=FusionSettings(mode="vp", deadline_ms=2000, stats_interval_s=0.5))
    with running(VpFusionAgent(cfg, read_family_manifest(WEIGHTS_DIR))) as agent:
        yield agent


def test_a_light_vp_sensor_gives_the_torch_variants_votes(broker: PrivateMosquitto, topic_root: str,
                                                         family_bundle: Path, vp_fusion: VpFusionAgent) -> None:
    family, variants = load_family(WEIGHTS_DIR)
    name = family.variants[0].name
    live, modules = run_light_sensor(broker, topic_root, family_bundle, "vp", "light-vp", "--variant", name,
                                     "--k", str(family.k))
    assert {"nairbus", "onnxruntime", "paho"} <= modules
    assert not modules & NEVER, sorted(modules & NEVER)
    probs = {name: softmax_outputs(variants[name].model, load_split("test").images[:FRAMES])}
    offline = fuse_batch(probs, {name: variants[name].weight}, family.k, [name]).argmax(1)
    assert np.array_equal(live, offline)
