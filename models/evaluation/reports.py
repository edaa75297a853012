"""Typed models of the JSON reports the evaluation commands write under ``reports/``.

Every figure the README shows comes from one of these files; a report is validated against its model when it is
written (:func:`write_report`) and when it is read (``nairbus.agents.tools.reports.load_report``), so a report that
drifts from its model fails loudly instead of producing a bad file or a silently wrong table. This module holds the
reports built by the models layer (``nairbus evaluate nair | vp | images | map | cost | wire``) and the shared base;
the bench and demo reports live in ``nairbus.agents.tools.reports`` beside the registry of file names.

Structures whose keys are data (per-method, per-prefix or per-cap tables) are ``dict[str, Model]``; sub-structures
that are genuinely open-ended (settings, manifests, raw counters) are typed as JSON values, never ``Any``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

JsonDict = dict[str, JsonValue]
"""An open-ended JSON object (settings, manifests, counters): any JSON inside, but JSON."""
Ci95 = tuple[float, float]
"""A 95 % interval: (low, high)."""
Number = int | float
"""A figure a writer may give as an int or a float (both kept as written)."""


class ReportModel(BaseModel):
    """Base of every report and report row: unknown fields are refused and a loaded report is read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_data(cls, data: object, lenient: bool = False) -> Self:
        """Validate a writer's report as its file will hold it (tuples as lists; with ``lenient``, anything JSON
        cannot hold as its ``str``, as the fault bench and the Home Assistant check always wrote it)."""
        return cls.model_validate(json.loads(json.dumps(data, default=str if lenient else None)))


def report_json(model: ReportModel, sort_keys: bool = False) -> str:
    """The report as its file holds it: indented JSON with a trailing newline, only the fields the writer set."""
    return json.dumps(model.model_dump(mode="json", exclude_unset=True, by_alias=True), indent=2,
                      sort_keys=sort_keys) + "\n"


def write_report(path: Path, model: ReportModel, sort_keys: bool = False) -> None:
    """Write ``model`` to ``path`` (its folder made if missing); a report is validated before it gets here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_json(model, sort_keys))


# ----- rows shared by several reports --------------------------------------------------------------------------------


class Missing(ReportModel):
    """A section a run could not make, and why."""

    missing: str


class AccuracyCi(ReportModel):
    """An accuracy on ``n`` frames with its 95 % Wilson interval."""

    accuracy: float
    ci95: Ci95
    n: int


class McNemarTest(ReportModel):
    """McNemar's exact test of ``a`` against ``b`` on the same frames; ``only_<x>_correct`` counts the discordant
    frames of each side (named after the sides)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, int] = Field(init=False)

    a: str
    b: str
    frames: int
    difference: float
    p_value: float
    within_noise: bool
    test: str

    @model_validator(mode="after")
    def _only_discordant_counts(self) -> Self:
        odd = [k for k in self.model_extra or {} if not re.fullmatch(r"only_[a-z0-9_]+_correct", k)]
        if odd:
            raise ValueError(f"unexpected fields {odd} (a McNemar row has only_<side>_correct counts beside its own)")
        return self


class ModelRef(ReportModel):
    """The mature model a report measured: name, weights hash and the test accuracy its manifest records."""

    name: str
    sha256: str
    test_accuracy: float | None = None


class InputSpec(ReportModel):
    """The input a model takes (``nairbus.models.architectures`` input spec)."""

    channels: int
    height: int
    width: int
    mean: list[float]
    std: list[float]
    labels: list[str]


class CapAccuracy(ReportModel):
    """Accuracy when every frame must fit ``cap_bytes`` on the wire (the best setting that fits, else unsent)."""

    cap_bytes: int
    accuracy: float
    ci95: Ci95
    share_sent: float
    mean_wire_bytes: float | None
    mean_data_bytes: float | None = None
    mean_components: float | None = None
    mean_payload_bytes: float | None = None
    agreement: float | None = None
    chosen: dict[str, int] | None = None
    artifact: str | None = None
    family: str | None = None
    validation_accuracy: float | None = None
    chosen_on: str | None = None


# ----- nairbus evaluate wire (and the wire section of the NAIR report) ----------------------------------------------


class WireArtifactBrief(ReportModel):
    """One NAIR artifact as the NAIR report's wire section names it."""

    artifact: str
    artifact_sha256: str
    split: str
    bit_bands: str
    full_data_bytes: int
    device_macs_share: float


