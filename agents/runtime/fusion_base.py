"""What every fusion agent shares, whatever it fuses: connection, rejections, counters, stats and the worker loop.

:class:`FusionBase` owns the MQTT side (status with last will, subscriptions), counts and logs every rejected
message, tracks per-session sequence numbers, publishes the retained stats and runs the worker loop: drain the
inbox, decide the frames whose buffer says they are ready, publish stats on an interval, flush on stop. A subclass
says what it subscribes to, routes messages (:meth:`FusionBase.handle`) and decides frames
(:meth:`FusionBase.decide`); the NAIR agent (:mod:`nairbus.agents.nair.fusion`) reassembles fragments, the VP agent
(:mod:`nairbus.agents.vp`) fuses top-k votes.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.commands import answer_command
from nairbus.agents.runtime.config import AgentConfig
from nairbus.agents.runtime.fleet import Fleet, shared_filter
from nairbus.agents.runtime.logging import get_logger
from nairbus.agents.runtime.mqtt import Communicator, InboundMessage
from nairbus.agents.runtime.observers import FusionObserver
from nairbus.agents.runtime.parking import Parking
from nairbus.schemas import (
    CONTENT_TYPE_JSON,
    Birth,
    Command,
    Controls,
    Item,
    Result,
    Stats,
    Status,
    Tally,
    TopK,
    WireError,
    WireModel,
)
from nairbus.schemas import decode as wire_decode
from nairbus.schemas import encode as wire_encode
from nairbus.schemas.messages import MAX_FRAME_FRAGMENTS, MAX_REPLAY_S, U64_MAX
from nairbus.schemas.topics import SensorLeaf, TopicTree
from nairbus.schemas.wire import ALIAS_PROPERTIES_LEN, alias_wire_bytes, publish_size

log = get_logger("nairbus.fusion")
M = TypeVar("M", bound=WireModel)
_BASE_HANDLERS: dict[str, str] = {"sensor_item": "on_item"}
"""Topic kinds every fusion agent handles, whatever its method."""

SEQ_JUMP_LIMIT = 65_536
"""A forward jump in a sensor session's sequence numbers larger than this is one ``seq_jump`` (a restart, a bug or
a hostile sender), not that many lost messages: the wire allows any ``seq`` up to 2⁶⁴−1."""
REBIRTH_INTERVAL_S = 10.0
"""A sensor whose frames arrive without a birth is asked for one at most this often (Sparkplug's rebirth request)."""
MAX_REBIRTHS_PER_S = 10
"""Rebirth requests at most per second in all: frames from a crowd of invented sensor ids cost the hub little."""
ITEMS_PER_SENSOR = 1024
"""Item names fusion keeps per sensor until their frames are decided (the oldest go first)."""
ITEM_SENSORS = 1024
"""Sensors whose item names fusion keeps at once (the sensor heard from longest ago goes first)."""
FOREIGN_SENSORS = 4096
"""How many sensors of other fusion modes (a VP sensor seen by the NAIR fusion, ...) an agent remembers to ignore."""
TALLY_MARGIN_S = 0.5
"""A sensor that withdrew its birth is sent its tally this long after the deadline has passed (its last frames are
decided by then)."""
UPKEEP_INTERVAL_S = 0.25
"""The observers' upkeep (Home Assistant configs, availability, figures, held-back label states) runs when the known
sensors or an agent's status changed, else at most this often — not on every worker round."""
REPLAY_MARGIN_S = 1.0
"""A fusion agent whose session the broker lost asks its sensors to replay the outage's length and this much more."""
SHED_AT = 0.75
"""With ``shed_late``, a frame older than this share of the deadline when fusion takes it is shed: the rest of the
deadline is left for its decision round."""
MAX_STATS_REASONS = 256
"""Rejection reasons a stats message carries (the most frequent; the schema's bound)."""


def saturate(value: int) -> int:
    """A counter as the wire can carry it: 0 … 2⁶⁴−1."""
    return min(max(int(value), 0), U64_MAX)


def device_fields(birth: Birth) -> dict[str, object]:
    """What ran a sensor's model, for the log line that greets it: the runtime and the exported files' sha256
    (12 hex digits each); nothing for a birth that does not say."""
    if birth.device is None:
        return {}
    return {"runtime": birth.device.runtime, "parts": [sha[:12] for sha in birth.device.parts]}


def sender_of(topic: str) -> str:
    """Who a received message is from, for the fair inbox: the sensor id of ``…/sensors/<id>/<leaf>``; everything
    else (Home Assistant's status, …) shares one queue."""
    head, _, rest = topic.rpartition("/sensors/")
    ident, slash, _leaf = rest.partition("/")
    return ident if head and slash else ""


def fusion_client_id(fusion_id: str, topics: TopicTree) -> str:
    """The MQTT client id of a fusion agent: stable across restarts (its persistent session is found by it) and
    distinct per topic tree, so two installations on one broker never resume each other's session. (A production
    broker replaces it by the account's user name.)"""
    if (topics.root, topics.site) == ("nairbus", "default"):
        return f"nairbus-fusion-{fusion_id}"
    return f"nairbus-fusion-{fusion_id}-{zlib.crc32(f'{topics.root}/{topics.site}'.encode()):08x}"


def topk_problem(msg: TopK, k: int, n_classes: int) -> str:
    """What is wrong with a top-k message's classes and scores (a decision's, a VP vote's) for a sensor of ``k``
    classes per frame and ``n_classes`` labels ("": nothing)."""
    if len(msg.classes) != len(msg.scores) or len(msg.classes) > k:
        return f"{len(msg.classes)} classes and {len(msg.scores)} scores (k={k})"
    if max(msg.classes) >= n_classes or len(set(msg.classes)) != len(msg.classes):
        return f"classes {list(msg.classes)[:8]} of {n_classes}"
    if not all(0.0 <= s <= 1.0 for s in msg.scores) or sum(msg.scores) > 1.0 + 1e-3:
        return "scores must be probabilities in [0, 1] that sum to at most 1"
    return ""


def owns_sensor(sensor_id: str, partition: tuple[int, int] | None) -> bool:
    """Deterministic partition of keys (sensors or streams) between fusion agents: ``crc32(key) % n == i``."""
    if partition is None:
        return True
    i, n = partition
    return zlib.crc32(sensor_id.encode()) % n == i


class FrameBuffer(Protocol):
    """What the worker loop needs of a frame buffer (``Reassembler``, ``VoteBuffer``)."""

    def __len__(self) -> int: ...

    def next_deadline(self) -> float | None: ...

    def pop_ready(self, now: float) -> list[Any]: ...

    def flush(self) -> list[Any]: ...


class FusionBase:
    """Lifecycle and bookkeeping of a fusion agent; subclasses handle messages and decide frames."""

    event_prefix = "fusion"
    """Prefix of the agent's start/stop log events."""
    received_counter = "fragments"
    """The counter reported as ``fragments_received`` in the stats (NAIR fragments or VP votes)."""
    buffer: FrameBuffer
    sensors: Mapping[str, object]
    sensor_modes: ClassVar[tuple[str, ...]] = ()
    """The birth modes this agent decides (its method's ``sensor_modes``); a sensor born in another mode is another
    fusion agent's (:meth:`serves`)."""
    data_leaves: ClassVar[tuple[SensorLeaf, ...]] = ()
    """The sensor topic leaves its frames arrive on (its method's ``data_leaves``), subscribed to beside every
    sensor's ``birth``, ``status`` and ``item``."""
    handlers: ClassVar[Mapping[str, str]] = {}
    """Topic kind (:meth:`nairbus.schemas.topics.TopicTree.parse`) to the name of the method that handles it; any other
    topic is rejected as ``unknown_topic``."""
    fleet_by_stream: ClassVar[bool] = False
    """How a fleet (``FusionSettings.fleet``) shares this method's frames: False — each data message is one frame
    and goes to one member through a shared subscription; True — a frame comes in several messages (VP's votes),
    every member receives them all and decides the streams it owns (:meth:`owns_stream`)."""

    def __init__(self, config: AgentConfig, bus: Bus | None = None) -> None:
        self.config = config
        self.settings = config.fusion
        self.topics = TopicTree(config.topics.root, config.topics.site)
        self.last_seq: dict[tuple[str, str], int] = {}
        self.rejected: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.latencies: deque[float] = deque(maxlen=10000)
        self.stop_event = threading.Event()
        self._decide_s_per_frame = 0.0
        """What deciding a frame has cost lately (seconds, a moving average): ``shed_late`` leaves a batch room."""
        self._rebirth_asked: dict[str, float] = {}
        self._parked: Parking[InboundMessage] = Parking()
        self._rebirth_window = (0.0, 0)
        self._foreign: dict[str, None] = {}
        """Sensors whose birth announced a mode this agent does not serve (oldest first, bounded): their data
        messages are another fusion agent's, ignored here without parking them or asking for their birth."""
        self._aliased: set[tuple[str, str, str]] = set()
        """(sensor, session, topic) of the lean messages seen: later ones came under a topic alias."""
        self._replay_owed: dict[str, float] = {}
        """Sensors asked to replay after a lost session whose return has not been seen yet: when the connection was
        lost (monotonic). A sensor that was not subscribed again yet when asked is asked once more when its birth or
        status comes (see :meth:`ask_replay`)."""
        self.started = time.time()
        self.heartbeat = time.monotonic()
        """``time.monotonic()`` of the worker loop's last round (the systemd watchdog watches it)."""
        fid = self.settings.fusion_id
        self.fleet = Fleet(self.settings.fleet, fid, time.time()) if self.settings.fleet else None
        """The fleet this agent shares the sensors with (None: it decides every sensor it serves)."""
        self.comm: Bus = bus or Communicator(config.broker, fusion_client_id(fid, self.topics),
                                        self.topics.fusion_status(fid), self._status_payload, inbox_key=sender_of,
                                        session_expiry_s=0 if self.fleet else self.settings.session_expiry_s)
        """The bus the agent is given (tests hand in their own), else a connection of its own to the broker."""
        # QoS 0: the high-rate messages are sent at QoS 0 anyway, and the retained births must come again when the
        # persistent session is resumed (see Communicator.subscribe); over TCP nothing is lost while connected.
        for kind in ("birth", "status", "item"):
            self.comm.subscribe(self.topics.all_sensors(kind), qos=0)
        for kind in self.data_leaves:
            data = self.topics.all_sensors(kind)
            shared = self.fleet is not None and not self.fleet_by_stream
            self.comm.subscribe(shared_filter(self.fleet.name, data) if shared and self.fleet else data, qos=0)
        if self.fleet is not None:
            # On the network thread: the members are known before any frame the broker sent after their statuses.
            self.comm.route(self.topics.all_fusion("status"), self.on_fusion_status, qos=0)
        self._tally: dict[str, list[Any]] = {}
        """Sensor → [the session of its last birth, frames of it decided] (bounded like the item names)."""
        self._tally_due: dict[str, float] = {}
        """Sensors that withdrew their birth → when (monotonic) their tally goes out (:meth:`sensor_left`)."""
        self._items: dict[str, dict[int, str]] = {}
        """Sensor → frame id → the source's name for it (:meth:`on_item`), until the frame is decided."""
        self.observers: list[FusionObserver] = []
        self._upkeep_at = float("-inf")
        self._upkeep_owed = True
        """An agent's status (or a message an observer took) changed what the observers keep: upkeep on the next
        round, not on the timer."""
        self._upkeep_version: int | None = None
        """What follows this agent's decisions (Home Assistant discovery, ...): given by :meth:`add_observer`."""
        self.comm.route(self.topics.fusion(fid, "set"), self.on_command)
        if self.fleet is None:  # a fleet's other members decided what this one missed: nothing to replay
            self.comm.on_session_lost(self.ask_replay)

    def _status_payload(self, state: str) -> bytes:
        return wire_encode(Status(agent_id=self.settings.fusion_id, role="fusion", state=state,  # type: ignore[arg-type]
                                  session=self.comm.session, ts=time.time(), fleet=self.settings.fleet))

    # ----- what a subclass provides ---------------------------------------------------------------------------

    def handle(self, message: InboundMessage, now: float) -> None:
        """Route one inbound message by its topic kind through :attr:`handlers`."""
        if self.intercept(message, now):
            return
        parsed = self.topics.parse(message.topic)
        name = (self.handlers.get(parsed.kind) or _BASE_HANDLERS.get(parsed.kind)) if parsed is not None else None
        if parsed is None or name is None:
            self.reject("unknown_topic", message.topic)
            return
        if parsed.ident in self._foreign and parsed.kind not in ("sensor_birth", "sensor_status"):
            self.counts["foreign_messages"] += 1
            return
        getattr(self, name)(parsed.ident, message, now)

    def sensor_wire_bytes(self, sensor_id: str, session: str, topic: str, payload_len: int) -> int:
        """The PUBLISH bytes a sensor sent for a lean message of ``payload_len`` bytes on ``topic``: under its topic
        alias, except for the first message of a sensor's session on a topic, which carried the topic as well (the
        publish that taught the broker the alias). An estimate where fusion joined after a sensor's first message
        or the sensor reconnected within a session (it taught the alias again): the sensor's own counters are exact.
        """
        key = (sensor_id, session, topic)
        if key in self._aliased:
            return alias_wire_bytes(payload_len)
        if len(self._aliased) >= FOREIGN_SENSORS:
            self._aliased.clear()
        self._aliased.add(key)
        return publish_size(len(topic.encode()), payload_len, properties_len=ALIAS_PROPERTIES_LEN)

    def note_foreign(self, sensor_id: str) -> None:
        """``sensor_id``'s birth announced a mode another fusion agent serves: ignore its data messages."""
        self._foreign.pop(sensor_id, None)
        self._foreign[sensor_id] = None
        if len(self._foreign) > FOREIGN_SENSORS:
            del self._foreign[next(iter(self._foreign))]
        self._parked.release(sensor_id)

    def forget_foreign(self, sensor_id: str) -> None:
        """``sensor_id`` announced a mode this agent serves (or left): its messages are routed again."""
        self._foreign.pop(sensor_id, None)

    def serves(self, sensor_id: str, birth: Birth) -> bool:
        """Whether ``birth`` names a mode this agent decides; a sensor of another mode is noted as foreign (its data
        messages are ignored, neither parked nor answered with a rebirth request) and counted."""
        if birth.mode in self.sensor_modes:
            self.forget_foreign(sensor_id)
            self._count_session(sensor_id, birth.session)
            return True
        self.counts["foreign_births"] += 1
        self.note_foreign(sensor_id)
        return False

    def read_birth(self, sensor_id: str, message: InboundMessage) -> Birth | None:
        """A sensor's birth, decoded and checked against its topic (None, counted and logged, when it cannot be
        used)."""
        birth = self.decode_own(sensor_id, message, Birth, "birth")
        if birth is not None:
            self._replay_if_owed(sensor_id)
        return birth

    def _count_session(self, sensor_id: str, session: str) -> None:
        """Count the decided frames of ``sensor_id``'s session from now on (a new session starts from zero)."""
        self._tally_due.pop(sensor_id, None)
        if self._tally.get(sensor_id, [None])[0] == session:
            return
        self._tally.pop(sensor_id, None)
        if len(self._tally) >= ITEM_SENSORS:
            del self._tally[next(iter(self._tally))]
        self._tally[sensor_id] = [session, 0]

    def forget_tally(self, sensor_id: str) -> None:
        """Another agent decides ``sensor_id`` (a partition): no tally of it from this one."""
        self._tally.pop(sensor_id, None)
        self._tally_due.pop(sensor_id, None)

    def sensor_left(self, sensor_id: str) -> None:
        """``sensor_id`` withdrew its birth (a one-shot run ended): once its last frames are decided, tell it how
        many of its session's frames this agent decided (a :class:`~nairbus.schemas.Tally` on its set topic)."""
        if sensor_id in self._tally:
            self._tally_due[sensor_id] = time.monotonic() + self.settings.deadline_ms / 1000.0 + TALLY_MARGIN_S

    def send_tallies(self, now: float) -> None:
        """Send the tallies that are due (:meth:`sensor_left`)."""
        for sensor_id, due in list(self._tally_due.items()):
            if now < due:
                continue
            del self._tally_due[sensor_id]
            session, decided = self._tally.pop(sensor_id, (None, 0))
            if session is None:
                continue
            tally = Tally(fusion_id=self.settings.fusion_id, session=session, decided=saturate(decided))
            self.comm.publish(self.topics.sensor_set(sensor_id), wire_encode(Command(tally=tally)), qos=1,
                              content_type=CONTENT_TYPE_JSON)
            log.info("tally_sent", sensor=sensor_id, session=session, decided=decided)

    def decode_own(self, sensor_id: str, message: InboundMessage, kind: type[M], prefix: str) -> M | None:
        """A sensor's message of ``kind`` whose ``sensor_id``/``agent_id`` must be the topic's; None (rejected as
        ``<prefix>_<reason>`` or ``<prefix>_topic_mismatch``, counted and logged) when it cannot be used."""
        try:
            decoded = wire_decode(message.payload, kind)
        except WireError as exc:
            self.reject(f"{prefix}_{exc.reason}", message.topic, str(exc))
            return None
        named = getattr(decoded, "sensor_id", None) or getattr(decoded, "agent_id", None)
        if named != sensor_id:
            self.reject(f"{prefix}_topic_mismatch", message.topic, str(named))
            return None
        return decoded

    def intercept(self, message: InboundMessage, now: float) -> bool:
        """Take a message before topic routing (Home Assistant's status and discovery topics); True when taken."""
        taken = any(observer.handle(message, now) for observer in self.observers)
        self._upkeep_owed |= taken
        return taken

    def stream_labels(self) -> dict[str, tuple[str, ...]]:
        """Each stream's labels (the enum options and event types of its Home Assistant entities)."""
        return {}

    def note_sensor_status(self, sensor_id: str, message: InboundMessage) -> Status | None:
        """A sensor's status, decoded (None, counted, when it cannot be used), told to the discovery."""
        self._upkeep_owed = True
        if not message.payload:
            for observer in self.observers:
                observer.forget_agent(sensor_id)  # a cleared status: the agent is gone for good
            return None
        status = self.decode_own(sensor_id, message, Status, "status")
        if status is None:
            return None
        for observer in self.observers:
            observer.note_sensor_status(sensor_id, status.state == "online", role=status.role)
        if status.state == "online":
            self._replay_if_owed(sensor_id)
        return status

    def on_fusion_status(self, message: InboundMessage) -> None:
        """A fusion agent's retained status (routed in a fleet, on the network thread): the members change when one
        of this fleet comes or goes (its last will, a clean stop, a cleared status); the worker thread hands streams
        over from the next frame on (:meth:`owns_stream`)."""
        parsed = self.topics.parse(message.topic)
        if self.fleet is None or parsed is None or parsed.ident == self.settings.fusion_id:
            return
        status = None
        if message.payload:
            status = self.decode_own(parsed.ident, message, Status, "fusion_status")
            if status is None:
                return
        online = status is not None and status.state == "online" and status.role == "fusion"
        # A member that left said when (its offline status, stamped as it stopped): the frames captured since are
        # the survivors', however late this agent reads the status (a busy hub reads it after the next frames).
        now = time.time()
        changed = min(now, status.ts) if status is not None and not online else now
        if self.fleet.note_status(parsed.ident, status.fleet if status else None, online, changed):
            log.info("fleet_changed", fleet=self.fleet.name, members=sorted(self.fleet.members), agent=parsed.ident,
                     online=online)

    def takes_frame(self, stream_id: str, capture_ts: float, pending: bool) -> bool:
        """Whether this agent decides a frame of ``stream_id`` captured at ``capture_ts`` (wall clock), ``pending``
        if it has the frame open already. Every frame but a fixed partition's others'; in a fleet partitioned by
        stream, the frames it opened and those of the streams it owns among the members online — of a stream it
        took over at the members' last change only those captured since, so that a frame the former owner opened
        is decided once, by it (a frame caught in between is counted ``fleet_handover``)."""
        if self.fleet is None or not self.fleet_by_stream:
            return owns_sensor(stream_id, self.settings.partition)
        if pending:
            return True
        if not self.fleet.owns(stream_id):
            self.counts["fleet_others"] += 1
            return False
        if capture_ts >= self.fleet.changed_at or self.fleet.owned_before(stream_id):
            return True
        self.counts["fleet_handover"] += 1
        return False

    def on_item(self, sensor_id: str, message: InboundMessage, _now: float) -> None:
        """What a sensor's source calls one of its frames: kept (bounded) until the frame's result names it."""
        item = self.decode_own(sensor_id, message, Item, "item")
        if item is None:
            return
        names = self._items.pop(sensor_id, None)
        if names is None:
            names = {}
            if len(self._items) >= ITEM_SENSORS:
                del self._items[next(iter(self._items))]
        self._items[sensor_id] = names  # most recently heard from last
        names.pop(item.frame_id, None)
        names[item.frame_id] = item.name
        if len(names) > ITEMS_PER_SENSOR:
            del names[next(iter(names))]

    def publish_decision(self, result: Result) -> None:
        """Publish a result on its stream's topic and tell the discovery (the stream's home-automation state); the
        result names its item when the sensor sent one."""
        names = self._items.get(result.sensors[0]) if result.sensors and result.item is None else None
        name = names.pop(result.frame_id, None) if names else None
        if name is not None:
            result = result.model_copy(update={"item": name})
        self.comm.publish(self.topics.result(result.stream_id), wire_encode(result), qos=self.settings.result_qos,
                          content_type=CONTENT_TYPE_JSON)
        for sensor_id in result.sensors:
            if (tally := self._tally.get(sensor_id)) is not None:
                tally[1] += 1
        for observer in self.observers:
            observer.note_result(result)

    def add_observer(self, observer: FusionObserver) -> None:
        """Attach ``observer``: it hears of statuses, results and rounds from now on."""
        self.observers.append(observer)
        observer.attach()

    def decide(self, frames: list[Any]) -> None:
        """Decide and publish a batch of frames taken from the buffer."""
        raise NotImplementedError

    def after_round(self, now: float) -> None:
        """Called once per worker-loop round after decisions: parked messages expire, the Home Assistant discovery
        is kept in step."""
        self.expire_parked(now)
        self.send_tallies(now)
        version = getattr(self.sensors, "version", None)
        if not self.observers or (now < self._upkeep_at and not self._upkeep_owed and version == self._upkeep_version):
            return
        self._upkeep_at, self._upkeep_owed, self._upkeep_version = now + UPKEEP_INTERVAL_S, False, version
        labels = self.stream_labels()
        for observer in self.observers:
            observer.after_round(self.sensors.values(), labels, now)

    def start_fields(self) -> dict[str, object]:
        """Extra fields of the start log line."""
        return {}

    # ----- bookkeeping ----------------------------------------------------------------------------------------

    def reject(self, reason: str, topic: str, detail: str = "") -> None:
        """Count and log a message that cannot be used (the first 20 of a reason, then every 1000th)."""
        self.rejected[reason] += 1
        if self.rejected[reason] <= 20 or self.rejected[reason] % 1000 == 0:
            log.warning("message_rejected", reason=reason, topic=topic, detail=detail[:200],
                        count=self.rejected[reason])

    def on_command(self, message: InboundMessage) -> None:
        """A request on ``…/fusion/<id>/set`` (on the network thread): ``deadline_ms`` for frames opened from now on,
        ``rebirth`` (ask every known sensor for its birth); answered on ``…/fusion/<id>/response``."""
        if message.retain:
            return
        fid = self.settings.fusion_id
        response, command = answer_command(fid, message.payload, self.apply_command, self.controls)
        if command is None:
            log.warning("command_refused", fusion=fid, reason=(response.error or "")[:200])
        else:
            log.info("command_applied", fusion=fid, transaction=command.transaction, deadline_ms=command.deadline_ms,
                     rebirth=command.rebirth)
        self.comm.publish(self.topics.fusion(fid, "response"), wire_encode(response), qos=1,
                          content_type=CONTENT_TYPE_JSON)

    def apply_command(self, command: Command) -> None:
        """Change what a command gives a fusion agent; ``ValueError`` (nothing changed) for what only a sensor takes."""
        if any(v is not None for v in (command.budget_bytes, command.budget_fraction, command.fps,
                                       command.paused, command.replay_s)):
            raise ValueError("a fusion agent takes deadline_ms and rebirth only (budget, fps, pause and replay are a "
                             "sensor's: …/sensors/<id>/set)")
        if command.deadline_ms is not None:
            self.settings = self.settings.model_copy(update={"deadline_ms": command.deadline_ms})
            self.buffer.deadline_s = command.deadline_ms / 1000.0  # type: ignore[attr-defined]
            for observer in self.observers:
                observer.note_deadline(command.deadline_ms / 1000.0)
            self._upkeep_owed = True
        if command.rebirth:
            for sensor_id in list(self.sensors):
                self._rebirth_asked.pop(sensor_id, None)
                self.request_rebirth(sensor_id)

    def controls(self) -> Controls:
        """What a command may change of this agent."""
        return Controls(agent_id=self.settings.fusion_id, deadline_ms=self.settings.deadline_ms, ts=time.time())

    def park(self, sensor_id: str, message: InboundMessage) -> None:
        """Hold a message of a sensor with no known birth (:class:`~nairbus.agents.runtime.parking.Parking`: for
        ``PARK_S``, bounded in bytes per sensor and in all), ask the sensor for its birth, and count a message
        ``unknown_sensor`` only if the birth does not come in time or it does not fit."""
        for dropped in self._parked.park(sensor_id, message, time.monotonic()):
            self.reject("unknown_sensor", dropped.topic)
        self.request_rebirth(sensor_id)

    def released(self, sensor_id: str) -> None:
        """A sensor's birth was accepted: handle what it sent before it, in order."""
        held = self._parked.release(sensor_id)
        if held:
            log.info("parked_released", sensor=sensor_id, messages=len(held))
            for message in held:
                self._handle_safely(message)

    def expire_parked(self, now: float) -> None:
        """Count and drop what waited longer than ``PARK_S`` for a birth."""
        for dropped in self._parked.expire(now):
            self.reject("unknown_sensor", dropped.topic)

    def request_rebirth(self, sensor_id: str) -> None:
        """Ask a sensor whose frames arrive without a known birth to publish it again, on its set topic (a birth
        lost to a broker without persistence, or a fusion agent that missed it); bounded per sensor and in all."""
        now = time.monotonic()
        last = self._rebirth_asked.get(sensor_id)
        if last is not None and now - last < REBIRTH_INTERVAL_S:
            return
        window, used = self._rebirth_window
        if now - window >= 1.0:
            window, used = now, 0
        if used >= MAX_REBIRTHS_PER_S:
            return
        self._rebirth_window = (window, used + 1)
        if len(self._rebirth_asked) >= 4096:
            self._rebirth_asked.clear()
        self._rebirth_asked[sensor_id] = now
        command = Command(transaction=f"rebirth-{self.settings.fusion_id}", rebirth=True)
        if self.comm.publish(self.topics.sensor_set(sensor_id), wire_encode(command), qos=0,
                             content_type=CONTENT_TYPE_JSON):
            self.counts["rebirth_requested"] += 1
            log.info("rebirth_requested", sensor=sensor_id)

    def ask_replay(self, down_s: float) -> None:
        """The broker had no session for this agent when it reconnected (restarted without persistence): frames the
        sensors published before the subscriptions were made again went to nobody. Ask every known sensor to
        publish again what it sent since the connection was lost and a margin (on the network thread, subscribed
        again). A sensor that came back at the same moment may not be subscribed to its set topic yet and miss the
        request (a broker without persistence forgot its subscriptions too), so each is asked once more when its
        birth or online status — published on its reconnect, or retained for fusion's new subscription — arrives."""
        lost_at = time.monotonic() - down_s
        sensors = list(self.sensors)
        for sensor_id in sensors:
            self._replay_owed[sensor_id] = lost_at
        asked = sum(self._request_replay(sensor_id, lost_at) for sensor_id in sensors)
        log.warning("session_lost_replay_requested", sensors=asked, replay_s=round(down_s + REPLAY_MARGIN_S, 2))

    def _replay_if_owed(self, sensor_id: str) -> None:
        lost_at = self._replay_owed.pop(sensor_id, None)
        if lost_at is not None and time.monotonic() - lost_at < MAX_REPLAY_S:
            self._request_replay(sensor_id, lost_at)

    def _request_replay(self, sensor_id: str, lost_at: float) -> bool:
        seconds = min(MAX_REPLAY_S, time.monotonic() - lost_at + REPLAY_MARGIN_S)
        command = Command(transaction=f"replay-{self.settings.fusion_id}", replay_s=seconds)
        sent = self.comm.publish(self.topics.sensor_set(sensor_id), wire_encode(command), qos=1,
                                 content_type=CONTENT_TYPE_JSON)
        if sent:
            self.counts["replay_requested"] += 1
        return sent

    def track_seq(self, sensor_id: str, session: str, seq: int) -> None:
        """Count gaps and reorderings in a sensor session's sequence numbers (QoS 0 loss shows up here); not in a
        fleet that shares each message with one member, where every member sees a part of each session."""
        if self.fleet is not None and not self.fleet_by_stream:
            return
        last = self.last_seq.get((sensor_id, session))
        if last is not None:
            if seq > last + 1 + SEQ_JUMP_LIMIT:
                self.counts["seq_jump"] += 1
            elif seq > last + 1:
                self.counts["seq_gap"] += seq - last - 1
            elif seq <= last:
                self.counts["seq_reordered"] += 1
        if last is None or seq > last:
            self.last_seq[(sensor_id, session)] = seq

    def sheds(self, capture_ts: float, topic: str) -> bool:
        """``shed_late``: whether a frame captured at ``capture_ts`` is too late to be decided in time — counted
        (``shed_late``) and logged now and then; call it after :meth:`track_seq`, so a shed frame is no gap."""
        if not self.settings.shed_late:
            return False
        age = time.time() - capture_ts
        if age <= SHED_AT * self.settings.deadline_ms / 1000.0:
            return False
        self.rejected["shed_late"] += 1
        if self.rejected["shed_late"] in (1, 10, 100) or self.rejected["shed_late"] % 1000 == 0:
            log.info("shed_late", topic=topic, age_ms=round(age * 1000.0, 1), count=self.rejected["shed_late"])
        return True

    def on_time(self, frames: list[Any]) -> list[Any]:
        """``shed_late``: the frames of a batch about to be decided that can still be on time; the others (past
        ``SHED_AT`` of the deadline by now, waiting behind earlier batches) are shed and counted."""
        if not self.settings.shed_late or not frames:
            return frames
        deadline_s = self.settings.deadline_ms / 1000.0
        # Room for this batch's own decision: what deciding a frame has cost lately, twice over for safety.
        room = max((1.0 - SHED_AT) * deadline_s, 2.0 * self._decide_s_per_frame * len(frames))
        oldest = time.time() - max(0.0, deadline_s - room)
        keep = [f for f in frames if f.capture_ts >= oldest]
        if len(keep) < len(frames):
            self.rejected["shed_late"] += len(frames) - len(keep)
        return keep

    def note_decided(self, latency_ms: float, complete: bool, evicted: bool) -> None:
        """Count one published result."""
        self.latencies.append(latency_ms)
        self.counts["decided"] += 1
        self.counts["complete" if complete else "partial"] += 1
        if evicted:
            self.counts["evicted"] += 1

    def stats(self) -> Stats:
        """Current counters as a stats message."""
        lat = np.array(self.latencies) if self.latencies else None
        rejected = Counter(self.rejected)
        for name in ("seq_gap", "seq_jump", "seq_reordered"):
            if self.counts[name]:
                rejected[name] = self.counts[name]
        for name in ("inbox_dropped", "outgoing_dropped"):
            if self.comm.counters.get(name):
                rejected[name] = self.comm.counters[name]
        c = self.counts
        # Every figure saturates and every list is cut to the schema's bounds: the stats can always be built.
        return Stats(
            fusion_id=self.settings.fusion_id, session=self.comm.session, ts=time.time(),
            uptime_s=max(0.0, time.time() - self.started), frames_decided=saturate(c["decided"]),
            frames_complete=saturate(c["complete"]), frames_partial=saturate(c["partial"]),
            frames_in_flight=saturate(len(self.buffer)), frames_evicted=saturate(c["evicted"]),
            fragments_received=saturate(c[self.received_counter]), bytes_received=saturate(c["bytes"]),
            rejected={k: saturate(v) for k, v in rejected.most_common(MAX_STATS_REASONS)},
            sensors=tuple(sorted(self.sensors))[:MAX_FRAME_FRAGMENTS],
            latency_p50_ms=float(np.percentile(lat, 50)) if lat is not None else None,
            latency_p99_ms=float(np.percentile(lat, 99)) if lat is not None else None,
        )

    def publish_stats(self) -> None:
        """Publish the stats message (retained, so a late subscriber sees the latest); a failure is logged, never
        raised — the stats are a report, not the job."""
        try:
            payload = wire_encode(self.stats())
        except Exception:
            log.exception("stats_failed", fusion=self.settings.fusion_id)
            return
        self.comm.publish(self.topics.fusion_stats(self.settings.fusion_id), payload, qos=0,
                          retain=True, content_type=CONTENT_TYPE_JSON)

    # ----- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and subscribe (returns once subscriptions are granted)."""
        self.comm.start()
        fleet: dict[str, object] = {}
        if self.fleet is not None:
            self.fleet.joined(time.time())
            fleet = {"fleet": self.fleet.name, "members": sorted(self.fleet.members)}
        log.info(f"{self.event_prefix}_started", fusion=self.settings.fusion_id,
                 deadline_ms=self.settings.deadline_ms, **fleet, **self.start_fields())

    def run(self) -> None:
        """Worker loop until :meth:`stop`: drain messages, decide ready frames in batches, publish stats."""
        next_stats = time.monotonic() + self.settings.stats_interval_s
        while not self.stop_event.is_set():
            now = self.heartbeat = time.monotonic()
            deadline = self.buffer.next_deadline()
            wait = min(0.2, max(0.0, deadline - now)) if deadline is not None else 0.2
            message = self.comm.get(timeout=wait)
            handled = 0
            while message is not None:
                self._handle_safely(message)
                handled += 1
                if handled >= self.settings.max_batch * (1 if self.settings.shed_late else 8):
                    break  # shedding: decide between smaller helpings, so what is taken is decided in time
                message = self.comm.get(timeout=0)
            ready = self.buffer.pop_ready(time.monotonic())
            if ready:
                self._decide_safely(ready)
            self.after_round(time.monotonic())
            if time.monotonic() >= next_stats:
                self.publish_stats()
                next_stats = time.monotonic() + self.settings.stats_interval_s
        self._decide_safely(self.buffer.flush())
        self.publish_stats()

    def _handle_safely(self, message: InboundMessage) -> None:
        """:meth:`handle`, with whatever it raises counted as ``internal_error`` and logged: no message, however
        it was built, ends the agent."""
        try:
            self.handle(message, time.monotonic())
        except Exception as exc:
            self.reject("internal_error", message.topic, f"{type(exc).__name__}: {exc}")
            log.exception("handle_failed", topic=message.topic[:200])

    def _decide_safely(self, frames: list[Any]) -> None:
        """:meth:`decide` a batch; if it fails, decide the frames one by one so one bad frame costs only itself."""
        if not frames:
            return
        try:
            started, before = time.monotonic(), self.counts["decided"]
            self.decide(frames)
            if (decided := self.counts["decided"] - before) > 0:  # per frame decided, not per frame shed
                spent = (time.monotonic() - started) / decided
                self._decide_s_per_frame += 0.2 * (spent - self._decide_s_per_frame)
            return
        except Exception:
            log.exception("decide_failed", frames=len(frames))
        for frame in frames:
            try:
                self.decide([frame])
            except Exception as exc:
                self.rejected["decide_failed"] += 1
                log.warning("frame_decide_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    def stop(self) -> None:
        """Ask the worker loop to finish."""
        self.stop_event.set()

    def close(self) -> None:
        """Publish offline and disconnect."""
        self.comm.stop()
        log.info(f"{self.event_prefix}_stopped", fusion=self.settings.fusion_id, rejected=dict(self.rejected),
                 **self.counts)
