"""``nairbus bench``: benchmarks that run the real bus; ``nairbus bench link`` measures it over kernel-shaped links.

``bench_app`` is registered on the main ``nairbus`` command in agents/cli/__init__.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from nairbus.agents.cli.common import DataDirOpt

if TYPE_CHECKING:
    from nairbus.agents.tools.linkbench import LinkBenchSettings

DEFAULT_SHARE_ARGS = ("--mode", "nair", "--budget", "auto", "--artifact", "models/weights/base.nair.npz")
"""``nairbus bench share``'s sensors: NAIR at the middle split (nairbus.agents.tools.sharebench.DEFAULT_ARGS)."""

bench_app = typer.Typer(
    help="Benchmarks of the live bus (JSON reports and PNG plots under reports/).",
    rich_markup_mode=None, no_args_is_help=True)
console = Console(stderr=True)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bit(?:/s)?|bps)?\s*$")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_rate(text: str) -> int | None:
    """``unshaped``/``none`` → None; ``10M``, ``10Mbit``, ``250k``, ``100000`` → bits per second.

    >>> [parse_rate(t) for t in ("unshaped", "10M", "1Mbit/s", "250k", "100000", "1.5M")]
    [None, 10000000, 1000000, 250000, 100000, 1500000]
    """
    if text.strip().lower() in ("unshaped", "none", "inf", "off"):
        return None
    match = _RATE.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a rate: use e.g. unshaped, 10M, 1Mbit, 250k or 100000 (bit/s)")
    return round(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# The options of ``nairbus bench link`` (its --data-dir is the common one).
RatesOpt = Annotated[str, typer.Option(
    help="Uplink rates, comma-separated: 'unshaped' or bits/s with k/M suffixes.")]
FpsOpt = Annotated[str, typer.Option(help="Sensor replay rates (frames/s), comma-separated.")]
ModeOpt = Annotated[list[str] | None, typer.Option(
    "--mode", help="Sensor mode to run (repeatable): nair-auto, nair-fixed-100, image, auto, nair2-auto, auto2 (the "
                   "default grid), decision, auto2-budget, decision-w36r28d121 — the arguments of each are in "
                   "nairbus.agents.tools.linkbench.MODES.")]
AddModeOpt = Annotated[list[str] | None, typer.Option(
    "--add-mode", help="Extra mode NAME='SENSOR ARGS', e.g. --add-mode 'nair-10=--budget-fraction 0.1' "
                       "(repeatable; runs after the --mode ones).")]
FramesOpt = Annotated[int, typer.Option(help="Test frames replayed per run (frame id = test-set index).")]
StartOpt = Annotated[int, typer.Option(help="First test-set index replayed.")]
DeadlineOpt = Annotated[float, typer.Option(help="Frame deadline (sensor and fusion; drawn on the plot).")]
FusionDeadlineOpt = Annotated[float | None, typer.Option(
    help="Fusion's reassembly deadline if it should differ from --deadline-ms.")]
TbfLatencyOpt = Annotated[float, typer.Option(
    help="tbf queue bound: packets that would wait longer in the shaper are dropped.")]
SoakSecondsOpt = Annotated[float, typer.Option(
    help="Also run a soak this long (e.g. 300) that samples the sensor's memory; 0: none.")]
SoakRateOpt = Annotated[str, typer.Option(help="Uplink rate of the soak.")]
SoakFpsOpt = Annotated[float, typer.Option(help="Replay rate of the soak.")]
SoakModeOpt = Annotated[str | None, typer.Option(
    help="Mode of the soak (default: the first supported mode of the grid).")]
SoakOnlyOpt = Annotated[bool, typer.Option("--soak-only", help="Run only the soak, no grid.")]
RttOpt = Annotated[str, typer.Option(
    "--rtt-ms", help="Round trips to add to the path, comma-separated ms (0: none). A round trip runs the path through "
                     "a user-space delay line between TUN devices (the TCP connection stays end to end) and adds half "
                     "of it to the frames' deadline.")]
CompareOpt = Annotated[str | None, typer.Option(
    "--compare", metavar="MODE",
    help="Set MODE against the best other mode of every cell on the same frames (McNemar, exact): the report's "
         "'comparison' says per link rate and frame rate whether MODE is worse, better or within the noise.")]
LinkReportOpt = Annotated[Path, typer.Option(help="Where the JSON report goes.")]
LinkPlotOpt = Annotated[Path | None, typer.Option(
    help="Where the PNG plot goes (default: beside the report, link.png).")]
LinkRunDirOpt = Annotated[Path, typer.Option(help="Per-run logs, recorded results and qdisc counters.")]
ReplotOpt = Annotated[bool, typer.Option(
    "--replot", help="Run nothing: redraw the plot and print the table from an existing --report.")]


@bench_app.command("link")
def link_cmd(
    rates: RatesOpt = "unshaped,10M,1M,250k,100k",
    fps: FpsOpt = "10,30",
    rtt_ms: RttOpt = "0",
    mode: ModeOpt = None,
    add_mode: AddModeOpt = None,
    frames: FramesOpt = 300,
    start: StartOpt = 0,
    deadline_ms: DeadlineOpt = 1000.0,
    fusion_deadline_ms: FusionDeadlineOpt = None,
    tbf_latency_ms: TbfLatencyOpt = 50.0,
    soak_seconds: SoakSecondsOpt = 0.0,
    soak_rate: SoakRateOpt = "1M",
    soak_fps: SoakFpsOpt = 30.0,
    soak_mode: SoakModeOpt = None,
    soak_only: SoakOnlyOpt = False,
    compare: CompareOpt = None,
    cpu_load: Annotated[int, typer.Option(
        help="Busy processes (one core each, bounded by the run) beside the sensor during every run: a device "
             "whose CPU is taken by other work.", min=0, max=16)] = 0,
    report: LinkReportOpt = Path("reports/link.json"),
    plot: LinkPlotOpt = None,
    run_dir: LinkRunDirOpt = Path("runs/link"),
    data_dir: DataDirOpt = None,
    replot: ReplotOpt = False,
) -> None:
    """Measure the bus over real shaped links: per run, a fresh pair of network namespaces joined by a veth, the
    sensor's uplink shaped with the kernel's tbf; Mosquitto, fusion and a result recorder in the hub namespace, one
    sensor replaying the test split in the device namespace.

    Needs root (network namespaces and tc). Each run records frames sent/decided, live accuracy and the offline
    accuracy of the same frames at the bytes that arrived (95 % Wilson intervals), share of the IR received, wire
    bytes per frame, p50/p99 latency, frames skipped, the latency trend and the kernel's qdisc counters, into
    reports/link.json (rewritten after every run) and reports/link.png.

    Examples:

      nairbus bench link --rates unshaped,1M,100k --fps 30 --mode nair-fixed-100 --frames 300

      nairbus bench link --soak-only --soak-seconds 300

      nairbus bench link --rates 1M,20k --mode image --mode nair2-auto --mode auto2-budget --compare auto2-budget

      nairbus bench link --rates 1M,250k --rtt-ms 100,300,600 --fps 10,30 --mode nair2-auto --mode image

      nairbus bench link --rates unshaped --fps 10 --add-mode 'cap300=--budget 300' --cpu-load 2

      nairbus bench link --replot
    """
    if replot:
        _replot(report, plot)
        return
    _check_lab()
    settings = _link_settings(
        rates=rates, fps=fps, rtts=rtt_ms, modes=_link_modes(mode, add_mode), frames=frames, start=start,
        deadline_ms=deadline_ms,
        fusion_deadline_ms=fusion_deadline_ms, tbf_latency_ms=tbf_latency_ms, soak_seconds=soak_seconds,
        soak_rate=soak_rate, soak_fps=soak_fps, soak_mode=soak_mode, soak_only=soak_only, report=report, plot=plot,
        run_dir=run_dir, data_dir=data_dir, compare=compare)
    settings = replace(settings, cpu_load=cpu_load)
    if soak_only and soak_seconds <= 0:
        raise typer.BadParameter("--soak-only needs --soak-seconds > 0")
    _run_link_bench(settings)


def _replot(report: Path, plot: Path | None) -> None:
    """``--replot``: redraw the plot and print the table from an existing report, running nothing."""
    import json

    from nairbus.agents.tools.linkbench import plot_link, render_table

    if not report.is_file():
        raise typer.BadParameter(f"no report at {report}; run the bench first")
    data = json.loads(report.read_text())
    path = plot_link(data, plot or report.with_suffix(".png"))
    Console(width=220).print(render_table(data))
    console.print(f"plot: {path}")


def _check_lab() -> None:
    """End the command (exit 2) when this host cannot build the lab (root, network namespaces, tc)."""
    from nairbus.agents.tools.netns import LabError, check_environment

    try:
        check_environment()
    except LabError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _link_modes(mode: list[str] | None, add_mode: list[str] | None) -> dict[str, tuple[str, ...]]:
    """The modes to run, in order: the ``--mode`` ones (default the grid's default modes, unless ``--add-mode`` is
    given), then the ``--add-mode`` ones; name → extra sensor arguments."""
    from nairbus.agents.tools.linkbench import DEFAULT_MODES, MODES

    modes: dict[str, tuple[str, ...]] = {}
    for name in mode or ([] if add_mode else list(DEFAULT_MODES)):
        if name not in MODES:
            raise typer.BadParameter(f"unknown mode {name!r}; known: {', '.join(MODES)} (or use --add-mode)")
        modes[name] = MODES[name]
    for spec in add_mode or ():
        name, sep, args = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name.strip()):
            raise typer.BadParameter(f"--add-mode expects NAME='SENSOR ARGS', not {spec!r}")
        modes[name.strip()] = tuple(args.split())
    return modes


