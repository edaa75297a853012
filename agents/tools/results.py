"""Following a bus as a bench or a test does: every result with when it arrived, and which fusion agents are online.

:class:`Results` is its own MQTT client on a thread of its own; it keeps duplicates (a frame decided twice shows as
two entries), so a fleet's "decided once" can be checked.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections import Counter

from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.schemas import Result, Status
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.codec import WireError
from nairbus.schemas.topics import TopicTree

__all__ = ["Results"]


class Results:
    """Every result of ``topics`` (monotonic arrival time, result) and the fusion agents whose status is online."""

    def __init__(self, broker: PrivateMosquitto, topics: TopicTree, qos: int = 0) -> None:
        self.topics = topics
        self.comm = Communicator(BrokerSettings(host=broker.host, port=broker.port),
                                 f"nairbus-observer-{uuid.uuid4().hex[:8]}", None, lambda state: b"", inbox_key=None)
        self.comm.subscribe(topics.all_results(), qos=qos)
        self.comm.subscribe(topics.all_fusion("status"), qos=0)
        self.got: list[tuple[float, Result]] = []
        self.fusion_online = threading.Event()
        self.online: set[str] = set()
        """Fusion agents whose status says online."""
        self.bad = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name="results")

    def __enter__(self) -> Results:
        self.comm.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.comm.stop()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self.comm.get(timeout=0.1)
            parsed = self.topics.parse(message.topic) if message is not None else None
            if message is None or parsed is None:
                continue
            try:
                if parsed.kind == "result":
                    self.got.append((time.monotonic(), wire_decode(message.payload, Result)))
                elif parsed.kind == "fusion_status" and message.payload:
                    if wire_decode(message.payload, Status).state == "online":
                        self.online.add(parsed.ident)
                        self.fusion_online.set()
                    else:
                        self.online.discard(parsed.ident)
            except WireError:
                self.bad += 1

    def wait_online(self, proc: subprocess.Popen[bytes], timeout: float = 180.0, agents: int = 1) -> None:
        """Until ``agents`` fusion agents are online; an error when ``proc`` (the first of them) ends first or
        ``timeout`` passes."""
        end = time.monotonic() + timeout
        while not self.fusion_online.wait(0.2) or len(self.online) < agents:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the fusion agent did not come online (exit {proc.poll()}); see its log")
            time.sleep(0.05)

    def wait_for(self, keys: set[tuple[str, int]], timeout: float) -> None:
        """Until a result of every ``(stream, frame id)`` of ``keys`` arrived, or ``timeout`` passed."""
        end = time.monotonic() + timeout
        while not keys <= {(r.stream_id, r.frame_id) for _, r in list(self.got)} and time.monotonic() < end:
            time.sleep(0.05)

    def per_frame(self) -> Counter[tuple[str, int]]:
        """How many results each ``(stream, frame id)`` got."""
        return Counter((r.stream_id, r.frame_id) for _, r in list(self.got))
