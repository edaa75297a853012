"""Joint training of the VP variant family, and the committed weights and manifest it produces.

All variants train together on the same augmented batches (each resamples the 28x28 batch to its own resolution).
The loss is the paper's — one cross-entropy per variant plus one on the fused output, where the fused output is the
weighted mean of the variants' softmax outputs, i.e. exactly what the fusion node computes with ``k`` = all classes —
plus, as an optional knob, distillation from the mature model (KL divergence to its temperature-softened outputs,
computed once per training image and its mirror image before training; the +-2 pixel crop jitter of a batch is not
re-run through the teacher). Seeded; uses a GPU when one is present and never requires one. By default each variant
runs through ``torch.compile`` (1.6x faster per step on this project's 2-core CPU; ``compile=False`` runs eagerly).

Training sees training images only: by default the 55 000 outside the validation split, whose ensemble accuracy
after every epoch chooses the epoch whose weights are kept (the manifest's ``selection``). The
test split is read after the last epoch, to record each variant's and the ensemble's accuracy in the manifest.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nairbus.models.architectures.resnet import ResNet, preprocess, with_memory_format
from nairbus.models.data.fashion_mnist import Dataset, fit_split, validation_split
from nairbus.models.data.registry import dataset_labels, load_data
from nairbus.models.store import WEIGHTS_DIR, load_model, read_manifest, save_model
from nairbus.models.training.loop import ProgressFn, Schedule, one_cycle
from nairbus.models.training.mature import augment_with_flip, pick_device
from nairbus.models.vp.family import LoadedVariant, load_family, softmax_outputs
from nairbus.models.vp.fusion import all_subsets, check_k, fuse_batch, subset_key
from nairbus.models.vp.manifest import FAMILY_NAME, FamilyManifest
from nairbus.models.vp.variants import (
    BUDGET_RATIO,
    VARIANTS,
    VariantSpec,
    cost,
    derive_config,
    fusion_weights,
    weights_name,
)


@dataclass(frozen=True, slots=True)
class VpTrainSettings:
    """Hyper-parameters of the joint training (all of them: the manifest records this object)."""

    epochs: int = 24
    """Epochs of the first (by default the only) learning-rate cycle: the mature model's own training length,
    fixed before training; which of those epochs' weights are kept is chosen on the validation split."""
    batch_size: int = 256
    max_lr: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    crop_padding: int = 2
    fused_loss_weight: float = 1.0
    distill_weight: float = 0.5
    """Share of each variant's loss taken by distillation from the mature model (0 turns it off)."""
    distill_temperature: float = 2.0
    teacher: str = "base"
    seed: int = 0
    threads: int = 0
    compile: bool = True
    """Run each variant through ``torch.compile`` for training (needs a C compiler on CPU; same maths)."""
    restart_epochs: int = 24
    """Epochs of each warm restart (a further one-cycle schedule) after the first ``epochs``; 0 = none."""
    restart_max_lr: float = 0.1
    restarts: int = 0
    """How many warm restarts follow the first cycle (each ``restart_epochs`` long, peaking at ``restart_max_lr``)."""
    validation_images: int = 5000
    """Training images held out as the validation split (:func:`fashion_mnist.validation_split`):
    the family trains
    on the others, and after every epoch the whole ensemble is measured there; the epoch with the best validation
    accuracy is the one kept. 0 trains on all 60 000 and keeps the last cycle (how the shipped family
    was made)."""

    def cycles(self) -> list[tuple[int, float]]:
        """The learning-rate cycles as ``(epochs, max_lr)``: the first, then the warm restarts if any."""
        out = [(self.epochs, self.max_lr)]
        if self.restart_epochs > 0:
            out.extend([(self.restart_epochs, self.restart_max_lr)] * self.restarts)
        return out