class WireArtifact(WireArtifactBrief):
    """One NAIR artifact of ``reports/wire.json``: what it is and its accuracy at every wire cap."""

    n_components: int
    device_macs: int
    validation: list[CapAccuracy]
    test: list[CapAccuracy]


class WireBar(ReportModel):
    """One wire-cap bar: NAIR (the artifact chosen on validation, and each artifact) against every image family."""

    nair: CapAccuracy
    nair_per_artifact: dict[str, CapAccuracy]
    best_image_family: str
    best_image: CapAccuracy | None = None
    images: dict[str, CapAccuracy]
    nair_minus_best_image: float
    difference_outside_noise: bool


class WireReport(ReportModel):
    """``reports/wire.json`` (``nairbus evaluate wire``): NAIR per artifact against the image codecs, in bytes on the
    wire per frame."""

    command: str
    model: ModelRef
    frames: int
    validation_frames: int
    mature_accuracy: float
    mature_validation_accuracy: float
    selection: str
    wire_counting: str
    nair_message_overhead_bytes: int
    image_report: JsonDict
    nair: dict[str, WireArtifact]
    nair_chosen_on_validation: list[CapAccuracy]
    fewest_wire_bytes_within_1pt_of_mature: dict[str, CapAccuracy | None]
    bars: dict[str, WireBar]
    seconds: float


class NairWireSummary(ReportModel):
    """The wire section of the NAIR report (``wire_summary`` of ``reports/wire.json`` on the same frames)."""

    command: str
    frames: int
    wire_counting: str
    nair_message_overhead_bytes: int
    artifacts: dict[str, WireArtifactBrief]
    fewest_wire_bytes_within_1pt_of_mature: dict[str, CapAccuracy | None]
    bars: dict[str, WireBar]
    selection: str


# ----- nairbus evaluate nair ----------------------------------------------------------------------------------------


class NairMethod(ReportModel):
    """One method of the NAIR report: accuracy per prefix of the IR received and under fragment loss."""

    description: str
    model: str
    model_full_accuracy: float
    prefix: dict[str, float]
    prefix_ci95: dict[str, Ci95] | None = None
    prefix_bytes: dict[str, float]
    random_loss: dict[str, float]
    bursty_loss: dict[str, float]
    calibration_seconds: float


class RatePoint(ReportModel):
    """One rate-accuracy point: a bit allocation at a byte budget, its accuracy on test (and validation)."""

    method: str
    quantisation: str
    bit_bands: str
    budget_bytes: int
    budget_fraction: float
    bytes: float
    accuracy: float
    ci95: Ci95
    command: str | None = None
    artifact_sha256: str
    validation_accuracy: float | None = None


class NairValidation(ReportModel):
    """The validation split the NAIR report's choices were made on."""

    source: str
    frames: int
    mature_accuracy: float
    used_for: str


class FewestBytes(ReportModel):
    """The rate point with the fewest payload bytes within 1 point of the mature model, chosen on validation."""

    chosen_on: str
    criterion: str | None = None
    point: RatePoint | None
    vs_mature: McNemarTest | None = None


class NairBars(ReportModel):
    """The issue's NAIR bars, computed from the report's figures."""

    nair_share_of_mature_at_10pct: float
    nair_share_of_mature_at_25pct: float
    nair_full_agrees_with_mature_transform_only: float
    nair_full_agrees_with_mature_8bit: float
    nair_over_naive_mean_at_10pct: float | None = None
    nair_minus_taildrop: dict[str, float] | None = None
    min_bytes_within_1pt_of_mature: float | None
    min_bytes_within_1pt_chosen_on: str | None = None
    min_bytes_within_1pt_accuracy: float | None = None
    min_bytes_within_1pt_ci95: Ci95 | None = None
    min_bytes_within_1pt_quantisation: str | None = None
    min_bytes_within_1pt_command: str | None = None
    nair_vs_taildrop_p_value: dict[str, float] | None = None


class NairFull(ReportModel):
    """NAIR with everything received against the mature model."""

    agreement_with_mature_8bit: float
    agreement_with_mature_transform_only: float
    accuracy_8bit: float


