"""``nairbus evaluate vp``: Variant Parallelism measured on the Fashion-MNIST test split, plus its report and plots.

Everything here runs the committed weights on test frames only (training never saw them):

* accuracy of every variant, of every subset of variants under the top-k fusion rule, for every k in
  ``1..classes/2``, and of the mature model on the same frames;
* availability when each device fails independently with probability p: closed form (``1 - p**N`` for VP,
  ``(1 - p)**N`` for model parallelism, which needs every part) and simulated, plus the accuracy one gets over time
  (a frame with no answer counts as wrong), also closed form and simulated frame by frame;
* payload bytes per frame: the top-k messages of all variants against the raw image, its zlib, and NAIR.

The wire sizes are measured by encoding real messages; that needs :mod:`schemas`, so the caller passes a
``payload_bytes(k, n_classes)`` function in (models know nothing of the wire).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.data.fashion_mnist import validation_split
from nairbus.models.data.registry import dataset_labels, load_data
from nairbus.models.evaluation import reports, stats
from nairbus.models.store import WEIGHTS_DIR, load_model
from nairbus.models.vp.family import LoadedVariant, load_family, softmax_outputs
from nairbus.models.vp.fusion import (
    all_subsets,
    availability_mp,
    availability_vp,
    expected_accuracy,
    fuse_batch,
    simulate_failures,
    subset_key,
)
from nairbus.models.vp.manifest import FamilyManifest

REPORT_PATH = Path("reports/vp.json")
"""Relative to the working directory, like every report a command writes."""
PayloadFn = Callable[[int, int], int]


@dataclass(frozen=True, slots=True)
class VpEvalSettings:
    """What the evaluator runs."""

    frames: int | None = None
    """First N test frames (None: all 10 000)."""
    k: int | None = None
    """k of the headline figures (None: classes/2)."""
    ps: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    trials: int = 100000
    seed: int = 0
    weights_dir: Path = WEIGHTS_DIR
    nair_bytes: dict[str, float] = field(default_factory=dict)
    """NAIR payload bytes per frame to set beside VP (label to bytes), e.g. from the NAIR report."""


def evaluate_vp(settings: VpEvalSettings = VpEvalSettings(), data_dir: str | Path | None = None,
                payload_bytes: PayloadFn | None = None) -> dict[str, Any]:
    """Run the whole evaluation and return the report (see :func:`write_report`)."""
    family, variants = load_family(settings.weights_dir)
    base_model, base_manifest = load_model("base", settings.weights_dir)
    test = load_data("test", data_dir=data_dir)
    n = len(test) if settings.frames is None else max(1, min(settings.frames, len(test)))
    images, labels = test.images[:n], test.labels[:n]
    n_classes = len(dataset_labels())
    k_max = n_classes // 2
    k = settings.k or k_max
    out = _outputs(variants, base_model, images, labels, k_max)
    names, probs = out.names, out.probs
    base_accuracy = out.accuracy(out.base_pred)
    subsets_by_k = {str(kk): {key: out.accuracy(p) for key, p in preds.items()}
                    for kk, preds in out.preds_by_k.items()}
    subsets = subsets_by_k[str(k)]
    variant_rows = _variant_rows(family, out)
    report: dict[str, Any] = {
        "command": "nairbus evaluate vp" + ("" if n == len(test) else f" --frames {n}"),
        "frames": n,
        "split": "test",
        "k": k,
        "base_accuracy": base_accuracy,
        "base": {"name": base_manifest.name, "sha256": base_manifest.sha256, "params": base_manifest.params,
                 "macs": base_manifest.macs, "accuracy": base_accuracy,
                 "manifest_test_accuracy": base_manifest.test_accuracy},
        "variants": variant_rows,
        "ensemble": _ensemble(names, subsets, base_accuracy, variant_rows),
        "subsets": subsets,
        "subsets_by_k": subsets_by_k,
        "fusion_ablation": _fusion_ablation(out, k, subsets[subset_key(names)]),
        "fusion_rule_on_validation": _fusion_rule_on_validation(family, variants, data_dir, k),
        "availability": _availability(settings, names, subsets, base_accuracy, out.preds_by_k[k], out.base_pred,
                                      labels),
        "payload": _payload(images, len(names), k_max, n_classes, payload_bytes, settings.nair_bytes),
        "settings": {k_: v for k_, v in asdict(settings).items() if k_ not in ("weights_dir",)},
        "family_manifest": {"command": family.command, "train_wall_seconds": family.train_wall_seconds,
                            "trained_on": family.trained_on, "settings": family.settings,
                            **({"selection": family.selection.model_dump(mode="json")}
                               if family.selection is not None else {})},
    }
    report["evidence"] = _evidence(out.preds_by_k[k][subset_key(names)], out.base_pred,
                                   {nm: probs[nm].argmax(1) for nm in names}, labels, _validation_accuracy(family))
    return report


@dataclass(frozen=True, slots=True)
class _Outputs:
    """What the variants and the mature model say on the evaluated test frames."""

    labels: np.ndarray
    names: list[str]
    weights: dict[str, float]
    probs: dict[str, np.ndarray]
    """Each variant's softmax outputs."""
    base_pred: np.ndarray
    preds_by_k: dict[int, dict[str, np.ndarray]]
    """Predictions of every subset of variants (by :func:`subset_key`) under top-k fusion, for every k."""

    def accuracy(self, pred: np.ndarray) -> float:
        """Share of the frames ``pred`` gets right."""
        return float((pred == self.labels).mean())


