"""``nairbus watch``: a live, human-readable view of the result topics.

One row per result stream, updated as results arrive: the label and confidence of the latest frame, the runner-up
classes, how much of the IR (or which variants) it was decided on, latency, frames and results per second, and the
age of the last result — plus the fusion agents' retained status. With ``--json`` it prints each result as one JSON
line instead (for scripts and ``jq``). It only reads: no status topic, no last will, so a read-only broker account
(``watch.<name>`` in broker/acl) is enough.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.mqtt import Communicator, InboundMessage
from nairbus.schemas import Result, Status, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas.topics import TopicTree


@dataclass
class StreamView:
    """What the view shows of one stream."""

    latest: Result
    received_at: float
    frames: int = 1
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=200))

    def rate(self, now: float, window: float = 5.0) -> float:
        """Results per second over the last ``window`` seconds."""
        times = [t for t in self.recent if now - t <= window]
        return len(times) / window if times else 0.0


@dataclass
class WatchState:
    """Everything seen so far: streams by id, fusion agents' status, and messages that did not parse."""

    streams: dict[str, StreamView] = field(default_factory=dict)
    fusion: dict[str, str] = field(default_factory=dict)
    bad: int = 0

    def add(self, topics: TopicTree, message: InboundMessage) -> Result | None:
        """Take one message in; returns the result it carried, if any."""
        parsed = topics.parse(message.topic)
        try:
            if parsed is not None and parsed.kind == "result":
                result = wire_decode(message.payload, Result)
                view = self.streams.get(result.stream_id)
                if view is None:
                    view = self.streams[result.stream_id] = StreamView(result, message.received_ts)
                else:
                    view.latest, view.received_at = result, message.received_ts
                    view.frames += 1
                view.recent.append(message.received_ts)
                return result
            if parsed is not None and parsed.kind == "fusion_status" and message.payload:
                self.fusion[parsed.ident] = wire_decode(message.payload, Status).state
        except WireError:
            self.bad += 1
        return None


def render(state: WatchState, topics: TopicTree, now: float) -> Group:
    """The screen: a table of streams and a status line."""
    table = Table(title=f"nairbus results — {topics.prefix}/results/+", expand=True, title_justify="left")
    for name, justify in (("stream", "left"), ("label", "left"), ("conf", "right"), ("runner-up", "left"),
                          ("received", "right"), ("latency", "right"), ("frame", "right"), ("item", "left"),
                          ("rate", "right"),
                          ("age", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for stream in sorted(state.streams):
        view = state.streams[stream]
        r = view.latest
        runner_up = ", ".join(f"{t.label} {t.score:.2f}" for t in r.topk[1:3]) or "-"
        received = f"{r.fraction_received:.0%}" + ("" if r.complete else " partial")
        variants = getattr(r, "variants", ())
        if variants:
            received = f"{len(variants)} variants"
        age = now - view.received_at
        conf_style = "green" if r.confidence >= 0.8 else "yellow" if r.confidence >= 0.5 else "red"
        table.add_row(stream, Text(r.label, style="bold"), Text(f"{r.confidence:.2f}", style=conf_style), runner_up,
                      received, f"{r.latency_ms:.0f} ms", str(r.frame_id), Text(r.item or "-"),
                      f"{view.rate(now):.1f}/s",
                      Text(f"{age:.1f} s", style="red" if age > 10 else ""))
    fusion = ", ".join(f"{fid} [{'green' if s == 'online' else 'red'}]{s}[/]"
                       for fid, s in sorted(state.fusion.items()))
    footer = Text.from_markup(f"fusion: {fusion or 'none seen'}  ·  streams: {len(state.streams)}"
                              + (f"  ·  [red]{state.bad} unreadable[/]" if state.bad else "")
                              + ("  ·  waiting for results…" if not state.streams else ""))
    return Group(table, footer)


def watch(config: AgentConfig, *, console: Console | None = None, count: int | None = None,
          streams: set[str] | None = None, as_json: bool = False, out: IO[str] | None = None,
          stop: threading.Event | None = None, refresh_per_second: float = 4.0) -> WatchState:
    """Show results until interrupted (``stop`` set, Ctrl-C) or ``count`` results were shown.

    ``streams`` limits the view to those stream ids; ``as_json`` writes one JSON line per result to ``out``.
    Raises ``ConnectionError`` when the broker cannot be reached or refuses the account.
    """
    topics = TopicTree(config.topics.root, config.topics.site)
    comm = Communicator(config.broker, f"nairbus-watch-{uuid.uuid4().hex[:8]}", None, lambda state: b"")
    if streams:
        for stream in sorted(streams):
            comm.subscribe(topics.result(stream), qos=0)
    else:
        comm.subscribe(topics.all_results(), qos=0)
    comm.subscribe(topics.all_fusion("status"), qos=0)
    comm.start()
    state = WatchState()
    stop = stop or threading.Event()
    shown = 0
    console = console or Console()
    try:
        if as_json:
            while not stop.is_set() and (count is None or shown < count):
                message = comm.get(timeout=0.2)
                if message is not None and (result := state.add(topics, message)) is not None:
                    print(result.model_dump_json(), file=out, flush=True)
                    shown += 1
            return state
        with Live(render(state, topics, time.time()), console=console, refresh_per_second=refresh_per_second,
                  transient=False) as live:
            next_draw = 0.0
            while not stop.is_set() and (count is None or shown < count):
                message = comm.get(timeout=0.25)
                if message is not None and state.add(topics, message) is not None:
                    shown += 1
                now = time.monotonic()
                if now >= next_draw or (count is not None and shown >= count):
                    live.update(render(state, topics, time.time()))
                    next_draw = now + 1.0 / refresh_per_second
        return state
    except KeyboardInterrupt:
        return state
    finally:
        comm.stop()

