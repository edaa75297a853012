"""Typed models of the bench and demo reports, and the registry every report under ``reports/`` is read through.

The evaluation reports (``nairbus evaluate …``) are modelled in ``nairbus.models.evaluation.reports``; this module
adds those the agents' tools and the deploy checks write (``nairbus demo``, ``nairbus bench link | faults | files``,
``deploy/systemd/analyze.py``, ``deploy/homeassistant/ha_check.py``) and maps each report file name to its model
(:data:`REPORTS`). :func:`load_report` validates a file against its model; a writer validates before it writes
(``write_report``), so a report that drifts from its model fails where it is made.
"""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path
from typing import TypeVar

from pydantic import Field, JsonValue

from nairbus.models.evaluation.reports import (
    AccuracyCi,
    Ci95,
    CostReport,
    ImagesReport,
    JsonDict,
    LightReport,
    MapReport,
    Missing,
    ModelRef,
    NairReport,
    Number,
    ReportModel,
    VpReport,
    WireReport,
    report_json,
    write_report,
)

__all__ = ["REPORTS", "ReportModel", "load_report", "model_for", "report_json", "write_report"]

R = TypeVar("R", bound=ReportModel)

# ----- nairbus demo -------------------------------------------------------------------------------------------------


class DemoArtifact(ReportModel):
    """The NAIR artifact the demo's sensors ran."""

    sha256: str
    split: str
    ir_shape: list[int]
    ir_bytes: int
    coding: str = "packed"
    """How the fragments' codes travel: packed (fixed bits) or range (entropy-coded, ``--entropy-coding``)."""


class DemoBudget(ReportModel):
    """One budget of the demo: live against offline on the same frames, bytes and latency."""

    budget: float | None
    """The fraction of the IR per frame (None: a wire budget, ``wire_budget``)."""
    budget_bytes: int
    wire_budget: int | None = None
    """Wire bytes per frame (``nairbus demo --wire-budgets``), else None."""
    frames: int
    results: int
    fraction_received: float
    complete: float
    bytes_per_frame: float
    wire_bytes_per_frame: float | None = None
    wire_bytes_max: int | None = None
    """The most wire bytes any frame took (a wire budget is met in real bytes: at most ``wire_budget``)."""
    ir_bytes: int
    live_accuracy: float
    offline_accuracy: float
    agreement: float
    offline_budget_accuracy: float
    full_budget_share: float | None
    p50_ms: float
    p99_ms: float
    fps: float


class VariantSets(ReportModel):
    """Which variant set decided the frames of one phase."""

    frames: int
    full: int
    remaining: int
    other: int
    missing: int
    full_share: float
    remaining_share: float
    other_share: float
    missing_share: float
    other_sets: dict[str, int]


class VpPhase(ReportModel):
    """Frames of one phase of the VP live run decided on the variant set expected then (empty: no such frames)."""

    variants: list[str]
    frames: int
    first_frame: int | None = None
    last_frame: int | None = None
    live_accuracy: float | None = None
    offline_accuracy_same_frames: float | None = None
    agreement_with_offline: float | None = None
    wire_bytes_per_frame: float | None = None
    payload_bytes_per_frame: float | None = None
    phase: VariantSets | None = None


class VpStopped(ReportModel):
    """The variant the VP live run stopped, and when."""

    variant: str
    after_frames_published: int | None = None
    ts: float | None = None
    exit_code: int | None = None
    exited_ts: float | None = None
    remaining: list[str]
    transition_s: float


class VpFamilyRef(ReportModel):
    """The variant family the VP live run used."""

    variants: list[str]
    weights: dict[str, float]
    sha256: dict[str, str]


class VpOffline(ReportModel):
    """Offline accuracy of the whole VP run's frames."""

    full_set_accuracy: float
    remaining_subset_accuracy: float
    leave_one_out_accuracy: dict[str, float]


