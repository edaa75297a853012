"""What a device keeps between runs, on its own disk: where (:func:`state_dir`), and the controls a command set
(:class:`ControlsMemory`).

A control changed by a command — from Home Assistant's number and switch entities or ``nairbus set``: the budget, the
deadline, a frame-rate cap, pause — is written to ``controls-<sensor>.json`` under :func:`state_dir` and re-applied
when the sensor starts again, before its birth is published: a command's value wins over the configuration's until
another command changes it (``remember_controls = false`` in the sensor's settings starts from the configuration
every time). Reading and writing never fail a sensor: a missing, unreadable or invalid file is no memory (logged), a
write that fails is skipped (logged).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nairbus.agents.runtime.logging import get_logger
from nairbus.schemas import Controls, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode

__all__ = ["ControlsMemory", "state_dir"]

log = get_logger("nairbus.state")


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where a device keeps what it learnt between runs: ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else
    ``$XDG_STATE_HOME/nairbus``, else ``~/.local/state/nairbus``."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "nairbus"


@dataclass(frozen=True, slots=True)
class ControlsMemory:
    """The controls a command last set on one sensor, in a JSON file (the retained :class:`Controls` message)."""

    path: Path

    @classmethod
    def for_sensor(cls, sensor_id: str, directory: Path | None = None) -> ControlsMemory:
        """The memory of sensor ``sensor_id`` under ``directory`` (default :func:`state_dir`)."""
        return cls((directory or state_dir()) / f"controls-{sensor_id}.json")

    def load(self, sensor_id: str) -> Controls | None:
        """The remembered controls of ``sensor_id``; None when there are none, or the file is not theirs."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("controls_memory_unreadable", path=str(self.path), error=str(exc))
            return None
        try:
            controls = wire_decode(data, Controls)
        except WireError as exc:
            log.warning("controls_memory_invalid", path=str(self.path), reason=exc.reason, error=str(exc)[:200])
            return None
        if controls.agent_id != sensor_id:
            log.warning("controls_memory_other_sensor", path=str(self.path), agent_id=controls.agent_id)
            return None
        return controls

    def save(self, controls: Controls) -> None:
        """Remember ``controls`` (written beside, then renamed over the file: never half a file)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".part")
            partial.write_bytes(wire_encode(controls))
            partial.replace(self.path)
        except OSError as exc:
            log.warning("controls_memory_not_written", path=str(self.path), error=str(exc))

    def forget(self) -> None:
        """Remove the memory (a missing one is fine)."""
        self.path.unlink(missing_ok=True)
