"""``nairbus evaluate wire | nair``: NAIR against its baselines and the image codecs, as JSON reports and plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from nairbus.agents.cli.common import (
    DataDirOpt,
    _fail,
    console,
    evaluate_app,
)
from nairbus.models.evaluation.reports import CostReport, MapReport, NairReport, WireReport, write_report


@evaluate_app.command("wire")
def evaluate_wire_cmd(
    frames: Annotated[int | None, typer.Option(
        help="Test images (the first N; default the whole test split, as reports/images.json).")] = None,
    images_report: Annotated[Path, typer.Option(help="The image codecs' report (nairbus evaluate images).")] = Path(
        "reports/images.json"),
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/wire.json"),
    plot: Annotated[Path, typer.Option(help="Where the PNG plot goes.")] = Path("reports/wire_rate.png"),
    model: Annotated[str, typer.Option(
        help="The model whose NAIR artifacts are measured (the image report must be of the same model: "
             "'nairbus evaluate images --model M').")] = "base",
    data_dir: DataDirOpt = None,
) -> None:
    """NAIR (each shipped artifact: <model>.nair.npz and every <model>.<tag>.nair.npz beside its manifest) against
    the image codecs, in bytes on the wire per frame (whole MQTT PUBLISH).

    Which artifact serves a wire cap is chosen on the validation split; accuracies are on the test split with
    95 % intervals. Needs reports/images.json from 'nairbus evaluate images' on the same frames.
    """
    from nairbus.agents.tools.wire_eval import evaluate_wire, plot_wire
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    try:
        with console.status("evaluating") as status:
            result = evaluate_wire(images_report.resolve(), frames, progress=status.update, data_dir=data_dir,
                                   model=model)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        _fail(str(exc))
    write_report(report, WireReport.from_data(result))
    plot_wire(result, json.loads(images_report.read_text()), plot)
    for cap in (200, 300):
        bar = result["bars"][f"at_{cap}_wire_bytes"]
        nair, best = bar["nair"], bar["best_image"]
        console.print(f"<= {cap} B on the wire: NAIR ({nair['artifact']}) {100 * nair['accuracy']:.2f} %, best image "
                      f"({bar['best_image_family']}) {100 * best['accuracy']:.2f} %"
                      f"{'' if bar['difference_outside_noise'] else ' (inside the 95 % intervals)'}")
    console.print(f"report: {report}; plot: {plot}")


@evaluate_app.command("split")
def evaluate_split_cmd(
    artifact: Annotated[list[Path] | None, typer.Option(
        help="A NAIR artifact to measure (repeat for several; default: models/weights/base.nair.npz, "
             "base.coded.nair.npz and base.coded500.nair.npz, all at stage2).")] = None,
    caps: Annotated[str, typer.Option(help="Comma-separated wire caps in bytes per frame.")] = "100,150,200,300,500",
    frames: Annotated[int | None, typer.Option(help="Test frames (the first N; default all 10 000).")] = None,
    images_report: Annotated[Path | None, typer.Option(
        help="The image codecs' report whose validation table picks the image family per cap (default: "
             "reports/images.json for base, reports/images-<model>.json for another model).")] = None,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/split.json"),
    data_dir: DataDirOpt = None,
) -> None:
    """NAIR at a real split against the strongest image a user could send instead, on the same test frames: per
    wire cap the image family best on validation, McNemar's paired test, the device's share of the model."""
    from dataclasses import replace

    from nairbus.agents.tools.reports import SplitReport
    from nairbus.agents.tools.reports import write_report as write_typed
    from nairbus.agents.tools.split_eval import SplitSettings, evaluate_split
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    try:
        cap_list = tuple(int(c) for c in caps.split(","))
    except ValueError:
        _fail(f"--caps takes whole bytes like 100,200,300, not {caps!r}")
    if any(c < 1 for c in cap_list) or (frames is not None and frames < 1):
        _fail("--caps and --frames must be positive")
    for path in artifact or ():
        if not path.is_file():
            _fail(f"no NAIR artifact at {path} (make one with nairbus calibrate)")
    settings = SplitSettings(caps=cap_list, frames=frames, images_report=images_report, data_dir=data_dir)
    if artifact:
        settings = replace(settings, artifacts=tuple(artifact))
    try:
        with console.status("evaluating") as status:
            result = evaluate_split(settings, progress=status.update)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        _fail(str(exc))
    write_typed(report, SplitReport.from_data(result))
    for entry in result["artifacts"]:
        for row in entry["caps"]:
            console.print(f"{entry['artifact']} ({entry['split']}, {100 * entry['device_mac_share']:.0f} % of the "
                          f"MACs on the device) <= {row['cap_bytes']} B: NAIR {100 * row['nair']['accuracy']:.2f} %, "
                          f"{row['image_family']} {100 * row['image']['accuracy']:.2f} % — {row['verdict']} "
                          f"(p = {row['mcnemar_p']:.3g})")
    console.print(f"report: {report}")


def _nair_wire_section(frames: int, images_report: Path, data_dir: Path | None, model: str = "base") -> dict[str, Any]:
    """The wire bars for reports/nair[-<model>].json (nairbus.agents.tools.wire_eval on the same test frames), or why
    they
    are missing."""
    from nairbus.agents.tools.wire_eval import evaluate_wire, wire_summary
    from nairbus.models.data.fashion_mnist import DatasetMissingError

    try:
        with console.status("bytes on the wire: NAIR per artifact against the image codecs") as status:
            wire = evaluate_wire(images_report.resolve(), None if frames == 10000 else frames,
                                 progress=status.update, data_dir=data_dir, model=model)
    except (FileNotFoundError, DatasetMissingError, ValueError) as exc:
        console.print(f"[yellow]no wire bars in the report: {exc}[/]")
        return {"missing": str(exc)}
    summary = wire_summary(wire)
    for cap in (200, 300):
        bar = summary["bars"][f"at_{cap}_wire_bytes"]
        console.print(f"<= {cap} B on the wire: NAIR ({bar['nair']['artifact']}) {100 * bar['nair']['accuracy']:.2f} %,"
                      f" best image ({bar['best_image_family']}) "
                      f"{100 * bar['images'][bar['best_image_family']]['accuracy']:.2f} %")
    return summary


def _image_codec_curves(images_report: Path, frames: int) -> dict[str, Any]:
    """Every image codec setting of ``reports/images.json`` (same test frames, same lean envelope, whole mature model
    on the decoded frame): payload and wire bytes against accuracy, for the NAIR rate plot; or why it is missing."""
    if not images_report.is_file():
        return {"missing": f"{images_report} is missing; run 'nairbus evaluate images' first"}
    images = json.loads(images_report.read_text())
    if images.get("frames") != frames:
        return {"missing": f"{images_report} has {images.get('frames')} test frames, this run {frames}"}
    keep = ("spec", "mean_payload_bytes", "mean_wire_bytes", "accuracy", "ci95")
    return {"command": images.get("command"), "frames": frames,
            "families": {family: [{k: spec[k] for k in keep} for spec in table["specs"]]
                         for family, table in images["families"].items()}}


@evaluate_app.command("nair")
def evaluate_nair_cmd(
    frames: Annotated[int, typer.Option(help="Test images (the first N; 10 000 = the whole test split).")] = 10000,
    calibration_images: Annotated[int, typer.Option(help="Training images used to calibrate each method.")] = 10000,
    method: Annotated[list[str] | None, typer.Option(help="Only these methods (repeatable).")] = None,
    report: Annotated[Path | None, typer.Option(
        help="Where the JSON report goes, plots beside it (default reports/nair.json, for another model "
             "reports/nair-<model>.json).")] = None,
    model: Annotated[str, typer.Option(
        help="The model to evaluate: base (shipped) or another one, e.g. imported with 'nairbus import-model'.")]
        = "base",
    images_dir: Annotated[Path | None, typer.Option(
        help="Calibrate every method on this folder of unlabeled images (the one the model's artifact was "
             "calibrated on) instead of the data set's calibration images.")] = None,
    joint_klt: Annotated[int, typer.Option(
        help="NAIR's joint-KLT length (as 'nairbus calibrate --joint-klt' made the model's artifact; 0: off). The "
             "report lists every candidate length's validation accuracy beside it.")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """NAIR against naive, pruning, PCA and retrained tail-drop: prefix, loss, rate-accuracy, ablation.

    The report also carries the wire bars (NAIR per shipped artifact against each image codec, in bytes on the wire
    per frame), from reports/images.json — reports/images-<model>.json for another model — ('nairbus evaluate
    images [--model M]') on the same test frames.
    """
    from nairbus.models.evaluation.nair import EvalSettings
    from nairbus.models.zoo import report_path

    _check_nair_options(frames, calibration_images, method)
    started = time.perf_counter()
    train, test, models = _load_nair_models(model, data_dir)
    name = models[model][1].name
    report = report or report_path("nair", name)
    calibration, used_images = _nair_calibration(models[model][0], train, images_dir, calibration_images)
    if joint_klt < 0:
        raise typer.BadParameter(f"--joint-klt must be 0 (off) or a positive component count, not {joint_klt}")
    settings = EvalSettings(frames=frames, calibration_images=used_images, methods=tuple(method or ()),
                            joint_klt=joint_klt)
    result = _run_nair_evaluation(models, model, calibration, train, test, settings, images_dir)
    result["command"] = _nair_command(frames, calibration_images, model, images_dir, joint_klt, method)
    _record_nair_inputs(result, models, model, images_dir, used_images)
    images_report = report.parent / report_path("images", name).name
    result["wire"] = _nair_wire_section(frames, images_report, data_dir, model)
    result["image_codecs"] = _image_codec_curves(images_report, frames)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    _write_nair_report(result, report, name)


def _check_nair_options(frames: int, calibration_images: int, method: list[str] | None) -> None:
    """Refuse an out-of-range --frames or --calibration-images and unknown --method names (usage errors)."""
    from nairbus.models.evaluation.nair import method_specs
    from nairbus.models.zoo import DEFAULT_SPLIT

    if not 1 <= frames <= 10000 or not 100 <= calibration_images <= 55000:
        raise typer.BadParameter("--frames must be in 1..10000 and --calibration-images in 100..55000 (the last "
                                 "5 000 training images are the validation split)")
    unknown = set(method or ()) - set(method_specs(DEFAULT_SPLIT))
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {sorted(unknown)}; choose from {sorted(method_specs('x'))}")


def _load_nair_models(model: str, data_dir: Path | None) -> tuple[Any, Any, dict[str, Any]]:
    """The training and test splits and ``{model: (net, manifest)}``, plus its tail-drop baseline under
    ``"taildrop"`` when one is trained (else a hint); a missing data set or model ends the command."""
    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.data.registry import load_data
    from nairbus.models.store import load_model
    from nairbus.models.zoo import model_option, taildrop_name

    try:
        train, test = load_data("train", data_dir=data_dir), load_data("test", data_dir=data_dir)
        models = {model: load_model(model)}
    except (DatasetMissingError, FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    name = models[model][1].name
    try:
        models["taildrop"] = load_model(taildrop_name(name))
    except FileNotFoundError:
        console.print(f"[yellow]no tail-drop baseline {taildrop_name(name)!r}; run 'nairbus train taildrop"
                      + model_option(name) + "' to include it[/]")
    return train, test, models


def _nair_calibration(net: Any, train: Any, images_dir: Path | None, count: int) -> tuple[Any, int]:
    """The calibration images and how many there are: up to ``count`` of ``images_dir``'s (converted to the
    model's input), else the first ``count`` training images of the seed-0 permutation."""
    import numpy as np

    if images_dir is not None:
        from nairbus.agents.cli.calibrate import read_calibration_folder

        calibration = read_calibration_folder(net.input_spec, images_dir, count)[0]
        return calibration, len(calibration)
    return train.images[np.sort(np.random.default_rng(0).permutation(len(train))[:count])], count


def _run_nair_evaluation(models: dict[str, Any], model: str, calibration: Any, train: Any, test: Any, settings: Any,
                         images_dir: Path | None) -> dict[str, Any]:
    """Every method calibrated on ``calibration`` and measured on ``test`` (choices made on the validation split
    held out of ``train``), with a status line; the report's body."""
    from nairbus.models.data.fashion_mnist import validation_split
    from nairbus.models.evaluation.nair import Evaluator, run_evaluation
    from nairbus.models.zoo import DEFAULT_SPLIT, model_option

    with console.status("evaluating") as status:
        def say(message: str) -> None:
            console.log(message)
            status.update(message)

        validation = validation_split(train)
        source = (f"validation: fashion_mnist.validation_split ({len(validation)} training images, disjoint from the "
                  f"{settings.calibration_images} calibration images)")
        evaluator = Evaluator(models, calibration, test, settings, say, validation=validation,
                              validation_source=source)
        split = models[model][1].default_split or DEFAULT_SPLIT
        calibrate_command = "nairbus calibrate" + model_option(model) + (
            f" --images-dir {images_dir}" if images_dir is not None else "")
        return run_evaluation(evaluator, split, model, calibrate_command)


def _nair_command(frames: int, calibration_images: int, model: str, images_dir: Path | None, joint_klt: int,
                  method: list[str] | None) -> str:
    """The command line that reproduces the report (options left at their defaults are not repeated)."""
    from nairbus.models.zoo import model_option

    suffix = ("" if frames == 10000 else f" --frames {frames}") + (
        "" if calibration_images == 10000 else f" --calibration-images {calibration_images}")
    suffix += model_option(model) + (
        f" --images-dir {images_dir}" if images_dir is not None else "") + (
        f" --joint-klt {joint_klt}" if joint_klt else "")
    return "nairbus evaluate nair" + suffix + "".join(f" --method {m}" for m in method or ())


def _record_nair_inputs(result: dict[str, Any], models: dict[str, Any], model: str, images_dir: Path | None,
                        calibration_images: int) -> None:
    """Add to ``result`` what the evaluation ran on: the input spec, the calibration images, whether the shipped
    artifact is the one evaluated, and the tail-drop baseline's training record."""
    result["input_spec"] = models[model][0].input_spec.model_dump(mode="json")
    result["calibration_source"] = (f"folder {images_dir.name}: {calibration_images} unlabeled image files"
                                    if images_dir is not None else
                                    f"the first {calibration_images} training images of the seed-0 permutation")
    result["shipped_artifact"] = _shipped_artifact_check(model, result)
    if "taildrop" in models:
        td = models["taildrop"][1].as_json()
        result["taildrop_training"] = {k: td.get(k) for k in ("test_accuracy", "train_wall_seconds", "command")}
        result["taildrop_training"].update({k: td[k] for k in ("settings", "fill") if k in td})
        if "selection" in td:
            result["taildrop_training"]["selection"] = {k: v for k, v in td["selection"].items() if k != "history"}


def _write_nair_report(result: dict[str, Any], report: Path, name: str) -> None:
    """Write the JSON report and its plots beside it, print the prefix table and where they went."""
    from nairbus.models.evaluation.nair_plots import write_plots
    from nairbus.models.zoo import is_default_model

    write_report(report, NairReport.from_data(result))
    # the default model's plots are nair_*.png wherever --report puts them; another model's follow its report
    plots = write_plots(result, report.parent, "nair" if is_default_model(name) else report.stem)
    _print_nair_table(result)
    console.print(f"report: {report}; plots: {', '.join(str(p) for p in plots)} ({result['wall_seconds']} s)")


def _shipped_artifact_check(model: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the model's own artifact (``<model>.nair.npz``) is the one this evaluation's NAIR calibrated."""
    from nairbus.models.nair.transform import NairArtifact
    from nairbus.models.store import default_artifact_path

    path = default_artifact_path(model)
    if not path.is_file() or "nair_artifact_sha256" not in result:
        return None
    shipped = NairArtifact.load(path)
    return {"file": path.name, "sha256": shipped.sha256,
            "same_as_evaluated": shipped.sha256 == result["nair_artifact_sha256"],
            "command": shipped.meta.get("provenance", {}).get("command")}


def _print_nair_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"accuracy vs IR received (prefix), {result['frames']} test images; "
                        f"mature model {result['mature_accuracy']:.2%}")
    fractions = list(next(iter(result["methods"].values()))["prefix"]) if result["methods"] else []
    table.add_column("method")
    for f in fractions:
        table.add_column(f"{float(f):.0%}", justify="right")
    for name, m in result["methods"].items():
        table.add_row(name, *(f"{m['prefix'][f]:.2%}" for f in fractions))
    console.print(table)
    if "bars" in result:
        console.print_json(data=result["bars"])


@evaluate_app.command("cost")
def evaluate_cost_cmd(
    model: Annotated[str, typer.Option(
        help="The model whose representations are measured: base (shipped) or another one, e.g. imported with "
             "'nairbus import-model'.")] = "base",
    frames: Annotated[int, typer.Option(help="Test frames measured per representation (the first N).")] = 200,
    warmup: Annotated[int, typer.Option(help="Frames run before the measured ones.")] = 20,
    wire_bytes: Annotated[int, typer.Option(
        help="The frame's wire budget: the image ladder is tried best-first until a message fits it; NAIR packs the "
             "prefix that fits it.")] = 200,
    device_cpus: Annotated[float, typer.Option(
        help="The device's CPU budget in cores (a cgroup cap; 0.25: a quarter of one core, Pi-class).")] = 0.25,
    artifacts_dir: Annotated[Path | None, typer.Option(
        help="Also look here for <model>.<split>.nair.npz artifacts of splits that have none beside the model's "
             "manifest (those are measured with an equivalent, uncalibrated transform).")] = None,
    only: Annotated[list[str] | None, typer.Option(
        help="Only this representation (repeatable): image, nair-<split>, decision, vp-<variant>.")] = None,
    report: Annotated[Path | None, typer.Option(
        help="Where the JSON report goes (default reports/cost.json, for another model "
             "reports/cost-<model>.json).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The cost of each representation on the device: share of the model's MACs, CPU ms per frame and RSS.

    Per representation (image; NAIR at every split point; the decision, the whole model then top-k; each VP variant of
    the shipped family derived from this model) one process with one compute thread runs the sensor's work on the
    first N test frames, one at a time, after a warm-up, in a CPU control group capped at --device-cpus of one core
    (as root; elsewhere uncapped, and the report says why). It records process CPU ms and wall ms per frame inside the
    cap, peak RSS, and the RSS after imports only.
    """
    from nairbus.agents.tools.devicecost import CostSettings, measure_costs
    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.zoo import report_path

    if not 1 <= frames <= 10000 or warmup < 0 or wire_bytes < 1:
        raise typer.BadParameter("--frames must be in 1..10000, --warmup at least 0 and --wire-bytes at least 1")
    settings = CostSettings(model=model, frames=frames, warmup=warmup, wire_bytes=wire_bytes, device_cpus=device_cpus,
                            artifacts_dir=artifacts_dir, only=tuple(only or ()), data_dir=data_dir)
    try:
        with console.status("measuring") as status:
            def say(message: str) -> None:
                console.log(message)
                status.update(message)

            result = measure_costs(settings, say)
    except (FileNotFoundError, DatasetMissingError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    result = {"command": _cost_command(settings), **result}
    report = report or report_path("cost", result["model"])
    write_report(report, CostReport.from_data(result))
    _print_cost_table(result)
    console.print(f"report: {report} ({result['wall_seconds']} s)")


def _cost_command(settings: Any) -> str:
    """The command line that reproduces a cost report (options left at their defaults are not repeated)."""
    from nairbus.agents.tools.devicecost import CostSettings
    from nairbus.models.zoo import model_option

    default = CostSettings()
    parts = ["nairbus evaluate cost" + model_option(settings.model)]
    for name in ("frames", "warmup", "wire_bytes", "device_cpus", "artifacts_dir"):
        value = getattr(settings, name)
        if value != getattr(default, name):
            parts.append(f"--{name.replace('_', '-')} {value}")
    parts += [f"--only {name}" for name in settings.only]
    return " ".join(parts)


def _print_cost_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    isolation = result["isolation"]
    cap = (f"{isolation['device_cpus']} core ({isolation['kind']})" if isolation.get("kind")
           else f"uncapped: {isolation.get('why')}")
    table = Table(title=f"{result['model']}: device cost per frame, {result['frames']} test frames, {cap}, 1 thread",
                  caption="MACs: share of the model's on the device; CPU ms: median (and p90) per frame; wall ms: "
                          "mean inside the cap; RSS MB: peak (imports: after the code's imports, before any model)")
    for column in ("sends", "MACs", "CPU ms", "p90", "wall ms", "fps", "RSS MB", "imports", "wire B"):
        table.add_column(column, justify="left" if column == "sends" else "right")
    for row in result["representations"]:
        if "error" in row:
            table.add_row(row["name"], f"{row['mac_share']:.1%}", row["error"], *[""] * 6)
            continue
        cpu, wall = row["cpu_ms_per_frame"], row["wall_ms_per_frame"]
        table.add_row(row["name"], f"{row['mac_share']:.1%}", f"{cpu['median']:.2f}", f"{cpu['p90']:.2f}",
                      f"{wall['mean']:.2f}", f"{row['frames_per_s']}", f"{row['rss_mb_peak']:.0f}",
                      f"{row['rss_mb_imports']:.0f}", f"{row['wire_bytes_per_frame']:.0f}")
    console.print(table)


@evaluate_app.command("map")
def evaluate_map_cmd(
    model: Annotated[str, typer.Option(
        help="The model whose representations are mapped: base (shipped) or another one, e.g. imported with "
             "'nairbus import-model'.")] = "base",
    frames: Annotated[int | None, typer.Option(
        help="Test frames (the first N; default the whole test split).")] = None,
    validation_frames: Annotated[int, typer.Option(
        help="Frames of the validation split (held out of the training images) every choice is made on.")] = 5000,
    artifacts_dir: Annotated[Path, typer.Option(
        help="Where NAIR artifacts of split points that ship none are looked for, and calibrated into when "
             "missing.")] = Path("build/map-artifacts"),
    calibration_images: Annotated[int, typer.Option(
        help="Training images a missing split's artifact is calibrated on (as 'nairbus calibrate --images').")]
        = 10000,
    report: Annotated[Path | None, typer.Option(
        help="Where the JSON report goes, the PNG beside it (default reports/map.json, for another model "
             "reports/map-<model>.json).")] = None,
    data_dir: DataDirOpt = None,
    coded_split: Annotated[list[str] | None, typer.Option(
        help="Also map range-coded NAIR at this split (repeatable): every allocation of at most 4 bits is "
             "calibrated with --entropy-coding (cached in --artifacts-dir) and per cap the one best on validation "
             "is reported.")] = None,
) -> None:
    """Every representation a sensor can send on one map: accuracy against bytes on the wire and the device's cost.

    Image families (every ladder of models/experiments/images.toml), NAIR at every split point, the decision (whole
    model on the device, top-1) and VP (each variant alone, and the ensemble), each at wire caps from 40 B to the
    whole IR, on the same test frames, beside its share of the model's MACs and the Pi-class CPU ms per frame of
    'nairbus evaluate cost'. The front: per device budget and cap, the best representation on the validation split,
    its test accuracy (95 % interval), the runner-up and McNemar's paired test between them.
    """
    from nairbus.agents.tools.map_eval import MapSettings, evaluate_map
    from nairbus.models.data.fashion_mnist import VALIDATION_IMAGES, DatasetMissingError
    from nairbus.models.evaluation.map import front_summary
    from nairbus.models.evaluation.map_plot import plot_map
    from nairbus.models.zoo import report_path

    if (frames is not None and not 1 <= frames <= 10000) or not 1 <= validation_frames <= VALIDATION_IMAGES \
            or not 1 <= calibration_images <= 60000 - VALIDATION_IMAGES:
        raise typer.BadParameter(f"--frames must be in 1..10000, --validation-frames in 1..{VALIDATION_IMAGES} and "
                                 f"--calibration-images in 1..{60000 - VALIDATION_IMAGES}")
    settings = MapSettings(model=model, frames=frames, validation_frames=validation_frames,
                           artifacts_dir=artifacts_dir, calibration_images=calibration_images, data_dir=data_dir,
                           coded_splits=tuple(coded_split or ()))
    try:
        with console.status("mapping") as status:
            def say(message: str) -> None:
                console.log(message)
                status.update(message)

            result, _entries = evaluate_map(settings, say)
    except (FileNotFoundError, DatasetMissingError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    report = report or report_path("map", result["model"]["name"])
    write_report(report, MapReport.from_data(result))
    plot = plot_map(result, report.with_suffix(".png"))
    for line in front_summary(result["front"]):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"report: {report}; plot: {plot} ({result['seconds']['total']} s)")


@evaluate_app.command("folder")
def evaluate_folder_cmd(
    folder: Annotated[Path, typer.Argument(
        help="Your labelled folder: one sub-folder per class, named by the label (characters outside A-Za-z0-9._- "
             "as _) or the class index, holding PNG/JPEG/WebP/BMP files.")],
    model: Annotated[str, typer.Option(help="The model (shipped, or imported with 'nairbus import-model').")],
    artifact: Annotated[Path | None, typer.Option(
        help="The NAIR artifact (default: the model's own, <model>.nair.npz beside its manifest).")] = None,
    caps: Annotated[str | None, typer.Option(
        help="Per-frame wire caps in bytes, comma-separated (default 60,100,150,200,300,500,1000,2000,4000).")] = None,
    report: Annotated[Path | None, typer.Option(
        help="Where the JSON report goes (default reports/folder-<model>.json).")] = None,
) -> None:
    """Score a model on your own labelled folder: the whole model, NAIR under each wire cap, and (grey models) the
    image mode's codec ladder, each with its 95 % interval. Any model: a shipped one or your imported one."""
    from nairbus.agents.sources.labelled import LabelledFolderError
    from nairbus.agents.tools.folder_eval import FOLDER_CAPS, FolderEvalSettings, evaluate_folder
    from nairbus.agents.tools.reports import write_report as write_typed

    try:
        cap_values = tuple(int(c) for c in caps.split(",")) if caps else FOLDER_CAPS
    except ValueError:
        raise typer.BadParameter(f"--caps takes comma-separated byte counts, got {caps!r}") from None
    if not cap_values or min(cap_values) < 1:
        raise typer.BadParameter("--caps must be positive byte counts")
    settings = FolderEvalSettings(model=model, folder=folder, artifact=artifact, caps=cap_values)
    command = f"nairbus evaluate folder {folder} --model {model}" + (f" --artifact {artifact}" if artifact else "") \
        + (f" --caps {caps}" if caps else "")
    try:
        result = evaluate_folder(settings, command, say=lambda m: console.log(m, highlight=False))
    except (FileNotFoundError, LabelledFolderError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    path = report or Path("reports") / f"folder-{model}.json"
    write_typed(path, result)
    lo, hi = result.whole_model_ci95
    console.print(f"{result.folder.images} images; whole model {100 * result.whole_model_accuracy:.2f} % "
                  f"({100 * lo:.1f}-{100 * hi:.1f}), decision {result.decision_wire_bytes:.0f} B on the wire")
    for name, rows in (("NAIR", result.nair), ("image", result.image)):
        if isinstance(rows, list):
            console.print(f"{name}: " + "; ".join(f"<= {r.cap_bytes} B {100 * r.accuracy:.1f} %" for r in rows))
    console.print(f"report: {path} ({result.seconds:.0f} s)")


@evaluate_app.command("light")
def evaluate_light_cmd(
    frames: Annotated[int | None, typer.Option(help="Test frames compared (default: all 10 000).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        help="Only this shipped model (repeatable; default: every model a sensor runs, the variants included).")]
        = None,
    report: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("reports/light.json"),
    data_dir: DataDirOpt = None,
) -> None:
    """The light sensor's answers against the torch sensor's, on the same test frames.

    Each model's head at every split point, its whole model (the decision mode) and each VP variant are exported to
    ONNX and run by ONNX Runtime (one thread, numpy normalisation: what 'nairbus sensor --runtime onnx' runs) beside
    torch. Per part: decisions and top-5 equal, output difference, both accuracies; where a split has a shipped NAIR
    artifact, the codes compared code by code and the hub's class from either sensor's codes at the demo's budgets
    (100/50/25/10 % of the IR). Minutes per model on all 10 000 frames; progress is printed per part.
    """
    from nairbus.models.data.fashion_mnist import DatasetMissingError
    from nairbus.models.evaluation.light import evaluate_light
    from nairbus.models.evaluation.reports import LightReport

    if frames is not None and not 1 <= frames <= 10000:
        raise typer.BadParameter("--frames must be in 1..10000")
    command = "nairbus evaluate light" + (f" --frames {frames}" if frames else "") \
        + "".join(f" --model {m}" for m in model or ()) \
        + (f" --report {report}" if report != Path("reports/light.json") else "")
    try:
        result = evaluate_light(frames, list(model) if model else None, data_dir,
                                say=lambda m: console.log(m, highlight=False))
    except (FileNotFoundError, DatasetMissingError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    typed = LightReport.from_data({"command": command, **result})
    write_report(report, typed)
    s = typed.summary
    console.print(f"{s.parts} parts on {typed.frames} frames: decisions differ on {s.decisions_differ} of "
                  f"{s.decisions_compared}, top-{typed.top_k} on {s.topk_differ}; codes differ {s.codes_differ} of "
                  f"{s.codes_compared} (at most {s.code_max_delta} step); classes at the demo budgets differ on "
                  f"{s.budget_classes_differ} of {s.budget_classes_compared}; accuracy changed in "
                  f"{s.accuracy_changes} places")
    console.print(f"report: {report} ({typed.wall_seconds:.0f} s)")
