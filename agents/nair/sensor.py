"""The sensor agent: replay frames, and send each one as what its link carries by the frame's deadline.

Modes: ``nair`` runs the head and sends the most important prefix of the NAIR components that fits; ``image``
sends the frame compressed whole (the first codec of its ladder that fits); ``decision`` runs the whole model and
sends its top-k classes and scores (about 30 wire bytes for k = 1); ``auto`` sends, per frame, whichever of NAIR and
the image the calibrated rate-accuracy tables expect to be more accurate at the bytes available.

Every frame is sized in wire bytes by :class:`~nairbus.agents.nair.link.LinkMonitor` (the measured drain rate of the
connection, the backlog and the frame's deadline), capped by any budget the user set, and goes as one lean message with
a topic alias. Frames the sensor cannot serve in time are skipped, never queued: when the head falls behind the replay
clock, or when the link could not deliver even a useful minimum before the deadline (latest frame wins).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nairbus.agents.nair.auto import AutoChooser, auto_table_path
from nairbus.agents.nair.budget import DevicePlan, measure_costs, plan_device
from nairbus.agents.nair.link import MEMORY_SHARE, BudgetDecision, LinkMemory, LinkMonitor
from nairbus.agents.nair.linktrace import LinkTrace
from nairbus.agents.nair.modes import SENSOR_MODES, NairMode
from nairbus.agents.nair.outgoing import DecisionEncoder, ImageFrameEncoder, NairFrameEncoder, Outgoing, bit_bands
from nairbus.agents.nair.settings import NairSettings, nair_settings
from nairbus.agents.runtime.agent import SensorBase
from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.frames import FrameBatch, NamedItems, SourceContext
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.pacing import Pacing, run_paced
from nairbus.agents.sources import open_source, source_settings
from nairbus.agents.sources.image_topic import ImageTopicSettings
from nairbus.models.catalog import sensor_artifact_path
from nairbus.models.device import DevicePipeline, load_device_pipeline
from nairbus.models.image.codec import get_image_codec
from nairbus.models.loss import LossModel
from nairbus.models.nair.artifact import NairArtifact
from nairbus.schemas import (
    CONTENT_TYPE_JSON,
    Birth,
    DecisionBirth,
    DeviceRef,
    ImageBirth,
    Item,
    ModelRef,
    NairBirth,
    WireError,
)
from nairbus.schemas import encode as wire_encode

log = get_logger("nairbus.sensor")

ITEM_MAX_FPS = 150.0
"""Items that must all be decided (files) go at most this fast: a fusion agent admits 200 new frames a second per
sensor by default (``FusionSettings.max_fps_per_sensor``) and refuses the rest as ``rate_limited``."""
TALLY_WAIT_S = 3.0
"""A one-shot sensor waits this long past its deadline for fusion's tally of its frames."""
LINK_LOG_INTERVAL_S = 5.0
MEMORY_INTERVAL_S = 30.0
"""How often a sensor writes its link's rate down for the next run (and once at the end)."""
"""How often the sensor logs its link estimate (rate, backlog, the budget it gives frames and why)."""


def loss_model(settings: NairSettings) -> LossModel:
    """The injected-loss model a sensor's settings ask for (test tooling)."""
    loss = settings.loss
    if loss.kind == "random":
        return LossModel("random", p=loss.rate, seed=loss.seed)
    if loss.kind == "bursty" and loss.rate > 0:
        return LossModel.bursty_with_rate(loss.rate, loss.mean_burst, seed=loss.seed)
    return LossModel()


def payload_cap(settings: SensorSettings, total_bytes: int) -> int | None:
    """The per-frame NAIR payload cap a budget fraction sets (None: none)."""
    if settings.budget_fraction is not None:
        return max(1, round(settings.budget_fraction * total_bytes))
    return None


def split_share(pipeline: DevicePipeline) -> float:
    """The share of the model's MACs the device runs to send NAIR at the pipeline's artifact split (1.0, the
    cautious answer, when the model cannot be counted)."""
    try:
        return pipeline.head_shares()[pipeline.artifact.split]
    except Exception as exc:  # an imported model the counter cannot walk: assume the worst, say so
        log.warning("split_share_unknown", split=pipeline.artifact.split, error=str(exc)[:200])
        return 1.0