def fused_log_probs(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """log of the weighted mean of the variants' softmax outputs (the fusion rule with every class reported)."""
    total = float(sum(weights))
    stacked = torch.stack([F.log_softmax(z, dim=1) + float(np.log(w / total)) for z, w in zip(logits, weights,
                                                                                                strict=True)])
    return torch.logsumexp(stacked, dim=0)


def train_variants(
    family: Sequence[VariantSpec],
    train: Dataset,
    settings: VpTrainSettings,
    teacher: nn.Module | None = None,
    progress: ProgressFn | None = None,
    start_from: Mapping[str, ResNet] | None = None,
    cycles_done: int = 0,
    validation: Dataset | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, ResNet]:
    """Train the family jointly on ``train``; returns the variants in eval mode, by name.

    With ``validation``, the ensemble (top-k fusion, k = classes/2) is measured on it after every epoch (and, when
    resuming, on the starting weights); the variants returned are those of the best epoch (ties: the earlier), and
    each measurement is appended to ``history``.

    Each learning-rate cycle (see :meth:`VpTrainSettings.cycles`) starts a fresh optimiser and reseeds with
    ``seed + cycle``, so ``start_from`` — the variants as a run with the same settings left them after its first
    ``cycles_done`` cycles — lets training run only the later cycles and reach what the whole run would.
    """
    cycles = settings.cycles()
    if (start_from is None) != (cycles_done == 0) or not 0 <= cycles_done < len(cycles):
        raise ValueError(f"cannot resume after {cycles_done} cycle(s) of {len(cycles)} "
                         f"{'with' if start_from is not None else 'without'} starting weights")
    device, weights, models = _initial_variants(family, settings, start_from)
    soft = None
    if teacher is not None and settings.distill_weight > 0:
        soft = _teacher_targets(teacher.to(device), train.images, settings.distill_temperature)
        if progress is not None:
            progress("teacher", 1, 1, {})
    run = _JointRun(models, [weights[name] for name in models], train, settings, soft, device, progress)
    selector = _EpochSelector(models, weights, validation, progress, history if history is not None else [])
    _run_cycles(run, cycles, cycles_done, settings.seed, selector)
    selector.keep_best()
    out = {}
    for name, m in models.items():
        m.eval()
        out[name] = with_memory_format(m.to("cpu"), torch.contiguous_format)
    return out


def _initial_variants(
    family: Sequence[VariantSpec], settings: VpTrainSettings, start_from: Mapping[str, ResNet] | None,
) -> tuple[torch.device, dict[str, float], dict[str, ResNet]]:
    """The device, the fusion weights and the seeded (or resumed) variants on that device, channels-last."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    device = pick_device()
    weights = fusion_weights(family)
    models = {v.name: ResNet(derive_config(v)) for v in family}
    if start_from is not None:
        for name, m in models.items():
            m.load_state_dict(start_from[name].state_dict())
    models = {name: with_memory_format(m.to(device), torch.channels_last) for name, m in models.items()}
    return device, weights, models


class _EpochSelector:
    """Measures the ensemble on the validation split after each epoch and remembers the best epoch's weights."""

    def __init__(self, models: dict[str, ResNet], weights: dict[str, float], validation: Dataset | None,
                 progress: ProgressFn | None, log: list[dict[str, Any]]) -> None:
        self.models, self.weights, self.validation, self.progress, self.log = models, weights, validation, progress, log
        self.best_accuracy = -1.0
        self.best_state: dict[str, dict[str, torch.Tensor]] | None = None

    def validate(self, cycle: int, epochs_run: int) -> None:
        """Measure the ensemble on ``validation`` after ``epochs_run`` epochs (in learning-rate cycle ``cycle``)."""
        validation = self.validation
        if validation is None:
            return
        probs = {name: softmax_outputs(m, validation.images) for name, m in self.models.items()}
        n_classes = len(dataset_labels())
        k = check_k(n_classes // 2, n_classes)
        ensemble = float((fuse_batch(probs, self.weights, k).argmax(1) == validation.labels).mean())
        self.log.append({"cycles": cycle, "epochs": epochs_run, "validation_ensemble_accuracy": ensemble,
                         "validation_variant_accuracy": {name: float((p.argmax(1) == validation.labels).mean())
                                                         for name, p in probs.items()}})
        if self.progress is not None:
            self.progress("validation", len(self.log), len(self.log), {"validation_acc": ensemble,
                                                                       "epochs": epochs_run})
        if ensemble > self.best_accuracy:
            self.best_accuracy = ensemble
            self.best_state = {name: {k_: v.detach().clone() for k_, v in m.state_dict().items()}
                               for name, m in self.models.items()}

    def after_epoch(self, cycle: int, offset: int) -> Callable[[int], bool] | None:
        """The per-epoch hook of cycle ``cycle`` (its epochs counted from ``offset``); None without validation."""
        if self.validation is None:
            return None

        def hook(epoch: int) -> bool:
            self.validate(cycle + 1, offset + epoch)
            return False

        return hook

    def keep_best(self) -> None:
        """Load the best epoch's weights back into the variants (nothing to do when none was measured)."""
        if self.best_state is not None:
            for name, m in self.models.items():
                m.load_state_dict(self.best_state[name])


def _run_cycles(run: _JointRun, cycles: list[tuple[int, float]], cycles_done: int, seed: int,
                selector: _EpochSelector) -> None:
    """Run the learning-rate cycles after the first ``cycles_done``, each reseeded with ``seed + cycle``."""
    done = 0
    total = sum(epochs for epochs, _ in cycles[cycles_done:])
    before = sum(e for e, _ in cycles[:cycles_done])
    if cycles_done:
        selector.validate(cycles_done, before)
    for cycle, (epochs, max_lr) in enumerate(cycles):
        if cycle < cycles_done:
            continue
        run.cycle(seed + cycle, epochs, max_lr, done, total, selector.after_epoch(cycle, before + done))
        done += epochs


def _teacher_targets(teacher: nn.Module, images: np.ndarray, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mature model's softened outputs for every training image and for its mirror image."""
    return (torch.from_numpy(softmax_outputs(teacher, images, temperature=temperature)),
            torch.from_numpy(softmax_outputs(teacher, images, temperature=temperature, flip=True)))


class _JointRun:
    """The joint training loop: one cross-entropy (and distillation) per variant plus NLL of the fused output."""

    def __init__(self, models: dict[str, ResNet], weights: list[float], train: Dataset, settings: VpTrainSettings,
                 soft: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device,
                 progress: ProgressFn | None) -> None:
        self.models, self.weights, self.settings, self.soft = models, weights, settings, soft
        self.device, self.progress = device, progress
        self.forwards: list[Callable[[torch.Tensor], torch.Tensor]] = [
            torch.compile(m) if settings.compile else m for m in models.values()
        ]
        self.compiled_once = not settings.compile
        self.x_all = preprocess(torch.from_numpy(train.images))
        self.y_all = torch.from_numpy(train.labels)

    def cycle(self, seed: int, epochs: int, max_lr: float, done: int, total: int,
              after_epoch: Callable[[int], bool] | None = None) -> None:
        """One one-cycle schedule of ``epochs`` with a fresh optimiser, seeded with ``seed``."""
        s = self.settings
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        one_cycle(self.models.values(), len(self.y_all), lambda idx: self._loss(idx, generator),
                  Schedule(epochs, s.batch_size, max_lr, s.weight_decay), generator, self.progress, done, total,
                  after_epoch=after_epoch)

    def _loss(self, idx: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, temp = self.settings, self.settings.distill_temperature
        x, flipped = augment_with_flip(self.x_all[idx], s.crop_padding, generator)
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        y = self.y_all[idx].to(self.device)
        if not self.compiled_once:
            self.forwards, logits = _first_forward(self.forwards, list(self.models.values()), x)
            self.compiled_once = True
        else:
            logits = [forward(x) for forward in self.forwards]
        lam = s.distill_weight if self.soft is not None else 0.0
        target = None
        if self.soft is not None:
            target = torch.where(flipped.view(-1, 1), self.soft[1][idx], self.soft[0][idx]).to(self.device)
        loss = torch.zeros((), device=self.device)
        for z in logits:
            ce = F.cross_entropy(z, y, label_smoothing=s.label_smoothing)
            if target is not None:
                kd = F.kl_div(F.log_softmax(z / temp, dim=1), target, reduction="batchmean") * temp * temp
                loss = loss + (1 - lam) * ce + lam * kd
            else:
                loss = loss + ce
        fused = fused_log_probs(logits, self.weights)
        return loss + s.fused_loss_weight * F.nll_loss(fused, y), fused, y


def _first_forward(
    forwards: list[Callable[[torch.Tensor], torch.Tensor]], eager: list[ResNet], x: torch.Tensor,
) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], list[torch.Tensor]]:
    """Run the first batch through the compiled variants; if compiling fails, warn why and go on eagerly."""
    try:
        return forwards, [forward(x) for forward in forwards]
    except Exception as exc:  # any compiler failure (no C compiler, unsupported op) falls back to eager
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {reason}); training eagerly", RuntimeWarning,
                      stacklevel=2)
        return list(eager), [m(x) for m in eager]


