"""``nairbus choose-defaults``: the mode a model's sensors run when none is asked for, read off the model's map.

The map (``nairbus evaluate map``) says per device budget and wire cap which representation wins on the validation
split; :func:`nairbus.models.evaluation.defaults.derive_sensor_defaults` turns that into a mode and a reason with the
map's figures, and this command writes both into the model's manifest (``sensor_defaults``), after checking that a
sensor of the model can run that mode here (grey input for images, the auto table beside the sensor's artifact).
``nairbus sensor`` runs that mode when neither ``--mode`` nor a config file names one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nairbus.agents.cli.common import _fail, app, console


def _runnable(model: str, mode: str) -> str | None:
    """Why a sensor of ``model`` cannot run ``mode`` here (None: it can)."""
    from nairbus.agents.nair.auto import auto_table_path
    from nairbus.models.store import load_model, sensor_artifact_path

    spec = load_model(model)[0].input_spec
    if mode in ("image", "auto") and spec.channels != 1:
        return f"--mode {mode} sends grey images and model {model} takes {spec.describe()}"
    if mode == "auto":
        table = auto_table_path(model, sensor_artifact_path(model))
        if not table.is_file():
            return (f"--mode auto needs its validation table {table} "
                    f"(make it with 'nairbus calibrate-auto --model {model}')")
    return None


@app.command("choose-defaults")
def choose_defaults(
    model: Annotated[str, typer.Option(help="The model (name or manifest path).")] = "base",
    map_report: Annotated[Path | None, typer.Option(
        "--map", help="Its map (default: reports/map.json for base, reports/map-<model>.json for another).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the defaults without writing the manifest.")] = False,
) -> None:
    """Set the mode a model's sensors run by default from the model's map, with why, in its manifest.

    Example: nairbus evaluate map --model base && nairbus choose-defaults --model base
    """
    from nairbus.models.evaluation.defaults import derive_sensor_defaults
    from nairbus.models.store import set_sensor_defaults
    from nairbus.models.zoo import report_path

    path = map_report or report_path("map", model)
    try:
        report = json.loads(path.read_text())
        here = Path.cwd()
        shown = str(path.relative_to(here)) if path.is_absolute() and path.is_relative_to(here) else str(path)
        defaults = derive_sensor_defaults(report, shown)
        problem = _runnable(model, defaults.mode)
    except (OSError, ValueError, KeyError) as exc:
        _fail(f"{path}: {exc} (make the map with 'nairbus evaluate map --model {model}')")
    if problem is not None:
        _fail(f"the map argues for --mode {defaults.mode}, but {problem}; nothing written")
    console.print(f"[bold]{model}[/]: sensors run --mode {defaults.mode} by default\n{defaults.reason}\n"
                  f"[dim]evidence: {defaults.evidence}[/]", soft_wrap=True)
    if not dry_run:
        console.print(f"written to {set_sensor_defaults(model, defaults)}")