class DemoVpSection(ReportModel):
    """The ``vp`` section of ``reports/demo.json`` (``nairbus demo`` or ``nairbus demo-vp``): the VP live run."""

    command: str
    settings: JsonDict | None = None
    family: VpFamilyRef
    stopped: VpStopped
    frames_sent: int
    capture: dict[str, int]
    results: int
    missing: int
    before: VpPhase
    after: VpPhase
    variant_sets: dict[str, VariantSets]
    partial_tolerance: float
    unexpected_share: dict[str, float]
    frames_skipped_by_sensors: dict[str, int | None]
    sensor_counters: dict[str, dict[str, int] | None]
    wire_bytes_per_frame: float | None
    offline_whole_run: VpOffline
    results_after_stop: int
    p50_ms: float | None
    p99_ms: float | None
    checks: dict[str, bool]
    passed: bool
    wall_seconds: float


class Skipped(ReportModel):
    """A section a run did not make, and why."""

    skipped: str


class DemoSettings(ReportModel):
    """The demo's settings (``DemoSettings`` less its paths)."""

    budgets: list[float]
    sensors: int
    frames: int
    fps_per_sensor: float
    deadline_ms: float
    broker: tuple[str, int] | None
    root: str
    site: str
    runtime: str = "torch"
    """What ran the sensors' model work: torch (the weights) or onnx (the light sensor's exported parts)."""
    wire_budgets: list[int] = Field(default_factory=list)
    """Wire bytes per frame, run instead of ``budgets`` when given."""
    artifact: str | None = None
    """The artifact named by ``--artifact`` (None: the model's ``base.nair.npz``)."""
    vp: bool = True


class DemoReport(ReportModel):
    """``reports/demo.json`` (``nairbus demo``): every budget through the live bus, and the VP live run."""

    command: str
    settings: DemoSettings | None = None
    model: ModelRef
    artifact: DemoArtifact
    fusion_rejected: dict[str, int]
    budgets: list[DemoBudget]
    vp: DemoVpSection | Skipped | None = None
    wall_seconds: float


# ----- nairbus bench link -------------------------------------------------------------------------------------------


class LatencyTrend(ReportModel):
    """Median latency of the first and last part of a run."""

    first_p50_ms: float | None
    last_p50_ms: float | None
    ratio: float | None
    frames_per_part: int | None = None
    window_s: float | None = None


class LinkRun(ReportModel):
    """One run of the link bench (one link, frame rate and mode), or why it was skipped."""

    rate_bps: int | None
    rate: str
    rtt_ms: float | None = None
    fps: float
    mode: str
    sensor_args: list[str]
    skipped: str | None = None
    frames_requested: int | None = None
    first_frame: int | None = None
    frames_sent: int | None = None
    frames_decided: int | None = None
    share_decided: float | None = None
    frames_captured: int | None = None
    share_decided_of_captured: float | None = None
    live_accuracy_of_captured: float | None = None
    live_accuracy: float | None = None
    live_accuracy_ci95: Ci95 | None = None
    live_accuracy_decided: float | None = None
    live_accuracy_decided_ci95: Ci95 | None = None
    offline_accuracy: float | None = None
    offline_accuracy_ci95: Ci95 | None = None
    offline_frames: int | None = None
    offline_source: str | None = None
    agreement_with_offline: float | None = None
    fraction_received: float | None = None
    complete: float | None = None
    representations: dict[str, int] | None = None
    wire_bytes_per_frame: float | None = None
    wire_bytes_source: str | None = None
    payload_bytes_per_frame_sent: float | None = None
    payload_bytes_per_frame_received: float | None = None
    wire_bytes_per_frame_received: float | None = None
    link_bytes_per_frame: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    within_deadline: float | None = None
    frames_skipped: int | None = None
    latency_trend: LatencyTrend | None = None
    sensor_counters: dict[str, int] | None = None
    qdisc: dict[str, int] | None = None
    qdisc_text: str | None = None
    fusion_rejected: dict[str, int] | None = None
    sensor_rss_kib_max: int | None = None
    sensor_exit: int | None = None
    sensor_seconds: float | None = None
    wall_seconds: float | None = None
    problems: list[str] | None = None
    deadline_ms: float | None = None
    first_seconds_within_deadline: float | None = None
    correct_frames: str | None = None
    soak_seconds: float | None = None
    rss_samples: list[list[Number]] | None = None
    rss_first_minute_kib: float | None = None
    rss_last_minute_kib: float | None = None
    rss_growth: float | None = None
    minute_trend: LatencyTrend | None = None