def family_accuracy(probs: Mapping[str, np.ndarray], labels: np.ndarray, weights: Mapping[str, float],
                    k: int) -> dict[str, float]:
    """Accuracy of every non-empty subset of variants under the top-``k`` fusion rule, keyed by :func:`subset_key`."""
    return {subset_key(combo): float((fuse_batch(probs, weights, k, combo).argmax(1) == labels).mean())
            for combo in all_subsets(list(probs))}


def train_family(
    settings: VpTrainSettings = VpTrainSettings(),
    family: Sequence[VariantSpec] = VARIANTS,
    data_dir: str | Path | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: ProgressFn | None = None,
    command: str = "nairbus train variants",
    train: Dataset | None = None,
    test: Dataset | None = None,
    resume_from: Path | None = None,
    validation: Dataset | None = None,
) -> Path:
    """Train the family, measure it on the test split, write each variant's weights and the family manifest.

    ``resume_from`` is a directory holding a family trained with these settings but fewer warm restarts: its weights
    stand in for the cycles it ran, which are not re-run, and the manifest records where they came from.
    """
    _check_budget(family)
    earlier = _earlier_cycles(resume_from, family, settings) if resume_from is not None else None
    if train is None:
        train, validation = _training_splits(settings, data_dir, validation)
    teacher = None
    teacher_ref: dict[str, Any] | None = None
    if settings.distill_weight > 0:
        teacher, teacher_manifest = load_model(settings.teacher)
        teacher_ref = {"name": teacher_manifest.name, "sha256": teacher_manifest.sha256}
    started = time.perf_counter()
    history: list[dict[str, Any]] = []
    models = train_variants(family, train, settings, teacher, progress,
                            start_from={n: v.model for n, v in earlier.variants.items()} if earlier else None,
                            cycles_done=earlier.cycles if earlier else 0, validation=validation, history=history)
    wall = time.perf_counter() - started
    scores = _test_scores(models, family, test if test is not None else load_data("test", data_dir=data_dir))
    record = _TrainingRecord(settings, command, f"{pick_device().type}, {torch.get_num_threads()} threads, "
                             f"{platform.machine()}", wall, teacher_ref, earlier)
    variants = [_save_variant(spec, models[spec.name], scores, record, out_dir) for spec in family]
    manifest = _family_manifest(family, variants, scores, record, _base_summary(out_dir))
    if validation is not None and history:
        manifest["selection"] = _selection(history, len(validation), len(train), len(settings.cycles()))
    FamilyManifest.model_validate(manifest)  # what agents read back: a drifting writer fails here, not on a device
    path = out_dir / f"{FAMILY_NAME}.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _check_budget(family: Sequence[VariantSpec]) -> None:
    """Refuse a family with a variant over the budget (params or MACs as a share of the mature model's)."""
    for spec in family:
        c = cost(spec)
        if not c.fits:
            raise ValueError(f"variant {spec.name} has {c.params} params ({c.params_ratio:.1%}) and {c.macs} MACs "
                             f"({c.macs_ratio:.1%}) of the mature model; the budget is {BUDGET_RATIO:.0%} of each")