class ShippedArtifact(ReportModel):
    """The model's shipped NAIR artifact and whether it is the one the evaluation calibrated."""

    file: str
    sha256: str
    same_as_evaluated: bool
    command: str | None


class TaildropSelection(ReportModel):
    """How the tail-drop baseline's checkpoint was chosen (its training history left out)."""

    split: str
    criterion: str
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    fill_validation: dict[str, dict[str, float]] | None = None


class TaildropTraining(ReportModel):
    """The retrained tail-drop baseline's training record."""

    test_accuracy: float | None
    train_wall_seconds: float | None
    command: str | None
    settings: JsonDict | None = None
    fill: str | None = None
    selection: TaildropSelection | None = None


class CodecPoint(ReportModel):
    """One image codec setting on the NAIR report's rate plot."""

    spec: str
    mean_payload_bytes: float
    mean_wire_bytes: float | None
    accuracy: float
    ci95: Ci95
    agreement: float | None = None
    psnr_db: float | None = None


class ImageCodecCurves(ReportModel):
    """Every image codec setting of the image report, for the NAIR rate plot."""

    command: str | None
    frames: int
    families: dict[str, list[CodecPoint]]


class NairReport(ReportModel):
    """``reports/nair[-<model>].json`` (``nairbus evaluate nair``): NAIR against naive, pruning, PCA and tail-drop."""

    frames: int
    mature_accuracy: float
    mature_ci95: Ci95
    methods: dict[str, NairMethod]
    statistics: str
    nair_artifact_sha256: str | None = None
    nair_full: NairFull | None = None
    comparisons: dict[str, dict[str, McNemarTest]] | None = None
    rate_accuracy: list[RatePoint] | None = None
    validation: NairValidation | None = None
    fewest_bytes_within_1pt: FewestBytes | None = None
    ablation: dict[str, dict[str, float]] | None = None
    joint_klt_validation: JsonDict | None = None
    bars: NairBars
    evaluation_seconds: float
    settings: JsonDict
    mature_model: ModelRef
    command: str
    input_spec: InputSpec
    calibration_source: str
    shipped_artifact: ShippedArtifact | None
    taildrop_training: TaildropTraining | None = None
    wire: NairWireSummary | Missing
    image_codecs: ImageCodecCurves | Missing
    wall_seconds: float


# ----- nairbus evaluate images -------------------------------------------------------------------------------------


class ImageFamily(ReportModel):
    """One image codec family: its ladder of settings, each setting's figures, and the best that fits each cap."""

    ladder: list[str]
    specs: list[CodecPoint]
    caps: list[CapAccuracy]


class ImagesReport(ReportModel):
    """``reports/images[-<model>].json`` (``nairbus evaluate images``): every image codec ladder at every wire cap."""

    command: str
    frames: int
    mature_model: ModelRef
    uncompressed: JsonDict
    settings: JsonDict
    wire_overhead_bytes: dict[str, Number]
    families: dict[str, ImageFamily]
    best: dict[str, CapAccuracy]
    best_fixed_setting_mean: dict[str, CodecPoint]
    validation: JsonDict | None = None
    evaluation_seconds: float
    wall_seconds: float


# ----- nairbus evaluate vp -----------------------------------------------------------------------------------------


class VpBase(ReportModel):
    """The mature model the VP family is derived from."""

    name: str
    sha256: str
    params: int
    macs: int
    accuracy: float
    manifest_test_accuracy: float | None = None


class VpVariant(ReportModel):
    """One VP variant: size, accuracy alone, its knobs and its fusion weight."""

    params: int
    macs: int
    params_ratio: float
    macs_ratio: float
    accuracy: float
    fusion_weight: float
    width_multiplier: float
    resolution: int
    widths: list[int]
    blocks: list[int]
    sha256: str


class VpEnsemble(ReportModel):
    """The ensemble of every variant, and with one lost."""

    variants: list[str]
    accuracy: float
    vs_base: float
    one_lost: dict[str, float]
    worst_one_lost: float
    max_drop_one_lost: float
    total_params: int
    total_macs: int
    max_variant_params_ratio: float
    max_variant_macs_ratio: float


class FusionRules(ReportModel):
    """The fusion rule, chosen on the validation split the family never trained on."""

    split: str
    rules: dict[str, AccuracyCi]
    shipped_rule: str
    best_on_validation: str
    best_vs_shipped: McNemarTest
    chosen: str
    criterion: str