def _outputs(variants: dict[str, LoadedVariant], base_model: ResNet, images: np.ndarray, labels: np.ndarray,
             k_max: int) -> _Outputs:
    """Run every variant and the mature model on the frames, and fuse every subset of variants for k in 1..k_max."""
    names = list(variants)
    weights = {name: v.weight for name, v in variants.items()}
    probs = {name: softmax_outputs(v.model, images) for name, v in variants.items()}
    base_pred = softmax_outputs(base_model, images).argmax(1)
    preds_by_k: dict[int, dict[str, np.ndarray]] = {
        kk: {subset_key(c): fuse_batch(probs, weights, kk, c).argmax(1) for c in all_subsets(names)}
        for kk in range(1, k_max + 1)
    }
    return _Outputs(labels, names, weights, probs, base_pred, preds_by_k)


def _variant_rows(family: FamilyManifest, out: _Outputs) -> dict[str, dict[str, Any]]:
    """Each variant's row of the report: its size from the family manifest and its accuracy on the frames."""
    rows = {}
    for name in out.names:
        e = family.variant(name)
        rows[name] = {
            "params": e.params, "macs": e.macs, "params_ratio": e.params_ratio, "macs_ratio": e.macs_ratio,
            "accuracy": out.accuracy(out.probs[name].argmax(1)), "fusion_weight": out.weights[name],
            "width_multiplier": e.width_multiplier, "resolution": e.resolution, "widths": e.widths,
            "blocks": e.blocks, "sha256": e.sha256,
        }
    return rows


