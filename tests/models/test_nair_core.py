"""Unit tests of the NAIR core: transform, calibration, codec, budget, loss — no broker, no shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calibration import CalibrationSettings, calibrate
from models.codec import (
    FragmentPayload,
    PayloadError,
    budget_spans,
    check_payload,
    decode_payloads,
    encode_codes,
    pack,
    unpack,
)
from models.loss import LossModel
from models.nair import ArtifactMismatchError, NairArtifact, NairTransform, bits_schedule, dct_matrix, geometric_plan
from models.pipeline import NairPipeline
from models.resnet import ResNet, ResNetConfig

TINY = ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))


@pytest.fixture(scope="module")
def tiny_model() -> ResNet:
    torch.manual_seed(0)
    return ResNet(TINY).eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)


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


def test_nair_orders_by_decreasing_variance(artifact: NairArtifact, tiny_model: ResNet, images: np.ndarray) -> None:
    with torch.no_grad():
        x = torch.from_numpy(images[:200]).float().unsqueeze(1) / 255
        comps = NairTransform(artifact).forward(tiny_model.head((x - 0.286) / 0.353, "stage2")).numpy()
    var = comps.var(axis=0)
    assert var[:10].mean() > 10 * var[-100:].mean()


def test_full_reception_reproduces_the_model(artifact: NairArtifact, tiny_model: ResNet, images: np.ndarray) -> None:
    pipe = NairPipeline(tiny_model, {"name": "tiny", "sha256": "a" * 64}, artifact)
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
        NairPipeline(tiny_model, {"name": "tiny", "sha256": "b" * 64}, artifact)


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


@given(st.integers(1, 20000))
@settings(max_examples=100, deadline=None)
def test_budget_spans_never_exceed_the_budget(artifact: NairArtifact, budget: int) -> None:  # type: ignore[misc]
    spans = budget_spans(artifact, budget)
    used = sum(((e - s) * int(artifact.bits[s]) + 7) // 8 for _i, s, e in spans)
    assert used <= budget
    assert [i for i, _s, _e in spans] == list(range(len(spans)))
    if budget < artifact.total_bytes():
        assert used > budget - 8  # filled up to the byte


def test_payloads_decode_to_what_was_sent(artifact: NairArtifact) -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, artifact.n_components).astype(np.uint16)
    spans = budget_spans(artifact, 700)
    payloads = encode_codes(codes, artifact, spans)
    values, mask = decode_payloads(artifact, payloads[::2])
    expected = np.zeros(artifact.n_components, dtype=bool)
    for _i, s, e in spans[::2]:
        expected[s:e] = True
    assert np.array_equal(mask, expected)
    np.testing.assert_allclose(values[mask], (codes * artifact.step + artifact.lo)[mask], rtol=1e-6)


@pytest.mark.parametrize(
    "payload",
    [
        FragmentPayload(99, 0, 1, 8, b"\x00"),
        FragmentPayload(0, 1, 2, 8, b"\x00"),
        FragmentPayload(0, 0, 10_000_000, 8, b"\x00"),
        FragmentPayload(0, 0, 4, 4, b"\x00\x00"),
        FragmentPayload(0, 0, 4, 8, b"\x00"),
    ],
)
def test_payloads_that_do_not_fit_the_plan_are_refused(artifact: NairArtifact, payload: FragmentPayload) -> None:
    with pytest.raises(PayloadError):
        check_payload(artifact, payload)


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
