"""What every command module shares: the app and its groups, the console, common options and helpers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(
    rich_markup_mode=None,
    help="nairbus: an MQTT bus for distributed deep-learning inference (NAIR split computing) on IoT devices.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"nairbus {version('nairbus')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("nairbus (not installed)")
        raise typer.Exit


@app.callback()
def _quiet_logs(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the installed version and exit.")] = False,
) -> None:
    """Commands log warnings and errors only (agents configure their own logging from their settings)."""
    del show_version
    from nairbus.agents.runtime.logging import configure_logging
    from nairbus.agents.runtime.settings import LogSettings

    configure_logging(LogSettings(level="warning"))


train_app = typer.Typer(
    help="Train the models nairbus ships (seeded; weights and manifest land in models/weights).",
    rich_markup_mode=None, no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file (also NAIRBUS_CONFIG).")]
BrokerOpt = Annotated[str | None, typer.Option(
    "--broker", help="The MQTT broker: host, host:port, mqtt://[user@]host[:port] or mqtts://... (TLS with the "
                     "system's CAs); overrides the config file and NAIRBUS_BROKER__HOST/PORT.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory with the Fashion-MNIST IDX files (also NAIRBUS_DATA_DIR)."),
]


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError as exc:
        raise typer.BadParameter("expected i/n, e.g. 0/3") from exc
    return (i, n)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}")  # a message may hold brackets: pip install 'nairbus[camera]'
    raise typer.Exit(2)


def _load_config(config: Path | None, overrides: dict[str, Any], broker: str | None = None) -> Any:
    from pydantic import ValidationError

    from nairbus.agents.runtime.config import load_config
    from nairbus.agents.runtime.settings import parse_broker

    try:
        if broker is not None:
            overrides = {**overrides, "broker": parse_broker(broker)}
        return load_config(config, overrides)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        _fail(f"invalid configuration: {exc}")


def _training_progress(progress: Progress, label: str) -> Any:
    task = progress.add_task(label, total=None)

    def report(kind: str, done: int, total: int, info: dict[str, float]) -> None:
        if kind == "step":
            progress.update(task, completed=done, total=total,
                            description=f"{label} epoch {int(info['epoch'])} loss {info['loss']:.3f} "
                                        f"train acc {info['train_acc']:.3f}")
        elif kind == "validation":
            progress.console.print(f"  validation accuracy {info['validation_acc']:.4f}")
        else:
            progress.console.print(f"epoch {done}/{total}: loss {info['loss']:.4f}, train acc {info['train_acc']:.4f}"
                                   f", {info['seconds']:.0f} s")

    return report

evaluate_app = typer.Typer(
    help="Evaluate on the test split; JSON reports and PNG plots under reports/.",
    rich_markup_mode=None, no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


def export_for_light_sensors(model: str) -> None:
    """After ``import-model`` or ``calibrate`` wrote a user's model or artifact: export what its light sensor runs
    (``nairbus export-onnx``: the whole model, the head at each artifact's split) beside the manifest, so a device
    copy of that folder is complete. The shipped weights are left as they are (exported on demand, never into the
    installed package); without the exporter (the sensor-only install) or on an export error, a warning says how."""
    from nairbus.models.catalog import locate_model
    from nairbus.models.store import WEIGHTS_DIR

    name, directory = locate_model(model)
    if directory.resolve() == WEIGHTS_DIR.resolve():
        return
    hint = f"run 'nairbus export-onnx --model {directory / (name + '.json')}' on the hub for light sensors"
    try:
        from nairbus.models.export.onnx import export_sensor_parts

        with console.status(f"exporting {name}'s device parts to ONNX for light sensors"):
            path = export_sensor_parts(str(directory / f"{name}.json"), None,
                                       command=f"nairbus export-onnx --model {directory / (name + '.json')}")
    except ImportError as exc:
        console.print(f"[yellow]warning:[/] no ONNX exporter here ({exc.name}); {escape(hint)}")
        return
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        console.print(f"[yellow]warning:[/] device parts not exported: {escape(str(exc)[:300])}; {escape(hint)}")
        return
    console.print(f"device parts for light sensors -> {escape(str(path))}")
