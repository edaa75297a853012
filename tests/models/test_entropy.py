"""Range-coded NAIR runs: lossless, any prefix decodes, budgets met in real coded bytes, bad runs refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nairbus.models.architectures.resnet import ResNet, ResNetConfig
from nairbus.models.nair.calibration import CalibrationSettings, calibrate
from nairbus.models.nair.codec import ComponentRun, NairCodec, PayloadError, quantise
from nairbus.models.nair.entropy import EntropyError, decode_run, encode_run, fit_tables, longest_prefix
from nairbus.models.nair.transform import NairArtifact, NairTransform

BANDS = ((0.05, 2), (1.0, 1))


@pytest.fixture(scope="module")
def coded() -> tuple[NairArtifact, np.ndarray]:
    """A range-coded artifact of a tiny model and the codes of frames it was not fitted on."""
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(widths=(8, 16, 16), blocks=(1, 1, 1))).eval()
    images = np.random.default_rng(0).integers(0, 256, (260, 28, 28), dtype=np.uint8)
    artifact = calibrate(model, "tiny", "a" * 64, images[:200],
                         CalibrationSettings(split="stage2", bit_bands=BANDS, entropy_coding=True))
    with torch.no_grad():
        comps = NairTransform(artifact).forward(model.head(model.input_spec.prepare(images[200:]), "stage2")).numpy()
    return artifact, quantise(comps, artifact.lo, artifact.step, artifact.bits)


def test_tables_follow_the_calibration_codes_and_the_bits() -> None:
    codes = np.array([[0, 1], [0, 1], [0, 0], [1, 1]])
    tables = fit_tables(codes, np.array([1, 2]))
    np.testing.assert_allclose(tables.sum(axis=1), 1.0, rtol=1e-6)
    assert tables[0, 0] > tables[0, 1] > 0
    assert tables[0, 2:].max() == 0
    assert tables[1, 1] > tables[1, 0]
    assert tables[1, 3] > 0
    assert tables[1, 4:].max() == 0
    with pytest.raises(EntropyError, match="at most 4 bits"):
        fit_tables(codes, np.array([8, 2]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_prefix_and_every_run_round_trips(coded: tuple[NairArtifact, np.ndarray], data: st.DataObject) -> None:
    artifact, codes = coded
    row = codes[data.draw(st.integers(0, len(codes) - 1))]
    start = data.draw(st.integers(0, artifact.n_components - 1))
    end = data.draw(st.integers(start + 1, artifact.n_components))
    run = encode_run(row[start:end], artifact.tables[start:end])
    assert np.array_equal(decode_run(run, artifact.tables[start:end], artifact.bits[start:end]), row[start:end])


def test_coding_beats_packing_and_budgets_are_met_in_coded_bytes(coded: tuple[NairArtifact, np.ndarray]) -> None:
    artifact, codes = coded
    codec = NairCodec(artifact)
    for budget in (1, 5, 20, 60, 200):
        for row in codes[:10]:
            end = codec.fit(row, budget)
            assert codec.data_bytes(row, end) <= budget
            if end < artifact.n_components:  # one more component would not fit (give or take the coder's word)
                assert codec.data_bytes(row, end + 1) > budget - 4
    # At the same budget the coded prefix is longer than the packed one (the same codes, fewer bytes; an untrained
    # model on noise gives nearly uniform codes, so only a little longer here).
    assert np.mean([codec.fit(row, 60) for row in codes]) > codec.prefix_end(60)


def test_runs_decode_to_the_codes_and_garbage_is_refused(coded: tuple[NairArtifact, np.ndarray]) -> None:
    artifact, codes = coded
    codec = NairCodec(artifact)
    runs = codec.encode(codes[0], 80, by_plan=True)
    values, mask = codec.decode(runs)
    end = max(run.end for run in runs)
    assert mask[:end].all()
    assert not mask[end:].any()
    np.testing.assert_allclose(values[:end], (codes[0][:end] * artifact.step[:end] + artifact.lo[:end]), rtol=1e-6)
    with pytest.raises(PayloadError):
        codec.decode([ComponentRun(0, 40, b"\xff" * 9)])
    with pytest.raises(PayloadError, match="outside"):
        codec.decode([ComponentRun(0, artifact.n_components + 1, b"\x00")])


def test_a_long_run_is_cut_to_the_fragment_limit(coded: tuple[NairArtifact, np.ndarray]) -> None:
    artifact, codes = coded
    runs = NairCodec(artifact).encode(codes[0], end=artifact.n_components, max_bytes=30)
    assert all(len(run.data) <= 30 for run in runs)
    assert [(r.start, r.end) for r in runs] == sorted((r.start, r.end) for r in runs)
    assert runs[0].start == 0
    assert runs[-1].end == artifact.n_components
    assert all(a.end == b.start for a, b in itertools.pairwise(runs))


def test_tables_travel_in_the_artifact_and_its_hash(coded: tuple[NairArtifact, np.ndarray], tmp_path: Path) -> None:
    artifact, _ = coded
    back = NairArtifact.load(artifact.save(tmp_path / "coded.nair.npz"))
    assert back.entropy_coded
    assert back.coding == "range"
    assert back.sha256 == artifact.sha256
    np.testing.assert_array_equal(back.tables, artifact.tables)
    packed = NairArtifact(**{**{f: getattr(artifact, f) for f in artifact.__dataclass_fields__}, "tables":
                             np.zeros((0, 0), dtype=np.float32)})
    assert packed.coding == "packed"
    assert packed.sha256 != artifact.sha256


def test_longest_prefix_of_nothing() -> None:
    tables = fit_tables(np.zeros((4, 3), dtype=int), np.array([1, 1, 1]))
    assert longest_prefix(np.zeros(3, dtype=int), tables, 0) == 0
    assert longest_prefix(np.zeros(3, dtype=int), tables, 100) == 3
    assert encode_run(np.zeros(0, dtype=int), tables[:0]) == b""


def test_a_codec_remembers_only_the_frame_it_is_coding(coded: tuple[NairArtifact, np.ndarray]) -> None:
    """The sensor fits, sizes and sends one frame's runs: the codec codes each prefix once, and a new frame's codes
    never get an earlier frame's runs (frames interleaved, compared with coding from scratch)."""
    artifact, codes = coded
    codec = NairCodec(artifact)
    for row in [codes[0], codes[1], codes[0], codes[2], codes[2]]:
        for budget in (7, 30, 90):
            end = codec.fit(row, budget)
            assert end == longest_prefix(row, artifact.tables, budget)
            assert codec.data_bytes(row, end) == len(encode_run(row[:end], artifact.tables[:end]))
            runs = codec.encode(row, end=end, max_bytes=40)
            _, mask = codec.decode(runs)
            assert mask[:end].all()
            assert not mask[end:].any()
            assert np.array_equal(b"".join(r.data for r in runs),
                                  b"".join(encode_run(row[r.start:r.end], artifact.tables[r.start:r.end])
                                           for r in runs))
