"""``nairbus calibrate`` as a user runs it: the same command writes the same artifact sha256, bit allocations are
options, and ``--wire-bytes`` chooses an allocation on the validation split and says what it compared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.calibration import parse_bit_bands
from models.nair import NairArtifact, bits_schedule

pytestmark = pytest.mark.e2e
NAIRBUS = Path(sys.executable).with_name("nairbus")


def _calibrate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", "TERM": "dumb"}
    return subprocess.run([str(NAIRBUS), "calibrate", *args], capture_output=True, text=True, timeout=600, env=env,
                          check=False)


def test_the_same_command_reproduces_the_same_sha256(tmp_path: Path) -> None:
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in paths:
        out = _calibrate("--images", "300", "--out", str(path))
        assert out.returncode == 0, out.stdout + out.stderr
    first, second = (NairArtifact.load(p) for p in paths)
    assert first.sha256 == second.sha256
    assert first.sha256[:12] in out.stdout + out.stderr
    # The provenance is kept, but outside the hash.
    assert first.meta["provenance"]["command"] == f"nairbus calibrate --images 300 --out {paths[0]}"
    assert "calibration_seconds" in first.meta["provenance"]
    first.meta["provenance"]["calibration_seconds"] = -1.0
    assert first.sha256 == second.sha256


def test_bit_bands_are_an_option_and_change_the_artifact(tmp_path: Path) -> None:
    eight, banded = tmp_path / "8.npz", tmp_path / "321.npz"
    assert _calibrate("--images", "300", "--out", str(eight)).returncode == 0
    out = _calibrate("--images", "300", "--bit-bands", "0.02:3,0.06:2,1:1", "--out", str(banded))
    assert out.returncode == 0, out.stdout + out.stderr
    a, b = NairArtifact.load(eight), NairArtifact.load(banded)
    assert a.sha256 != b.sha256
    assert np.array_equal(b.bits, bits_schedule(b.n_components, [(0.02, 3), (0.06, 2), (1.0, 1)]))
    assert b.total_bytes() < a.total_bytes() / 5
    assert b.meta["provenance"]["command"].endswith(f"--bit-bands 0.02:3,0.06:2,1:1 --out {banded}")


@pytest.mark.parametrize(("args", "needle"), [
    (("--bit-bands", "0.5:3"), "end at 1"),
    (("--bit-bands", "0.5:3,0.2:2,1:1"), "rising"),
    (("--bit-bands", "1:0"), "1..16"),
    (("--bit-bands", "lots"), "FRACTION:BITS"),
    (("--bit-bands", "8", "--wire-bytes", "200"), "not both"),
    (("--wire-bytes", "0"), "positive"),
    (("--images", "0"), "--images"),
    (("--images", "56000", "--wire-bytes", "200"), "held out for validation"),
    (("--split", "nowhere"), "no split point"),
])
def test_bad_options_are_clear_errors(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    out = _calibrate(*args, "--out", str(tmp_path / "x.npz"))
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert needle in text
    assert "Traceback" not in text
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_wire_bytes_chooses_the_allocation_best_on_validation(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    out = _calibrate("--images", "300", "--wire-bytes", "200", "--out", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    artifact = NairArtifact.load(path)
    selection = artifact.meta["provenance"]["selection"]
    assert selection["wire_bytes"] == 200
    assert selection["split"].startswith("validation")
    compared = selection["compared"]
    assert len(compared) >= 5
    best = max(compared, key=lambda row: row["accuracy"])
    assert selection["chosen"] == best["bit_bands"]
    assert np.array_equal(artifact.bits, bits_schedule(artifact.n_components, list(parse_bit_bands(best["bit_bands"]))))
    assert next(row for row in compared if row["bit_bands"] == best["bit_bands"])["artifact_sha256"] == artifact.sha256
    assert f"chosen on validation: --bit-bands {best['bit_bands']}" in out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["base.nair.npz", "base.stage3.nair.npz"])
def test_each_shipped_artifact_is_reproduced_by_its_recorded_command(tmp_path: Path, name: str) -> None:
    from models.store import WEIGHTS_DIR

    shipped = NairArtifact.load(WEIGHTS_DIR / name)
    command = shipped.meta["provenance"]["command"].split()
    assert command[:2] == ["nairbus", "calibrate"]
    args = command[2:]
    if "--out" in args:
        del args[args.index("--out") : args.index("--out") + 2]
    out = _calibrate(*args, "--out", str(tmp_path / name))
    assert out.returncode == 0, out.stdout + out.stderr
    again = NairArtifact.load(tmp_path / name)
    if again.sha256 == shipped.sha256:
        return
    # Another CPU (its convolution kernels sum in another order) moves the deep IR in the last float32 bits, so the
    # float statistics may differ there; everything discrete must be identical and the floats agree to 1e-5.
    assert again._hashed_header() == shipped._hashed_header()
    for field in ("order", "bits", "plan"):
        assert np.array_equal(getattr(again, field), getattr(shipped, field)), field
    for field in ("mean", "channel_basis", "fill", "lo", "step"):
        np.testing.assert_allclose(getattr(again, field), getattr(shipped, field), rtol=1e-5, atol=1e-6,
                                   err_msg=field)
