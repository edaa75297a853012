"""``nairbus demo``: the whole bus on one machine, measured against the offline evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nairbus.agents.cli.common import (
    DataDirOpt,
    _fail,
    app,
)


@app.command()
def demo(
    frames: Annotated[int, typer.Option(help="Test frames per budget (10 000 = the whole test split).")] = 10000,
    sensors: Annotated[int, typer.Option(help="Sensor agents sharing the frames.")] = 3,
    budgets: Annotated[str, typer.Option(help="Comma-separated fractions of the IR per frame.")] = "1,0.5,0.25,0.1",
    wire_budgets: Annotated[str | None, typer.Option(
        help="Comma-separated wire bytes per frame (MQTT PUBLISH bytes, as the sensor's --budget N), run instead "
             "of --budgets: e.g. 200,300 for a range-coded artifact.")] = None,
    artifact: Annotated[Path | None, typer.Option(
        help="The NAIR artifact the sensors and the offline evaluator use (default: models/weights/base.nair.npz), "
             "e.g. models/weights/base.coded.nair.npz.")] = None,
    vp: Annotated[bool, typer.Option("--vp/--no-vp", help="Also run Variant Parallelism live (default).")] = True,
    fps: Annotated[float | None, typer.Option(
        help="Replay rate per sensor (default: what one fusion agent on this kind of machine keeps up with).")] = None,
    broker: Annotated[str | None, typer.Option(
        help="host:port of a broker to use instead of a private one.")] = None,
    report: Annotated[Path | None, typer.Option(help="Where the JSON report goes.")] = None,
    data_dir: DataDirOpt = None,
    runtime: Annotated[str, typer.Option(
        help="What runs the sensors' model work: torch (the weights) or onnx (the light sensor: the device parts "
             "exported to ONNX first, into the run folder; the VP variants too).")] = "torch",
) -> None:
    """End-to-end demo: private Mosquitto, a fusion agent, sensors replaying the test set, table per budget."""
    from dataclasses import replace

    from nairbus.agents.tools.demo import DemoSettings, run_demo
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    fractions, wire, target = _fractions(budgets), _wire_budgets(wire_budgets), _broker(broker)
    if frames < 1 or sensors < 1 or (fps is not None and fps <= 0):
        raise typer.BadParameter("frames >= 1, sensors >= 1, fps > 0")
    if artifact is not None and not artifact.is_file():
        _fail(f"no NAIR artifact at {artifact} (make one with nairbus calibrate)")
    if artifact is not None and runtime != "torch":
        raise typer.BadParameter("--artifact runs with --runtime torch (the light sensor takes the exported one)")
    from nairbus.agents.runtime.logging import configure_logging
    from nairbus.agents.runtime.settings import LogSettings

    # The agents log to files under runs/demo; the demo's own connection chatter would scroll its table away.
    configure_logging(LogSettings(level="warning"))
    if runtime not in ("torch", "onnx"):
        raise typer.BadParameter("--runtime is torch or onnx")
    settings = DemoSettings(budgets=fractions, wire_budgets=wire, artifact=artifact, vp=vp, sensors=sensors,
                            frames=frames, broker=target, data_dir=data_dir, runtime=runtime)
    if fps is not None:
        settings = replace(settings, fps_per_sensor=fps)
    if report:
        settings = replace(settings, report=report)
    try:
        run_demo(settings, Console())
    except (DatasetMissingError, FileNotFoundError, RuntimeError, ConnectionError) as exc:
        _fail(str(exc))


def _fractions(budgets: str) -> tuple[float, ...]:
    try:
        fractions = tuple(float(b) for b in budgets.split(","))
    except ValueError as exc:
        raise typer.BadParameter("budgets must be numbers like 1,0.5,0.25") from exc
    if any(not 0 < f <= 1 for f in fractions):
        raise typer.BadParameter("budgets are fractions of the IR in (0, 1]")
    return fractions


def _wire_budgets(wire_budgets: str | None) -> tuple[int, ...]:
    if not wire_budgets:
        return ()
    try:
        wire = tuple(int(b) for b in wire_budgets.split(","))
    except ValueError as exc:
        raise typer.BadParameter("--wire-budgets takes whole bytes like 200,300") from exc
    if any(b < 1 for b in wire):
        raise typer.BadParameter("--wire-budgets: each at least 1 byte")
    return wire


def _broker(broker: str | None) -> tuple[str, int] | None:
    if not broker:
        return None
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("--broker expects host:port")
    return (host, int(port))


# Variant Parallelism commands (train variants, evaluate vp, capture, demo-vp) live in nairbus.agents.cli.vp.
