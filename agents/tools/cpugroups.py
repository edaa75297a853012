"""CPU control groups that model separate machines on one test box: the hub and each device get their own CPU.

On a real deployment the broker and the fusion agent run on the hub and every sensor on a device of its own, so a
device that floods the bus spends its own CPU, not the hub's or the other devices'. The fault bench runs them all on
one machine; without isolation an attacker process competes with the victims' sensor processes for the same cores,
and the bench would measure the test box's CPU contention instead of the bus's fairness. :class:`CpuGroups` puts
each device in a control group capped at ``device_cpus`` of a core (``cpu.cfs_quota_us``) and gives the hub group
``hub_weight`` times a device's share of contended CPU (``cpu.shares``), on the cgroup v1 ``cpu`` controller or the
cgroup v2 unified hierarchy (``cpu.max``, ``cpu.weight``); the bench starts device processes with one compute
thread (``OMP_NUM_THREADS=1``), as a device of less than one core would run. Where neither is writable (not
root, a container without a delegated hierarchy) it does nothing and says why in :attr:`CpuGroups.isolation`, which
the report records.
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

V1_CPU = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _own_group_v1(root: Path) -> Path:
    """The cgroup v1 ``cpu`` group this process is in (``/proc/self/cgroup``), as a directory under ``root``."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return root / path.lstrip("/")
    return root


def _own_group_v2(root: Path) -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return root / line[3:].lstrip("/")
    return root


@dataclass
class CpuGroups:
    """A hub group and one group per device under a parent of this process's own; :meth:`close` removes them."""

    device_cpus: float = 0.5
    """Most CPU a device may use, in cores."""
    hub_weight: int = 2
    """The hub's share of contended CPU relative to one device's."""
    name: str = field(default_factory=lambda: f"nairbus-bench-{os.getpid()}")
    isolation: dict[str, Any] = field(default_factory=dict)
    _kind: str | None = None
    _parent: Path | None = None
    _home: Path | None = None
    _groups: dict[str, Path] = field(default_factory=dict)

    def open(self) -> CpuGroups:
        """Create the parent group; on failure record why and leave every process where it is."""
        if not 0.01 <= self.device_cpus <= (os.cpu_count() or 1):
            raise ValueError(f"device_cpus must be between 0.01 and {os.cpu_count()}, not {self.device_cpus}")
        errors = []
        for kind, root, home in (("cgroup v1 cpu", V1_CPU, _own_group_v1),
                                 ("cgroup v2", V2_ROOT, _own_group_v2)):
            if kind == "cgroup v2" and "cpu" not in _read(root / "cgroup.controllers").split():
                errors.append("cgroup v2: no cpu controller at /sys/fs/cgroup")
                continue
            if kind == "cgroup v1 cpu" and not (root / "cpu.cfs_quota_us").exists():
                errors.append("cgroup v1: no cpu controller mounted at /sys/fs/cgroup/cpu")
                continue
            try:
                own = home(root)
                parent = own / self.name
                parent.mkdir(exist_ok=True)
                if kind == "cgroup v2":
                    (parent / "cgroup.subtree_control").write_text("+cpu")
            except OSError as exc:
                errors.append(f"{kind}: {exc}")
                continue
            self._kind, self._parent, self._home = kind, parent, own
            self.isolation = {"kind": kind, "device_cpus": self.device_cpus, "hub_weight": self.hub_weight,
                              "groups": {}}
            return self
        self.isolation = {"kind": None, "why": "; ".join(errors)}
        return self

    @property
    def active(self) -> bool:
        return self._parent is not None

    def _group(self, name: str, cpus: float | None, weight: int) -> Path | None:
        if self._parent is None:
            return None
        path = self._groups.get(name)
        if path is not None:
            return path
        path = self._parent / name
        path.mkdir(exist_ok=True)
        if self._kind == "cgroup v2":
            (path / "cpu.max").write_text(f"{round(cpus * PERIOD_US)} {PERIOD_US}" if cpus else f"max {PERIOD_US}")
            (path / "cpu.weight").write_text(str(100 * weight))
        else:
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(round(cpus * PERIOD_US)) if cpus else "-1")
            (path / "cpu.shares").write_text(str(1024 * weight))
        self._groups[name] = path
        self.isolation["groups"][name] = {"cpus": cpus, "weight": weight}
        return path

    def hub(self, pid: int) -> None:
        """Put ``pid`` (and every process it starts from now on) in the hub group: no cap, ``hub_weight`` shares."""
        self._move(self._group("hub", None, self.hub_weight), pid)

    def device(self, name: str, pid: int) -> None:
        """Put ``pid`` in device ``name``'s group: at most ``device_cpus`` cores, one share."""
        self._move(self._group(f"device-{name}", self.device_cpus, 1), pid)

    def throttled(self) -> dict[str, dict[str, float]]:
        """Per group so far: how many scheduler periods it ran into its cap and the seconds it waited there."""
        out = {}
        for name, path in self._groups.items():
            stat = dict(line.split()[:2] for line in _read(path / "cpu.stat").splitlines() if " " in line)
            if self._kind == "cgroup v2":
                waited = int(stat.get("throttled_usec", 0)) / 1e6
            else:
                waited = int(stat.get("throttled_time", 0)) / 1e9
            out[name] = {"periods_throttled": int(stat.get("nr_throttled", 0)), "throttled_s": round(waited, 3)}
        return out

    @staticmethod
    def _move(path: Path | None, pid: int) -> None:
        if path is None:
            return
        with suppress(ProcessLookupError):  # it has already ended
            (path / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        """Move what is left back to this process's own group and remove the groups."""
        if self._parent is None or self._home is None:
            return
        for path in self._groups.values():
            for pid in _read(path / "cgroup.procs").split():
                with suppress(OSError):
                    (self._home / "cgroup.procs").write_text(pid)
        for path in self._groups.values():
            with suppress(OSError):
                path.rmdir()
        with suppress(OSError):
            self._parent.rmdir()
        self._parent = None
        self._groups = {}

    def __enter__(self) -> CpuGroups:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