class ModeComparison(ReportModel):
    """``--compare MODE``: the mode against the best other mode of one cell, frame by frame (McNemar)."""

    rate: str
    rate_bps: int | None
    rtt_ms: float | None = None
    fps: float
    subject: str
    subject_accuracy: float | None = None
    others: dict[str, float] | None = None
    best_other: str | None = None
    best_other_accuracy: float | None = None
    difference: float | None = None
    mcnemar_p: float | None = None
    discordant: list[int] | None = None
    frames: int | None = None
    verdict: str | None = None


class LinkHost(ReportModel):
    """The machine the link bench ran on."""

    kernel: str | None = None
    cpus: int | None = None
    python: str | None = None


class LinkReport(ReportModel):
    """``reports/link*.json`` (``nairbus bench link``): the bus over tbf-shaped uplinks."""

    command: str
    complete: bool
    settings: JsonDict
    code: JsonDict | None = None
    host: LinkHost | None = None
    model: ModelRef | None = None
    artifact: JsonDict | None = None
    link: JsonDict | None = None
    runs: list[LinkRun]
    comparison: list[ModeComparison] | None = None
    soak: LinkRun | None = None
    wall_seconds: float


# ----- nairbus bench faults -----------------------------------------------------------------------------------------


class CpuIsolation(ReportModel):
    """How the fault bench kept the hub and the devices apart on its one machine (``kind`` None: it could not)."""

    kind: str | None = None
    why: str | None = None
    device_cpus: float | None = None
    hub_weight: int | None = None
    groups: dict[str, JsonDict] | None = None
    throttled: dict[str, JsonDict] | None = None


class LegitOutcome(ReportModel):
    """What the well-behaved sensors got during an attack."""

    frames_captured: int | None = None
    frames_sent: int
    frames_decided: int
    frames_lost: int
    skipped_offline: int | None = None
    labels_identical_to_offline: bool
    labels_mismatched: int
    p50_ms: float | None
    p99_ms: float | None
    within_deadline: float | None = None
    duplicates: int | None = None
    sensor_exits: dict[str, int | None] | None = None
    cpu_isolation: CpuIsolation | None = None


class FaultRun(ReportModel):
    """Shared part of one attack's outcome: the legitimate sensors' view and whether fusion survived."""

    fusion_alive: bool
    legit: LegitOutcome


class FuzzRun(FaultRun):
    """``fuzz``: hostile messages of many kinds among the legitimate traffic."""

    hostile_messages: int
    kinds: dict[str, int]
    seconds: float
    fusion_restarts: int
    legit_rate_before: float | None
    legit_rate_during: float | None
    legit_rate_ratio: float | None
    fusion_rss_kib_before: int | None
    fusion_rss_kib_after: int | None
    fusion_rss_growth: float | None


class FloodRun(FaultRun):
    """``flood``: valid fragments as fast as one sensor can send them."""

    flood_messages: int
    seconds: float
    flood_rate_msg_s: float
    fusion_rss_kib_before: int | None
    fusion_rss_kib_after: int | None


class BrokerKillRun(FaultRun):
    """``broker-kill``: the broker killed and back after an outage, with or without persistence."""

    persistence: bool
    outage_s: float
    result_qos: int
    measured_outage_s: float
    first_result_after_return_s: dict[str, float | None]
    every_sensor_known_again: bool
    recovered_within_bar: bool
    fusion_rejected: dict[str, int]
    replays: JsonDict


class FusionRestartRun(FaultRun):
    """``fusion-kill`` / ``fusion-stop``: the fusion agent killed and restarted, or stopped and continued."""

    runs: int
    first_result_s: list[float | None]
    max_first_result_s: float | None
    all_within_bar: bool
    fusion_starts: int


