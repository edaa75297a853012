"""A user's own classifier as a :class:`~nairbus.models.architectures.split.SplitModel`: ``torch.export`` programs,
TorchScript files and Python factories, split at a named module or graph node.

A ``torch.export`` program (``torch.export.save``, a ``.pt2`` file) is cut in its graph: the split point is a module
path (``features.6``, the cut is that module's output) or a graph node's name, and the cut must be the only value
that crosses it (a skip connection over the cut is refused with the names of what crosses). A Python model
(``package.module:factory`` plus a state dict) is exported first and then cut the same way, so the runtime never
imports user code. A TorchScript file that offers ``head(x)`` and ``tail(ir)`` methods (``@torch.jit.export``) is
used as is; any other TorchScript file is converted to a ``torch.export`` program (torch's TorchScript converter,
:func:`convert_torchscript`) and cut in that graph at a node name — TorchScript keeps no module boundaries, so
:func:`cut_points` lists the node names, each with the module whose weights it applies last.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import fx, nn

from nairbus.models.architectures.split import InputSpec, check_split

__all__ = ["ModelFormat", "ModelImportError", "SplitProgram", "TorchScriptSplit", "check_fits", "convert_torchscript",
           "cut_points", "detect_format", "export_module", "has_head_and_tail", "load_program", "load_python_factory",
           "load_split_model", "node_modules", "split_program"]

ModelFormat = Literal["torch.export", "torchscript"]
MAX_BATCH = 4096


class ModelImportError(ValueError):
    """A model file that cannot be imported as given; the message says what to change."""


# torch 2.13's own unpickling and copying of an exported program's tree specs raises a FutureWarning on every load
# and deep copy (``isinstance(treespec, LeafSpec)`` is deprecated): torch's code, nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)


def load_exported(path: Path) -> torch.export.ExportedProgram:
    """``torch.export.load`` of a stored program."""
    return torch.export.load(str(path))


def detect_format(path: Path) -> ModelFormat:
    """``torch.export`` for a ``.pt2`` archive, ``torchscript`` for a TorchScript zip; a clear error otherwise."""
    import zipfile

    if not path.is_file():
        raise ModelImportError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ModelImportError(f"{path} is neither a torch.export program (.pt2) nor a TorchScript file; a plain state "
                           f"dict needs --factory package.module:function to build the model it belongs to")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith("archive_format") or "/models/" in name or (name.endswith(".json") and "model" in name)
           for name in names) and not any(name.endswith("constants.pkl") for name in names):
        return "torch.export"
    if any(name.endswith("constants.pkl") or name.endswith("code/__torch__.py") for name in names):
        return "torchscript"
    raise ModelImportError(f"{path}: a zip archive but not one torch writes (neither torch.export nor TorchScript)")


def export_module(module: nn.Module, spec: InputSpec) -> torch.export.ExportedProgram:
    """``torch.export`` of an eval-mode module for a batch of ``spec``'s inputs, batch size dynamic."""
    module.eval()
    example = torch.zeros(2, spec.channels, spec.height, spec.width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))


def _import_factory_module(module_name: str) -> object:
    """Import ``module_name`` as ``python -c`` would: the current directory first (a user's ``mymodel.py``)."""
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module_name)
    finally:
        if added:
            sys.path.remove(here)


