"""Commands to a running sensor: ``…/sensors/<id>/set`` in, ``…/sensors/<id>/response`` and the retained
``…/sensors/<id>/controls`` out (Zigbee2MQTT's contract: a JSON request, its ``transaction`` echoed back).

:class:`SensorControl` holds what a command may change while frames flow — the budget, the deadline, a cap on the
frames sent per second, pause — and answers every request, valid or not, without touching anything else. A sensor
agent routes its set topic here (:meth:`nairbus.agents.runtime.mqtt.Communicator.route`: commands are answered on the
network thread while the sensor's own thread is busy with frames) and asks :meth:`SensorControl.admit` before each
frame; ``replay_s`` publishes again the frames of the last that many seconds (a fusion agent whose session the
broker forgot asks for it). The broker's ACL decides who may command: only the hub's accounts may write a sensor's
set topic.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.config import SensorSettings
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import InboundMessage
from nairbus.agents.runtime.state import ControlsMemory
from nairbus.schemas import CONTENT_TYPE_JSON, MAX_JSON_BYTES, Command, CommandResponse, Controls, Tally, WireError
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.topics import TopicTree

log = get_logger("nairbus.commands")


def with_envelope(payload: bytes) -> bytes:
    """A request may leave out ``v`` and ``kind`` (``{"budget_bytes": 300}`` from a Home Assistant template): they
    are filled in; everything else is validated as sent."""
    if len(payload) > MAX_JSON_BYTES:
        return payload  # refused by the decoder as oversize
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload  # refused by the decoder as malformed
    if isinstance(obj, dict):
        obj.setdefault("v", 1)
        obj.setdefault("kind", "command")
        return json.dumps(obj).encode()
    return payload


def request_transaction(payload: bytes) -> str | None:
    """The ``transaction`` of a request that could not be decoded as a command, where it names a valid one: an
    error answer echoes it, so the sender can match the refusal to its request."""
    if len(payload) > MAX_JSON_BYTES:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    transaction = obj.get("transaction") if isinstance(obj, dict) else None
    return transaction if isinstance(transaction, str) and 1 <= len(transaction) <= 64 else None


def answer_command(agent_id: str, payload: bytes, apply: Callable[[Command], None],
                   controls: Callable[[], Controls]) -> tuple[CommandResponse, Command | None]:
    """Decode one request (``v`` and ``kind`` may be left out) and ``apply`` it; the response (``error`` with the
    reason when the request is invalid or ``apply`` raises ``ValueError``, which must then have changed nothing;
    the request's ``transaction`` echoed whenever it can be read) and the command that was applied (None:
    refused)."""
    try:
        command = wire_decode(with_envelope(payload), Command)
    except WireError as exc:
        return CommandResponse(agent_id=agent_id, transaction=request_transaction(payload), status="error",
                               error=str(exc)[:300], controls=controls()), None
    try:
        apply(command)
    except ValueError as exc:
        return CommandResponse(agent_id=agent_id, transaction=command.transaction, status="error",
                               error=str(exc)[:300], controls=controls()), None
    return CommandResponse(agent_id=agent_id, transaction=command.transaction, status="ok",
                           controls=controls()), command


class SensorControl:
    """A sensor's changeable settings, its command handler and its frame admission (pause, rate cap).

    ``apply_settings(new)`` is called with the validated new :class:`SensorSettings` when a command changes the
    budget or the deadline (the sensor swaps them in and re-publishes its birth, which names both); ``rebirth()``
    publishes the birth again. ``supports_budget``: a VP sensor has no budget to change.
    """

    def __init__(self, comm: Bus, topics: TopicTree, settings: SensorSettings,
                 apply_settings: Callable[[SensorSettings], None], rebirth: Callable[[], None],
                 supports_budget: bool = True, on_tally: Callable[[Tally], None] | None = None,
                 memory: ControlsMemory | None = None) -> None:
        self.comm = comm
        self.topics = topics
        self.settings = settings
        self.apply_settings = apply_settings
        self.rebirth = rebirth
        self.supports_budget = supports_budget
        self.on_tally = on_tally
        """Called (on the network thread) with a fusion agent's tally of this sensor's session."""
        self.paused = False
        self.max_fps: float | None = None
        """Frames sent per second at most (None: every frame the source delivers)."""
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self.counts = {"commands": 0, "refused": 0}
        self.memory = memory
        """Where the controls a command set are kept for the next start (None: not kept)."""
        sid = settings.sensor_id
        self.set_topic = topics.sensor_set(sid)
        comm.route(self.set_topic, self.on_message)

    # ----- admission (the sensor's thread) ----------------------------------------------------------------------

    def admit(self, now: float | None = None) -> str | None:
        """Whether the next frame may go out: None, or why not (``skipped_paused``, ``skipped_rate``)."""
        if self.paused:
            return "skipped_paused"
        cap = self.max_fps
        if cap is None:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            if now < self._next_slot:
                return "skipped_rate"
            self._next_slot = now + 0.95 / cap  # a little early, so frames on a slower clock are not lost to jitter
        return None

    # ----- state -----------------------------------------------------------------------------------------------

    def controls(self) -> Controls:
        s = self.settings
        return Controls(agent_id=s.sensor_id, budget_bytes=s.budget_bytes, budget_fraction=s.budget_fraction,
                        deadline_ms=s.deadline_ms, fps=self.max_fps, paused=self.paused, ts=time.time())

    def publish_controls(self) -> None:
        """The retained current settings (Home Assistant's number and switch entities read them)."""
        self.comm.publish(self.topics.sensor_controls(self.settings.sensor_id), wire_encode(self.controls()), qos=1,
                          retain=True, content_type=CONTENT_TYPE_JSON)

    # ----- commands (the network thread) -------------------------------------------------------------------------

    def on_message(self, message: InboundMessage) -> None:
        """Answer one request on the set topic; nothing else changes when it is refused. A fusion agent's tally is
        taken, not answered: it changes nothing (and comes after the sensor withdrew its controls)."""
        if message.retain:
            return  # a stale retained command is not a request
        if self._take_tally(message.payload):
            return
        response = self.handle(message.payload)
        self.comm.publish(self.topics.sensor_response(self.settings.sensor_id), wire_encode(response), qos=1,
                          content_type=CONTENT_TYPE_JSON)

    def _take_tally(self, payload: bytes) -> bool:
        """Whether ``payload`` is a tally alone (a :class:`Command` with nothing but ``tally``); it goes to
        ``on_tally``."""
        try:
            command = wire_decode(with_envelope(payload), Command)
        except WireError:
            return False
        if command.tally is None or command.model_dump(exclude={"v", "kind", "transaction", "tally"},
                                                       exclude_defaults=True):
            return False
        self.counts["tallies"] = self.counts.get("tallies", 0) + 1
        if self.on_tally is not None:
            self.on_tally(command.tally)
        return True

    def handle(self, payload: bytes) -> CommandResponse:
        """Validate and apply one request; the response says what happened (and carries the controls after it)."""
        sid = self.settings.sensor_id
        response, command = answer_command(sid, payload, self.apply, self.controls)
        if command is None:
            self.counts["refused"] += 1
            log.warning("command_refused", sensor=sid, reason=(response.error or "")[:200],
                        transaction=response.transaction)
            return response
        self.counts["commands"] += 1
        log.info("command_applied", sensor=sid, transaction=command.transaction,
                 **command.model_dump(exclude={"v", "kind", "transaction"}, exclude_none=True))
        changed = (command.budget_bytes, command.budget_fraction, command.deadline_ms, command.fps, command.paused)
        if self.memory is not None and any(value is not None for value in changed):
            self.memory.save(self.controls())  # a rebirth or replay request sets nothing: the configuration stays
        self.publish_controls()
        return response

    def restore(self) -> Controls | None:
        """Re-apply the controls :attr:`memory` holds (before the birth is published: no rebirth here); what was
        restored, or None. Remembered controls the settings refuse now (another version's limits) are skipped."""
        remembered = self.memory.load(self.settings.sensor_id) if self.memory is not None else None
        if remembered is None:
            return None
        budget = {"budget_bytes": remembered.budget_bytes, "budget_fraction": remembered.budget_fraction}
        update = {**(budget if self.supports_budget else {}), "deadline_ms": remembered.deadline_ms}
        try:
            new = SensorSettings.model_validate({**self.settings.model_dump(), **update})
        except ValidationError as exc:
            log.warning("controls_not_restored", sensor=self.settings.sensor_id, error=str(exc)[:300])
            return None
        self.settings = new
        self.apply_settings(new)
        with self._lock:
            self.max_fps, self._next_slot = remembered.fps, 0.0
        self.paused = remembered.paused
        log.info("controls_restored", sensor=new.sensor_id, path=str(self.memory.path) if self.memory else None,
                 **remembered.model_dump(exclude={"v", "kind", "agent_id", "ts"}, exclude_none=True))
        return remembered

    def apply(self, command: Command) -> None:
        """Change what the command gives (all of it or, when any part is invalid, nothing)."""
        update: dict[str, Any] = {}
        if command.budget_bytes is not None or command.budget_fraction is not None:
            if not self.supports_budget:
                raise ValueError("this sensor has no budget to change (a VP sensor sends its top-k whole)")
            update |= {"budget_bytes": command.budget_bytes, "budget_fraction": command.budget_fraction}
        if command.deadline_ms is not None:
            update["deadline_ms"] = command.deadline_ms
        if update:
            try:
                new = SensorSettings.model_validate({**self.settings.model_dump(), **update})
            except ValidationError as exc:
                raise ValueError("; ".join(e["msg"] for e in exc.errors())[:300]) from None
            self.settings = new
            self.apply_settings(new)
        if command.fps is not None:
            with self._lock:
                self.max_fps = command.fps or None
                self._next_slot = 0.0
        if command.paused is not None:
            self.paused = command.paused
        if command.rebirth or update:
            self.rebirth()
        if command.replay_s is not None:
            # Up to REPLAY_KEEP_S of frames: published from a thread of its own, not the network thread this
            # command arrived on (which would hold every other incoming message back meanwhile).
            threading.Thread(target=self.comm.replay_since, args=(command.replay_s,), name="replay",
                             daemon=True).start()