class TakeoverRun(FaultRun):
    """``takeover``: another account tries the fusion agent's and the sensors' client ids."""

    attempts: int
    accepted: int
    seconds: float
    client_ids_tried: list[str]
    victims: JsonValue
    victim_offline_events: int
    victim_connections_closed_by_broker: int


class ExhaustionRun(FaultRun):
    """``exhaustion``: connections held open by one device's credentials."""

    connections_attempted: int
    accepted: int
    refused: int
    seconds: float
    attacker_connections_still_open: int
    newcomer_joined: bool
    victims: JsonValue
    victim_offline_events: int
    victim_connections_closed_by_broker: int


class HarnessError(ReportModel):
    """A scenario that broke the harness (the others still ran)."""

    error: str


AttackRun = FuzzRun | FloodRun | BrokerKillRun | FusionRestartRun | TakeoverRun | ExhaustionRun


class FaultScenario(ReportModel):
    """One scenario of the fault bench: its outcome (one per outage for ``broker-kill``) and how long it took."""

    wall_seconds: float
    result: AttackRun | list[AttackRun] | HarnessError


class FaultsReport(ReportModel):
    """``reports/faults*.json`` (``nairbus bench faults``): attacks on the bus and what the legitimate sensors got."""

    command: str
    settings: JsonDict
    scenarios: dict[str, FaultScenario]
    complete: bool
    wall_seconds: float | None = None


# ----- nairbus bench files ------------------------------------------------------------------------------------------


class Share(ReportModel):
    """``hits`` of ``n`` with the share's 95 % interval."""

    hits: int
    n: int
    share: float
    ci95: Ci95


SensorCounters = dict[str, int | None]
"""A sensor's final counters (``frames_sent``, ``skipped_<why>``, …) and its exit status."""


class OneShotRun(ReportModel):
    """A one-shot folder: every file decided and named."""

    model: str | None = None
    """The model the sensor ran (older reports: the report's ``model``)."""
    own_model: JsonDict | None = None
    """How the user's own model was made (its classes, input, training, split, offline validation accuracy)."""
    runtime: str = "torch"
    """What ran the sensor's model work: torch (the weights) or onnx (the light sensor: the parts 'nairbus
    export-onnx' wrote from the imported model)."""
    files: int
    decided: int
    complete: int
    named_right: int
    live_accuracy: Share
    offline_accuracy: Share
    live_equals_offline: Share
    """Live class = the whole model's on the file (NAIR's quantised prefix may differ from it on a boundary frame)."""
    live_equals_sent: Share | None = None
    """Live class = the offline twin of what each frame carried (its NAIR prefix, image codec or decision): what the
    bus must reproduce exactly."""
    seconds: float
    sensor: SensorCounters
    wall_s: float | None = None


class WatchRun(ReportModel):
    """``--watch``: files written at once, or written in place slowly."""

    files: int
    decided: int
    named_right: int
    files_refused: int
    write_s: float | None = None
    sensor: SensorCounters
    wall_s: float | None = None


class LiveRun(ReportModel):
    """A live source on a quiet or a busy machine."""

    decided: int
    hogs: int
    sensor: SensorCounters
    skipped: dict[str, int]
    wire_bytes_mean: float | None
    wire_bytes_median: float | None


class LiveRuns(ReportModel):
    """A live source at ``fps``, quiet and busy."""

    fps: float
    frames: int
    quiet: LiveRun
    busy: LiveRun
    wall_s: float | None = None


class ReplayRun(ReportModel):
    """A fast replay and what a QoS 1 subscriber received."""

    fps: float
    frames: int
    received_qos1: int
    sensor: SensorCounters
    wall_s: float | None = None


class FilesReport(ReportModel):
    """``reports/files.json`` (``nairbus bench files``): files decided and named, on a busy machine too."""

    command: str
    cpus: int | None
    hogs: int
    model: str
    settings: JsonDict
    oneshot: OneShotRun | None = None
    watch_burst: WatchRun | None = None
    slow_writes: WatchRun | None = None
    live: LiveRuns | None = None
    qos1_replay: ReplayRun | None = None


# ----- nairbus bench scale ------------------------------------------------------------------------------------------


