"""``nairbus import-model`` and ``nairbus export-model``: bring your own classifier, or hand one of ours out.

A user's model comes in as a ``torch.export`` program (``.pt2``), a TorchScript file with ``head``/``tail`` methods,
or a Python factory plus state dict; it is cut at the named split point(s), checked against its input spec (given
as options or a small TOML file), and stored with a manifest beside it (both files' sha256, the spec, the labels,
the IR shape at each split point). ``export-model`` writes a native model as a ``torch.export`` program plus the
TOML spec ``import-model`` reads — the path the shipped second architecture takes, exactly as a user's would.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from nairbus.models.architectures.split import InputSpec

console = Console(stderr=True)
DEFAULT_MODEL_DIR = Path("nairbus-models")

SPEC_KEYS = ("channels", "height", "width", "mean", "std", "labels")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        _fail(f"--{what} must be comma-separated numbers, e.g. 0.485,0.456,0.406")


def read_spec_file(path: Path) -> dict[str, Any]:
    """The input spec (and optional ``split``) from a TOML file; a clear error when it cannot be read."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        _fail(f"spec file {path}: {exc}")
    unknown = sorted(set(data) - {*SPEC_KEYS, "split", "size"})
    if unknown:
        known = ", ".join((*SPEC_KEYS, "size", "split"))
        _fail(f"spec file {path}: unknown keys {', '.join(unknown)} (known: {known})")
    if "size" in data:
        data["height"] = data["width"] = data.pop("size")
    return data


