"""``nairbus sensor``, ``nairbus fusion`` and ``nairbus watch``: run the agents, and watch their results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from nairbus.agents.cli.common import (
    BrokerOpt,
    ConfigOpt,
    DataDirOpt,
    _fail,
    _load_config,
    _shard,
    app,
)

BudgetOpt = Annotated[str | None, typer.Option(
    help="'auto' (default): each frame gets what the link delivers by its deadline, measured; N: also at most N "
         "wire bytes per frame (MQTT PUBLISH bytes, envelope included).")]
ArtifactOpt = Annotated[Path | None, typer.Option(
    help="NAIR artifact (default: the model manifest's sensor_artifact, chosen on validation — for base the "
         "deep split, models/weights/base.stage3.nair.npz; models/weights/base.nair.npz is the middle "
         "split).")]
RuntimeOpt = Annotated[str | None, typer.Option(
    help="What runs the device's part of the model: 'torch' (default: its weights) or 'onnx' (the parts 'nairbus "
         "export-onnx --model MODEL' wrote beside its manifest, in ONNX Runtime; the NAIR transform in numpy). "
         "Every mode; vp runs the variant 'nairbus export-onnx --variants' wrote (NAIRBUS_MODEL_DIR: its folder).")]
ThreadsOpt = Annotated[int | None, typer.Option(
    help="Compute threads for the model work here (default 1: one frame at a time gains little from more, and "
         "on a busy device more threads spin against each other).", min=1, max=64)]
SensorModeOpt = Annotated[str | None, typer.Option(
    help="nair (feature prefix), image (compressed frame, whole model at the hub), decision (whole model here, "
         "its top-k sent: about 30 wire bytes), auto (per frame the best of image, nair and the decision the "
         "device can afford at the link's budget) or vp (one variant, top-k). Default: the mode the model's "
         "manifest chose from its map ('nairbus choose-defaults'; auto for base), else nair.")]
DeviceBudgetOpt = Annotated[str | None, typer.Option(
    help="Auto: what the device may spend per frame, CPU ms ('5ms') or share of the model's MACs ('62%'); auto "
         "then uses only the representations that fit (default: measured against the frame rate).")]
SourceOpt = Annotated[str | None, typer.Option(
    help="'replay' (the data set, frame id = index); 'folder' (the image files of --folder, your own camera's "
         "snapshots); 'image-topic' (JPEG/PNG messages on --image-topic); 'camera' (--camera); VP: 'mqtt' "
         "(frames from a capture agent).")]
ImageTopicOpt = Annotated[str | None, typer.Option(
    help="MQTT topic carrying JPEG/PNG snapshots (e.g. Frigate's), one frame per message (implies --source "
         "image-topic).")]
SensorModelOpt = Annotated[str | None, typer.Option(
    help="The model whose head runs here: a shipped name (default base), a model imported into "
         "$NAIRBUS_MODEL_DIR, or the path of its manifest.")]
CameraOpt = Annotated[str | None, typer.Option(
    help="A camera as the source (implies --source camera; needs pip install 'nairbus[camera]'): a device "
         "index (0), a stream URL (rtsp://...) or a video file.")]
LinkFitOpt = Annotated[bool | None, typer.Option(
    "--link-fit/--no-link-fit",
    help="Size frames to the measured link (default) or send every frame's whole budget regardless.")]
QosOpt = Annotated[int | None, typer.Option(
    help="QoS of the frame messages: 0 (default: one message per frame, topic alias) or 1 (PUBACKed).",
    min=0, max=1)]


@app.command()
def sensor(
    config: ConfigOpt = None,
    broker: BrokerOpt = None,
    sensor_id: Annotated[str | None, typer.Option(help="Sensor id (topic segment).")] = None,
    stream_id: Annotated[str | None, typer.Option(help="Result stream (default: sensor id).")] = None,
    count: Annotated[int | None, typer.Option(help="Frames to replay from --start.")] = None,
    start: Annotated[int | None, typer.Option(help="First data-set index to replay.")] = None,
    shard: Annotated[str | None, typer.Option(help="i/n: every n-th frame from i (share frames).")] = None,
    budget: BudgetOpt = None,
    link_fit: LinkFitOpt = None,
    link_trace: Annotated[Path | None, typer.Option(
        help="Write the link fitting's every sample and frame budget (with the kernel's TCP_INFO) to this file, "
             "as JSON lines.")] = None,
    budget_fraction: Annotated[float | None, typer.Option(
        help="NAIR: cap each frame's payload at this fraction of the IR.")] = None,
    bytes_per_second: Annotated[float | None, typer.Option(help="Cap on wire bytes per second.")] = None,
    image_codecs: Annotated[str | None, typer.Option(
        help="image/auto: comma-separated codec ladder, best first (e.g. png,grey4+deflate,webp:q50).")] = None,
    artifact: ArtifactOpt = None,
    runtime: RuntimeOpt = None,
    deadline_ms: Annotated[float | None, typer.Option(help="Frame deadline at the sensor.")] = None,
    fps: Annotated[float | None, typer.Option(help="Replay rate (frames per second).")] = None,
    threads: ThreadsOpt = None,
    qos: QosOpt = None,
    test_loss: Annotated[str | None, typer.Option(
        help="TEST TOOLING: inject fragment loss, 'random:0.2' or 'bursty:0.2[:burst]'.")] = None,
    data_dir: DataDirOpt = None,
    mode: SensorModeOpt = None,
    variant: Annotated[str | None, typer.Option(help="VP: variant of the shipped family to run.")] = None,
    k: Annotated[int | None, typer.Option(
        help="VP and decision: classes reported per frame (VP 1..classes/2, default 5; decision default 1).")] = None,
    device_budget: DeviceBudgetOpt = None,
    source: SourceOpt = None,
    folder: Annotated[Path | None, typer.Option(
        help="Directory of PNG/JPEG/WebP/BMP files, sent in name order (implies --source folder).")] = None,
    watch: Annotated[bool | None, typer.Option(
        "--watch/--no-watch", help="With --folder: keep taking new files as they appear, until stopped.")] = None,
    image_topic: ImageTopicOpt = None,
    frame_stream: Annotated[str | None, typer.Option(help="VP, mqtt source: capture stream to follow.")] = None,
    model: SensorModelOpt = None,
    replay: Annotated[float | None, typer.Option(
        "--replay", help="Seconds of frames published again after a lost broker connection comes back (default 1; "
                         "0: off).")] = None,
    camera: CameraOpt = None,
    stay: Annotated[bool | None, typer.Option(
        "--stay/--no-stay", help="After a one-shot run (a folder without --watch, --count frames) keep its retained "
                                 "birth and status, and Home Assistant its devices (default: withdrawn at the end).")]
    = None,
) -> None:
    """Run a sensor agent that replays frames onto the bus, each sized to what its link delivers by the deadline.

    Prints its counters as one JSON line on stdout at the end (items_read, frames, frames_sent, decided — fusion's
    tally of a one-shot run —, frames_skipped and each skip's reason, wire_bytes, ...); the logs go to stderr.
    """
    flags = dict(locals())  # every flag, by its parameter name (first: nothing else is local yet)
    from nairbus.agents.methods import METHODS

    config_path, broker_url = flags.pop("config"), flags.pop("broker")
    cfg = _sensor_config(config_path, sensor_overrides(flags), broker_url)
    try:  # the method runs its model work on cfg.sensor.threads threads (a light sensor's without torch)
        counters = METHODS.for_sensor(cfg.sensor).run_sensor(cfg)
    except (ConnectionError, FileNotFoundError, RuntimeError, ValueError) as exc:
        _fail(str(exc))
    print(json.dumps(counters), flush=True)  # stdout: what a script reads; the logs go to stderr


def _sensor_config(config: Path | None, overrides: dict[str, Any], broker: str | None = None) -> Any:
    """The sensor's configuration: defaults < config file < environment < flags, and the mode its model's manifest
    chose when none of them names one."""
    cfg = _load_config(config, {"sensor": overrides}, broker)
    default_mode = _model_default_mode(cfg.sensor)
    if default_mode is None:
        return cfg
    return _load_config(config, {"sensor": {**overrides, "mode": default_mode}}, broker)


def _model_default_mode(settings: Any) -> str | None:
    """The mode the model's manifest chose from its map (``nairbus choose-defaults``), when no flag, config file or
    environment named one; None otherwise (the settings' own default, ``nair``)."""
    from nairbus.agents.runtime.logging import get_logger
    from nairbus.models.catalog import read_manifest

    if "mode" in settings.model_fields_set:
        return None
    try:
        defaults = read_manifest(settings.model).sensor_defaults
    except FileNotFoundError:
        return None  # the sensor itself says the model is missing
    if defaults is None:
        return None
    get_logger("nairbus.sensor").info("mode_from_model", mode=defaults.mode, model=settings.model,
                                      evidence=defaults.evidence, reason=defaults.reason)
    return defaults.mode


def _budget_bytes(budget: str | None) -> int | None:
    """``--budget``: None for 'auto' (or not given), else a whole number of wire bytes >= 16."""
    if budget is None or budget == "auto":
        return None
    if not budget.isdigit() or int(budget) < 16:
        raise typer.BadParameter("--budget takes 'auto' or a whole number of wire bytes >= 16")
    return int(budget)


def _test_loss(spec: str) -> dict[str, Any]:
    """``--test-loss random:0.2`` or ``bursty:0.2[:burst]`` as the sensor's loss settings."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else ["0"]
    loss: dict[str, Any] = {"kind": kind, "rate": float(parts[0])}
    if len(parts) > 1:
        loss["mean_burst"] = float(parts[1])
    return loss


_RENAMED = {"replay": "replay_s"}
"""Flags whose sensor setting has another name."""
_DERIVED = ("budget", "image_codecs", "shard", "source", "test_loss")
"""Flags turned into settings by :func:`sensor_overrides` itself."""


def sensor_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The ``[sensor]`` settings the ``nairbus sensor`` flags given (not None) set."""
    from nairbus.agents.runtime.config import FLAT_METHOD_KEYS

    values = {_RENAMED.get(k, k): v for k, v in flags.items() if k not in _DERIVED}
    values["budget_bytes"] = _budget_bytes(flags["budget"])
    codecs = flags["image_codecs"]
    values["image_codecs"] = tuple(c.strip() for c in codecs.split(",") if c.strip()) if codecs else None
    values["shard"] = _shard(flags["shard"])
    values["source"] = flags["source"] or ("folder" if flags["folder"] is not None else "image-topic"
                                          if flags["image_topic"] else "camera" if flags["camera"] else None)
    if flags["test_loss"]:
        values["loss"] = _test_loss(flags["test_loss"])
        values["fragments_by_plan"] = True
    given = {k: v for k, v in values.items() if v is not None}
    # A method's flag goes straight into its options: a value that equals another method's default (``--k 5``)
    # is still what the user asked for.
    method = {key: given.pop(key) for key in FLAT_METHOD_KEYS if key in given}
    return {**given, "method_options": method} if method else given


@app.command()
def fusion(
    config: ConfigOpt = None,
    broker: BrokerOpt = None,
    fusion_id: Annotated[str | None, typer.Option(help="Fusion agent id.")] = None,
    deadline_ms: Annotated[float | None, typer.Option(help="Reassembly deadline per frame.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Hard bound on frames in flight.")] = None,
    stats_interval: Annotated[float | None, typer.Option(help="Seconds between stats messages.")] = None,
    partition: Annotated[str | None, typer.Option(help="i/n: take the sensors that hash to i of n.")] = None,
    fleet: Annotated[str | None, typer.Option(
        help="Join the fusion fleet of this name: its agents (each with its own --fusion-id) share the sensors, "
             "rebalanced as agents come and go (MQTT 5 shared subscriptions; VP streams by rendezvous "
             "hashing).")] = None,
    mode: Annotated[str | None, typer.Option(help="nair (reassemble fragments) or vp (fuse top-k).")] = None,
    model: Annotated[str | None, typer.Option(
        help="The model (name or manifest path; default base).")] = None,
    also: Annotated[list[str] | None, typer.Option(
        "--also-model", help="A further model this fusion agent serves (repeatable): each sensor's birth names its "
                             "model and artifact by hash.")] = None,
    discover_models: Annotated[bool | None, typer.Option(
        "--discover-models/--no-discover-models",
        help="Also serve sensors whose model (by sha256) is in $NAIRBUS_MODEL_DIR or the shipped weights.")] = None,
    session_expiry: Annotated[int | None, typer.Option(
        "--session-expiry", help="Seconds the broker keeps this agent's session and queues sensor messages while it "
                                 "is away (default 300; 0: a clean session on every connection).")] = None,
    shed_late: Annotated[bool | None, typer.Option(
        "--shed-late/--no-shed-late",
        help="Shed frames already too late to be decided by the deadline (counted), so an overloaded hub decides "
             "the ones that can be on time: for live cameras. Default off (every frame decided, late or not).")
    ] = None,
    result_qos: Annotated[int | None, typer.Option(
        "--result-qos", min=0, max=1,
        help="QoS of the published results (default 1: acknowledged, and every result reaches a QoS 1 subscriber; "
             "0: cheaper, for live views only).")] = None,
) -> None:
    """Run the fusion agent until interrupted: reassemble frames, run the tail, publish results and stats."""
    from nairbus.agents.methods import METHODS

    values = {"fusion_id": fusion_id, "deadline_ms": deadline_ms, "max_frames": max_frames,
              "stats_interval_s": stats_interval, "partition": _shard(partition), "fleet": fleet, "mode": mode,
              "model": model,
              "models": tuple(also) if also else None, "discover_models": discover_models,
              "session_expiry_s": session_expiry, "result_qos": result_qos, "shed_late": shed_late}
    cfg = _load_config(config, {"fusion": {k: v for k, v in values.items() if v is not None}}, broker)
    try:
        METHODS.for_fusion(cfg.fusion.mode).run_fusion(cfg)
    except (ConnectionError, FileNotFoundError, RuntimeError, ValueError) as exc:
        _fail(str(exc))



@app.command()
def watch(
    config: ConfigOpt = None,
    broker: BrokerOpt = None,
    stream: Annotated[list[str] | None, typer.Option(help="Only this result stream (repeatable).")] = None,
    count: Annotated[int | None, typer.Option(help="Exit after this many results.")] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="Print each result as a JSON line instead.")] = False,
) -> None:
    """Live view of the result topics: label, confidence, runner-up, IR received, latency, rate per stream."""
    import sys

    from nairbus.agents.home.watch import watch as run_watch
    from nairbus.agents.runtime.logging import configure_logging

    cfg = _load_config(config, {}, broker)
    # Logs go to stderr; connection chatter (info) would scroll the live view away, so it starts at warning.
    configure_logging(cfg.log.model_copy(update={"level": "warning"}) if cfg.log.level == "info" else cfg.log)
    try:
        run_watch(cfg, console=Console(), count=count, streams=set(stream or ()), as_json=json_lines, out=sys.stdout)
    except ConnectionError as exc:
        _fail(str(exc))