class RoleMs(ReportModel):
    """CPU ms per frame of the in-process pipeline's two halves."""

    sensor: Number
    fusion: Number
    total: Number


class ScalePipeline(ReportModel):
    """The sensor's encoder and the fusion agent's handlers in one process, no MQTT between them."""

    cap: int | None
    frames: int
    decided_one_at_a_time: int
    decided_batched: int
    payload_bytes_per_frame: Number
    one_at_a_time_ms: RoleMs
    batched_ms: RoleMs
    repeats: int = 1
    """Each figure is the median of this many timings."""


class BusMs(ReportModel):
    """CPU ms per frame of each process of the bus."""

    sensors: Number
    fusion: Number
    broker: Number
    total: Number


class LatencySummary(ReportModel):
    """Result latency (capture to decision), ms."""

    p50_ms: Number | None
    p99_ms: Number | None
    max_ms: Number | None
    within_deadline: Number | None


class ScaleBus(ReportModel):
    """Sensors, fusion and a private broker as processes, as users run them."""

    cap: int | None
    sensors: int
    fps_per_sensor: Number
    frames_sent: int
    decided: int
    window_frames: int
    window_s: Number
    cpu_ms_per_frame: BusMs
    ratio_to_one_at_a_time: Number
    ratio_to_batched: Number
    fusion_ratio_to_one_at_a_time: Number
    latency: LatencySummary
    load_before: list[Number]
    load_after: list[Number]


class SwarmMs(ReportModel):
    """CPU ms per decided frame of the hub's processes and of the bench (the swarm and its observer)."""

    fusion: Number | None
    broker: Number | None
    bench: Number | None


class SwarmRss(ReportModel):
    """The fusion agent's resident memory, MB."""

    before: Number | None
    sensors_known: Number | None
    after: Number | None


class ScaleSwarm(ReportModel):
    """Many sensor sessions from a few processes into one fusion agent."""

    sensors: int
    fps_per_sensor: Number
    seconds: Number
    fusion_args: list[str]
    agents: int = 1
    decided_by_agent: dict[str, int] = Field(default_factory=dict)
    decided_twice: int = 0
    offered_fps: Number
    decided_fps: Number
    shed: int
    rejected: dict[str, int]
    sensors_known: int
    connect_s: Number
    frames_sent: int
    decided: int
    decided_share: Number
    latency: LatencySummary
    cpu_ms_per_frame: SwarmMs
    fusion_rss_mb: SwarmRss
    fusion_rss_kib_per_sensor: Number | None
    load_before: list[Number]
    load_after: list[Number]
    offered_over_decided: Number | None = None
    """The overload run: the offered rate over the rate decided."""


class ScaleReport(ReportModel):
    """``reports/bench.json`` (``nairbus bench scale``): the bus against the same pipeline in one process, and one
    hub under many sensors."""

    command: str
    cpus: int | None
    model: str
    artifact_sha256: str
    deadline_ms: Number
    shared_machine: str
    pipeline: list[ScalePipeline]
    bus: list[ScaleBus]
    swarm: list[ScaleSwarm]
    fleet: ScaleSwarm | None = None
    overload: ScaleSwarm | None


# ----- nairbus evaluate folder --------------------------------------------------------------------------------------


class FolderModel(ReportModel):
    """The model scored: name, weights hash, input and labels."""

    name: str
    sha256: str
    input: str
    labels: list[str]


class FolderRead(ReportModel):
    """What was read of the labelled folder: usable images, per class, and the files skipped (by reason)."""

    path: str
    images: int
    names_sha256: str
    per_class: list[int]
    skipped: dict[str, int]


class FolderArtifact(ReportModel):
    """The NAIR artifact scored."""

    sha256: str
    split: str
    ir_shape: tuple[int, int, int]
    components: int


class FolderCapRow(ReportModel):
    """One representation under one per-frame wire cap: accuracy over every frame (unsent = wrong)."""

    cap_bytes: int
    accuracy: float
    ci95: Ci95
    share_sent: float
    mean_wire_bytes: float | None