class AvailabilityRow(ReportModel):
    """Availability and expected accuracy of VP and model parallelism at one per-device failure probability."""

    p: float
    vp_closed: float
    vp_simulated: float
    mp_closed: float
    mp_simulated: float
    vp_accuracy_closed: float
    vp_accuracy_simulated: float
    mp_accuracy_closed: float
    mp_accuracy_simulated: float
    single_device_accuracy_closed: float | None = None


class Availability(ReportModel):
    """Availability table of the VP report."""

    devices: int
    trials: int
    model_parallel_parts: int | None = None
    note: str
    rows: list[AvailabilityRow]


class TopkPayload(ReportModel):
    """Bytes per frame of VP at one top-k."""

    numbers: int
    data_bytes_per_variant: int | None = None
    data_bytes_per_frame: int
    message_bytes_per_variant: int | None = None
    message_bytes_per_frame: int | None


class VpPayload(ReportModel):
    """Bytes per frame of VP beside the raw image and NAIR."""

    variants: int
    topk: dict[str, TopkPayload]
    raw_image_bytes: int
    zlib_image_bytes_mean: float
    nair: dict[str, Number] | None = None
    note: str | None = None


class VpEvidence(ReportModel):
    """Test accuracies with intervals and the paired tests of the VP report."""

    statistics: str
    best_single_variant: str
    best_single_variant_named_on: str | None = None
    accuracy: dict[str, AccuracyCi]
    variants: dict[str, AccuracyCi]
    ensemble_vs_mature: McNemarTest
    ensemble_vs_best_variant: McNemarTest
    best_variant_vs_mature: McNemarTest


class VpReport(ReportModel):
    """``reports/vp.json`` (``nairbus evaluate vp``): the variant family, the ensemble, availability and payload."""

    command: str
    frames: int
    split: str
    k: int
    base_accuracy: float
    base: VpBase
    variants: dict[str, VpVariant]
    ensemble: VpEnsemble
    subsets: dict[str, float]
    subsets_by_k: dict[str, dict[str, float]]
    fusion_ablation: dict[str, float]
    fusion_rule_on_validation: FusionRules | None = None
    availability: Availability
    payload: VpPayload
    settings: JsonDict
    family_manifest: JsonDict | None = None
    evidence: VpEvidence | None = None
    plots: list[str] | JsonDict | None = None


# ----- nairbus evaluate map ----------------------------------------------------------------------------------------


class MapModel(ReportModel):
    """The model a map was made for and how its validation split relates to its training."""

    name: str
    sha256: str
    test_accuracy: float | None
    macs: int
    split_points: list[str]
    validation_held_out_of_training: bool
    selection: str


class MapFrames(ReportModel):
    """The test and validation frames of a map."""

    test: int
    validation: int
    test_source: str
    validation_source: str


class MapBudget(ReportModel):
    """One device budget of the map's front."""

    label: str
    max_mac_share: float | None
    max_cpu_ms: float | None


class MapCap(ReportModel):
    """One representation at one wire cap: accuracy on validation and on test."""

    cap_bytes: int | str
    validation_accuracy: float
    test_accuracy: float
    ci95: Ci95
    mean_wire_bytes: float | None
    share_sent: float


class MapRepresentation(ReportModel):
    """One representation a sensor can send: its device cost and accuracy at every cap (kind-specific details
    beside)."""

    name: str
    kind: str
    split: str | None
    variant: str | None
    devices: int
    mac_share: float
    macs_device: int
    cpu_ms: float
    rss_mb: float
    cost_source: str
    ladder: list[str] | None = None
    caps: list[MapCap]
    artifact: str | None = None
    artifact_sha256: str | None = None
    artifact_made_by: str | None = None
    calibration: JsonDict | None = None
    full_ir_data_bytes: int | None = None
    n_components: int | None = None
    macs_transform: int | None = None
    coding: str | None = None
    allocation_per_cap: list[JsonDict] | None = None
    candidates: dict[str, JsonDict] | None = None
    chosen_on: str | None = None
    k: int | None = None
    message: str | None = None
    fusion_weight: float | None = None
    note: str | None = None
    variants: list[str] | None = None
    fusion_weights: dict[str, float] | None = None