def spec_toml(spec: Any, split: str | None = None) -> str:
    """The TOML ``import-model --spec`` reads, for ``spec``."""
    def value(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = ["# nairbus input spec: what the model takes (see 'nairbus import-model --help')"]
    lines += [f"{key} = {value(getattr(spec, key))}" for key in SPEC_KEYS]
    if split:
        lines.append(f"split = {json.dumps(split)}")
    return "\n".join(lines) + "\n"


def _list_splits(model_file: Path, fields: dict[str, Any], factory: str | None = None) -> None:
    """Print where a model file can be split, with the IR each point sends per frame (its shape, its values = the
    bytes of the whole IR at 8 bits): module paths of a ``torch.export`` program (a state dict with ``--factory``
    is exported first), or the node names of a TorchScript file's converted graph (with the module each follows).
    A TorchScript file or a state dict needs ``--channels`` and ``--size`` (or ``--spec``)."""
    from nairbus.models.architectures.imported import (
        ModelImportError,
        export_module,
        load_program,
        load_python_factory,
        node_modules,
        split_table,
    )
    from nairbus.models.architectures.split import InputSpec

    shape = (tuple(int(fields[k]) for k in ("channels", "height", "width"))
             if {"channels", "height", "width"} <= set(fields) else None)
    try:
        if factory is not None:
            if shape is None:
                raise ModelImportError("a state dict is exported on a batch of its input shape")
            spec = InputSpec(channels=shape[0], height=shape[1], width=shape[2], mean=(0.0,) * shape[0],
                             std=(1.0,) * shape[0], labels=("a", "b"))
            program, model_format = export_module(load_python_factory(factory, model_file), spec), "torch.export"
        else:
            program, model_format = load_program(model_file, shape)  # type: ignore[arg-type]
    except ModelImportError as exc:
        _fail(f"{exc} (--channels and --size, or --spec)" if shape is None else str(exc))
    rows = split_table(program)
    owner = node_modules(program) if model_format != "torch.export" else {}
    title = ("split points (module paths, in the order their computation ends)" if model_format == "torch.export"
             else "split points of the converted TorchScript graph (node names; TorchScript keeps no module "
                  "boundaries — each follows the module named)")
    lines = [f"{'point':<24} {'IR per frame':<16} {'values (bytes at 8 bit)':>24}"]
    for row in rows:
        dims = "x".join(str(d) for d in row["ir_shape"]) if row["ir_shape"] else "?"
        after = f"  after {owner.get(row['point']) or 'the input'}" if owner else ""
        lines.append(f"{row['point']:<24} {dims:<16} {row['values'] or '?':>24}{after}")
    console.print(title + ":\n  " + "\n  ".join(lines), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``import-model``, ``export-model``, ``export-images`` and ``export-onnx`` to the ``nairbus`` command."""
    app.command("import-model")(import_model_cmd)
    app.command("export-model")(export_model_cmd)
    app.command("export-images")(export_images_cmd)
    app.command("export-onnx")(export_onnx_cmd)


def import_model_cmd(
    model_file: Annotated[Path, typer.Argument(
        help="torch.export program (.pt2, torch.export.save), TorchScript file (with head/tail methods, or cut at a "
             "graph node after conversion), or a state dict (with --factory).")],
    name: Annotated[str, typer.Option(help="Name the model is known by (sensor/fusion --model NAME).")],
    split_at: Annotated[list[str] | None, typer.Option(
        "--split-at", help="Module path (e.g. features.6) or graph node (e.g. relu_4) to split at; repeat for several "
                           "split points "
                           "(the first is the default). Default: the spec file's 'split'.")] = None,
    spec: Annotated[Path | None, typer.Option(
        help="TOML file with channels, height, width (or size), mean, std, labels and optionally split.")] = None,
    factory: Annotated[str | None, typer.Option(
        help="package.module:function that builds the (untrained) model MODEL_FILE's state dict belongs to.")] = None,
    channels: Annotated[int | None, typer.Option(help="Input channels: 1 grey or 3 RGB.")] = None,
    size: Annotated[str | None, typer.Option(help="Input size HxW or one number (e.g. 32).")] = None,
    mean: Annotated[str | None, typer.Option(
        help="Normalisation mean per channel of [0, 1] pixels, comma-separated.")] = None,
    std: Annotated[str | None, typer.Option(help="Normalisation std per channel, comma-separated.")] = None,
    labels: Annotated[str | None, typer.Option(
        help="Class names in output order, comma-separated, or @FILE with one per line.")] = None,
    list_splits: Annotated[bool, typer.Option(
        "--list-splits", help="Only list where the model can be split (module paths of a torch.export program; node "
                              "names of a TorchScript file's converted graph), then exit.")] = False,
    out_dir: Annotated[Path, typer.Option(
        help=f"Model directory the model and its manifest go to (point ${'NAIRBUS_MODEL_DIR'} at it).")]
        = DEFAULT_MODEL_DIR,
) -> None:
    """Import your own classifier: cut it at a named split point, check it against its input spec, store it with a
    manifest. Then calibrate NAIR for it from a folder of your own unlabeled images ('nairbus calibrate --model NAME
    --images-dir DIR')."""
    from nairbus.models.architectures.imported import ModelImportError
    from nairbus.models.store import import_model

    fields = _spec_fields(spec, channels, size, mean, std, labels)
    if list_splits:
        _list_splits(model_file, fields, factory)
        return
    points, input_spec = _points_and_spec(fields, split_at)
    command = _import_command(model_file, name, points, spec, factory, out_dir)
    provenance = _native_provenance(model_file)
    with console.status(f"importing {model_file} and splitting it at {', '.join(points)}"):
        try:
            path = import_model(model_file, name, points, input_spec, out_dir, factory, command, provenance)
        except (ModelImportError, FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
    _report_import(path, name, input_spec, out_dir)
    from nairbus.agents.cli.common import export_for_light_sensors

    export_for_light_sensors(str(path))


def _spec_fields(spec: Path | None, channels: int | None, size: str | None, mean: str | None, std: str | None,
                 labels: str | None) -> dict[str, Any]:
    """The input spec's fields (and optional ``split``): the ``--spec`` file's, overridden by the options given."""
    fields: dict[str, Any] = read_spec_file(spec) if spec is not None else {}
    if channels is not None:
        fields["channels"] = channels
    if size is not None:
        h, _, w = size.lower().partition("x")
        try:
            fields["height"], fields["width"] = int(h), int(w or h)
        except ValueError:
            _fail(f"--size must be HxW or one number, not {size!r}")
    if mean is not None:
        fields["mean"] = _floats(mean, "mean")
    if std is not None:
        fields["std"] = _floats(std, "std")
    if labels is not None:
        fields["labels"] = _labels(labels)
    return fields


def _labels(text: str) -> list[str]:
    """``--labels``: class names, comma-separated, or ``@FILE`` with one per line (blank lines skipped)."""
    if not text.startswith("@"):
        return [label.strip() for label in text.split(",")]
    try:
        return [line.strip() for line in Path(text[1:]).read_text().splitlines() if line.strip()]
    except OSError as exc:
        _fail(f"--labels {text}: {exc}")


def _points_and_spec(fields: dict[str, Any], split_at: list[str] | None) -> tuple[list[str], InputSpec]:
    """The split points (``--split-at``, else the spec file's ``split``) and the checked input spec; a missing split
    point or spec field, or an invalid spec, ends the command."""
    from pydantic import ValidationError

    from nairbus.models.architectures.split import InputSpec

    points = list(split_at or ([fields["split"]] if "split" in fields else []))
    fields.pop("split", None)
    if not points:
        _fail("name the split point with --split-at (or 'split' in the spec file); --list-splits shows the choices")
    missing = [key for key in SPEC_KEYS if key not in fields]
    if missing:
        _fail(f"the input spec lacks {', '.join(missing)}: give --spec FILE or the options (--channels, --size, "
              f"--mean, --std, --labels)")
    try:
        return points, InputSpec.model_validate(fields)
    except ValidationError as exc:
        _fail(f"input spec: {exc}")


def _import_command(model_file: Path, name: str, points: list[str], spec: Path | None, factory: str | None,
                    out_dir: Path) -> str:
    """The command line the manifest records (options left at their defaults are not repeated)."""
    command = f"nairbus import-model {model_file} --name {name}" + "".join(f" --split-at {p}" for p in points)
    command += (f" --spec {spec}" if spec else "") + (f" --factory {factory}" if factory else "")
    command += f" --out-dir {out_dir}" if out_dir != DEFAULT_MODEL_DIR else ""
    return command


def _report_import(path: Path, name: str, input_spec: InputSpec, out_dir: Path) -> None:
    """Say what was imported (format, parameters, spec, IR shapes) and how agents find it when ``out_dir`` is not on
    their search path."""
    from nairbus.models.manifest import ModelManifest
    from nairbus.models.store import MODEL_DIR_ENV

    manifest = ModelManifest.model_validate_json(path.read_text())
    shapes = ", ".join(f"{p} -> {'x'.join(map(str, s))}" for p, s in (manifest.ir_shapes or {}).items())
    console.print(f"imported {name} ({manifest.format}, {manifest.params} parameters, {input_spec.describe()}; "
                  f"IR {shapes}) -> {path}")
    if out_dir.resolve() not in [p.resolve() for p in _search_path()]:
        console.print(f"agents find it by name when ${MODEL_DIR_ENV}={out_dir} is set, or pass --model {path}")


def _search_path() -> list[Path]:
    from nairbus.models.store import model_search_path

    return model_search_path()


def _native_provenance(model_file: Path) -> dict[str, Any]:
    """What ``export-model`` recorded beside the program (``<file>.json``): the native manifest's training record."""
    beside = model_file.with_name(model_file.name + ".json")
    if not beside.is_file():
        return {}
    try:
        record = json.loads(beside.read_text())
    except (OSError, ValueError):
        return {}
    return {"exported_from": record} if isinstance(record, dict) else {}


def export_model_cmd(
    model: Annotated[str, typer.Argument(help="A native model: shipped name, or the path of its manifest.")],
    out: Annotated[Path, typer.Option(help="The torch.export program to write (.pt2); the TOML input spec goes "
                                           "beside it (.toml) and the native manifest's record (.pt2.json).")],
    split: Annotated[str | None, typer.Option(
        help="Split point the spec file suggests (default: the model's default).")] = None,
) -> None:
    """Write a native model as a torch.export program and the input spec 'import-model' reads."""
    import torch

    from nairbus.models.architectures.imported import export_module
    from nairbus.models.store import input_spec, load_model

    try:
        net, manifest = load_model(model)
    except (FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    if manifest.kind == "imported":
        _fail(f"{model} is already an imported program ({manifest.weights_file})")
    spec = input_spec(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    with console.status(f"exporting {manifest.name}"):
        torch.export.save(export_module(net, spec), str(out))
    chosen = split or manifest.default_split
    out.with_suffix(".toml").write_text(spec_toml(spec, chosen))
    written = manifest.as_json()
    record = {k: written[k] for k in ("name", "architecture", "architecture_id", "config", "sha256", "test_accuracy",
                                      "command", "settings", "selection", "train_wall_seconds", "trained_on")
              if k in written}
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"exported {manifest.name} -> {out} (spec {out.with_suffix('.toml')})")


def export_onnx_cmd(
    model: Annotated[str, typer.Option(help="The model: shipped name, one in $NAIRBUS_MODEL_DIR, or the path of its "
                                            "manifest.")] = "base",
    variants: Annotated[bool, typer.Option(
        "--variants", help="Export the VP family instead: each variant's whole model (what 'nairbus sensor --mode vp "
                           "--runtime onnx' runs), and the family manifest beside them.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        help="Where to write the parts (default: beside the model's manifest, where 'nairbus sensor --runtime onnx' "
             "looks for them). Elsewhere, the folder holds everything a light sensor reads: point it there with "
             "--model DIR/MODEL.json or NAIRBUS_MODEL_DIR=DIR.")] = None,
) -> None:
    """Export what a sensor of MODEL runs without torch (--runtime onnx): the whole model (decision mode) and its
    head at the split of each NAIR artifact beside the manifest, as <model>.<split|whole>.onnx, with their sha256 in
    <model>.onnx.json. With --variants, each VP variant's whole model. import-model and calibrate run it for your
    own model (beside its manifest); run it again after training a model."""
    from nairbus.models.export.onnx import export_family_parts, export_sensor_parts
    from nairbus.models.export.parts import read_parts

    command = ("nairbus export-onnx " + ("--variants" if variants else f"--model {model}")
               + (f" --out-dir {out_dir}" if out_dir is not None else ""))
    what = "the VP family" if variants else model
    try:
        with console.status(f"exporting the device parts of {what} to ONNX"):
            paths = (export_family_parts(out_dir, command=command) if variants
                     else [export_sensor_parts(model, out_dir, command=command)])
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        _fail(str(exc))
    for path in paths:
        record = read_parts(path)
        for name, part in record.parts.items():
            console.print(f"{record.model_name} {name}: {path.parent / part.file} (sha256 {part.sha256[:12]}…)",
                          markup=False, highlight=False)
        console.print(f"recorded in {path}", markup=False, highlight=False)


def export_images_cmd(
    out: Annotated[Path, typer.Option(help="Folder to write the image files into (created).")],
    split: Annotated[str, typer.Option(
        help="calibration (the training images 'nairbus calibrate' fits on: the first of the seed-0 permutation, "
             "never the validation split), validation, or test.")] = "calibration",
    count: Annotated[int, typer.Option(help="How many images.")] = 1000,
    colour: Annotated[str, typer.Option(help="grey, or rgb (grey replicated, as a colour camera's file).")] = "grey",
    image_format: Annotated[str, typer.Option("--format", help="png or jpeg.")] = "png",
    size: Annotated[int | None, typer.Option(help="Resize to SIZE x SIZE (default: the data set's 28).")] = None,
    labelled: Annotated[bool, typer.Option(help="Write each image into a sub-folder named by its class (the "
                                                "labelled folder 'calibrate --validation-dir' reads).")] = False,
    dataset: Annotated[str, typer.Option(help="A registered data set (models.data.registry).")] = "fashion-mnist",
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Directory with the Fashion-MNIST IDX files (also NAIRBUS_DATA_DIR).")] = None,
) -> None:
    """Write data-set images as unlabeled files (img-<index>.png), as a camera would: the folder
    'calibrate --images-dir' and 'sensor --folder' read; with --labelled, sorted into one sub-folder per class, as a
    user sorts a few hundred frames to choose settings on ('calibrate --wire-bytes N --validation-dir')."""
    import numpy as np
    from PIL import Image

    from nairbus.agents.sources.labelled import class_folder_name
    from nairbus.models.data.fashion_mnist import DatasetMissingError, validation_split
    from nairbus.models.data.registry import get_dataset

    if colour not in ("grey", "rgb") or image_format not in ("png", "jpeg"):
        _fail("--colour is grey or rgb, --format png or jpeg")
    try:
        info = get_dataset(dataset)
        data = info.load("test" if split == "test" else "train", data_dir, None)
    except ValueError as exc:
        _fail(str(exc))
    except DatasetMissingError as exc:
        _fail(str(exc))
    if split == "calibration":
        indices = np.sort(np.random.default_rng(0).permutation(len(data))[: min(count, len(data) - 5000)])
    elif split == "validation":
        hold = validation_split(data)
        indices = np.sort(np.random.default_rng(0).permutation(len(data))[len(data) - len(hold):])[:count]
    elif split == "test":
        indices = np.arange(min(count, len(data)))
    else:
        _fail(f"--split is calibration, validation or test, not {split!r}")
    out.mkdir(parents=True, exist_ok=True)
    suffix = "png" if image_format == "png" else "jpg"
    names = [class_folder_name(label) for label in info.spec.labels or ()]
    for index in indices.tolist():
        folder = out / names[int(data.labels[index])] if labelled else out
        folder.mkdir(exist_ok=True)
        image = Image.fromarray(data.images[index])
        if colour == "rgb":
            image = image.convert("RGB")
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        if image_format == "jpeg":
            image.save(folder / f"img-{index:05d}.{suffix}", quality=90)
        else:
            image.save(folder / f"img-{index:05d}.{suffix}")
    console.print(f"wrote {len(indices)} {colour} {image_format.upper()} files of the {split} images -> {out}"
                  + (f" (one sub-folder per class: {', '.join(names)})" if labelled else ""))
