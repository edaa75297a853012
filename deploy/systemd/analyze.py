"""Check the nairbus systemd units and record their exposure: ``systemd-analyze verify`` and ``security``.

    .venv/bin/python deploy/systemd/analyze.py            # verify both units, write reports/systemd.json
    .venv/bin/python deploy/systemd/analyze.py --check    # verify, and fail if the report is not current

``verify`` checks a unit the way systemd would load it, including that its ``ExecStart`` binary exists. The units
point at the install location (``/opt/nairbus/.venv/bin/nairbus``), so they are checked inside a temporary root
(``--root``) that holds the units, a copy of this machine's system units (targets they order against) and an
executable at that path — the unit files themselves are checked unchanged. The template is checked as an instance
(``nairbus-sensor@cam-01.service``), the way it runs, and with each shipped drop-in: ``camera.conf`` (one V4L2 device
granted) as ``nairbus-sensor@camera.service``, ``pip.conf`` (the program of a pip install) as
``nairbus-sensor@pip.service``. ``security --offline=true`` rates each unit's sandboxing
(0 = fully locked down, 10 = fully exposed; systemd calls up to 4.9 "OK", up to 1.9 "SAFE").
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

UNIT_DIR = Path(__file__).resolve().parent
REPO = UNIT_DIR.parents[1]
REPORT = REPO / "reports" / "systemd.json"
UNITS = {"nairbus-fusion.service": "nairbus-fusion.service", "nairbus-sensor@cam-01.service": "nairbus-sensor@.service",
         "nairbus-sensor@camera.service": "nairbus-sensor@.service", "nairbus-sensor@pip.service":
         "nairbus-sensor@.service"}
"""Unit name checked -> unit file in deploy/systemd/."""
DROP_INS = {"nairbus-sensor@camera.service": ("camera.conf",), "nairbus-sensor@pip.service": ("pip.conf",)}
"""Unit name checked -> the drop-ins of deploy/systemd/ it is checked with (a camera sensor, a pip install)."""
EXEC = "/opt/nairbus/.venv/bin/nairbus"
PIP_EXEC = "/usr/local/bin/nairbus"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 4.9
_OVERALL = re.compile(r"Overall exposure level for (\S+): ([0-9.]+) (\w+)")


class UnitCheckError(RuntimeError):
    """systemd-analyze is missing, or a unit failed verification."""


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        raise UnitCheckError("systemd-analyze is not installed (it comes with Debian's 'systemd' package)")
    return found


def make_root(root: Path) -> Path:
    """Lay out a root with the units, the system's unit directory and an executable at the ExecStart path."""
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit_file in set(UNITS.values()):
        shutil.copy(UNIT_DIR / unit_file, etc / unit_file)
    for unit, drop_ins in DROP_INS.items():
        (etc / f"{unit}.d").mkdir()
        for drop_in in drop_ins:
            shutil.copy(UNIT_DIR / drop_in, etc / f"{unit}.d" / drop_in)
    if SYSTEM_UNITS.is_dir():
        shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    for path in (EXEC, PIP_EXEC):
        exe = root / path.lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return root


def verify(root: Path, units: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify --root=root`` on the units; the caller checks ``returncode`` and ``stderr``."""
    return subprocess.run([_systemd_analyze(), "verify", f"--root={root}", *(units or list(UNITS))],
                          capture_output=True, text=True, timeout=60, check=False)


def security(root: Path, unit: str) -> dict[str, Any]:
    """Overall exposure, rating and the settings that still add exposure, for one unit."""
    base = [_systemd_analyze(), "security", "--offline=true", f"--root={root}", "--no-pager"]
    text = subprocess.run([*base, unit], capture_output=True, text=True, timeout=60, check=False).stdout
    match = _OVERALL.search(text)
    if match is None:
        raise UnitCheckError(f"no overall exposure in systemd-analyze security output for {unit}:\n{text[-2000:]}")
    details = json.loads(subprocess.run([*base, "--json=short", unit], capture_output=True, text=True, timeout=60,
                                        check=True).stdout)
    open_items = sorted(
        (item["name"], item["exposure"]) for item in details if item.get("exposure") and not item.get("set")
    )
    return {
        "exposure": float(match.group(2)),
        "rating": match.group(3),
        "unit_file": f"deploy/systemd/{UNITS[unit]}",
        "drop_ins": [f"deploy/systemd/{d}" for d in DROP_INS.get(unit, ())],
        "remaining_exposure": [{"setting": name, "exposure": exposure} for name, exposure in open_items],
    }


def analyze() -> dict[str, Any]:
    """Verify every unit and rate it; raises :class:`UnitCheckError` when verification fails."""
    with tempfile.TemporaryDirectory(prefix="nairbus-units-") as tmp:
        root = make_root(Path(tmp))
        result = verify(root)
        if result.returncode != 0 or result.stderr.strip():
            raise UnitCheckError(f"systemd-analyze verify failed:\n{result.stderr}{result.stdout}")
        version = subprocess.run([_systemd_analyze(), "--version"], capture_output=True, text=True,
                                 check=True).stdout.splitlines()[0]
        return {
            "command": ".venv/bin/python deploy/systemd/analyze.py",
            "systemd": version,
            "verify": "passed",
            "max_exposure_allowed": MAX_EXPOSURE,
            "units": {unit: security(root, unit) for unit in UNITS},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if reports/systemd.json is not current")
    args = parser.parse_args(argv)
    try:
        report = analyze()
    except UnitCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for unit, data in report["units"].items():
        print(f"{unit}: exposure {data['exposure']} {data['rating']}")
    worst = max(data["exposure"] for data in report["units"].values())
    if worst > MAX_EXPOSURE:
        print(f"error: exposure {worst} is over {MAX_EXPOSURE}", file=sys.stderr)
        return 1
    if args.check:
        current = json.loads(REPORT.read_text()) if REPORT.is_file() else None
        if current != report:
            print(f"error: {REPORT.relative_to(REPO)} is not current; run {report['command']}", file=sys.stderr)
            return 1
        return 0
    from nairbus.agents.tools.reports import SystemdReport, write_report

    write_report(REPORT, SystemdReport.from_data(report))  # refused here if the report drifts from its model
    print(f"wrote {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