class FrontEntry(ReportModel):
    """A representation as the front names it."""

    name: str
    kind: str
    devices: int
    mac_share: float
    cpu_ms: float
    validation_accuracy: float
    test_accuracy: float
    ci95: Ci95
    mean_wire_bytes: float | None
    share_sent: float


class FrontCell(ReportModel):
    """One cell of the front: per device budget and wire cap, the winner on validation and its runner-up."""

    budget: str
    cap_bytes: int | str
    candidates: int | None = None
    winner: FrontEntry | None
    runner_up: FrontEntry | None = None
    margin_test: float | None = None
    margin_validation: float | None = None
    mcnemar_p: float | None = None
    discordant: list[int] | None = None
    verdict: str | None = None


class NairVsImageCap(ReportModel):
    """NAIR against the image family best on validation at one cap."""

    cap_bytes: int | str
    image: str
    nair_test_accuracy: float
    image_test_accuracy: float
    margin_test: float
    mcnemar_p: float
    discordant: list[int]
    verdict: str


class NairVsImageRow(ReportModel):
    """NAIR at one split against the best image family at each cap."""

    name: str
    split: str
    mac_share: float
    caps: list[NairVsImageCap]


class MapReport(ReportModel):
    """``reports/map[-<model>].json`` (``nairbus evaluate map``): every representation on one map, and the front."""

    kind: str
    version: int
    command: str
    model: MapModel
    frames: MapFrames
    caps: list[int | str]
    wire: JsonDict
    rules: dict[str, str]
    budgets: list[MapBudget]
    representations: list[MapRepresentation]
    front: list[FrontCell]
    ensemble_wins: list[FrontCell]
    nair_vs_image: list[NairVsImageRow] | None = None
    seconds: dict[str, float]


# ----- nairbus evaluate cost ---------------------------------------------------------------------------------------


class CostReport(ReportModel):
    """``reports/cost[-<model>].json`` (``nairbus evaluate cost``): each representation's cost on the device."""

    command: str
    model: str
    model_sha256: str
    macs_model: int
    frames: int
    frame_source: str
    warmup_frames: int
    wire_bytes: int
    image: JsonDict
    nair: str
    decision_k: int
    vp_k: int
    measure: str
    isolation: JsonDict
    machine: JsonDict
    skipped: list[JsonDict]
    representations: list[JsonDict]
    wall_seconds: float


# ----- nairbus evaluate light --------------------------------------------------------------------------------------


class Share(ReportModel):
    """A count of frames out of ``n`` with its 95 % Wilson interval."""

    hits: int
    n: int
    share: float
    ci95: Ci95


class CodeCounts(ReportModel):
    """NAIR codes from the torch and the light sensor's IR, compared code by code."""

    codes: int
    differ: int
    max_delta: int
    frames_differ: int


class LightBudget(ReportModel):
    """The hub's class from either sensor's codes at one demo budget (a prefix of the IR)."""

    budget: float
    budget_bytes: int
    agree: Share
    accuracy_torch: Share
    accuracy_onnx: Share


class LightArtifact(ReportModel):
    """A shipped NAIR artifact of the part's split: its codes and its demo budgets."""

    artifact: str
    codes: CodeCounts
    budgets: list[LightBudget]


class LightPart(ReportModel):
    """One device part (a head at a split, or the whole model) run by torch and by the light sensor's runtime."""

    model: str
    part: str
    split: str | None
    onnx_sha256: str
    frames: int
    max_abs: float
    scale: float
    decision_agree: Share
    topk_agree: Share
    accuracy_torch: Share
    accuracy_onnx: Share
    artifacts: list[LightArtifact]
    seconds: float


class LightSummary(ReportModel):
    """Over every part: what differs between the two runtimes."""

    parts: int
    decisions_compared: int
    decisions_differ: int
    topk_differ: int
    codes_compared: int
    codes_differ: int
    code_max_delta: int
    budget_classes_compared: int
    budget_classes_differ: int
    accuracy_changes: int


class LightReport(ReportModel):
    """``reports/light.json`` (``nairbus evaluate light``): the light sensor's answers against the torch sensor's."""

    command: str
    frames: int
    models: list[str]
    left_out: str
    top_k: int
    demo_budgets: list[float]
    threads: int
    onnxruntime: str
    torch: str
    parts: list[LightPart]
    summary: LightSummary
    wall_seconds: float
