"""CPU control groups of the fault bench: a device's process is held to its cap, and nothing is left behind."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from nairbus.agents.tools.cpugroups import CpuGroups

BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_a_device_is_held_to_its_cpu_cap_and_the_groups_are_removed() -> None:
    groups = CpuGroups(device_cpus=0.2).open()
    if not groups.active:
        pytest.skip(f"no writable cgroup cpu controller here: {groups.isolation['why']}")
    parent = groups._parent
    assert parent is not None
    try:
        before = _children_cpu_s()
        proc = subprocess.Popen([sys.executable, "-c", BUSY.format(s=2.0)])
        groups.device("busy", proc.pid)
        proc.wait(30)
        used = _children_cpu_s() - before
        # 2 s of wall time at 0.2 of a core is 0.4 CPU seconds; the interpreter's start ran before the move.
        assert used < 0.9, used
        throttled = groups.throttled()["device-busy"]
        assert throttled["periods_throttled"] > 0
        assert groups.isolation["groups"]["device-busy"] == {"cpus": 0.2, "weight": 1}
        groups.hub(os.getpid())
        assert parent.name in Path("/proc/self/cgroup").read_text()
    finally:
        groups.close()
    assert not parent.exists()
    assert parent.name not in Path("/proc/self/cgroup").read_text()  # this process went back home


def test_without_a_controller_nothing_moves_and_the_reason_is_kept(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    import nairbus.agents.tools.cpugroups as cg

    monkeypatch.setattr(cg, "V1_CPU", tmp_path / "none")
    monkeypatch.setattr(cg, "V2_ROOT", tmp_path / "none2")
    groups = CpuGroups().open()
    assert not groups.active
    assert "no cpu controller" in groups.isolation["why"]
    groups.device("x", os.getpid())  # a no-op, not an error
    groups.hub(os.getpid())
    assert groups.throttled() == {}
    groups.close()


def test_a_cap_outside_the_machine_is_refused() -> None:
    with pytest.raises(ValueError, match="device_cpus"):
        CpuGroups(device_cpus=0.0).open()
    with pytest.raises(ValueError, match="device_cpus"):
        CpuGroups(device_cpus=float((os.cpu_count() or 1) + 1)).open()


def test_the_attacker_refuses_unbounded_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "nairbus.agents.tools.attacker", "flood", "--port", "1", "--root", "r",
                          "--site", "s", "--seconds", "0"], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--seconds" in out.stderr
