"""Unit tests of the NAIR core: transform, calibration, codec, budget, loss — no broker, no shipped weights."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nairbus.models.architectures.resnet import ResNet
from nairbus.models.loss import LossModel
from nairbus.models.nair.calibration import CalibrationSettings, calibrate
from nairbus.models.nair.codec import (
    ComponentRun,
    PayloadError,
    check_run,
    decode_runs,
    encode_runs,
    pack,
    pack_run,
    packed_bytes,
    prefix_end,
    run_spans,
    unpack,
    unpack_run,
)
from nairbus.models.nair.pipeline import NairPipeline
from nairbus.models.nair.transform import (
    ArtifactMismatchError,
    NairArtifact,
    NairTransform,
    bits_schedule,
    dct_matrix,
    geometric_plan,
)
from tests.manifests import in_memory_manifest


@pytest.fixture(scope="module")
def artifact(tiny_model: ResNet, images: np.ndarray) -> NairArtifact:
    return calibrate(tiny_model, "tiny", "a" * 64, images[:200], CalibrationSettings(split="stage2"))


def test_dct_is_orthonormal() -> None:
    d = dct_matrix(14)
    np.testing.assert_allclose(d @ d.T, np.eye(14), atol=1e-12)


@pytest.mark.parametrize("method", ["nair", "pca", "naive", "prune"])
def test_transform_is_exactly_invertible(tiny_model: ResNet, images: np.ndarray, method: str) -> None:
    art = calibrate(tiny_model, "tiny", "a" * 64, images[:100], CalibrationSettings(split="stage2", method=method))  # type: ignore[arg-type]
    transform = NairTransform(art)
    with torch.no_grad():
        ir = tiny_model.head(torch.randn(4, 1, 28, 28), "stage2")
        back = transform.inverse(transform.forward(ir))
    assert torch.allclose(back, ir, atol=1e-4)
    assert sorted(art.order.tolist()) == list(range(art.n_components))


@pytest.mark.parametrize("method", ["nair", "naive"])
def test_what_fills_a_missing_component_is_the_calibration_mean_or_a_zero_activation(
        tiny_model: ResNet, images: np.ndarray, method: str) -> None:
    mean = calibrate(tiny_model, "tiny", "a" * 64, images[:100], CalibrationSettings(split="stage2", method=method))  # type: ignore[arg-type]
    zero = calibrate(tiny_model, "tiny", "a" * 64, images[:100],
                     CalibrationSettings(split="stage2", method=method, fill="zero"))  # type: ignore[arg-type]
    assert not mean.fill.any()  # the calibration mean in component space: exactly zero, no rounding noise
    nothing = torch.zeros(1, mean.n_components, dtype=torch.bool)
    empty = torch.zeros(1, mean.n_components)
    np.testing.assert_allclose(NairTransform(mean).reconstruct(empty, nothing)[0].numpy(), mean.mean, atol=1e-5)
    np.testing.assert_allclose(NairTransform(zero).reconstruct(empty, nothing)[0].numpy(), 0.0, atol=1e-5)
    assert np.abs(mean.mean).max() > 1e-2  # so the two fills differ


@pytest.fixture(scope="module")
def joint(tiny_model: ResNet, images: np.ndarray) -> NairArtifact:
    return calibrate(tiny_model, "tiny", "a" * 64, images[:200], CalibrationSettings(split="stage2", joint_klt=64))


def test_a_joint_klt_stays_exactly_invertible_and_decorrelates_the_leading_components(
        joint: NairArtifact, artifact: NairArtifact, tiny_model: ResNet, images: np.ndarray) -> None:
    assert joint.joint_components == 64
    np.testing.assert_allclose(joint.mix.T @ joint.mix, np.eye(64), atol=1e-5)
    transform = NairTransform(joint)
    with torch.no_grad():
        ir = tiny_model.head(torch.randn(4, 1, 28, 28), "stage2")
        assert torch.allclose(transform.inverse(transform.forward(ir)), ir, atol=1e-4)
        x = tiny_model.input_spec.prepare(images[:200])
        lead = transform.forward(tiny_model.head(x, "stage2")).numpy()[:, :64]
        separable = NairTransform(artifact).forward(tiny_model.head(x, "stage2")).numpy()[:, :64]
    off = lambda c: np.abs(c - np.diag(np.diag(c))).sum() / np.abs(np.diag(c)).sum()  # noqa: E731
    assert off(np.cov(lead.T)) < 0.01 < off(np.cov(separable.T))
    # The same energy, ordered: the first component of the joint KLT carries at least the separable first's.
    assert np.isclose(lead.var(0).sum(), separable.var(0).sum(), rtol=1e-4)
    assert lead.var(0)[0] >= separable.var(0)[0]
    assert np.all(np.diff(lead.var(0)) <= 1e-6 * lead.var(0)[0])
    assert not joint.fill.any()


def test_a_joint_klt_is_hashed_saved_and_refused_where_it_cannot_be(
        tmp_path, joint: NairArtifact, artifact: NairArtifact, tiny_model: ResNet,  # type: ignore[no-untyped-def]
        images: np.ndarray) -> None:
    loaded = NairArtifact.load(joint.save(tmp_path / "j.npz"))
    assert loaded.sha256 == joint.sha256 != artifact.sha256
    assert np.array_equal(loaded.mix, joint.mix)
    assert joint.meta["settings"]["joint_klt"] == 64
    assert "joint_klt" not in artifact.meta["settings"]  # off: recorded as before, so older hashes stand
    assert NairArtifact.load(artifact.save(tmp_path / "a.npz")).joint_components == 0
    bad = tmp_path / "bad.npz"
    dataclasses.replace(joint, mix=joint.mix[:, :10]).save(bad)
    with pytest.raises(ArtifactMismatchError, match="joint KLT has shape"):
        NairArtifact.load(bad)
    with pytest.raises(ValueError, match="components"):
        calibrate(tiny_model, "tiny", "a" * 64, images[:100],
                  CalibrationSettings(split="stage2", joint_klt=artifact.n_components + 1))
    with pytest.raises(ValueError, match="nair method"):
        calibrate(tiny_model, "tiny", "a" * 64, images[:100],
                  CalibrationSettings(split="stage2", method="pca", joint_klt=8))


def test_nair_orders_by_decreasing_variance(artifact: NairArtifact, tiny_model: ResNet, images: np.ndarray) -> None:
    with torch.no_grad():
        x = torch.from_numpy(images[:200]).float().unsqueeze(1) / 255
        comps = NairTransform(artifact).forward(tiny_model.head((x - 0.286) / 0.353, "stage2")).numpy()
    var = comps.var(axis=0)
    assert var[:10].mean() > 10 * var[-100:].mean()


def test_full_reception_reproduces_the_model(artifact: NairArtifact, tiny_model: ResNet, images: np.ndarray) -> None:
    pipe = NairPipeline(tiny_model, in_memory_manifest("tiny", "a" * 64), artifact)
    probs, fraction, _ = pipe.offline_probs(pipe.encode_all(images[200:]), np.arange(100), None)
    assert np.all(fraction == 1.0)
    full = pipe.full_model_probs(images[200:])
    assert (probs.argmax(1) == full.argmax(1)).mean() >= 0.97  # 8-bit quantisation only


def test_artifact_round_trip_and_hash(tmp_path, artifact: NairArtifact) -> None:  # type: ignore[no-untyped-def]
    path = artifact.save(tmp_path / "a.npz")
    loaded = NairArtifact.load(path)
    assert loaded.sha256 == artifact.sha256
    assert np.array_equal(loaded.order, artifact.order)
    other = loaded.with_plan(loaded.bits, loaded.plan[:1])
    assert other.sha256 != artifact.sha256


def test_mismatched_model_is_refused(artifact: NairArtifact, tiny_model: ResNet) -> None:
    with pytest.raises(ArtifactMismatchError, match="calibrated for model"):
        NairPipeline(tiny_model, in_memory_manifest("tiny", "b" * 64), artifact)


def test_missing_artifact_says_how_to_make_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match="nairbus calibrate"):
        NairArtifact.load(tmp_path / "none.npz")


@given(st.integers(1, 16), st.lists(st.integers(0, 65535), min_size=1, max_size=200))
@settings(max_examples=200, deadline=None)
def test_pack_unpack_round_trip(bits: int, raw: list[int]) -> None:
    codes = np.array(raw, dtype=np.uint16) & ((1 << bits) - 1)
    data = pack(codes, bits)
    assert len(data) == (len(codes) * bits + 7) // 8
    assert np.array_equal(unpack(data, len(codes), bits), codes)


def test_geometric_plan_covers_everything_and_respects_bit_bands() -> None:
    bits = bits_schedule(1000, [(0.1, 8), (0.5, 6), (1.0, 4)])
    plan = geometric_plan(1000, bits, first=16, growth=1.5, cap=200)
    assert plan[0, 0] == 0
    assert plan[-1, 1] == 1000
    assert np.array_equal(plan[1:, 0], plan[:-1, 1])
    for start, end in plan:
        assert len(set(bits[start:end].tolist())) == 1


@given(st.integers(0, 20000))
@settings(max_examples=100, deadline=None)
def test_prefix_fills_the_budget_and_never_exceeds_it(artifact: NairArtifact, budget: int) -> None:  # type: ignore[misc]
    end = prefix_end(artifact, budget)
    used = packed_bytes(artifact, 0, end)
    assert used <= budget
    if end < artifact.n_components:
        assert packed_bytes(artifact, 0, end + 1) > budget  # the next component would not fit


@given(st.integers(1, 3000), st.sampled_from([None, 7, 64, 500]), st.booleans())
@settings(max_examples=100, deadline=None)
def test_run_spans_tile_the_prefix_within_their_size(artifact: NairArtifact, end: int, max_bytes: int | None,
                                                     by_plan: bool) -> None:  # type: ignore[misc]
    end = min(end, artifact.n_components)
    spans = run_spans(artifact, end, by_plan, max_bytes)
    assert spans[0][0] == 0
    assert spans[-1][1] == end
    assert all(a < b for a, b in spans)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(spans))
    if max_bytes is not None:
        assert all(packed_bytes(artifact, a, b) <= max_bytes or b - a == 1 for a, b in spans)


def test_mixed_bits_pack_round_trip(artifact: NairArtifact) -> None:
    from dataclasses import replace

    bits = np.full(artifact.n_components, 1, dtype=np.uint8)
    bits[:37], bits[37:200] = 5, 3
    mixed = replace(artifact, bits=bits)
    rng = np.random.default_rng(2)
    codes = (rng.integers(0, 1 << 16, artifact.n_components) % ((1 << bits.astype(np.int64)) - 1 + 1)).astype(np.uint16)
    for start, end in [(0, 1), (0, 37), (0, 38), (30, 250), (0, artifact.n_components)]:
        data = pack_run(codes, mixed, start, end)
        assert len(data) == packed_bytes(mixed, start, end)
        assert np.array_equal(unpack_run(data, mixed, start, end), codes[start:end])


def test_runs_decode_to_what_was_sent(artifact: NairArtifact) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, artifact.n_components).astype(np.uint16)
    spans = run_spans(artifact, prefix_end(artifact, 700), by_plan=True)
    runs = encode_runs(codes, artifact, spans)
    values, mask = decode_runs(artifact, runs[::2])
    expected = np.zeros(artifact.n_components, dtype=bool)
    for s, e in spans[::2]:
        expected[s:e] = True
    assert np.array_equal(mask, expected)
    np.testing.assert_allclose(values[mask], (codes * artifact.step + artifact.lo)[mask], rtol=1e-6)


@pytest.mark.parametrize(
    "run",
    [
        ComponentRun(0, 0, b""),
        ComponentRun(1, 1, b"\x00"),
        ComponentRun(0, 10_000_000, b"\x00"),
        ComponentRun(0, 4, b"\x00\x00"),  # 4 components at 8 bits are 4 bytes
        ComponentRun(5, 4, b"\x00"),
    ],
)
def test_runs_that_do_not_fit_the_artifact_are_refused(artifact: NairArtifact, run: ComponentRun) -> None:
    with pytest.raises(PayloadError):
        check_run(artifact, run)


def test_loss_is_deterministic_and_near_its_rate() -> None:
    random = LossModel("random", p=0.3, seed=7)
    assert np.array_equal(random.lost(5, 50), random.lost(5, 50))
    rates = [random.lost(f, 40).mean() for f in range(400)]
    assert abs(np.mean(rates) - 0.3) < 0.02
    bursty = LossModel.bursty_with_rate(0.3, mean_burst=4, seed=7)
    drops = np.concatenate([bursty.lost(f, 40) for f in range(400)])
    assert abs(drops.mean() - 0.3) < 0.04
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, drops.astype(int), 0])))[::2]
    assert runs.mean() > 2.0  # bursts, unlike independent loss
    with pytest.raises(ValueError, match="must be in"):
        LossModel("random", p=1.5)