def _training_splits(settings: VpTrainSettings, data_dir: str | Path | None,
                     validation: Dataset | None) -> tuple[Dataset, Dataset | None]:
    """The training images to fit on and the validation split held out of them (``validation`` when none is)."""
    everything = load_data("train", data_dir=data_dir)
    if settings.validation_images:
        held = settings.validation_images
        return fit_split(everything, held), validation_split(everything, held)
    return everything, validation


@dataclass(frozen=True, slots=True)
class _TestScores:
    """The trained variants on the test split: their softmax outputs, the fusion's ``k`` and every subset's
    accuracy."""

    labels: np.ndarray
    weights: dict[str, float]
    probs: dict[str, np.ndarray]
    k: int
    subsets: dict[str, float]
    full: str
    """The subset key of the whole family."""


def _test_scores(models: Mapping[str, ResNet], family: Sequence[VariantSpec], test: Dataset) -> _TestScores:
    """Run every variant on ``test`` and score each subset of them under the top-k fusion rule."""
    weights = fusion_weights(family)
    probs = {name: softmax_outputs(m, test.images) for name, m in models.items()}
    n_classes = len(dataset_labels())
    k = check_k(n_classes // 2, n_classes)
    subsets = family_accuracy(probs, test.labels, weights, k)
    return _TestScores(test.labels, weights, probs, k, subsets, subset_key(list(models)))


@dataclass(frozen=True, slots=True)
class _TrainingRecord:
    """How the family was trained, as its manifests record it."""

    settings: VpTrainSettings
    command: str
    trained_on: str
    wall: float
    """Seconds this run trained (without the resumed run's)."""
    teacher: dict[str, Any] | None
    earlier: _Earlier | None


def _save_variant(spec: VariantSpec, model: ResNet, scores: _TestScores, record: _TrainingRecord,
                  out_dir: Path) -> dict[str, Any]:
    """Write one variant's weights and manifest; returns its entry in the family manifest."""
    weights = scores.weights
    accuracy = float((scores.probs[spec.name].argmax(1) == scores.labels).mean())
    path = save_model(model, weights_name(spec.name), {
        "family": FAMILY_NAME, "variant": spec.name, "width_multiplier": spec.width,
        "resolution": spec.resolution, "fusion_weight": weights[spec.name], "test_accuracy": accuracy,
        "labels": list(dataset_labels()), "command": record.command, "trained_on": record.trained_on,
    }, out_dir)
    saved = json.loads(path.read_text())
    return {
        "name": spec.name, "weights_name": weights_name(spec.name), "width_multiplier": spec.width,
        "resolution": spec.resolution, "blocks": list(saved["config"]["blocks"]),
        "widths": list(saved["config"]["widths"]), "fusion_weight": weights[spec.name],
        **cost(spec).to_dict(), "test_accuracy": accuracy, "sha256": saved["sha256"],
        "weights_file": saved["weights_file"],
    }


def _family_manifest(family: Sequence[VariantSpec], variants: list[dict[str, Any]], scores: _TestScores,
                     record: _TrainingRecord, base: dict[str, Any] | None) -> dict[str, Any]:
    """The family manifest (without the validation ``selection``, which :func:`_selection` adds)."""
    subsets, full, earlier = scores.subsets, scores.full, record.earlier
    names = [v.name for v in family]
    leave_one_out = {name: subsets[subset_key([n for n in names if n != name])] for name in names}
    return {
        "name": FAMILY_NAME,
        "method": "Variant Parallelism (Asadi & Goudarzi, IEEE IoT-J 2023), joint training",
        "command": record.command,
        "labels": list(dataset_labels()),
        "k": scores.k,
        "variants": variants,
        "ensemble_accuracy": subsets[full],
        "leave_one_out_accuracy": leave_one_out,
        "max_drop_one_lost": max(subsets[full] - acc for acc in leave_one_out.values()) if len(names) > 1 else 0.0,
        "subsets": subsets,
        "base": base,
        "settings": asdict(record.settings),
        "teacher": record.teacher,
        "train_wall_seconds": round(record.wall + (earlier.manifest.train_wall_seconds if earlier else 0.0), 1),
        "resumed_from": None if earlier is None else _resumed_from(earlier, record.wall),
        "trained_on": record.trained_on,
        "torch_version": torch.__version__,
    }


def _resumed_from(earlier: _Earlier, wall: float) -> dict[str, Any]:
    """The manifest's record of the family a resumed run started from (``wall``: the seconds this run took)."""
    return {
        "command": earlier.manifest.command, "cycles": earlier.cycles,
        "train_wall_seconds": earlier.manifest.train_wall_seconds, "trained_on": earlier.manifest.trained_on,
        "ensemble_accuracy": earlier.manifest.ensemble_accuracy,
        "sha256": {n: v.manifest.sha256 for n, v in earlier.variants.items()},
        "resumed_wall_seconds": round(wall, 1),
        "earlier": earlier.manifest.resumed_from or earlier.manifest.first_cycle_from}


def _selection(history: list[dict[str, Any]], validation_images: int, train_images: int,
               cycles_run: int) -> dict[str, Any]:
    """The manifest's ``selection``: which epoch's weights were kept on the validation split, and the history."""
    kept = max(history, key=lambda h: (h["validation_ensemble_accuracy"], -h["epochs"]))
    return {
        "split": f"validation: fashion_mnist.validation_split ({validation_images} training images, not trained on; "
                 f"training used the other {train_images})",
        "criterion": "validation accuracy of the whole ensemble (top-k fusion) after every epoch; the best "
                     "epoch's weights are kept (ties: the earlier)",
        "kept_cycles": kept["cycles"], "kept_epochs": kept["epochs"], "cycles_run": cycles_run,
        "history": history}


def _cycles_run(settings: Mapping[str, Any]) -> int:
    """How many learning-rate cycles a manifest's settings ran (older manifests have no ``restarts``: one restart)."""
    if not settings.get("restart_epochs", 0):
        return 1
    return 1 + int(settings.get("restarts", 1))


@dataclass(frozen=True, slots=True)
class _Earlier:
    """A family to resume from: its manifest, its variants and how many learning-rate cycles it ran."""

    manifest: FamilyManifest
    variants: dict[str, LoadedVariant]
    cycles: int


def _earlier_cycles(directory: Path, family: Sequence[VariantSpec], settings: VpTrainSettings) -> _Earlier:
    """Load a family that ran the first cycles of ``settings``, refusing one trained any other way."""
    manifest, loaded = load_family(directory)
    names = [v.name for v in family]
    if list(loaded) != names:
        raise ValueError(f"{directory}: family {list(loaded)} is not the one being trained {names}")
    theirs = dict(manifest.settings)
    theirs.setdefault("validation_images", 0)  # families from before the validation split trained on every image
    done, wanted = _cycles_run(theirs), len(settings.cycles())
    if done >= wanted:
        raise ValueError(f"{directory}: that family already ran {done} learning-rate cycle(s) and these settings run "
                         f"{wanted}; resuming needs more cycles (--restarts) than it ran")
    ignore = {"restarts", "compile", "threads"} | ({"restart_epochs", "restart_max_lr"} if done == 1 else set())
    ours = {k: v for k, v in asdict(settings).items() if k not in ignore}
    differ = sorted(k for k, v in ours.items() if theirs.get(k) != v)
    if differ:
        raise ValueError(f"{directory}: its earlier cycles were trained with other settings ({', '.join(differ)}); "
                         "resuming needs the same ones")
    return _Earlier(manifest, loaded, done)


def _base_summary(directory: Path) -> dict[str, Any] | None:
    try:
        m = read_manifest("base", directory if (directory / "base.json").is_file() else WEIGHTS_DIR)
    except FileNotFoundError:
        return None
    return {"name": m.name, "sha256": m.sha256, "params": m.params, "macs": m.macs, "test_accuracy": m.test_accuracy}