def _link_settings(*, rates: str, fps: str, rtts: str = "0", modes: dict[str, tuple[str, ...]], frames: int, start: int,
                   deadline_ms: float, fusion_deadline_ms: float | None, tbf_latency_ms: float, soak_seconds: float,
                   soak_rate: str, soak_fps: float, soak_mode: str | None, soak_only: bool, report: Path,
                   plot: Path | None, run_dir: Path, data_dir: Path | None,
                   compare: str | None = None) -> LinkBenchSettings:
    """The bench's settings from its options (rates parsed, paths resolved); a bad value is a usage error."""
    from nairbus.agents.tools.linkbench import LinkBenchSettings

    try:
        settings = LinkBenchSettings(
            rates_bps=tuple(parse_rate(r) for r in _split(rates)), fps=tuple(float(f) for f in _split(fps)),
            rtts_ms=tuple(float(r) for r in _split(rtts)),
            modes=modes, frames=frames, start=start, deadline_ms=deadline_ms, fusion_deadline_ms=fusion_deadline_ms,
            tbf_latency_ms=tbf_latency_ms, soak_seconds=soak_seconds, soak_fps=soak_fps, soak_mode=soak_mode,
            skip_grid=soak_only, data_dir=data_dir, compare=compare)
        soak_bps = parse_rate(soak_rate)
        if soak_bps is None:
            raise ValueError("the soak needs a shaped rate")
        return replace(settings, soak_rate_bps=soak_bps, report=report.resolve(),
                       plot=(plot or report.with_suffix(".png")).resolve(), run_dir=run_dir.resolve())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _run_link_bench(settings: LinkBenchSettings) -> None:
    """Run the grid (and soak) with the bench's own log quiet; a lab or data failure ends the command (exit 1)."""
    from nairbus.agents.runtime.logging import configure_logging
    from nairbus.agents.runtime.settings import LogSettings
    from nairbus.agents.tools.linkbench import run_bench
    from nairbus.agents.tools.netns import LabError
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    # The agents log to files under the run directory; the bench's own log stays quiet unless something is wrong.
    configure_logging(LogSettings(level="warning"))
    try:
        run_bench(settings, Console())
    except (LabError, DatasetMissingError, FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None


@bench_app.command("share")
def share_cmd(
    sensors: Annotated[str, typer.Option(help="Sensors per run, comma-separated (one run each).")] = "3,5",
    rate: Annotated[str, typer.Option(help="The shared uplink's rate (bits/s, k/M suffixes).")] = "1M",
    fps: Annotated[float, typer.Option(help="Frame rate of each sensor.", min=0.1)] = 10.0,
    rtt_ms: Annotated[float, typer.Option(help="Round trip added to the path (a user-space delay line).", min=0)]
    = 0.0,
    seconds: Annotated[float, typer.Option(help="How long each sensor sends.", min=10)] = 40.0,
    stagger: Annotated[float, typer.Option(help="Seconds between one sensor's start and the next's.", min=0)] = 3.0,
    mode: Annotated[str, typer.Option(help="Sensor arguments of every sensor (default: NAIR at the middle split, "
                                           "link fitting as shipped).")] = " ".join(DEFAULT_SHARE_ARGS),
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/link-share.json"),
    run_dir: Annotated[Path, typer.Option(help="Per-run logs, link traces and results.")] = Path("runs/share"),
    data_dir: DataDirOpt = None,
) -> None:
    """Several sensors on one tbf-shaped uplink, started a few seconds apart: each one's share of the link over the
    time all of them send (from their link traces), Jain's fairness index, and whether every frame was decided in
    time -> reports/link-share.json. Needs root (network namespaces and tc), like 'nairbus bench link'."""
    from nairbus.agents.tools.linkbench import LinkBenchSettings
    from nairbus.agents.tools.sharebench import ShareSettings, run_share

    _check_lab()
    rate_bps = parse_rate(rate)
    if rate_bps is None:
        raise typer.BadParameter("--rate: the shared uplink needs a rate")
    counts = tuple(int(n) for n in _split(sensors))
    args = tuple(mode.split())
    command = (f"nairbus bench share --sensors {sensors} --rate {rate} --fps {fps:g} --rtt-ms {rtt_ms:g} "
               f"--seconds {seconds:g} --stagger {stagger:g}"
               + (f" --mode '{mode}'" if args != DEFAULT_SHARE_ARGS else "")
               + (f" --report {report}" if report != Path("reports/link-share.json") else ""))
    try:
        settings = ShareSettings(sensors=counts, rate_bps=rate_bps, fps=fps, rtt_ms=rtt_ms, seconds=seconds,
                                 stagger_s=stagger, args=args, report=report, run_dir=run_dir, command=command,
                                 link=LinkBenchSettings(plot=None, data_dir=data_dir))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        run_share(settings, lambda m: console.print(m, markup=False, highlight=False))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


@bench_app.command("faults")
def faults_cmd(
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="Scenario to run (repeatable; default all): fuzz, flood, broker-kill, fusion-kill, "
                           "fusion-stop, takeover, exhaustion.")] = None,
    fuzz_messages: Annotated[int, typer.Option(help="Hostile messages of the fuzz scenario.", min=1)] = 100_000,
    flood_seconds: Annotated[float, typer.Option(help="How long one sensor floods.", min=0.5)] = 10.0,
    outages: Annotated[str, typer.Option(help="Broker outages to survive, seconds, comma-separated.")] = "2,20",
    kill_runs: Annotated[int, typer.Option(help="Fusion kill -9 and restart, how many times.", min=1)] = 10,
    stop_runs: Annotated[int, typer.Option(help="Fusion SIGSTOP/SIGCONT, how many times.", min=1)] = 10,
    stop_seconds: Annotated[float, typer.Option(help="How long fusion stays frozen.", min=0.5)] = 30.0,
    device_cpus: Annotated[float, typer.Option(
        help="Each device's (sensor's, attacker's) CPU cap in cores, in a control group of its own, so that one box "
             "models separate machines (the hub gets twice a device's share of contended CPU); 0: no isolation. "
             "Needs root and a cgroup cpu controller; without them the report says the run was not isolated.",
        min=0.0)] = 0.5,
    quick: Annotated[bool, typer.Option(help="A short version of every scenario (what CI runs).")] = False,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/faults.json"),
    run_dir: Annotated[Path, typer.Option(help="Agent logs per scenario.")] = Path("runs/faults"),
    data_dir: Annotated[Path | None, typer.Option(
        help="Directory with the Fashion-MNIST IDX files (also NAIRBUS_DATA_DIR).")] = None,
) -> None:
    """Attack a private bus (Mosquitto, fusion, two sensors as processes) and record what the others lost.

    Fuzz (hostile messages on a known sensor's own topics), a flooding sensor, broker kill -9 with outages
    (persistence off and on), fusion kill -9 and SIGSTOP, and on the production config (accounts, ACL, TLS) client-id
    takeover and connection exhaustion from one device's credentials: per scenario the legitimate frames sent,
    decided and lost, whether their labels equal the offline pipeline's, recovery times, victims disconnected and
    fusion memory -> reports/faults.json (rewritten after every scenario). The full run takes about 17 minutes.
    """
    from nairbus.agents.runtime.logging import configure_logging
    from nairbus.agents.runtime.settings import LogSettings
    from nairbus.agents.tools.faultbench import SCENARIOS, FaultSettings, run_faults
    from nairbus.agents.tools.faultbench import quick as quick_settings
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    try:
        settings = FaultSettings(
            scenarios=tuple(scenario) if scenario else SCENARIOS, fuzz_messages=fuzz_messages,
            flood_seconds=flood_seconds, outages_s=tuple(float(o) for o in _split(outages)), kill_runs=kill_runs,
            stop_runs=stop_runs, stop_seconds=stop_seconds, report=report.resolve(), run_dir=run_dir.resolve(),
            data_dir=data_dir, device_cpus=device_cpus or None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if quick:
        settings = quick_settings(settings)
    configure_logging(LogSettings(level="error"))  # the agents log to --run-dir
    try:
        run_faults(settings, lambda m: console.print(m, markup=False, highlight=False))
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None


@bench_app.command("files")
def files_cmd(
    model: Annotated[str, typer.Option(
        help="The model of the watch, live and replay runs (the files are written in its input's colour).")
    ] = "mobilenet",
    own_model: Annotated[bool, typer.Option(
        help="The one-shot folder runs a user's own model on its own frames: a 5-class CNN on 64x64 RGB shapes, "
             "trained here (about a minute), imported, calibrated and scored through the CLI as a user would "
             "(kept under --run-dir); --no-own-model: --model on its test frames.")] = True,
    files: Annotated[int, typer.Option(help="Files of the one-shot folder.", min=1)] = 1000,
    burst: Annotated[int, typer.Option(help="Files written at once into a watched folder.", min=1)] = 200,
    slow_files: Annotated[int, typer.Option(help="Files written in place slowly into a watched folder.", min=1)] = 20,
    write_s: Annotated[float, typer.Option(help="Seconds each slow file takes to write.", min=0.1)] = 2.0,
    live_fps: Annotated[float, typer.Option(help="Frame rate of the live source.", min=1.0)] = 30.0,
    live_frames: Annotated[int, typer.Option(help="Frames of each live run (quiet, busy).", min=1)] = 300,
    replay_frames: Annotated[int, typer.Option(help="Frames of the QoS 1 replay.", min=1)] = 10_000,
    replay_fps: Annotated[float, typer.Option(help="Frame rate of the QoS 1 replay.", min=1.0)] = 150.0,
    hogs: Annotated[int, typer.Option(help="Busy-looping processes beside the agents (default: twice the cores).",
                                      min=0)] = 2 * (os.cpu_count() or 2),
    scenario: Annotated[list[str] | None, typer.Option(
        "--scenario", help="Scenario to run (repeatable; default all): oneshot, watch_burst, slow_writes, live, "
                           "qos1_replay.")] = None,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/files.json"),
    run_dir: Annotated[Path, typer.Option(help="Agent logs and the files of each scenario.")] = Path("runs/files"),
    runtime: Annotated[str, typer.Option(
        help="What runs the one-shot sensor's model: torch, or onnx (the light sensor, on the parts 'nairbus "
             "export-onnx' writes from the model into --run-dir).")] = "torch",
) -> None:
    """A user's files and a live source on a busy device, end to end: every file decided and named, live = offline,
    watched bursts and slowly written files, a live source's skips and link budget quiet and busy, and a QoS 1
    subscriber's share of a long replay -> reports/files.json (rewritten after every scenario)."""
    from nairbus.agents.tools.filebench import SCENARIOS, FileBenchSettings, run_files
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    try:
        settings = FileBenchSettings(
            model=model, own_model=own_model, files=files, burst=burst, slow_files=slow_files, write_s=write_s,
            live_fps=live_fps, live_frames=live_frames, replay_frames=replay_frames, replay_fps=replay_fps, hogs=hogs,
            scenarios=tuple(scenario) if scenario else SCENARIOS, report=report.resolve(), run_dir=run_dir.resolve(),
            runtime=runtime)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        run_files(settings, lambda m: console.print(m, markup=False, highlight=False))
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


@bench_app.command("footprint")
def footprint_cmd(
    model: Annotated[str, typer.Option(help="The model both sensors run (its manifest's sensor artifact for nair).")]
    = "base",
    frames: Annotated[int, typer.Option(help="Frames each sensor streams per mode.", min=20)] = 300,
    device_cpus: Annotated[float, typer.Option(help="The device's CPU budget in cores (a Pi-class quarter core).")]
    = 0.25,
    source: Annotated[Path | None, typer.Option(
        help="The nairbus project both venvs are installed from (default: this checkout).")] = None,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/sensor-footprint.json"),
    run_dir: Annotated[Path, typer.Option(help="The two fresh venvs and the exported parts.")]
    = Path("runs/footprint"),
) -> None:
    """The torch sensor against the light sensor (no torch, ONNX Runtime) on a Pi-class budget: two fresh venvs
    ('nairbus[hub]' and 'nairbus'), each sensor in decision and nair mode in a CPU group of a quarter core with one
    thread — CPU ms per frame, frames per second, peak RSS, start-up to the first frame, install size ->
    reports/sensor-footprint.json."""
    from nairbus.agents.tools.footprint import FootprintSettings, run_footprint

    command = (f"nairbus bench footprint --model {model} --frames {frames} --device-cpus {device_cpus}"
               + (f" --report {report}" if report != Path("reports/sensor-footprint.json") else ""))
    try:
        settings = FootprintSettings(model=model, frames=frames, device_cpus=device_cpus, report=report.resolve(),
                                     run_dir=run_dir.resolve(), command=command,
                                     **({"source": source.resolve()} if source is not None else {}))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        run_footprint(settings, lambda m: console.print(m, markup=False, highlight=False))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


@bench_app.command("scale")
def scale_cmd(
    model: Annotated[str, typer.Option(help="The model (its manifest's sensor artifact).")] = "base",
    frames: Annotated[int, typer.Option(help="Test frames of the pipeline and bus parts.", min=10)] = 600,
    sensors: Annotated[int, typer.Option(help="Sensor processes of the bus part.", min=1)] = 2,
    fps: Annotated[float, typer.Option(help="Frame rate of each sensor process.", min=0.1)] = 60.0,
    cap: Annotated[list[int] | None, typer.Option(
        "--cap", help="A wire cap per frame to measure beside the whole IR (repeatable; default 300).", min=16)] = None,
    swarm: Annotated[list[int] | None, typer.Option(
        "--swarm", help="A swarm size (repeatable; default 50, 200 and 1000).", min=1)] = None,
    swarm_fps: Annotated[float, typer.Option(help="Frame rate of each swarm sensor.", min=0.01)] = 0.5,
    swarm_seconds: Annotated[float, typer.Option(help="Seconds each swarm sends.", min=5.0)] = 30.0,
    overload_sensors: Annotated[int, typer.Option(
        help="Swarm sensors of the overload run, into a fusion agent with --shed-late (0: no overload run).",
        min=0)] = 400,
    overload_fps: Annotated[float, typer.Option(help="Frame rate of each sensor of the overload run.", min=0.1)] = 5.0,
    fleet_agents: Annotated[int, typer.Option(
        help="Fusion agents of the fleet run, sharing --fleet-sensors swarm sensors (below 2: no fleet run).",
        min=0)] = 2,
    fleet_sensors: Annotated[int, typer.Option(help="Swarm sensors of the fleet run.", min=1)] = 200,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/bench.json"),
    run_dir: Annotated[Path, typer.Option(help="The agents' logs.")] = Path("runs/scale"),
) -> None:
    """What the bus costs against the same pipeline in one process (one frame at a time and batched), and how far
    one hub goes under a swarm of sensors -> reports/bench.json (rewritten after every part)."""
    from nairbus.agents.runtime.logging import configure_logging
    from nairbus.agents.runtime.settings import LogSettings
    from nairbus.agents.tools.scalebench import ScaleSettings, run_scale
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    try:
        settings = ScaleSettings(model=model, frames=frames, sensors=sensors, fps=fps,
                                 caps=(None, *(cap if cap else [300])),
                                 swarm=tuple(swarm) if swarm else (50, 200, 1000),
                                 swarm_fps=swarm_fps, swarm_seconds=swarm_seconds, overload_sensors=overload_sensors,
                                 overload_fps=overload_fps, fleet_agents=fleet_agents, fleet_sensors=fleet_sensors,
                                 report=report.resolve(),
                                 run_dir=run_dir.resolve())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    configure_logging(LogSettings(level="error"))  # the agents log to --run-dir
    try:
        run_scale(settings, lambda m: console.print(m, markup=False, highlight=False))
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
