"""The fusion agent: learn sensors from their births, reassemble NAIR frames, run the tail in batches, publish.

Sensors send NAIR fragments (``mode`` nair), compressed images (image; fusion runs the whole model), frame by
frame either (auto), or the decision of the whole model run on the device (decision: its top-k, published as it
is). All arrive as lean messages decoded with the context of the sensor's birth.

All model work runs on the agent's worker thread (:meth:`FusionAgent.run`), never on paho's network thread.
Every message that cannot be used is rejected with a reason, a structured log line and a counter, and never
stalls or corrupts the other frames. Connection, counters, stats and the worker loop are
:class:`~nairbus.agents.runtime.fusion_base.FusionBase`'s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from nairbus.agents.home.discovery import attach_home_assistant
from nairbus.agents.nair.discovery import LoadedModels, ModelLoader
from nairbus.agents.nair.modes import DATA_LEAVES, SENSOR_MODES
from nairbus.agents.nair.outgoing import bit_bands
from nairbus.agents.nair.reassembly import AddOutcome, PendingFrame, Reassembler
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.fusion_base import FusionBase, device_fields, owns_sensor, topk_problem
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.registry import Registry
from nairbus.models.image.codec import ImageCodec, ImageCodecError, get_image_codec
from nairbus.models.nair.codec import ComponentRun, PayloadError
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import ArtifactMismatchError, NairArtifact
from nairbus.models.store import default_artifact_path, find_model
from nairbus.schemas import Birth, ClassScore, Fragment, ImageFrame, ModelRef, Result, TopK, WireError
from nairbus.schemas.lean import LeanContext, decode_lean

log = get_logger("nairbus.fusion")
AWAITING_PER_MODEL = 256
"""Births that may wait for one model being loaded (the rest are refused and asked again later by their frames)."""


@dataclass(frozen=True, slots=True)
class KnownSensor:
    """What fusion knows of a sensor from its birth."""

    sensor_id: str
    session: str
    stream_id: str
    ctx: LeanContext | None = None
    pipeline: NairPipeline | None = None
    """The artifact this sensor's fragments are decoded with (None: it sends images only)."""
    codecs: tuple[ImageCodec, ...] = ()
    image_shape: tuple[int, int] = (28, 28)
    decider: NairPipeline | None = None
    """The model that decides this sensor's frames (its labels; the whole model for image frames)."""
    k: int = 0
    """Decision mode: the classes each top-k message may carry (0: the sensor sends no decisions)."""


@dataclass(frozen=True, slots=True)
class ImagePart:
    """A received image frame, decoded: the whole model runs on it."""

    pixels: np.ndarray
    codec: str


@dataclass(frozen=True, slots=True)
class DecisionPart:
    """A received decision: the top-k classes and scores of the whole model, run on the device."""

    classes: tuple[int, ...]
    scores: tuple[float, ...]

    def probabilities(self, n_classes: int) -> np.ndarray:
        """The class vector the decision stands for: its scores where it names a class, the rest of the mass
        spread evenly over the classes it does not name."""
        probs = np.zeros(n_classes, dtype=np.float64)
        probs[list(self.classes)] = self.scores
        rest = n_classes - len(set(self.classes))
        if rest:
            spread = max(0.0, 1.0 - float(probs.sum())) / rest
            probs[[c for c in range(n_classes) if c not in self.classes]] = spread
        return probs


Part = ComponentRun | ImagePart | DecisionPart


__all__ = ["FusionAgent", "KnownSensor", "owns_sensor"]


