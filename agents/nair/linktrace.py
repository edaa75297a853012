"""A sensor's link, sample by sample: what the link fitting saw and what it decided, as JSON lines.

``nairbus sensor --link-trace FILE`` (and every run of ``nairbus bench link``) writes one line per sample of the link
— ``{"t", "handed", "backlog", "tcp": {...}}``: seconds on the monotonic clock, wire bytes handed over so far, bytes
not yet delivered (paho's and the kernel's), and the kernel's ``TCP_INFO`` of the connection — and one per frame
budget — ``{"t", "age", "deadline", "period", "cap", "budget", "reason", "rate", "backlog"}``.
:func:`nairbus.agents.nair.link.replay_trace` feeds such a file back into a fresh estimator, so the estimator is
tested as the pure function it is, on what real links did (``tests/agents/data/link-traces/``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from nairbus.agents.runtime.linkprobe import TcpInfo

__all__ = ["LinkTrace", "read_trace"]


class LinkTrace:
    """Writes a link's samples and decisions to a file, a line each (flushed per frame budget, closed at stop)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] | None = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any], flush: bool = False) -> None:
        with self._lock:
            if self._file is None:
                return
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            if flush:
                self._file.flush()

    def sample(self, now: float, handed: int, backlog: int, info: TcpInfo | None) -> None:
        """One sample of the link (monotonic seconds, bytes handed over so far, bytes not delivered, TCP_INFO)."""
        record: dict[str, Any] = {"t": round(now, 6), "handed": handed, "backlog": backlog}
        if info is not None:
            record["tcp"] = dataclasses.asdict(info)
        self._write(record)

    def budget(self, now: float, age: float, deadline: float, period: float, cap: int | None,
               decision: Mapping[str, Any]) -> None:
        """One frame's budget (``decision``: budget, reason, rate, backlog) and the figures it was given."""
        self._write({"t": round(now, 6), "age": round(age, 6), "deadline": deadline, "period": period, "cap": cap,
                     **decision}, flush=True)

    def close(self) -> None:
        """Stop writing (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_trace(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a trace file, in order (a torn last line, from a sensor killed mid-write, is left out)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return
