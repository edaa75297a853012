"""What a fusion agent tells the parts attached to it: the :class:`FusionObserver` protocol.

A fusion agent decides frames; what else follows its decisions — Home Assistant discovery and the home-automation
states of its streams (:mod:`nairbus.agents.home`), a metrics exporter — is an observer it is *given* (Frigate's
dispatcher fans out to its communicators the same way). The runtime knows only this protocol, never what observes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.schemas import Result

__all__ = ["FusionObserver"]


class FusionObserver(Protocol):
    """The events a fusion agent reports to what observes it, in the worker thread, in order."""

    def attach(self) -> None:
        """Subscribe and route what the observer reads on the bus (called once, when it is added)."""

    def handle(self, message: InboundMessage, now: float) -> bool:
        """Take a message before topic routing; True when it was the observer's."""

    def note_sensor_status(self, sensor_id: str, online: bool, *, role: str) -> None:
        """An agent's retained status changed (``role``: ``sensor`` or ``capture``)."""

    def forget_agent(self, agent_id: str) -> None:
        """An agent's status was cleared: it is gone for good."""

    def note_result(self, result: Result) -> None:
        """A decision was published."""

    def note_deadline(self, deadline_s: float) -> None:
        """The fusion deadline changed (a command)."""

    def after_round(self, sensors: Iterable[object], labels: Mapping[str, Sequence[str]], now: float) -> None:
        """One worker-loop round is over: the sensors known now and each stream's labels."""