def deepest_within(pipeline: DevicePipeline, artifact: Path, share: float) -> tuple[DevicePipeline, Path]:
    """The NAIR artifact beside ``artifact`` (the model's ``<name>*.nair.npz`` with an auto table) whose split
    runs the largest share of the model's MACs not above ``share``, as a pipeline of the same model; the given
    one when none fits or the model cannot be counted (the device budget then rules NAIR out by itself)."""
    try:
        heads = pipeline.head_shares()
    except Exception:  # an imported model the counter cannot walk
        return pipeline, artifact
    best: tuple[float, Path] | None = None
    for path in sorted(artifact.parent.glob(f"{pipeline.manifest.name}*.nair.npz")):
        try:
            candidate = NairArtifact.load(path)
        except (OSError, ValueError, KeyError):
            continue
        fits = candidate.model_sha256 == pipeline.manifest.sha256 and candidate.split in heads
        head_share = heads.get(candidate.split, 1.0)
        if fits and head_share <= share and auto_table_path("", path).is_file() and (
                best is None or head_share > best[0]):
            best = (head_share, path)
    if best is None or best[1] == artifact:
        return pipeline, artifact
    log.info("artifact_within_budget", artifact=best[1].name, share=round(best[0], 4), budget=share)
    return pipeline.with_artifact(NairArtifact.load(best[1])), best[1]