def _ensemble(names: list[str], subsets: dict[str, float], base_accuracy: float,
              variant_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole family's row: its accuracy, against the mature model and with any one variant lost, and its size."""
    full = subsets[subset_key(names)]
    one_lost = {name: subsets[subset_key([x for x in names if x != name])] for name in names} if len(names) > 1 else {}
    return {
        "variants": names, "accuracy": full, "vs_base": full - base_accuracy,
        "one_lost": one_lost, "worst_one_lost": min(one_lost.values()) if one_lost else full,
        "max_drop_one_lost": max((full - a for a in one_lost.values()), default=0.0),
        "total_params": sum(v["params"] for v in variant_rows.values()),
        "total_macs": sum(v["macs"] for v in variant_rows.values()),
        "max_variant_params_ratio": max(v["params_ratio"] for v in variant_rows.values()),
        "max_variant_macs_ratio": max(v["macs_ratio"] for v in variant_rows.values()),
    }


def _fusion_ablation(out: _Outputs, k: int, paper_topk: float) -> dict[str, float]:
    """Test accuracy of the fusion rules: the paper's or equal weights, over the top ``k`` or every class
    (``paper_topk``: the shipped rule's, already measured)."""
    rules = fusion_rule_correct(out.probs, out.weights, out.labels, (k,))
    return {
        "paper_weights_topk": paper_topk,
        "equal_weights_topk": float(rules[f"equal_weights_top{k}"].mean()),
        "paper_weights_all_classes": float(rules["paper_weights_all_classes"].mean()),
        "equal_weights_all_classes": float(rules["equal_weights_all_classes"].mean()),
    }


def _fusion_rule_on_validation(family: FamilyManifest, variants: dict[str, Any], data_dir: str | Path | None,
                               k: int) -> dict[str, Any] | None:
    """The fusion rules (paper or equal weights, top-k or every class) and k compared on the validation split the
    family was not trained on; the one the bus ships (the paper's weights, top-``k``) is kept unless another is
    better there by more than the noise (McNemar p < 0.05). None for a family trained on every training image."""
    held = family.settings.get("validation_images")
    if not isinstance(held, int) or not held or family.selection is None:
        return None
    validation = validation_split(load_data("train", data_dir=data_dir), held)
    probs = {name: softmax_outputs(v.model, validation.images) for name, v in variants.items()}
    paper = {name: v.weight for name, v in variants.items()}
    correct = fusion_rule_correct(probs, paper, validation.labels, range(1, len(dataset_labels()) // 2 + 1))
    shipped = f"paper_weights_top{k}"
    best = max(correct, key=lambda r: (float(correct[r].mean()), r == shipped))
    test = stats.mcnemar(correct[best], correct[shipped], best, shipped)
    keep_shipped = best == shipped or test["within_noise"]
    return {
        "split": f"validation: fashion_mnist.validation_split ({held} training images the family never trained on)",
        "rules": {rule: stats.accuracy(c) for rule, c in correct.items()},
        "shipped_rule": shipped, "best_on_validation": best, "best_vs_shipped": test,
        "chosen": shipped if keep_shipped else best,
        "criterion": "the shipped rule unless another is more accurate on validation outside the noise "
                     "(McNemar p < 0.05)",
    }


def fusion_rule_correct(probs: dict[str, np.ndarray], paper: dict[str, float], labels: np.ndarray,
                        ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Per frame, whether each fusion rule gets it right: the paper's or equal weights, over each top-``k`` in
    ``ks`` (``paper_weights_top3``, ``equal_weights_top3``, …) and over every class (``…_all_classes``)."""
    n_classes = len(dataset_labels())
    equal = dict.fromkeys(probs, 1.0)
    correct = {}
    for kk in ks:
        correct[f"paper_weights_top{kk}"] = fuse_batch(probs, paper, kk).argmax(1) == labels
        correct[f"equal_weights_top{kk}"] = fuse_batch(probs, equal, kk).argmax(1) == labels
    correct["paper_weights_all_classes"] = fuse_batch(probs, paper, n_classes).argmax(1) == labels
    correct["equal_weights_all_classes"] = fuse_batch(probs, equal, n_classes).argmax(1) == labels
    return correct


def _validation_accuracy(family: FamilyManifest) -> dict[str, float] | None:
    """Each variant's validation accuracy at the epoch the family kept (None for a family without a validation
    split)."""
    kept = family.selection.kept() if family.selection is not None else None
    return None if kept is None else dict(kept.validation_variant_accuracy)


def _evidence(ensemble: np.ndarray, base: np.ndarray, variants: dict[str, np.ndarray],
              labels: np.ndarray, validation: dict[str, float] | None = None) -> dict[str, Any]:
    """The ensemble, the best single variant and the mature model with 95 % intervals, and the paired tests between
    them (McNemar on the same test frames). The best variant is named by its validation accuracy when the family
    has a validation split (``validation``: accuracy by variant), else — for an older family — by test accuracy, as a
    reference row that nothing ships."""
    if validation is not None and set(validation) == set(variants):
        best = max(variants, key=lambda nm: (validation[nm], nm))
        named_on = "validation"
    else:
        best = max(variants, key=lambda nm: (float((variants[nm] == labels).mean()), nm))
        named_on = "test (the family has no validation split)"
    rows = {"ensemble": ensemble == labels, f"best single variant ({best})": variants[best] == labels,
            "mature model": base == labels}
    return {
        "statistics": "95 % Wilson intervals; McNemar's exact test on the same frames, within_noise when p >= 0.05",
        "best_single_variant": best, "best_single_variant_named_on": named_on,
        "accuracy": {name: stats.accuracy(correct) for name, correct in rows.items()},
        "variants": {nm: stats.accuracy(pred == labels) for nm, pred in variants.items()},
        "ensemble_vs_mature": stats.mcnemar(rows["ensemble"], rows["mature model"], "ensemble", "mature"),
        "ensemble_vs_best_variant": stats.mcnemar(rows["ensemble"], variants[best] == labels, "ensemble", "best"),
        "best_variant_vs_mature": stats.mcnemar(variants[best] == labels, rows["mature model"], "best", "mature"),
    }


def _availability(settings: VpEvalSettings, names: list[str], subsets: dict[str, float], base_accuracy: float,
                  preds: dict[str, np.ndarray], base_pred: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    n = len(names)
    rows = []
    rng = np.random.default_rng(settings.seed)
    for i, p in enumerate(settings.ps):
        up = simulate_failures(p, n, settings.trials, seed=settings.seed + i)
        # Frame by frame: each test frame meets its own failure pattern and is decided by the variants that are up.
        frame_up = rng.random((len(labels), n)) >= p
        correct = np.zeros(len(labels), dtype=bool)
        for combo in all_subsets(names):
            mask = np.all(frame_up == np.isin(names, combo), axis=1)
            correct[mask] = preds[subset_key(combo)][mask] == labels[mask]
        mp_correct = np.all(frame_up, axis=1) & (base_pred == labels)
        rows.append({
            "p": p,
            "vp_closed": float(availability_vp(p, n)),
            "vp_simulated": float(up.any(axis=1).mean()),
            "mp_closed": float(availability_mp(p, n)),
            "mp_simulated": float(up.all(axis=1).mean()),
            "vp_accuracy_closed": expected_accuracy(p, names, subsets),
            "vp_accuracy_simulated": float(correct.mean()),
            "mp_accuracy_closed": float(availability_mp(p, n)) * base_accuracy,
            "mp_accuracy_simulated": float(mp_correct.mean()),
            "single_device_accuracy_closed": (1 - p) * base_accuracy,
        })
    return {"devices": n, "trials": settings.trials, "model_parallel_parts": n,
            "note": "no answer counts as wrong; model parallelism splits the mature model over the same number "
                    "of devices and needs every part",
            "rows": rows}


def _payload(images: np.ndarray, n_variants: int, k_max: int, n_classes: int, payload_bytes: PayloadFn | None,
             nair: dict[str, float]) -> dict[str, Any]:
    per_k = {}
    for k in range(1, k_max + 1):
        data = 2 * k * 4  # class ids and float32 scores, the 2k numbers themselves
        msg = payload_bytes(k, n_classes) if payload_bytes is not None else None
        per_k[str(k)] = {"numbers": 2 * k, "data_bytes_per_variant": data, "data_bytes_per_frame": data * n_variants,
                         "message_bytes_per_variant": msg,
                         "message_bytes_per_frame": None if msg is None else msg * n_variants}
    sample = images[: min(1000, len(images))]
    zlib_mean = float(np.mean([len(zlib.compress(im.tobytes(), 9)) for im in sample]))
    return {"variants": n_variants, "topk": per_k, "raw_image_bytes": int(images[0].size),
            "zlib_image_bytes_mean": zlib_mean, "nair": nair,
            "note": "message bytes are whole msgpack TopK messages (ids, session, seq, timestamps included); "
                    "data bytes count only the 2k numbers at 4 bytes each"}


def write_report(report: dict[str, Any], path: Path = REPORT_PATH, plots: bool = True) -> Path:
    """Write ``report`` as JSON to ``path`` and, with ``plots``, PNG plots beside it (``<stem>_*.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if plots:
        report["plots"] = [p.name for p in write_plots(report, path.parent, path.stem)]
    reports.write_report(path, reports.VpReport.from_data(report))
    return path


def write_plots(report: dict[str, Any], directory: Path, stem: str = "vp") -> list[Path]:
    """Subsets, accuracy against k, availability against p, and bytes per frame, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    return [
        _plot_subsets(report, directory / f"{stem}_subsets.png"),
        _plot_topk(report, directory / f"{stem}_topk.png"),
        _plot_availability(report, directory / f"{stem}_availability.png"),
        _plot_payload(report, directory / f"{stem}_payload.png"),
    ]


def _plot_subsets(report: dict[str, Any], path: Path) -> Path:
    """Bar chart of every subset's accuracy beside the mature model's."""
    import matplotlib.pyplot as plt

    base = report["base_accuracy"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    keys = sorted(report["subsets"], key=lambda s: (s.count(","), s))
    vals = [report["subsets"][key] * 100 for key in keys]
    ax.bar(range(len(keys)), vals, color=["#8fb3d9" if "," not in key else "#2b6cb0" for key in keys])
    ax.axhline(base * 100, color="#c53030", linestyle="--", label=f"mature model {base:.2%}")
    ax.set_xticks(range(len(keys)), [key.replace(",", "\n") for key in keys], fontsize=7)
    ax.set_ylim(min([*vals, base * 100]) - 1.5, max([*vals, base * 100]) + 0.8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"VP: accuracy of every subset of variants (top-{report['k']} fusion, {report['frames']} frames)")
    for i, v in enumerate(vals):
        ax.text(i, v + 0.05, f"{v:.2f}", ha="center", fontsize=7)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _plot_topk(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against k, of the whole family and of it with each variant lost."""
    import matplotlib.pyplot as plt

    base = report["base_accuracy"]
    names = report["ensemble"]["variants"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted(int(k) for k in report["subsets_by_k"])
    full = ",".join(sorted(names))
    ax.plot(ks, [report["subsets_by_k"][str(k)][full] * 100 for k in ks], "o-", label="all variants")
    for name in names:
        rest = ",".join(sorted(x for x in names if x != name))
        if rest:
            ax.plot(ks, [report["subsets_by_k"][str(k)][rest] * 100 for k in ks], ".--", label=f"without {name}")
    ax.axhline(base * 100, color="#c53030", linestyle="--", label="mature model")
    ax.set_xlabel("k (classes each variant reports)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(ks)
    ax.set_title("VP: accuracy against k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plot_availability(report: dict[str, Any], path: Path) -> Path:
    """Availability and accuracy over time against the failure probability, VP beside model parallelism."""
    import matplotlib.pyplot as plt

    rows = report["availability"]["rows"]
    ps = [r["p"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ps, [r["vp_closed"] for r in rows], "-", color="#2b6cb0", label="VP, 1 - p^N")
    a1.plot(ps, [r["vp_simulated"] for r in rows], "o", color="#2b6cb0", label="VP, simulated")
    a1.plot(ps, [r["mp_closed"] for r in rows], "-", color="#c05621", label="model parallel, (1 - p)^N")
    a1.plot(ps, [r["mp_simulated"] for r in rows], "s", color="#c05621", label="model parallel, simulated")
    a1.set_xlabel("failure probability p of each device")
    a1.set_ylabel("availability")
    a1.set_title(f"availability, N = {report['availability']['devices']}")
    a1.legend(fontsize=8)
    a2.plot(ps, [r["vp_accuracy_closed"] * 100 for r in rows], "-", color="#2b6cb0", label="VP, closed form")
    a2.plot(ps, [r["vp_accuracy_simulated"] * 100 for r in rows], "o", color="#2b6cb0", label="VP, simulated")
    a2.plot(ps, [r["mp_accuracy_closed"] * 100 for r in rows], "-", color="#c05621", label="model parallel")
    a2.plot(ps, [r["mp_accuracy_simulated"] * 100 for r in rows], "s", color="#c05621",
            label="model parallel, simulated")
    a2.set_xlabel("failure probability p of each device")
    a2.set_ylabel("accuracy over time (%), no answer = wrong")
    a2.set_title("accuracy under device failures")
    a2.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plot_payload(report: dict[str, Any], path: Path) -> Path:
    """Bytes per frame: VP's top-k messages for every k, NAIR's, the raw image and its zlib."""
    import matplotlib.pyplot as plt

    pay = report["payload"]
    labels_, values = [], []
    for k, row in pay["topk"].items():
        labels_.append(f"VP k={k}")
        values.append(row["message_bytes_per_frame"] or row["data_bytes_per_frame"])
    for label, value in pay["nair"].items():
        labels_.append(label)
        values.append(value)
    labels_ += ["raw image", "zlib image"]
    values += [pay["raw_image_bytes"], pay["zlib_image_bytes_mean"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = ["#2b6cb0" if lab.startswith("VP") else "#718096" for lab in labels_]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels_, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v + 5, i, f"{v:.0f} B", va="center", fontsize=8)
    ax.set_xlabel("bytes per frame (all variants together)")
    ax.set_title("payload per frame")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