class FusionAgent(FusionBase):
    """Reassembles NAIR frames from many sensors and publishes one result per frame."""

    buffer: Reassembler[Part]
    sensors: dict[str, KnownSensor]
    sensor_modes = SENSOR_MODES
    data_leaves = DATA_LEAVES
    handlers: ClassVar[Mapping[str, str]] = {"sensor_birth": "on_birth", "sensor_status": "on_status",
                                             "sensor_frag": "on_fragment", "sensor_image": "on_image",
                                             "sensor_topk": "on_topk"}

    def __init__(self, config: AgentConfig, pipeline: NairPipeline | None = None,
                 bus: Bus | None = None) -> None:
        f = config.fusion
        # A model without a calibrated artifact still decides decisions and images.
        self.pipeline = pipeline or NairPipeline.load(f.model, f.artifact, optional=f.artifact is None)
        self.model_sha = self.pipeline.manifest.sha256
        self.pipelines = {self.pipeline.artifact.sha256: self.pipeline} if self.pipeline.has_artifact else {}
        """Every artifact fusion decodes, by sha256; each pipeline holds the artifact's own model."""
        self.by_model = {self.model_sha: self.pipeline}
        """One pipeline per model sha256, for image frames and labels."""
        for name in f.models:
            try:
                other = NairPipeline.load(name, optional=True)
            except (FileNotFoundError, RuntimeError, ArtifactMismatchError, ValueError) as exc:
                raise ValueError(f"fusion model {name!r}: {exc}") from exc
            if other.has_artifact:
                self.pipelines.setdefault(other.artifact.sha256, other)
            self.by_model.setdefault(other.manifest.sha256, other)
        if pipeline is None or f.extra_artifacts:
            for extra in self._extra_artifacts(config):
                self._add_artifact(extra)
        self.buffer = Reassembler(f.deadline_ms / 1000.0, f.max_frames, max_per_sensor=f.max_frames_per_sensor)
        self.sensors = Registry()
        self._frame_tokens: dict[str, tuple[float, float]] = {}
        self._model_refs: dict[str, ModelRef] = {}
        self.loader: ModelLoader[Discovered] = ModelLoader(load_discovered)
        """Looks up and loads the models births name by hash, off the worker thread (``discover_models``)."""
        self.discovered = LoadedModels()
        """The discovered models loaded now, bounded (least recently used out)."""
        self._awaiting: dict[str, dict[str, InboundMessage]] = {}
        """Births waiting for the model they name to be loaded, by model hash and sensor."""
        super().__init__(config, bus)
        self.discovery = attach_home_assistant(self)
        """Home Assistant discovery, an observer of this agent (None: disabled in the config)."""

    def _add_artifact(self, path: Path) -> None:
        """Decode sensors of ``path`` too, with the model it was calibrated for (loaded once per model)."""
        try:
            artifact = NairArtifact.load(path)
            model = next((p for p in self.by_model.values() if p.manifest.sha256 == artifact.model_sha256), None)
            if model is None:
                log.warning("artifact_skipped", path=str(path),
                            reason=f"its model {artifact.model_name} ({artifact.model_sha256[:12]}) is not served")
                return
            other = NairPipeline(model.model, model.manifest, artifact)
        except (ArtifactMismatchError, OSError, ValueError, KeyError) as exc:
            log.warning("artifact_skipped", path=str(path), reason=str(exc))
            return
        self.pipelines.setdefault(other.artifact.sha256, other)

    def _served(self, birth: Birth) -> tuple[NairPipeline | None, NairPipeline | None]:
        """The pipeline of the artifact a birth names, and the model that decides its frames (None: not served)."""
        pipeline = self.pipelines.get(birth.nair.artifact_sha256) if birth.nair is not None else None
        return pipeline, self.by_model.get(birth.model.sha256)

    def _discover(self, birth: Birth, sensor_id: str, message: InboundMessage) -> bool:
        """Ask the loader for the model a birth names by hash; True when the birth now waits for it (it is handled
        again once the lookup is done), False when it cannot wait (asked too recently, too many waiting)."""
        sha = birth.model.sha256
        if not self.loader.request(sha, time.monotonic()):
            return False
        waiting = self._awaiting.setdefault(sha, {})
        if sensor_id not in waiting and len(waiting) >= AWAITING_PER_MODEL:
            return False
        waiting[sensor_id] = message
        return True

    def after_round(self, now: float) -> None:
        """Take in the models loaded meanwhile and handle the births that waited for them, then the base round."""
        for done in self.loader.finished():
            if done.loaded is not None:
                self._serve_discovered(done.loaded)
            for message in self._awaiting.pop(done.sha256, {}).values():
                self._handle_safely(message)
        super().after_round(now)

    def _serve_discovered(self, found: Discovered) -> None:
        """Serve a discovered model and its artifacts, unloading the least recently used discovered ones no sensor
        uses to stay within the bound."""
        sha = found.model.manifest.sha256
        for other in found.artifacts:
            self.pipelines.setdefault(other.artifact.sha256, other)
        if sha in self.by_model and sha not in self.discovered:
            return  # a model served from the start: only its artifacts were new
        self.by_model.setdefault(sha, found.model)
        in_use = {k.decider.manifest.sha256 for k in self.sensors.values() if k.decider is not None}
        for old in self.discovered.admit(sha, in_use):
            self.by_model.pop(old, None)
            for key in [k for k, p in self.pipelines.items() if p.manifest.sha256 == old]:
                del self.pipelines[key]
            log.info("model_unloaded", sha256=old[:12], reason="least recently used discovered model")
        log.info("model_discovered", model=found.model.manifest.name, sha256=sha[:12], manifest=str(found.path),
                 artifacts=len(found.artifacts))

    def _extra_artifacts(self, config: AgentConfig) -> tuple[Path, ...]:
        if config.fusion.extra_artifacts is not None:
            return config.fusion.extra_artifacts
        if config.fusion.artifact is not None and not config.fusion.models:
            return ()
        found: list[Path] = []
        for pipeline in self.by_model.values():
            name = pipeline.manifest.name
            try:
                directory = default_artifact_path(name).parent
            except FileNotFoundError:
                continue
            found += sorted(directory.glob(f"{name}.*.nair.npz"))
        return tuple(found)

    # ----- message handling (worker thread) -------------------------------------------------------------------

    def on_status(self, sensor_id: str, message: InboundMessage, now: float = 0.0) -> None:
        """A sensor's status: only the discovery needs it (a stream's availability)."""
        self.note_sensor_status(sensor_id, message)

    def stream_labels(self) -> dict[str, tuple[str, ...]]:
        return {s.stream_id: s.decider.labels for s in self.sensors.values() if s.decider is not None}

    def on_birth(self, sensor_id: str, message: InboundMessage, now: float = 0.0) -> None:
        """Learn (or forget) a sensor from its retained birth."""
        if not message.payload:
            self._retire(sensor_id)
            self.sensor_left(sensor_id)
            return
        if not owns_sensor(sensor_id, self.settings.partition):
            return
        birth = self.read_birth(sensor_id, message)
        if birth is None:
            return
        if not self.serves(sensor_id, birth):
            self._retire(sensor_id)
            return
        pipeline, decider = self._served(birth)
        unserved = decider is None or (birth.nair is not None and pipeline is None)
        if unserved and self.settings.discover_models and self._discover(birth, sensor_id, message):
            return  # handled again once the loader has looked the model up
        if decider is not None and decider.manifest.sha256 in self.discovered:
            self.discovered.used(decider.manifest.sha256)
        refusal = self._refusal(birth, pipeline, decider)
        codecs: tuple[ImageCodec, ...] = ()
        if refusal is None and decider is not None:
            codecs, refusal = self._image_codecs(birth, decider)
        if refusal is not None or decider is None:
            self._retire(sensor_id)
            reason, detail = refusal or ("artifact_mismatch", "")
            self.reject(reason, message.topic, detail)
            return
        known = self.sensors.get(sensor_id)
        if known is not None and known.session != birth.session:
            self._retire(sensor_id)
        spec = decider.input_spec
        shape = (spec.height, spec.width)
        self.sensors[sensor_id] = KnownSensor(sensor_id, birth.session, birth.stream_id,
                                              LeanContext.from_birth(birth), pipeline, codecs, shape, decider,
                                              birth.decision.k if birth.decision is not None else 0)
        log.info("sensor_known", sensor=sensor_id, session=birth.session, stream=birth.stream_id, mode=birth.mode,
                 **device_fields(birth))
        self.released(sensor_id)

    def _retire(self, sensor_id: str) -> None:
        """Decide what a sensor sent before it left (or began a new session) with the birth it was sent under, then
        forget it. Its birth and its data share one inbox queue, in order, so everything it sent has been read: a
        one-shot run's last frames are decided, not refused as ``sensor_gone`` when its withdrawal overtakes them."""
        if sensor_id in self.sensors:
            self._decide_safely(self.buffer.take_sensor(sensor_id))
        self.sensors.pop(sensor_id, None)

    def _refusal(self, birth: Birth, pipeline: NairPipeline | None,
                 decider: NairPipeline | None) -> tuple[str, str] | None:
        """Why a birth cannot be served (reason, detail): an unknown model or artifact, an IR the artifact does not
        describe, other labels; None when it can."""
        if decider is None or (birth.nair is not None and (
                pipeline is None or pipeline.manifest.sha256 != birth.model.sha256)):
            got = birth.nair.artifact_sha256[:12] if birth.nair is not None else "-"
            return ("artifact_mismatch",
                    f"sensor model {birth.model.name} {birth.model.sha256[:12]} artifact {got}; fusion serves "
                    f"models {', '.join(p.manifest.name + ' ' + sha[:12] for sha, p in self.by_model.items())}"
                    f" with artifacts {', '.join(sha[:12] for sha in self.pipelines)}")
        if birth.nair is not None and pipeline is not None:
            a = pipeline.artifact
            declared = (tuple(birth.nair.ir_shape), birth.nair.n_components, tuple(birth.nair.bit_bands),
                        birth.nair.coding)
            if declared != (tuple(a.ir_shape), a.n_components, bit_bands(a.bits), a.coding):
                # The birth names an artifact by hash but describes another IR (a changed shape mid-stream, a bug,
                # a hostile sender): its fragments would be decoded with the wrong layout.
                return ("birth_inconsistent",
                        f"ir_shape {birth.nair.ir_shape} / {birth.nair.n_components} components / bands / coding "
                        f"{birth.nair.coding} differ from artifact {a.sha256[:12]} ({a.ir_shape}, {a.n_components}, "
                        f"{a.coding})")
        if tuple(birth.labels) != decider.labels:
            return "labels_mismatch", f"the sensor's labels differ from model {decider.manifest.name}'s"
        return None

    @staticmethod
    def _image_codecs(birth: Birth, decider: NairPipeline) -> tuple[tuple[ImageCodec, ...], tuple[str, str] | None]:
        """The image codecs a birth names, or why they cannot be decoded for the decider's model."""
        if birth.image is None:
            return (), None
        spec = decider.input_spec
        try:
            codecs = tuple(get_image_codec(name) for name in birth.image.codecs)
        except ValueError as exc:
            return (), ("unknown_codec", str(exc))
        if (birth.image.height, birth.image.width) != (spec.height, spec.width) or spec.channels != 1:
            return (), ("image_shape", f"{birth.image.height}x{birth.image.width} grey frames: model "
                                       f"{decider.manifest.name} takes {spec.describe()}")
        return codecs, None

    def _sensor_for(self, sensor_id: str, message: InboundMessage) -> KnownSensor | None:
        """The known sensor a frame message is from; a message of an owned sensor with no birth yet is parked
        until its birth comes (:meth:`FusionBase.park`)."""
        if not owns_sensor(sensor_id, self.settings.partition):
            return None
        sensor = self.sensors.get(sensor_id)
        if sensor is None or sensor.ctx is None:
            self.park(sensor_id, message)
            return None
        return sensor

    def _admit(self, sensor: KnownSensor, message: InboundMessage, key_index: int, part: Part, nbytes: int,
               expected: int, units: int, msg: Fragment | ImageFrame | TopK, now: float) -> None:
        topic = message.topic
        if msg.expires_ts < time.time():
            self.reject("expired", topic)
            return
        self.track_seq(sensor.sensor_id, msg.session, msg.seq)
        key = (sensor.sensor_id, msg.session, msg.frame_id)
        if not self.buffer.is_pending(key) and self.sheds(msg.capture_ts, topic):
            return
        # The rate is counted as frames arrived (the network thread's clock), not as the worker takes them: a
        # backlog that waited while fusion was busy is not a flood.
        if not self.buffer.is_pending(key) and not self._frame_allowed(sensor.sensor_id, message.received_ts):
            self.reject("rate_limited", topic)
            return
        wire = self.sensor_wire_bytes(sensor.sensor_id, msg.session, topic, len(message.payload))
        outcome = self.buffer.add(key, key_index, part, nbytes, expected, msg.capture_ts, now, units, wire)
        if outcome is AddOutcome.ADDED:
            self.counts["fragments"] += 1
            self.counts["bytes"] += nbytes
            self.counts["wire_bytes"] += wire
        else:
            self.reject(outcome.value, topic, f"frame {msg.frame_id} part {key_index}")

    def _frame_allowed(self, sensor_id: str, now: float) -> bool:
        """Take a token from the sensor's frame bucket (``max_fps_per_sensor``, one second deep)."""
        rate = self.settings.max_fps_per_sensor
        tokens, last = self._frame_tokens.get(sensor_id, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        self._frame_tokens[sensor_id] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def on_fragment(self, sensor_id: str, message: InboundMessage, now: float) -> None:
        """Validate a lean fragment and put it into its frame's buffer."""
        sensor = self._sensor_for(sensor_id, message)
        if sensor is None or sensor.ctx is None:
            return
        try:
            frag = decode_lean(message.payload, Fragment, sensor.ctx)
        except WireError as exc:
            self.reject(exc.reason, message.topic, str(exc))
            return
        if sensor.pipeline is None:
            self.reject("unexpected_fragment", message.topic, "the sensor's birth announces no NAIR artifact")
            return
        run = ComponentRun(frag.start, frag.end, frag.data)
        artifact = sensor.pipeline.artifact
        try:
            sensor.pipeline.codec.check(run)
            if frag.frame_end > artifact.n_components:
                raise PayloadError(f"frame_end {frag.frame_end} is past the IR's {artifact.n_components}")
        except PayloadError as exc:
            self.reject("shape", message.topic, str(exc))
            return
        self._admit(sensor, message, frag.start, run, len(frag.data), frag.frame_end, frag.end - frag.start, frag,
                    now)

    def on_image(self, sensor_id: str, message: InboundMessage, now: float) -> None:
        """Validate and decode a lean image frame; it is decided in the next batch."""
        sensor = self._sensor_for(sensor_id, message)
        if sensor is None or sensor.ctx is None:
            return
        if not sensor.codecs:
            self.reject("unexpected_image", message.topic, "the sensor's birth announces no image codecs")
            return
        try:
            msg = decode_lean(message.payload, ImageFrame, sensor.ctx)
        except WireError as exc:
            self.reject(exc.reason, message.topic, str(exc))
            return
        if msg.codec >= len(sensor.codecs):
            self.reject("unknown_codec", message.topic, f"codec {msg.codec} of {len(sensor.codecs)}")
            return
        codec = sensor.codecs[msg.codec]
        try:
            pixels = codec.decode(msg.data, sensor.image_shape)
        except ImageCodecError as exc:
            self.reject("image_decode", message.topic, str(exc))
            return
        self._admit(sensor, message, 0, ImagePart(pixels, codec.name), len(msg.data), 1, 1, msg, now)

    def on_topk(self, sensor_id: str, message: InboundMessage, now: float) -> None:
        """Validate a lean decision (the top-k of the whole model, run on the device); it is published in the next
        round."""
        sensor = self._sensor_for(sensor_id, message)
        if sensor is None or sensor.ctx is None or sensor.decider is None:
            return
        if not sensor.k:
            self.reject("unexpected_topk", message.topic, "the sensor's birth announces no decisions")
            return
        try:
            msg = decode_lean(message.payload, TopK, sensor.ctx)
        except WireError as exc:
            self.reject(exc.reason, message.topic, str(exc))
            return
        n_classes = len(sensor.decider.labels)
        problem = topk_problem(msg, sensor.k, n_classes)
        if problem:
            self.reject("shape", message.topic, problem)
            return
        part = DecisionPart(tuple(msg.classes), tuple(msg.scores))
        self._admit(sensor, message, 0, part, len(message.payload), 1, 1, msg, now)

    # ----- decisions ------------------------------------------------------------------------------------------

    def decide(self, frames: list[PendingFrame[Part]]) -> None:
        """Run the tail (NAIR frames) or the whole model (image frames) in batches, take the devices' decisions as
        they are, and publish the results."""
        images: list[PendingFrame[Part]] = []
        nair: list[PendingFrame[Part]] = []
        decisions: list[PendingFrame[Part]] = []
        for frame in frames:
            kinds = {type(p) for p in frame.parts.values()}
            (decisions if DecisionPart in kinds else images if ImagePart in kinds else nair).append(frame)
        self._publish_decisions(decisions)
        self._decide_nair(nair)
        self._decide_images(images)

    def _decide_nair(self, nair: list[PendingFrame[Part]]) -> None:
        """Decode and run the tail of NAIR frames, in batches per artifact."""
        by_artifact: dict[str, list[PendingFrame[Part]]] = {}
        for frame in nair:
            known = self.sensors.get(frame.key[0])
            sha = known.pipeline.artifact.sha256 if known is not None and known.pipeline is not None else None
            if sha is None:  # the sensor left (or re-announced without NAIR) while its frame was pending
                self.reject("sensor_gone", frame.key[0], f"frame {frame.key[2]}")
                continue
            by_artifact.setdefault(sha, []).append(frame)
        for sha, group in by_artifact.items():
            pipeline = self.pipelines[sha]
            for start in range(0, len(group), self.settings.max_batch):
                batch = self.on_time(group[start : start + self.settings.max_batch])
                if not batch:
                    continue
                decoded = [pipeline.codec.decode([p for p in f.parts.values() if isinstance(p, ComponentRun)])
                           for f in batch]
                values = np.stack([v for v, _ in decoded])
                masks = np.stack([m for _, m in decoded])
                probs = pipeline.decode(values, masks)
                decided = time.time()
                for frame, p, mask in zip(batch, probs, masks, strict=True):
                    self.publish_result(frame, p, float(mask.mean()), decided, pipeline, components=int(mask.sum()))

    def _decide_images(self, images: list[PendingFrame[Part]]) -> None:
        """Run the whole model on image frames, in batches per model."""
        by_model: dict[str, list[PendingFrame[Part]]] = {}
        for frame in images:
            known = self.sensors.get(frame.key[0])
            if known is None or known.decider is None:
                self.reject("sensor_gone", frame.key[0], f"frame {frame.key[2]}")
                continue
            by_model.setdefault(known.decider.manifest.sha256, []).append(frame)
        for sha, group in by_model.items():
            model = self.by_model[sha]
            for start in range(0, len(group), self.settings.max_batch):
                batch = self.on_time(group[start : start + self.settings.max_batch])
                if not batch:
                    continue
                parts = [next(p for p in f.parts.values() if isinstance(p, ImagePart)) for f in batch]
                probs = model.full_model_probs(np.stack([p.pixels for p in parts]))
                decided = time.time()
                for frame, p, part in zip(batch, probs, parts, strict=True):
                    self.publish_result(frame, p, 1.0, decided, model, codec=part.codec)

    def _publish_decisions(self, frames: list[PendingFrame[Part]]) -> None:
        """Publish the frames a device decided: its top-k, with the rest of the mass spread over the other classes."""
        decided = time.time()
        for frame in frames:
            known = self.sensors.get(frame.key[0])
            if known is None or known.decider is None:
                self.reject("sensor_gone", frame.key[0], f"frame {frame.key[2]}")
                continue
            part = next(p for p in frame.parts.values() if isinstance(p, DecisionPart))
            self.publish_result(frame, part.probabilities(len(known.decider.labels)), 1.0, decided, known.decider,
                                representation="decision")

    def publish_result(self, frame: PendingFrame[Part], probs: np.ndarray, fraction: float,
                       decided: float, model: NairPipeline, *, components: int = 0, codec: str | None = None,
                       representation: str | None = None) -> None:
        """Publish one frame's JSON result, decided by ``model``."""
        sensor_id, _session, frame_id = frame.key
        known = self.sensors.get(sensor_id)
        stream = known.stream_id if known else sensor_id
        labels = model.labels
        top = np.argsort(-probs)[: self.settings.topk]
        latency = max(0.0, (decided - frame.capture_ts) * 1000.0)
        result = Result(
            stream_id=stream, fusion_id=self.settings.fusion_id, frame_id=frame_id, label=labels[int(top[0])],
            class_index=int(top[0]), confidence=float(min(1.0, max(0.0, probs[top[0]]))),
            topk=tuple(ClassScore(class_index=int(i), label=labels[int(i)], score=float(probs[i])) for i in top),
            fraction_received=min(1.0, fraction), bytes_received=frame.nbytes, fragments_received=len(frame.parts),
            sensors=(sensor_id,), capture_ts=frame.capture_ts, decided_ts=decided, latency_ms=latency,
            complete=frame.complete,
            representation=representation or ("image" if codec is not None else "nair"),  # type: ignore[arg-type]
            components_received=components, codec=codec,
            wire_bytes=frame.wire_bytes, model=self._model_ref(model),
        )
        self.publish_decision(result)
        self.note_decided(latency, frame.complete, frame.evicted)

    def _model_ref(self, model: NairPipeline) -> ModelRef:
        """The result's ``model`` field, built once per model rather than once per frame."""
        sha = model.manifest.sha256
        ref = self._model_refs.get(sha)
        if ref is None:
            ref = self._model_refs[sha] = ModelRef(name=model.manifest.name, sha256=sha)
        return ref

    # ----- hooks of the worker loop -------------------------------------------------------------------------

    def start_fields(self) -> dict[str, object]:
        return {"models": [p.manifest.name for p in self.by_model.values()],
                "artifacts": [sha[:12] for sha in self.pipelines]}



@dataclass(frozen=True, slots=True)
class Discovered:
    """A model found by hash in the model search path, loaded with the NAIR artifacts beside its manifest."""

    path: Path
    model: NairPipeline
    artifacts: tuple[NairPipeline, ...]


def load_discovered(model_sha: str) -> Discovered | None:
    """Find the model with this weights hash in the model search path and load it with its artifacts (runs on the
    loader thread; None: no such model, or it cannot be loaded)."""
    path = find_model(model_sha)
    if path is None:
        return None
    try:
        model = NairPipeline.load(str(path), optional=True)
    except (FileNotFoundError, RuntimeError, ArtifactMismatchError, ValueError, OSError) as exc:
        log.warning("model_not_loaded", manifest=str(path), reason=str(exc)[:200])
        return None
    artifacts = [model] if model.has_artifact else []
    for candidate in sorted(path.parent.glob(f"{path.stem}*.nair.npz")):
        try:
            artifact = NairArtifact.load(candidate)
            if artifact.model_sha256 != model_sha:
                continue
            artifacts.append(NairPipeline(model.model, model.manifest, artifact))
        except (ArtifactMismatchError, OSError, ValueError, KeyError) as exc:
            log.warning("artifact_skipped", path=str(candidate), reason=str(exc))
    return Discovered(path, model, tuple(artifacts))
