"""Variant Parallelism, model side: the variant family's budget, the pure fusion rule, availability, the evaluator."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.data.fashion_mnist import Dataset, load_split
from nairbus.models.store import save_model
from nairbus.models.vp.fusion import (
    Vote,
    all_subsets,
    availability_mp,
    availability_vp,
    check_k,
    expected_accuracy,
    fuse,
    fuse_batch,
    scatter,
    simulate_failures,
    subset_key,
    topk,
)
from nairbus.models.vp.variants import (
    VARIANTS,
    VariantSpec,
    cost,
    count_config,
    derive_config,
    fusion_weights,
    generate,
    variant_by_name,
)
from nairbus.models.zoo import BASE_CONFIG


# -- the family ------------------------------------------------------------------------------------------------------
def test_shipped_family_fits_one_fifth_of_the_mature_model() -> None:
    base_params, base_macs = count_config(BASE_CONFIG)
    assert (base_params, base_macs) == (294770, 29774464)
    assert len(VARIANTS) >= 3
    for spec in VARIANTS:
        c = cost(spec)
        assert c.params <= base_params / 5, spec.name
        assert c.macs <= base_macs / 5, spec.name
        assert c.fits
        assert c.to_dict()["fits_budget"]
    assert len({(s.width, s.resolution, s.blocks) for s in VARIANTS}) == len(VARIANTS)


def test_derive_config_applies_the_knobs() -> None:
    cfg = derive_config(VariantSpec("x", width=0.5, resolution=20, blocks=(2, 1, 1)))
    assert cfg.widths == (12, 32, 64)
    assert cfg.resolution == 20
    assert cfg.blocks == (2, 1, 1)
    assert cfg.num_classes == BASE_CONFIG.num_classes
    # A bigger resolution costs more MACs and no parameters.
    small = count_config(derive_config(VariantSpec("a", 0.4, 20)))
    large = count_config(derive_config(VariantSpec("b", 0.4, 28)))
    assert small[0] == large[0]
    assert small[1] < large[1]


def test_generator_keeps_only_what_fits_and_rejects_bad_knobs() -> None:
    menu = generate(widths=(0.3, 0.44, 0.7), resolutions=(20, 28), blocks=(None,))
    assert menu
    assert all(c.fits for _, c in menu)
    assert not any(spec.width == 0.7 for spec, _ in menu)  # 0.7 width is ~half the parameters
    with pytest.raises(ValueError, match="width"):
        VariantSpec("bad", width=1.5, resolution=28)
    with pytest.raises(ValueError, match="resolution"):
        VariantSpec("bad", width=0.5, resolution=40)
    with pytest.raises(KeyError, match="w44r28"):
        variant_by_name("nope")


def test_paper_weights_follow_resolution_and_width() -> None:
    w = fusion_weights(VARIANTS)
    assert w["w44r28"] == 1.0
    assert w["w44r24"] == pytest.approx(24 / 28, abs=1e-4)
    assert fusion_weights((VariantSpec("a", 0.4, 28, weight=3.0),)) == {"a": 3.0}


# -- the fusion rule --------------------------------------------------------------------------------------------------
def test_topk_and_scatter_round_trip() -> None:
    probs = np.array([[0.1, 0.5, 0.2, 0.2], [0.25, 0.25, 0.4, 0.1]])
    classes, scores = topk(probs, 2)
    assert classes.tolist() == [[1, 2], [2, 0]]  # ties go to the lower class id
    dense = scatter(classes, scores, 4)
    assert dense.tolist() == [[0.0, 0.5, 0.2, 0.0], [0.25, 0.0, 0.4, 0.0]]


def test_fuse_weights_and_sums_what_arrived() -> None:
    a = Vote("a", (0, 1), (0.6, 0.4), 1.0)
    b = Vote("b", (1, 2), (0.9, 0.1), 1.0)
    assert int(fuse([a, b], 3).argmax()) == 1
    assert int(fuse([a], 3).argmax()) == 0  # b lost: a alone still answers over all classes
    heavy = Vote("a", (0, 1), (0.6, 0.4), 10.0)
    assert int(fuse([heavy, b], 3).argmax()) == 0
    assert fuse([a, b], 3).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one"):
        fuse([], 3)
    with pytest.raises(ValueError, match="out of range"):
        fuse([Vote("x", (5,), (1.0,), 1.0)], 3)


def test_batch_rule_equals_frame_rule() -> None:
    rng = np.random.default_rng(1)
    probs = {n: rng.dirichlet(np.ones(10), size=50) for n in ("a", "b", "c")}
    weights = {"a": 1.0, "b": 0.8, "c": 0.6}
    batch = fuse_batch(probs, weights, 3, ["a", "c"])
    for i in range(50):
        votes = []
        for n in ("a", "c"):
            cls, sc = topk(probs[n][i : i + 1], 3)
            votes.append(Vote(n, tuple(cls[0].tolist()), tuple(sc[0].tolist()), weights[n]))
        assert np.allclose(fuse(votes, 10), batch[i])


def test_check_k_bounds() -> None:
    assert check_k(1, 10) == 1
    assert check_k(5, 10) == 5
    for bad in (0, 6):
        with pytest.raises(ValueError, match="between 1 and 5"):
            check_k(bad, 10)


def test_subsets() -> None:
    assert subset_key(["b", "a"]) == "a,b"
    assert [subset_key(s) for s in all_subsets(["b", "a", "c"])] == ["a", "b", "c", "a,b", "a,c", "b,c", "a,b,c"]


# -- availability -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_closed_form_matches_simulation(p: float) -> None:
    up = simulate_failures(p, 3, 200000, seed=2)
    assert up.any(axis=1).mean() == pytest.approx(availability_vp(p, 3), abs=0.005)
    assert up.all(axis=1).mean() == pytest.approx(availability_mp(p, 3), abs=0.005)
    assert availability_vp(p, 3) > availability_mp(p, 3)


def test_expected_accuracy_weights_every_subset() -> None:
    names = ["a", "b"]
    acc = {"a": 0.8, "b": 0.6, "a,b": 0.9}
    assert expected_accuracy(0.0, names, acc) == pytest.approx(0.9)
    assert expected_accuracy(1.0, names, acc) == pytest.approx(0.0)
    p = 0.3
    manual = 0.7 * 0.7 * 0.9 + 0.7 * 0.3 * 0.8 + 0.3 * 0.7 * 0.6
    assert expected_accuracy(p, names, acc) == pytest.approx(manual)


# -- training and evaluation on a tiny run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nairbus.models.vp.training import VpTrainSettings, train_family

    out = tmp_path_factory.mktemp("vp-family")
    train, test = load_split("train"), load_split("test")
    teacher = ResNet(ResNetConfig(widths=(8, 8, 8), blocks=(1, 1, 1)))
    save_model(teacher, "base", {"test_accuracy": 0.1}, out)
    settings = VpTrainSettings(epochs=1, restart_epochs=0, distill_weight=0.0, batch_size=32, compile=False)
    train_family(settings, out_dir=out,
                 train=Dataset(train.images[:256], train.labels[:256]),
                 test=Dataset(test.images[:200], test.labels[:200]), command="test")
    return out


@pytest.mark.slow
def test_training_writes_a_verified_family_manifest(tiny_family: Path) -> None:
    from nairbus.models.vp.family import load_family

    manifest = json.loads((tiny_family / "variants.json").read_text())
    assert [v["name"] for v in manifest["variants"]] == [v.name for v in VARIANTS]
    assert set(manifest["subsets"]) == {subset_key(s) for s in all_subsets([v.name for v in VARIANTS])}
    for v in manifest["variants"]:
        assert v["params"] <= 294770 / 5
        assert v["macs"] <= 29774464 / 5
        assert 0 <= v["test_accuracy"] <= 1
    assert manifest["train_wall_seconds"] > 0
    assert manifest["settings"]["seed"] == 0
    _, variants = load_family(tiny_family)
    assert list(variants) == [v.name for v in VARIANTS]
    # Tampered weights are refused.
    path = tiny_family / variants["w44r24"].manifest.weights_file
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        with pytest.raises(Exception, match="sha256"):
            load_family(tiny_family)
    finally:
        path.write_bytes(data)


@pytest.mark.slow
def test_evaluator_report_has_the_contracted_fields(tiny_family: Path, tmp_path: Path) -> None:
    from nairbus.models.evaluation.vp import VpEvalSettings, evaluate_vp, write_report

    report = evaluate_vp(VpEvalSettings(frames=200, trials=2000, weights_dir=tiny_family, ps=(0.1, 0.5)),
                         payload_bytes=lambda k, n: 100 + 10 * k)
    assert report["frames"] == 200
    assert 0 <= report["base_accuracy"] <= 1
    names = [v.name for v in VARIANTS]
    assert set(report["variants"]) == set(names)
    for v in report["variants"].values():
        assert {"params", "macs", "accuracy"} <= v.keys()
    assert set(report["subsets"]) == {subset_key(s) for s in all_subsets(names)}
    assert set(report["subsets_by_k"]) == {"1", "2", "3", "4", "5"}
    rows = report["availability"]["rows"]
    n = len(names)
    assert rows[0]["vp_closed"] == pytest.approx(1 - 0.1**n)
    assert rows[1]["mp_closed"] == pytest.approx(0.5**n)
    assert rows[1]["vp_simulated"] == pytest.approx(1 - 0.5**n, abs=0.03)
    assert report["payload"]["topk"]["5"]["message_bytes_per_frame"] == n * 150
    path = write_report(report, tmp_path / "vp.json")
    assert json.loads(path.read_text())["subsets"] == report["subsets"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in report["plots"])


# -- training through torch.compile, and its fallback --------------------------------------------------------------
def _train_tiny(compile_models: bool) -> tuple[dict[str, ResNet], list[str]]:
    from nairbus.models.vp.training import VpTrainSettings, train_variants

    train = load_split("train")
    kinds: list[str] = []
    family = (VariantSpec("tiny", width=0.32, resolution=20),)
    models = train_variants(family, Dataset(train.images[:64], train.labels[:64]),
                            VpTrainSettings(epochs=1, restart_epochs=0, batch_size=32, distill_weight=0.0,
                                            compile=compile_models),
                            progress=lambda kind, done, total, info: kinds.append(kind))
    return models, kinds


@pytest.mark.slow
def test_compiled_training_trains_the_variants_themselves() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail the test
        models, _ = _train_tiny(compile_models=True)
    assert isinstance(models["tiny"], ResNet)
    # The compiled wrapper trained the variant's own weights: they left their (seeded) initial values.
    torch.manual_seed(0)
    initial = ResNet(derive_config(VariantSpec("tiny", width=0.32, resolution=20)))
    assert not torch.equal(models["tiny"].fc.weight, initial.fc.weight)
    assert not torch.equal(models["tiny"].stem[0].weight, initial.stem[0].weight)


def test_training_falls_back_to_eager_when_compiling_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(model: object) -> object:
        def run(x: object) -> object:
            raise RuntimeError("no C compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match=r"no C compiler found.*training eagerly"):
        models, kinds = _train_tiny(compile_models=True)
    assert kinds.count("epoch") == 1
    assert "tiny" in models


# -- the warm restarts, and resuming from a family that ran fewer cycles ----------------------------------------------
@pytest.mark.slow
def test_resuming_from_earlier_cycles_gives_the_whole_runs_variants() -> None:
    from nairbus.models.vp.training import VpTrainSettings, train_variants

    train = load_split("train")
    data = Dataset(train.images[:64], train.labels[:64])
    family = (VariantSpec("tiny", width=0.32, resolution=20),)
    every = VpTrainSettings(epochs=1, restart_epochs=1, restart_max_lr=0.05, restarts=2, batch_size=32,
                            distill_weight=0.0, compile=False)
    assert every.cycles() == [(1, 0.2), (1, 0.05), (1, 0.05)]
    assert replace(every, restart_epochs=0).cycles() == [(1, 0.2)]
    whole = train_variants(family, data, every)
    first = train_variants(family, data, replace(every, restart_epochs=0))
    for done, start in ((1, first), (2, train_variants(family, data, replace(every, restarts=1)))):
        epochs: list[tuple[int, int]] = []

        def note(kind: str, d: int, total: int, info: dict[str, float], seen: list[tuple[int, int]] = epochs) -> None:
            if kind == "epoch":
                seen.append((d, total))

        resumed = train_variants(family, data, every, start_from=start, cycles_done=done, progress=note)
        assert epochs == [(e, 3 - done) for e in range(1, 4 - done)]  # only the later cycles ran
        for key, value in whole["tiny"].state_dict().items():
            assert torch.equal(value, resumed["tiny"].state_dict()[key]), (done, key)
    assert not torch.equal(whole["tiny"].fc.weight, first["tiny"].fc.weight)
    with pytest.raises(ValueError, match="cannot resume after 3 cycle"):
        train_variants(family, data, every, start_from=first, cycles_done=3)


@pytest.mark.slow
def test_a_resumed_family_records_the_run_it_came_from(tiny_family: Path, tmp_path: Path) -> None:
    from nairbus.models.vp.training import VpTrainSettings, train_family

    train, test = load_split("train"), load_split("test")
    more = VpTrainSettings(epochs=1, restart_epochs=1, restarts=1, distill_weight=0.0, batch_size=32, compile=False)
    path = train_family(more, out_dir=tmp_path, resume_from=tiny_family, command="resumed",
                        train=Dataset(train.images[:256], train.labels[:256]),
                        test=Dataset(test.images[:200], test.labels[:200]))
    before = json.loads((tiny_family / "variants.json").read_text())
    after = json.loads(path.read_text())
    origin = after["resumed_from"]
    assert origin["cycles"] == 1
    assert origin["command"] == before["command"]
    assert origin["sha256"] == {v["name"]: v["sha256"] for v in before["variants"]}
    assert after["train_wall_seconds"] == pytest.approx(before["train_wall_seconds"] + origin["resumed_wall_seconds"],
                                                        abs=0.11)
    assert {v["sha256"] for v in after["variants"]}.isdisjoint(origin["sha256"].values())


@pytest.mark.slow
def test_resuming_refuses_a_family_trained_otherwise(tiny_family: Path, tmp_path: Path) -> None:
    from nairbus.models.vp.training import VpTrainSettings, train_family

    other = VpTrainSettings(epochs=3, restart_epochs=1, restarts=1, distill_weight=0.0, batch_size=32, compile=False)
    with pytest.raises(ValueError, match="other settings \\(epochs\\)"):
        train_family(other, out_dir=tmp_path, resume_from=tiny_family, train=Dataset(np.zeros((0, 28, 28), np.uint8),
                     np.zeros(0, np.int64)))
    same = VpTrainSettings(epochs=1, restart_epochs=0, distill_weight=0.0, batch_size=32, compile=False)
    with pytest.raises(ValueError, match=r"already ran 1 learning-rate cycle\(s\) and these settings run 1"):
        train_family(same, out_dir=tmp_path, resume_from=tiny_family, train=Dataset(np.zeros((0, 28, 28), np.uint8),
                     np.zeros(0, np.int64)))
    with pytest.raises(FileNotFoundError, match="no variant family manifest"):
        train_family(other, out_dir=tmp_path, resume_from=tmp_path, train=Dataset(np.zeros((0, 28, 28), np.uint8),
                     np.zeros(0, np.int64)))


@pytest.mark.slow
def test_the_kept_family_is_the_epoch_best_on_validation() -> None:
    from nairbus.models.vp.training import VpTrainSettings, train_variants

    train = load_split("train")
    family = VARIANTS[:2]
    data = Dataset(train.images[:96], train.labels[:96])
    validation = Dataset(train.images[-64:], train.labels[-64:])
    settings = VpTrainSettings(epochs=2, restart_epochs=1, restart_max_lr=0.05, restarts=2, batch_size=32,
                               distill_weight=0.0, compile=False)
    history: list[dict[str, object]] = []
    kept = train_variants(family, data, settings, validation=validation, history=history)
    # Measured after every epoch, each in the learning-rate cycle it belongs to.
    assert [h["epochs"] for h in history] == [1, 2, 3, 4]
    assert [h["cycles"] for h in history] == [1, 1, 2, 3]
    best = max(history, key=lambda h: (h["validation_ensemble_accuracy"], -h["epochs"]))  # type: ignore[arg-type,operator]
    # The kept weights reproduce the best cycle's validation accuracy.
    from nairbus.models.vp.family import softmax_outputs
    from nairbus.models.vp.fusion import fuse_batch
    from nairbus.models.vp.variants import fusion_weights

    probs = {name: softmax_outputs(m, validation.images) for name, m in kept.items()}
    accuracy = float((fuse_batch(probs, fusion_weights(family), 5).argmax(1) == validation.labels).mean())
    assert accuracy == pytest.approx(best["validation_ensemble_accuracy"])


def test_fusion_rules_score_every_frame_per_rule() -> None:
    from nairbus.models.evaluation.vp import fusion_rule_correct

    labels = np.array([0, 1, 2, 4])
    right = np.full((4, 10), 0.01)
    right[np.arange(4), labels] = 0.91
    wrong = np.full((4, 10), 0.005)
    wrong[:, 3] = 0.955  # surer, and always class 3
    rules = fusion_rule_correct({"right": right, "wrong": wrong}, {"right": 3.0, "wrong": 1.0}, labels, (1, 2))
    assert set(rules) == {"paper_weights_top1", "equal_weights_top1", "paper_weights_top2", "equal_weights_top2",
                          "paper_weights_all_classes", "equal_weights_all_classes"}
    assert all(c.shape == labels.shape for c in rules.values())
    assert rules["paper_weights_top1"].all()  # the heavier variant is right on every frame
    assert not rules["equal_weights_top1"].any()  # with equal weights the surer, wrong one wins
