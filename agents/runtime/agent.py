"""The base of every device-side agent — the NAIR sensor, the VP sensor and the capture agent.

:class:`DeviceAgent` owns what they all have: the configuration, the topic tree, the stop event, the bus (given, or a
connection of its own with a retained status and a last will under ``…/sensors/<agent_id>/status``) and the start/stop
life cycle with its two log lines. :class:`SensorBase` adds what a sensor has beyond that: a retained birth that is
published again on every reconnect and on a rebirth request, the commands on its set topic
(:class:`nairbus.agents.runtime.commands.SensorControl`) and the lean wire's context (session epoch and expiry). A new
kind of device agent subclasses one of them and supplies its birth and its loop; the fusion side has
:class:`nairbus.agents.runtime.fusion_base.FusionBase`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Literal

from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.commands import SensorControl
from nairbus.agents.runtime.config import AgentConfig, SensorSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.state import ControlsMemory
from nairbus.schemas import CONTENT_TYPE_JSON, Birth, Status, Tally
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.lean import LeanContext
from nairbus.schemas.topics import TopicTree

TALLY_GRACE_S = 0.5
"""After the first tally, how long a sensor waits for more (a fusion fleet's members each tally what they decided)
unless the tallies already account for every frame it sent."""

log = get_logger("nairbus.agent")

EPOCH_LEAD_S = 60.0
"""The session epoch lies this far before the start, so a frame captured just before it still has a time."""


class DeviceAgent:
    """Config, topics, bus, status and start/stop of an agent on a device (``role``: its status's role)."""

    role: ClassVar[Literal["sensor", "capture"]] = "sensor"
    event_prefix: ClassVar[str] = "agent"
    """Start and stop are logged as ``<event_prefix>_started`` and ``<event_prefix>_stopped``."""

    def __init__(self, config: AgentConfig, agent_id: str, client_id: str, bus: Bus | None = None,
                 replay_s: float = 0.0) -> None:
        self.config = config
        self.agent_id = agent_id
        self.topics = TopicTree(config.topics.root, config.topics.site)
        self.stop_event = threading.Event()
        self.comm: Bus = bus or Communicator(config.broker, client_id, self.topics.sensor_status(agent_id),
                                        self._status_payload, replay_s=replay_s)
        """The bus the agent is given (tests hand in their own), else a connection of its own to the broker."""
        self.withdraw_at_stop = False
        """Clear the retained status at :meth:`stop` instead of announcing ``offline`` (gone for good)."""

    def _status_payload(self, state: str) -> bytes:
        return wire_encode(Status(agent_id=self.agent_id, role=self.role, state=state,  # type: ignore[arg-type]
                                  session=self.comm.session, ts=time.time()))

    def on_connected(self) -> None:
        """Called by :meth:`start` once connected and subscribed (publish what others need to know first)."""

    def on_stopping(self) -> None:
        """Called by :meth:`stop` before the bus goes offline."""

    def start_fields(self) -> dict[str, Any]:
        """Fields of the start log line."""
        return {}

    def stop_fields(self) -> dict[str, Any]:
        """Fields of the stop log line (the agent's counters)."""
        return {}

    def start(self) -> None:
        """Connect (the retained ``online`` status), subscribe, then :meth:`on_connected`."""
        self.comm.start()
        self.on_connected()
        log.info(f"{self.event_prefix}_started", **self.start_fields(), session=self.comm.session)

    def stop(self) -> None:
        """Stop the loop, publish offline and disconnect."""
        self.stop_event.set()
        self.on_stopping()
        if self.withdraw_at_stop:
            self.comm.stop(withdraw=True)
        else:
            self.comm.stop()
        log.info(f"{self.event_prefix}_stopped", **self.stop_fields())


class SensorBase(DeviceAgent):
    """A sensor: a retained birth (announced again on every reconnect and on request), commands on its set topic,
    and the lean wire's context. Subclasses build :meth:`birth` and may take new settings in
    :meth:`apply_settings`; ``supports_budget`` says whether a command may change the byte budget."""

    supports_budget: ClassVar[bool] = True

    def __init__(self, config: AgentConfig, bus: Bus | None = None) -> None:
        s = config.sensor
        super().__init__(config, s.sensor_id, f"nairbus-sensor-{s.sensor_id}", bus, replay_s=s.replay_s)
        self.settings = s
        self.epoch_ts = float(int(time.time() - EPOCH_LEAD_S))
        self.ctx = LeanContext(s.sensor_id, self.comm.session, self.epoch_ts, s.expiry_s)
        memory = ControlsMemory.for_sensor(s.sensor_id)
        if not s.remember_controls:
            memory.forget()
        self.control = SensorControl(self.comm, self.topics, s, self.apply_settings, self.announce_birth,
                                     supports_budget=self.supports_budget, on_tally=self._on_tally,
                                     memory=memory if s.remember_controls else None)
        """Commands on the sensor's set topic: budget, deadline, a frame-rate cap, pause, rebirth, replay."""
        self.tallies: dict[str, Tally] = {}
        """Each fusion agent's count of this session's frames it decided, once the sensor withdrew
        (:meth:`withdraw`); one agent, or the members of a fleet."""
        self._tallied = threading.Event()
        self._restored = False

    def birth(self) -> Birth:
        """The retained description of this sensor: everything fusion needs to decode it."""
        raise NotImplementedError

    def apply_settings(self, new: SensorSettings) -> None:
        """A command changed the budget or the deadline: frames from now on use them."""
        self.settings = new

    def announce_birth(self) -> None:
        """Publish the retained birth now, and again after every reconnect."""
        self.comm.announce(self.topics.sensor_birth(self.settings.sensor_id), wire_encode(self.birth()),
                           content_type=CONTENT_TYPE_JSON)

    def on_connected(self) -> None:
        if not self._restored:  # once: the controls a command set before this process, before the first birth
            self._restored = True
            self.control.restore()
        self.announce_birth()
        self.control.publish_controls()
        self.comm.wait_published()

    def _on_tally(self, tally: Tally) -> None:
        if tally.session == self.comm.session:
            self.tallies[tally.fusion_id] = tally
            self._tallied.set()

    def wait_tally(self, timeout: float, expected: int | None = None) -> Tally | None:
        """After :meth:`withdraw`: the fusion agents' tally of this session, summed over those that answered (the
        first one's ``fusion_id``); it waits for the first up to ``timeout`` (None if none came: no fusion agent
        serves the sensor, or it was stopped), then until the tallies account for ``expected`` frames, for at most
        :data:`TALLY_GRACE_S` more."""
        if not self._tallied.wait(timeout):
            return None
        end = time.monotonic() + TALLY_GRACE_S
        while (expected is None or self._tallied_sum() < expected) and time.monotonic() < end:
            time.sleep(0.02)
        first = next(iter(dict(self.tallies).values()))
        return first.model_copy(update={"decided": self._tallied_sum()})

    def _tallied_sum(self) -> int:
        return sum(t.decided for t in dict(self.tallies).values())

    def withdraw(self) -> None:
        """Gone for good (a one-shot run that ended): clear the retained birth and controls, and at :meth:`stop` the
        status, so that nothing of this run stays on the broker and fusion forgets the stream (Home Assistant's
        devices go with it)."""
        sid = self.settings.sensor_id
        self.comm.announce(self.topics.sensor_birth(sid), b"", content_type=CONTENT_TYPE_JSON)
        self.comm.publish(self.topics.sensor_controls(sid), b"", qos=1, retain=True, content_type=CONTENT_TYPE_JSON)
        self.withdraw_at_stop = True