def load_python_factory(factory: str, state_dict: Path | None) -> nn.Module:
    """``package.module:function`` (a module in the current directory included) called with no arguments, then
    ``state_dict`` loaded into it (strictly); ``ModelImportError`` in words for anything that goes wrong."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise ModelImportError(f"--factory {factory!r} must be package.module:function")
    try:
        build = getattr(_import_factory_module(module_name), attr)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise ModelImportError(f"--factory {factory}: {exc}") from exc
    try:
        model = build()
    except Exception as exc:  # the user's code: whatever it raises is reported, not a traceback
        raise ModelImportError(f"--factory {factory}: calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelImportError(f"--factory {factory} returned a {type(model).__name__}, not a torch.nn.Module")
    if state_dict is not None:
        if not Path(state_dict).is_file():
            raise ModelImportError(f"state dict {state_dict} cannot be read: not a file")
        try:
            state = torch.load(state_dict, map_location="cpu", weights_only=True)
        except Exception:
            raise ModelImportError(f"state dict {state_dict} is not a PyTorch checkpoint (a state dict saved with "
                                   f"torch.save(model.state_dict(), path))") from None
        try:
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, KeyError, AttributeError, ValueError, TypeError) as exc:  # not this model's
            raise ModelImportError(f"state dict {state_dict} does not load into {factory}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return model.eval()


def _module_path(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [str(entry[0]) for entry in stack.values()]


def _compute_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op in ("call_function", "call_method", "call_module")
            and not (n.op == "call_module" and str(n.target).startswith("_guards"))]


def _crossing(nodes: Sequence[fx.Node], placeholders: Sequence[fx.Node], cut: fx.Node) -> list[str]:
    """Names of the values other than ``cut`` that computations after ``cut`` read from before it."""
    position = nodes.index(cut)
    before = set(nodes[: position + 1]) | set(placeholders)
    return sorted({inp.name for node in nodes[position + 1 :] for inp in node.all_input_nodes
                   if inp in before and inp is not cut})


def cut_points(program: torch.export.ExportedProgram) -> list[str]:
    """Where the program can be split (one tensor crosses), in the order their computation ends: module paths, or
    for a graph that records none (a converted TorchScript file) node names."""
    graph = program.module().graph
    nodes = _compute_nodes(graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for path in _module_path(node):
            if path:
                last[path] = i
    if not last:
        return [n.name for i, n in enumerate(nodes) if i < len(nodes) - 1 and not _crossing(nodes, placeholders, n)]
    ordered = sorted(last.items(), key=lambda kv: kv[1])
    return [path for path, i in ordered if i < len(nodes) - 1 and not _crossing(nodes, placeholders, nodes[i])]


def split_table(program: torch.export.ExportedProgram) -> list[dict[str, Any]]:
    """Each cut point with the IR that would cross it: its shape per frame and its values (the bytes of an 8-bit
    NAIR artifact's whole IR), in the order :func:`cut_points` gives."""
    nodes = _compute_nodes(program.module().graph)
    rows = []
    for point in cut_points(program):
        value = _find_cut(nodes, point).meta.get("val")
        shape = tuple(int(d) for d in value.shape[1:]) if isinstance(value, torch.Tensor) else None
        values = None if shape is None else int(torch.Size(shape).numel())
        rows.append({"point": point, "ir_shape": shape, "values": values})
    return rows


def node_modules(program: torch.export.ExportedProgram) -> dict[str, str]:
    """For each compute node, the module whose weights were applied last at or before it (``stage2.0.conv2`` for
    the nodes of that block's tail): a guide to node names in a graph without module paths."""
    sig = program.graph_signature
    weights = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    owner: dict[str, str] = {}
    current = ""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        used = [weights[inp.name] for inp in node.all_input_nodes if inp.name in weights]
        if used:
            current = used[0].rsplit(".", 1)[0]
        owner[node.name] = current
    return owner


def convert_torchscript(scripted: torch.jit.ScriptModule,
                        shape: tuple[int, int, int]) -> torch.export.ExportedProgram:
    """A TorchScript module as a ``torch.export`` program (torch's converter, run on a batch of inputs of ``shape``,
    channels x height x width), so it can be cut in its graph; a clear :class:`ModelImportError` when the converter
    cannot take it."""
    try:
        from torch._export.converter import TS2EPConverter
    except ImportError as exc:  # pragma: no cover - present in the pinned torch
        raise ModelImportError(f"this torch ({torch.__version__}) has no TorchScript converter: export the model "
                               "with torch.export instead") from exc
    sample = (torch.zeros(2, *shape),)
    try:
        program = TS2EPConverter(scripted, sample).convert()
    except Exception as exc:
        raise ModelImportError(f"torch could not convert this TorchScript model to a torch.export program "
                               f"({exc!s:.300}); export it with torch.export, or give it head(x) and tail(ir) "
                               "methods") from exc
    return program


def _find_cut(nodes: Sequence[fx.Node], at: str) -> fx.Node:
    by_module = [n for n in nodes if at in _module_path(n)]
    if by_module:
        return by_module[-1]
    by_name = [n for n in nodes if n.name == at]
    if by_name:
        return by_name[0]
    raise ModelImportError(f"the model has no module or graph node {at!r} to split at")


class _StaticBatch(nn.Module):
    """Runs a graph exported for a fixed batch size on any batch, in chunks padded to that size."""

    def __init__(self, inner: nn.Module, batch: int) -> None:
        super().__init__()
        self.inner = inner
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            outs.append(self.inner(chunk)[:n])
        return torch.cat(outs)


def _graph_module(root: fx.GraphModule, nodes: Sequence[fx.Node], inputs: dict[fx.Node, str],
                  output: fx.Node) -> fx.GraphModule:
    """A graph of ``nodes`` (with the ``get_attr`` nodes they use), ``inputs`` as its placeholders."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node, name in inputs.items():
        env[node] = graph.placeholder(name)
        env[node].meta = dict(node.meta)
    wanted = set(nodes)

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":
                raise AssertionError(f"{node.name} is used before it is computed")
            env[node] = graph.node_copy(node, lookup)
        return env[node]

    for node in nodes:
        if node in wanted:
            env[node] = graph.node_copy(node, lookup)
    graph.output(env[output])
    graph.eliminate_dead_code()
    return fx.GraphModule(root, graph)


def split_program(program: torch.export.ExportedProgram, at: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Cut ``program`` at module path or node name ``at``: ``(head, tail)`` graph modules."""
    root = program.module()
    nodes = _compute_nodes(root.graph)
    placeholders = [n for n in root.graph.nodes if n.op == "placeholder"]
    outputs = [n for n in root.graph.nodes if n.op == "output"]
    if len(placeholders) != 1:
        raise ModelImportError(f"the model takes {len(placeholders)} inputs; nairbus splits models with one image "
                               f"input")
    flat_out = fx.node.map_arg(outputs[0].args[0], lambda n: n)
    flat = flat_out if isinstance(flat_out, (list, tuple)) else [flat_out]
    out_nodes = [n for n in flat if isinstance(n, fx.Node)]
    if len(out_nodes) != 1:
        raise ModelImportError(f"the model returns {len(out_nodes)} values; nairbus needs one tensor of logits")
    cut = _find_cut(nodes, at)
    position = nodes.index(cut)
    head_nodes, tail_nodes = nodes[: position + 1], nodes[position + 1 :]
    if not tail_nodes:
        raise ModelImportError(f"{at!r} is the model's last computation; split earlier so fusion has a tail to run")
    crossing = _crossing(nodes, placeholders, cut)
    if crossing:
        raise ModelImportError(f"splitting at {at!r} leaves other values crossing the cut ({', '.join(crossing[:6])}"
                           f"{', …' if len(crossing) > 6 else ''}: a skip connection or a size read from an earlier "
                           f"tensor); choose a split point at a block boundary: {', '.join(cut_points(program)[-12:])}")
    value = cut.meta.get("val")
    if value is not None and not isinstance(value, torch.Tensor):
        raise ModelImportError(f"the value at {at!r} is a {type(value).__name__}, not one tensor")
    head = _graph_module(root, head_nodes, {placeholders[0]: "x"}, cut)
    tail = _graph_module(root, tail_nodes, {cut: "ir"}, out_nodes[0])
    return head, tail


def _static_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch size the program was exported for, when it is fixed (None when dynamic)."""
    placeholder = next(n for n in program.module().graph.nodes if n.op == "placeholder")
    value = placeholder.meta.get("val")
    if isinstance(value, torch.Tensor) and isinstance(value.shape[0], int):
        return int(value.shape[0])
    return None


class SplitProgram(nn.Module):
    """An exported program cut at one or more named points: :class:`~nairbus.models.architectures.split.SplitModel`."""

    def __init__(self, program: torch.export.ExportedProgram, points: Sequence[str], spec: InputSpec) -> None:
        super().__init__()
        if not points:
            raise ModelImportError("name at least one split point")
        self.input_spec = spec
        self.split_points = tuple(points)
        batch = _static_batch(program)
        self.heads = nn.ModuleDict()
        self.tails = nn.ModuleDict()
        for point in points:
            head, tail = split_program(program, point)
            key = point.replace(".", "__")
            self.heads[key] = head if batch is None else _StaticBatch(head, batch)
            self.tails[key] = tail if batch is None else _StaticBatch(tail, batch)
        self.whole: nn.Module = program.module() if batch is None else _StaticBatch(program.module(), batch)

    def train(self, mode: bool = True) -> SplitProgram:
        """An exported program is inference-only: always in eval mode (``train()`` is refused by torch.export)."""
        if mode:
            raise ModelImportError("an imported model cannot be trained here; it runs in eval mode only")
        return self

    def head(self, x: torch.Tensor, split: str) -> torch.Tensor:
        check_split(split, self.split_points)
        out: torch.Tensor = self.heads[split.replace(".", "__")](x)
        return out

    def tail(self, ir: torch.Tensor, split: str) -> torch.Tensor:
        check_split(split, self.split_points)
        out: torch.Tensor = self.tails[split.replace(".", "__")](ir)
        return out

    def parameter_count(self) -> int:
        """Parameters of the whole model (its split halves share them)."""
        return sum(p.numel() for p in self.whole.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.whole(x)
        logits: torch.Tensor = out[0] if isinstance(out, (tuple, list)) else out
        return logits


def has_head_and_tail(scripted: torch.jit.ScriptModule) -> bool:
    """Whether a TorchScript module offers its own ``head(x)`` and ``tail(ir)`` methods."""
    return all(hasattr(scripted, name) for name in ("head", "tail"))


class TorchScriptSplit(nn.Module):
    """A TorchScript module with ``head(x)`` and ``tail(ir)`` methods, at its one split point."""

    def __init__(self, scripted: torch.jit.ScriptModule, point: str, spec: InputSpec) -> None:
        super().__init__()
        if not has_head_and_tail(scripted):
            missing = [name for name in ("head", "tail") if not hasattr(scripted, name)]
            raise ModelImportError(f"this TorchScript model lacks {', '.join(missing)}: import it with --split-at a "
                                   "graph node (nairbus import-model FILE --list-splits) to have it converted and cut")
        self.scripted = scripted
        self.input_spec = spec
        self.split_points = (point,)

    def head(self, x: torch.Tensor, split: str) -> torch.Tensor:
        check_split(split, self.split_points)
        out: torch.Tensor = self.scripted.head(x)
        return out

    def tail(self, ir: torch.Tensor, split: str) -> torch.Tensor:
        check_split(split, self.split_points)
        out: torch.Tensor = self.scripted.tail(ir)
        return out

    def parameter_count(self) -> int:
        """Parameters of the scripted model."""
        return sum(p.numel() for p in self.scripted.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.scripted(x)
        return out


def load_program(path: Path, shape: tuple[int, int, int] | None) -> tuple[torch.export.ExportedProgram, ModelFormat]:
    """A model file as a ``torch.export`` program to list cut points in: a ``.pt2`` as it is, a TorchScript file
    converted on inputs of ``shape`` (:func:`convert_torchscript`, which needs it); the format the file was in."""
    model_format = detect_format(path)
    try:
        if model_format == "torch.export":
            return load_exported(path), model_format
        scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ModelImportError(f"{path} does not load as {model_format}: {exc}") from exc
    if shape is None:
        raise ModelImportError("a TorchScript file is converted on a batch of its input shape: give the input's "
                               "channels and size")
    return convert_torchscript(scripted, shape), model_format


def load_split_model(path: Path, model_format: ModelFormat, points: Sequence[str], spec: InputSpec,
                     scripted: Any = None) -> nn.Module:
    """Load a stored model file and cut it at ``points``; a clear :class:`ModelImportError` when that fails.
    ``scripted``: the TorchScript module of ``path`` when the caller has already loaded it."""
    try:
        if model_format == "torch.export":
            return SplitProgram(load_exported(path), points, spec).eval()
        if scripted is None:
            scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return TorchScriptSplit(scripted, points[0], spec).eval()
    except ModelImportError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ModelImportError(f"{path} does not load as {model_format}: {exc}") from exc


def check_fits(model: nn.Module, spec: InputSpec, points: Sequence[str]) -> dict[str, Any]:
    """Run the model on a batch of ``spec``'s inputs: the logits must have one column per label and head → tail must
    equal the whole model at every split point. Returns the IR shape per point."""
    x = torch.randn(3, spec.channels, spec.height, spec.width)
    with torch.no_grad():
        try:
            logits = model(x)
        except Exception as exc:
            raise ModelImportError(f"the model does not run on input {tuple(x.shape[1:])} ({spec.describe()}): "
                               f"{exc}") from exc
        if logits.dim() != 2 or logits.shape[1] != spec.num_classes:
            raise ModelImportError(f"the model returns shape {tuple(logits.shape)}, but the spec names "
                               f"{spec.num_classes} labels")
        shapes: dict[str, Any] = {}
        for point in points:
            ir = model.head(x, point)  # type: ignore[operator]
            if ir.dim() != 4:
                raise ModelImportError(f"the IR at {point!r} has shape {tuple(ir.shape)}; NAIR needs a (N, C, H, W) "
                                   f"feature map")
            again = model.tail(ir, point)  # type: ignore[operator]
            if not torch.allclose(again, logits, rtol=1e-4, atol=1e-4):
                raise ModelImportError(f"head and tail at {point!r} do not give the whole model's logits")
            shapes[point] = list(ir.shape[1:])
    return shapes