class FolderReport(ReportModel):
    """``reports/folder-<model>.json`` (``nairbus evaluate folder``): a model on the user's labelled folder."""

    command: str
    model: FolderModel
    folder: FolderRead
    whole_model_accuracy: float
    whole_model_ci95: Ci95
    decision_wire_bytes: float
    """Mean wire bytes of the decision's lean top-1 message."""
    artifact: FolderArtifact | None
    nair: list[FolderCapRow] | Missing
    image: list[FolderCapRow] | Missing
    seconds: float


# ----- deploy checks ------------------------------------------------------------------------------------------------


class Exposure(ReportModel):
    """A unit setting that still adds exposure."""

    setting: str
    exposure: str


class UnitSecurity(ReportModel):
    """``systemd-analyze security`` of one unit."""

    exposure: float
    rating: str
    unit_file: str
    drop_ins: list[str]
    remaining_exposure: list[Exposure]


class SystemdReport(ReportModel):
    """``reports/systemd.json`` (``deploy/systemd/analyze.py``): every unit verified and rated."""

    command: str
    systemd: str
    verify: str
    max_exposure_allowed: float
    units: dict[str, UnitSecurity]


class HomeAssistantReport(ReportModel):
    """``reports/homeassistant.json`` (``deploy/homeassistant/ha_check.py``): discovery against a real Home
    Assistant; the sections after ``settings`` exist as far as the check got."""

    tool: str
    started: str
    checker_python: str
    settings: JsonDict
    python_for_ha_venv: str | None = None
    home_assistant: JsonDict | None = None
    install_only: bool | None = None
    workdir: str | None = None
    broker: JsonDict | None = None
    timeline: JsonValue = None
    sensors: dict[str, JsonDict] | None = None
    fusion_exit_status: int | None = None
    checks: dict[str, JsonDict] | None = None
    results: dict[str, JsonDict] | None = None
    discovery: JsonDict | None = None
    failed: list[str] | None = None
    error: str | None = None
    passed: bool
    exit_status: int
    finished: str


class HomeAssistantTruthReport(ReportModel):
    """``reports/homeassistant-truth.json`` (``deploy/homeassistant/ha_truth.py``): commands sent by a real Home
    Assistant, the states of paused, stalled and stopped streams, the recorder's bytes per frame, the entity ids."""

    tool: str
    started: str
    checker_python: str
    settings: JsonDict
    home_assistant: JsonDict | None = None
    workdir: str | None = None
    timeline: JsonValue = None
    checks: dict[str, JsonDict] | None = None
    entity_ids: list[dict[str, str]] | None = None
    failed: list[str] | None = None
    error: str | None = None
    passed: bool
    exit_status: int
    finished: str


# ----- nairbus bench footprint --------------------------------------------------------------------------------------


class FootprintInstall(ReportModel):
    """One fresh venv: what was installed, how, its size on disk (``du``) and whether torch is importable in it."""

    spec: str
    size_mb: float
    size_mb_after_runs: float
    install_s: float
    torch_importable: bool
    packages: list[str]


class FootprintRun(ReportModel):
    """One sensor streaming in the Pi-class budget (one thread, a CPU group of ``device_cpus`` of a core)."""

    sensor: str
    runtime: str
    mode: str
    frames_sent: int
    cpu_ms_per_frame: float
    fps: float
    peak_rss_mb: float
    startup_s: float
    throttled_s: float | None = None


class FootprintReport(ReportModel):
    """``reports/sensor-footprint.json`` (``nairbus bench footprint``): the torch sensor against the light sensor."""

    command: str
    model: str
    artifact: str
    frames: int
    device_cpus: float
    threads: int
    recipe: str
    isolation: JsonDict
    installs: dict[str, FootprintInstall]
    runs: list[FootprintRun]
    cpu_ratio_light_to_torch: dict[str, float]
    bars: dict[str, bool]


# ----- nairbus evaluate split --------------------------------------------------------------------------------------


class SplitRow(ReportModel):
    """One representation under one wire cap: accuracy over every test frame (unsent: wrong), its interval."""

    accuracy: float
    ci95: tuple[float, float]
    share_sent: float
    mean_wire_bytes: float | None