@dataclass
class TokenBucket:
    """Wire bytes per second; holds at most one second of credit."""

    rate: float
    level: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def available(self, now: float) -> float:
        self.level = min(self.rate, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level

    def spend(self, nbytes: int) -> None:
        self.level -= nbytes


MODE_PARTS: dict[str, tuple[str, ...]] = {"decision": ("whole",), "nair": ("head",), "image": ()}
"""What of the model a sensor in each mode loads at start (ONNX Runtime: one session, not two); auto loads both, and a
part a mode did not load is loaded when first run."""

COUNTERS = ("items_read", "frames", "frames_sent", "frames_skipped", "skipped_cpu", "skipped_link", "skipped_no_codec",
            "skipped_error", "skipped_offline", "skipped_stale", "skipped_paused", "skipped_rate", "files_refused",
            "messages", "wire_bytes", "payload_bytes", "components", "image_frames", "nair_frames", "decision_frames",
            "injected_loss", "dropped_outgoing", "item_messages", "items_unnamed")
"""What :meth:`SensorAgent.run_replay` returns (and logs at stop)."""


NAIR_MODES: dict[str, NairMode] = {mode: mode for mode in SENSOR_MODES}
"""The sensor modes this agent runs, as a birth's ``mode`` (:mod:`nairbus.agents.nair.modes`)."""


class SensorAgent(SensorBase):
    """Publishes one stream of NAIR fragments or compressed images, sized to the link."""

    event_prefix = "sensor"

    def __init__(self, config: AgentConfig, pipeline: DevicePipeline | None = None,
                 bus: Bus | None = None) -> None:
        s = config.sensor
        if s.mode == "vp":
            raise ValueError("a variant-parallel sensor runs from nairbus.agents.vp (nairbus sensor --mode vp)")
        self.options = own = nair_settings(s)
        artifact = own.artifact or sensor_artifact_path(s.model)
        # Decision and image need the whole model only: a model without a calibrated artifact runs them too.
        self.pipeline: DevicePipeline = pipeline or load_device_pipeline(
            own.runtime, s.model, artifact, optional=own.artifact is None and s.mode in ("decision", "image"),
            threads=s.threads, parts=MODE_PARTS.get(s.mode, ("whole", "head")))
        """The device's model work, on the runtime the settings name (torch, or ONNX Runtime without torch)."""
        budget = own.budget()
        if pipeline is None and own.artifact is None and s.mode == "auto" and budget is not None and budget.share:
            self.pipeline, artifact = deepest_within(self.pipeline, artifact, budget.share)
        if s.mode in ("image", "auto") and self.pipeline.input_spec.channels != 1:
            raise ValueError(f"--mode {s.mode} sends grey images, but model {s.model} takes "
                             f"{self.pipeline.input_spec.describe()}; use --mode nair")
        super().__init__(config, bus)
        self.counters = dict.fromkeys(COUNTERS, 0)
        sid = s.sensor_id
        self.nair = (NairFrameEncoder(self.pipeline.artifact, self.ctx, self.topics.sensor_frag(sid),
                                      by_plan=own.fragments_by_plan, loss=loss_model(own))
                     if s.mode in ("nair", "auto") else None)
        """NAIR fragments (None: this mode sends none)."""
        self.payload_cap = self._payload_cap(s)
        self.image = (ImageFrameEncoder([get_image_codec(c) for c in own.image_codecs], self.ctx,
                                        self.topics.sensor_image(sid)) if s.mode in ("image", "auto") else None)
        self.decision = (DecisionEncoder(min(own.k, len(self.pipeline.labels)), self.ctx, self.topics.sensor_topk(sid))
                         if s.mode in ("decision", "auto") else None)
        # A pipeline handed in (tests, the demo) brings its own artifact: its table is the one --artifact names.
        table_for = artifact if pipeline is None else own.artifact
        self.auto = AutoChooser.load(s.model, table_for) if s.mode == "auto" else None
        self.plan = self._plan_device(own) if self.auto is not None else None
        """Auto mode: the representations the device budget allows."""
        self.bucket = TokenBucket(s.bytes_per_second) if s.bytes_per_second else None
        if s.source == "image-topic":
            options = source_settings(s)
            assert isinstance(options, ImageTopicSettings)
            self.comm.subscribe(options.image_topic, qos=0)
        self.link = LinkMonitor(lambda: self.comm.wire_bytes,
                                lambda: self.comm.pending_bytes() + self.comm.socket_outq(),
                                path=self.comm.tcp_info,
                                trace=LinkTrace(own.link_trace) if own.link_trace is not None else None)
        self._seq = 0
        self.last_decision: BudgetDecision | None = None
        self._next_link_log = 0.0
        self._next_memory = 0.0
        self.memory = LinkMemory.for_link(sid, self.comm.endpoint) if own.link_memory and s.link_fit else None
        """The link's last good rate, kept between runs (None: not kept)."""
        self.skip_reasons: Counter[str] = Counter()
        """Why the link fitting skipped frames (the estimator's reason), for the stop log."""
        self.source = open_source(s, SourceContext(self.pipeline.input_spec, self.stop_event, self.comm))
        """The frame source, opened (and so checked: a missing folder, a camera that cannot open) before the agent
        connects, so that a run that cannot start leaves nothing on the broker."""

    def apply_settings(self, new: SensorSettings) -> None:
        """A command changed the budget or the deadline: frames from now on use them."""
        self.settings = new
        self.payload_cap = self._payload_cap(new)

    def _payload_cap(self, settings: SensorSettings) -> int | None:
        """The NAIR payload cap of ``settings`` (None: no cap, or a mode that sends no NAIR)."""
        return None if self.nair is None else payload_cap(settings, self.pipeline.artifact.total_bytes())

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def birth(self) -> Birth:
        """The retained description of this sensor: everything fusion needs to decode it."""
        s = self.settings
        nair = None
        if self.nair is not None:
            a = self.pipeline.artifact
            nair = NairBirth(artifact_sha256=a.sha256, split=a.split, ir_shape=a.ir_shape,
                             n_components=a.n_components, bit_bands=bit_bands(a.bits), coding=a.coding)
        spec = self.pipeline.input_spec
        image = (ImageBirth(codecs=tuple(self.options.image_codecs), height=spec.height, width=spec.width)
                 if self.image is not None else None)
        sends_decisions = self.decision is not None and (self.plan is None or self.plan.allows("decision"))
        decision = DecisionBirth(k=self.decision.k) if self.decision is not None and sends_decisions else None
        return Birth(
            sensor_id=s.sensor_id, session=self.comm.session, ts=time.time(), mode=NAIR_MODES[s.mode],
            stream_id=s.stream,
            labels=self.pipeline.labels,
            model=ModelRef(name=self.pipeline.manifest.name, sha256=self.pipeline.manifest.sha256),
            device=DeviceRef(runtime=self.pipeline.runtime, parts=self.pipeline.part_hashes),
            nair=nair, image=image, decision=decision, budget_bytes=s.budget_bytes, deadline_ms=s.deadline_ms,
            epoch_ts=self.epoch_ts, expiry_ms=max(1, round(s.expiry_s * 1000)),
        )

    def on_connected(self) -> None:
        """The retained birth and controls are out: start measuring the link, from its last good rate if one is
        remembered."""
        super().on_connected()
        remembered = self.memory.recall(time.time()) if self.memory is not None else None
        if remembered is not None:
            self.link.seed(remembered * MEMORY_SHARE)
            log.info("link_remembered", rate_bps=round(remembered * 8), start_bps=round(remembered * MEMORY_SHARE * 8))
        self.link.start()

    def _remember_link(self, now: float) -> None:
        """Keep the link's rate for the next run (every :data:`MEMORY_INTERVAL_S`, and at the end)."""
        rate = self.link.known_rate()
        if self.memory is not None and rate is not None:
            self.memory.remember(rate, time.time())
        self._next_memory = now + MEMORY_INTERVAL_S

    def start_fields(self) -> dict[str, object]:
        s = self.settings
        return {"sensor": s.sensor_id, "mode": s.mode, "runtime": self.pipeline.runtime, "link_fit": s.link_fit,
                "budget_bytes": s.budget_bytes,
                "artifact": self.pipeline.artifact.sha256[:12] if self.nair is not None else None}

    def run_replay(self) -> dict[str, int]:
        """Send the frames of the configured source (:data:`nairbus.agents.sources.SOURCES`: the data set, a folder of
        image files, snapshots on an MQTT topic, a camera) until it ends or the sensor is stopped; returns the counters.

        Frames go out as a camera delivers them (:func:`nairbus.agents.runtime.pacing.run_paced`): a frame whose slot
        passed more than a period and a quarter of the deadline ago is skipped (latest frame wins), so a head that
        cannot keep up costs frames, not latency. A folder is a batch of files to classify, every one of them, unless
        watched.
        """
        s = self.settings
        source = self.source
        try:
            self._send_batches(source.batches(s.batch), source_paced=source.source_paced,
                               skip_late=source.skip_late,
                               item_name=source.item_name if isinstance(source, NamedItems) else None)
        finally:
            self._merge_source_counters(source.counters)
        self.comm.wait_published(timeout=30.0)
        self._drain(timeout=30.0)
        if not self.stop_event.is_set() and not s.stay:  # a one-shot run ended: nothing of it stays on the broker
            self.stop_event.wait(min(s.deadline_ms / 1000.0, 1.0))  # fusion decides the last frames first
            self.withdraw()
            self._await_tally()
        return dict(self.counters)

    def _await_tally(self) -> None:
        """After a one-shot run: how many of its frames fusion decided (``decided`` in the counters), as the fusion
        agent tells once the sensor withdrew; a run no fusion agent answers within a few seconds says so in its log."""
        tally = self.wait_tally(min(self.settings.deadline_ms / 1000.0, 10.0) + TALLY_WAIT_S,
                                expected=self.counters["frames_sent"])
        if tally is None:
            log.warning("no_tally", sensor=self.settings.sensor_id,
                        detail="no fusion agent said how many frames it decided (none running, or another mode's)")
            return
        self.counters["decided"] = tally.decided
        log.info("tally", sensor=self.settings.sensor_id, fusion=sorted(self.tallies), decided=tally.decided,
                 sent=self.counters["frames_sent"])

    def _merge_source_counters(self, counters: Counter[str]) -> None:
        """What the source refused (``files_refused``) and passed over (``skipped_stale``) into the sensor's
        counters."""
        self.counters["files_refused"] += sum(n for reason, n in counters.items() if reason.startswith("bad_"))
        self.counters["items_read"] += counters.get("files", 0)
        stale = counters.get("skipped_stale", 0)
        self.counters["frames"] += stale
        self.counters["frames_skipped"] += stale
        self.counters["skipped_stale"] += stale

    def _send_batches(self, batches: Iterable[FrameBatch], source_paced: bool = False, skip_late: bool = True,
                      item_name: Callable[[int], str | None] | None = None) -> None:
        """Send the source's frames as a camera delivers them (:func:`nairbus.agents.runtime.pacing.run_paced`): the
        head runs on the frames captured since it last ran.

        A live source (``skip_late``: latest frame wins) loses the frames the device's CPU got to too late — a period
        and a quarter of the deadline late for the head, half the deadline old once the head has run — counted as
        ``skipped_cpu``, so a busy CPU costs frames, not the link budget of the frames it sends.
        A source of items that must all be decided (files) loses none: each waits for the link (and the broker) to
        carry it, and its deadline runs from when its turn comes (:meth:`_await_turn`).
        ``source_paced``: the source takes its own time to produce a batch (files, a camera); the rate's clock
        restarts when a batch arrives, so only the sensor's own delays make frames late. ``item_name``: what the
        source calls a frame (a file's name), sent ahead of the frame so that its result names it.
        """
        s = self.settings
        pacing: Pacing[np.ndarray] = Pacing(s.fps, slack_s=s.deadline_ms / 4000.0, skip_late=skip_late,
                                            source_paced=source_paced, max_batch=s.batch)
        cpu_late_s = max(pacing.period, s.deadline_ms / 2000.0)
        live = bool(pacing.period) or source_paced  # a replay without a rate has no clock to be late for
        interval = pacing.period or 0.1
        last_at: float | None = None

        def late(_frame_id: int) -> None:
            self.counters["frames"] += 1
            self._skip("skipped_cpu")

        def emit(frame_id: int, image: np.ndarray, codes: np.ndarray | None, capture_ts: float) -> None:
            nonlocal interval, last_at
            if not skip_late:
                if not self._await_turn(last_at):
                    return
                capture_ts = time.time()
            elif live and time.time() - capture_ts > cpu_late_s:  # the head (or other work) made it late
                late(frame_id)
                return
            if not pacing.period:  # the frame period the link budget is sized for: the observed arrival rate
                now = time.monotonic()
                if last_at is not None:
                    interval = 0.8 * interval + 0.2 * min(max(now - last_at, 0.005), 5.0)
                last_at = now
            period = pacing.period or (interval if skip_late else s.deadline_ms / 1000.0)
            self.send_frame(frame_id, image, codes, capture_ts, period,
                            item=None if item_name is None else item_name(frame_id))

        run_paced(batches, pacing, self.stop_event, self.device_work, emit, late)

    def _await_turn(self, last_at: float | None) -> bool:
        """An item that must be decided (a file) waits for the broker and, when the sensor fits its link, for what
        was sent before to leave, instead of being skipped — and goes no faster than :data:`ITEM_MAX_FPS` after the
        last one (``last_at``, monotonic); False only when the sensor is stopped meanwhile."""
        if last_at is not None:
            self.stop_event.wait(max(0.0, last_at + 1.0 / ITEM_MAX_FPS - time.monotonic()))
        waited_offline = False
        while not self.stop_event.is_set():
            if not self.comm.connected.is_set():
                if not waited_offline:
                    log.info("waiting_for_broker", reason="a file is never skipped for an outage")
                    waited_offline = True
            elif not self.settings.link_fit or self.link.drained():
                return True
            self.stop_event.wait(0.005)
        return False

    def device_work(self, batch: FrameBatch) -> np.ndarray | None:
        """What the device computes for a batch of frames: the NAIR codes (``nair``, ``auto``), the whole model's class
        probabilities (``decision``) or nothing (``image``)."""
        mode, plan = self.settings.mode, self.plan
        if mode == "decision" or (plan is not None and plan.allows("decision")):
            return self.pipeline.full_model_probs(batch.images)
        if mode == "nair" or (plan is not None and plan.allows("nair")):
            return self.pipeline.encode(batch.images)
        return None

    def _drain(self, timeout: float) -> None:
        """Wait (bounded) until the link has delivered what was sent, so the last frames are not cut off."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.comm.pending_bytes() + self.comm.socket_outq() > 0:
            time.sleep(0.02)

    def _skip(self, reason: str) -> None:
        self.counters["frames_skipped"] += 1
        self.counters[reason] += 1

    def wire_budget(self, capture_ts: float, period: float) -> int | None:
        """Wire bytes the next frame may spend (0: skip it; None: unlimited)."""
        s = self.settings
        caps = [c for c in (s.budget_bytes,) if c is not None]
        if self.bucket is not None:
            caps.append(int(self.bucket.available(time.monotonic())))
        cap = min(caps) if caps else None
        if not s.link_fit:
            return cap
        decision = self.link.budget(max(0.0, time.time() - capture_ts), s.deadline_ms / 1000.0,
                                    period or 0.1, cap if cap is not None else self._full_wire_bytes())
        self.last_decision = decision
        now = time.monotonic()
        if now >= self._next_memory:
            self._remember_link(now)
        if now >= self._next_link_log:
            self._next_link_log = now + LINK_LOG_INTERVAL_S
            log.info("link", rate_bps=None if decision.rate is None else round(decision.rate * 8),
                     backlog=decision.backlog, budget=decision.wire_bytes, reason=decision.reason)
        return decision.wire_bytes

    def _full_wire_bytes(self) -> int:
        """The most a frame could ever need: the whole IR (or the largest image) plus envelopes."""
        if self.nair is None:  # an image or a decision: one message
            spec = self.pipeline.input_spec
            return spec.channels * spec.height * spec.width + 64
        return self.nair.full_payload_bytes() + 64 * max(1, len(self.pipeline.artifact.plan))

    def send_frame(self, frame_id: int, image: np.ndarray, codes: np.ndarray | None, capture_ts: float,
                   period: float = 0.0, item: str | None = None) -> None:
        """Send one frame as what its budget buys (or skip it); ``item``: the source's name for it, sent first."""
        self.counters["frames"] += 1
        if not self.comm.connected.is_set():
            # The broker is away: this frame is counted as captured during the outage, not queued to arrive late.
            self._skip("skipped_offline")
            return
        refused = self.control.admit()
        if refused is not None:  # paused, or over the frame-rate cap a command set
            self._skip(refused)
            return
        budget = self.wire_budget(capture_ts, period)
        if budget == 0:
            self._skip("skipped_link")
            if self.last_decision is not None:
                self.skip_reasons[self.last_decision.reason] += 1
            return
        try:
            out = self.build(frame_id, image, codes, capture_ts, budget)
        except Exception:  # one frame that cannot be encoded must not end the sensor
            log.exception("frame_encode_failed", frame_id=frame_id, budget=budget)
            self._skip("skipped_error")
            return
        if not out:
            self._skip("skipped_no_codec")
            return
        if item is not None:
            self.publish_item(frame_id, item)
        self.publish(out)

    def publish_item(self, frame_id: int, name: str) -> None:
        """Tell fusion what the source calls the frame about to go (a name the wire cannot carry is left out)."""
        try:
            payload = wire_encode(Item(sensor_id=self.settings.sensor_id, session=self.comm.session,
                                       frame_id=frame_id, name=name))
        except (ValueError, WireError):
            self.counters["items_unnamed"] += 1
            return
        if self.comm.publish(self.topics.sensor_item(self.settings.sensor_id), payload, qos=self.settings.qos,
                             content_type=CONTENT_TYPE_JSON, alias=True):
            self.counters["item_messages"] += 1

    def build(self, frame_id: int, image: np.ndarray, codes: np.ndarray | None, capture_ts: float,
              budget: int | None) -> list[Outgoing]:
        """The messages of one frame within ``budget`` wire bytes, in the sensor's mode (``codes``: what
        :meth:`device_work` computed for it)."""
        if self.plan is not None:
            return self._build_auto(frame_id, image, codes, capture_ts, budget)
        if self.decision is not None:
            assert codes is not None
            decided = self.decision.message(codes, frame_id, self._seq + 1, capture_ts,
                                            self.first_publish_budget(self.decision.topic, budget))
            if decided is None:
                return []
            self._seq += 1
            return [decided]
        capture_ms = max(0, round((capture_ts - self.epoch_ts) * 1000.0))
        end = 0
        if codes is not None:
            assert self.nair is not None  # codes are made in the modes that send NAIR
            end = self.nair.prefix_for(self.first_publish_budget(self.nair.topic, budget), self.payload_cap,
                                       self._seq + 1, frame_id, capture_ms, codes)
        picture = None
        if self.image is not None:
            picture = self.image.message(image, frame_id, self._seq + 1, capture_ts,
                                         self.first_publish_budget(self.image.topic, budget))
        if picture is not None:
            self._seq += 1
            return [picture]
        if codes is None or end <= 0 or self.nair is None:
            return []
        return self.nair.messages(codes, frame_id, self._next_seq, capture_ts, end)

    def _build_auto(self, frame_id: int, image: np.ndarray, work: np.ndarray | None, capture_ts: float,
                    budget: int | None) -> list[Outgoing]:
        """Auto mode: of the representations the device budget allows, the one the calibrated tables expect to be
        most accurate at ``budget`` wire bytes (``work``: the whole model's probabilities when the decision is
        allowed, else the NAIR codes when NAIR is)."""
        assert self.auto is not None
        assert self.plan is not None
        assert self.decision is not None
        assert self.nair is not None
        decided = None
        if work is not None and self.plan.allows("decision"):
            decided = self.decision.message(work, frame_id, self._seq + 1, capture_ts,
                                            self.first_publish_budget(self.decision.topic, budget))
        codes = work if work is not None and not self.plan.allows("decision") else None
        end = 0
        if codes is not None:
            capture_ms = max(0, round((capture_ts - self.epoch_ts) * 1000.0))
            end = self.nair.prefix_for(self.first_publish_budget(self.nair.topic, budget), self.payload_cap,
                                       self._seq + 1, frame_id, capture_ms, codes)
        picture = None
        if decided is None and self.image is not None:  # an image never beats the whole model's own answer
            picture = self.image.message(image, frame_id, self._seq + 1, capture_ts,
                                         self.first_publish_budget(self.image.topic, budget))
        choice = self.auto.choose(nair_payload_bytes=self.nair.codec.data_bytes(codes, end)
                                  if codes is not None and end > 0 else None,
                                  codec=None if picture is None else picture.codec, decision_fits=decided is not None)
        if choice == "decision" and decided is not None:
            self._seq += 1
            return [decided]
        if choice == "image" and picture is not None:
            self._seq += 1
            return [picture]
        if choice is None or codes is None:
            return []
        return self.nair.messages(codes, frame_id, self._next_seq, capture_ts, end)

    def _plan_device(self, own: NairSettings) -> DevicePlan:
        """What the device may send in auto mode: its budget (or what it measures it affords at its frame rate)
        against each representation's share of the model and measured time per frame."""
        s, pipeline = self.settings, self.pipeline
        shares = {"image": 0.0, "nair": split_share(pipeline), "decision": 1.0}
        budget = own.budget()
        ms: dict[str, float] = {}
        if (budget is None and s.fps) or (budget is not None and budget.ms is not None):
            spec = pipeline.input_spec
            frames = np.random.default_rng(0).integers(0, 256, (8, spec.height, spec.width), dtype=np.uint8)
            codec = get_image_codec(own.image_codecs[0])
            ms = measure_costs({"image": lambda f: [codec.encode(x) for x in f], "nair": pipeline.encode,
                                "decision": pipeline.full_model_probs}, frames)
        plan = plan_device(budget, shares, ms, 1.0 / s.fps if s.fps else None)
        if plan.allows("decision") and self.auto is not None and self.auto.decision_accuracy is None:
            plan = replace(plan, allowed=tuple(r for r in plan.allowed if r != "decision"),
                           reason=plan.reason + "; the auto table has no decision row (run nairbus calibrate-auto)")
        log.info("device_plan", allowed=list(plan.allowed), reason=plan.reason,
                 shares={k: round(v, 4) for k, v in shares.items()}, ms={k: round(v, 2) for k, v in ms.items()})
        return plan

    def first_publish_budget(self, topic: str, budget: int | None) -> int | None:
        """What of ``budget`` wire bytes is left for a message on ``topic`` once the PUBLISH envelope is paid in full:
        the first publish of a connection on a topic also carries the topic, to teach the broker its alias."""
        if budget is None:
            return None
        return max(0, budget - self.comm.alias_extra_bytes(topic, budget))

    def publish(self, out: list[Outgoing]) -> None:
        """Hand one frame's messages to the communicator and count them."""
        sent = False
        for msg in out:
            if msg.lost:
                self.counters["injected_loss"] += 1
                continue
            if self.comm.publish(msg.topic, msg.payload, qos=self.settings.qos, content_type=None, alias=True,
                                 replay=True):
                sent = True
                wire = self.comm.last_wire_bytes
                self.counters["messages"] += 1
                self.counters["wire_bytes"] += wire
                self.counters["payload_bytes"] += msg.data_bytes
                self.counters["components"] += msg.components
                if self.bucket is not None:
                    self.bucket.spend(wire)
            else:
                self.counters["dropped_outgoing"] += 1
        if sent:
            self.link.wake()
            self.counters["frames_sent"] += 1
            self.counters[f"{out[0].representation}_frames"] += 1

    def on_stopping(self) -> None:
        self.link.stop()
        if self.link.trace is not None:
            self.link.trace.close()
        self._remember_link(time.monotonic())

    def stop_fields(self) -> dict[str, object]:
        rate = self.link.rate()
        return {"sensor": self.settings.sensor_id, "skip_reasons": dict(self.skip_reasons),
                "link_rate_bps": None if rate is None else round(rate * 8), **self.counters}