class SplitCap(ReportModel):
    """NAIR against the image family chosen on validation, at one cap, paired on the same test frames."""

    cap_bytes: int
    nair: SplitRow
    image_family: str
    image: SplitRow
    margin: float
    mcnemar_p: float
    discordant: list[int]
    verdict: str
    at_least_as_accurate: bool
    within_1pt_of_mature: bool


class SplitArtifact(ReportModel):
    """One NAIR artifact: its split, the device's share of the model and every cap."""

    artifact: str
    artifact_sha256: str
    split: str
    device_mac_share: float
    coding: str
    command: str | None
    caps: list[SplitCap]


class SplitReport(ReportModel):
    """``reports/split.json`` (``nairbus evaluate split``): NAIR at a real split against the strongest image."""

    command: str
    model: ModelRef
    frames: int
    test_source: str
    mature: AccuracyCi
    image_choice: JsonDict
    wire_counting: str
    test: str
    artifacts: list[SplitArtifact]
    seconds: float


# ----- nairbus bench share ------------------------------------------------------------------------------------------


class ShareFrames(ReportModel):
    """One sensor's frames in a share run."""

    frames_sent: int | None
    frames_decided: int
    within_deadline: float | None
    all_decided: bool
    frames_skipped: int | None
    exit: int | None


class ShareRun(ReportModel):
    """One run of ``nairbus bench share``: N sensors behind one tbf-shaped uplink."""

    sensors: int
    rate_bps: int
    rate: str
    rtt_ms: float
    fps: float
    deadline_ms: float
    started_s: dict[str, float]
    steady_s: float
    bytes_per_s: dict[str, float | None]
    share_of_link: dict[str, float | None]
    link_used: float | None
    jain: float | None
    """Jain's fairness index of the sensors' rates over the steady state (1: equal shares)."""
    every_frame_decided: bool
    frames: dict[str, ShareFrames]
    qdisc: JsonDict | None


class ShareReport(ReportModel):
    """``reports/link-share*.json`` (``nairbus bench share``): how sensors that share an uplink split it."""

    command: str
    code: JsonDict
    settings: JsonDict
    runs: list[ShareRun]


# ----- the registry -------------------------------------------------------------------------------------------------

REPORTS: tuple[tuple[str, type[ReportModel]], ...] = (
    ("demo*.json", DemoReport),
    ("folder*.json", FolderReport),
    ("nair*.json", NairReport),
    ("vp.json", VpReport),
    ("wire*.json", WireReport),
    ("images*.json", ImagesReport),
    ("map*.json", MapReport),
    ("cost*.json", CostReport),
    ("light*.json", LightReport),
    ("link-share*.json", ShareReport),
    ("link*.json", LinkReport),
    ("faults*.json", FaultsReport),
    ("files*.json", FilesReport),
    ("systemd.json", SystemdReport),
    ("homeassistant.json", HomeAssistantReport),
    ("homeassistant-truth*.json", HomeAssistantTruthReport),
    ("sensor-footprint*.json", FootprintReport),
    ("bench*.json", ScaleReport),
    ("split*.json", SplitReport),
)
"""Report file name pattern → its model; the first pattern that matches a file's name wins."""


def model_for(path: Path | str) -> type[ReportModel]:
    """The model of the report at ``path``, by its file name; a file no pattern matches is refused."""
    name = Path(path).name
    for pattern, model in REPORTS:
        if fnmatch(name, pattern):
            return model
    raise LookupError(f"no report model for {name!r}: add its pattern to nairbus.agents.tools.reports.REPORTS")


def load_report(path: Path) -> ReportModel:
    """The report at ``path``, validated against its registered model (a pydantic ``ValidationError`` names every
    field that does not match)."""
    return model_for(path).model_validate(json.loads(path.read_text()))


def load_typed(path: Path, kind: type[R]) -> R:
    """:func:`load_report`, refusing a file whose registered model is not ``kind``."""
    report = load_report(path)
    if not isinstance(report, kind):
        raise TypeError(f"{path.name} holds a {type(report).__name__}, not a {kind.__name__}")
    return report
