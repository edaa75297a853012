#!/usr/bin/env python3
"""Home Assistant tells the truth about nairbus: commands sent by Home Assistant itself, the states of paused, stalled
and stopped streams, and what the recorder keeps per frame -- measured in a real Home Assistant Core.

It reuses ``ha_check.py``'s parts (the Home Assistant venv, the private Mosquitto, the config dir, the process
handling) and runs, with the shipped defaults of nairbus's discovery and of Home Assistant's recorder:

- ``nairbus fusion``; sensor ``cam-a`` (stream ``kitchen``) replaying the test frames, whose label changes on most
  frames; sensor ``cam-p`` (stream ``porch``) reading snapshots from an MQTT topic (``--source image-topic``, as from a
  Frigate camera) on which this script publishes one still picture at ``--fps``: a static scene, and a camera that
  stalls when the script stops publishing;
- Home Assistant with one automation: a message on ``nairbus-check/call`` makes Home Assistant call the action it
  names (``number.set_value``, ``switch.turn_on`` ...) on the entity it names. Every command below is sent by Home
  Assistant through the entities nairbus announced, not by this script.

Phases, in order (every wait is bounded):

1. **commands**: from Home Assistant, frame rate 2 then 0 (no cap) on cam-a -- the retained controls and the result
   rate follow --, budget 300 B; an invalid request (sent here: Home Assistant's number bounds stop it from sending
   one) is answered ``error`` with its ``transaction``; cam-a is restarted and its budget is still 300 B, in its
   controls, its birth and Home Assistant's number entity.
2. **truth**: cam-a paused from Home Assistant and cam-p's camera stalled at the same moment: each label turns
   ``unknown`` (no current label; the stream itself stays available) and each frame rate ``0`` in Home Assistant's
   database within the documented times after its stream's last decided frame; then both resume.
3. **recorder**: ``--recorder-s`` (default 300 s) of the static scene alone (cam-a paused), then as long of the
   changing one alone (cam-p stalled); the growth of Home Assistant's database (``dbstat``: bytes in use, per table)
   per decided frame.
4. **stop**: cam-p stopped (SIGTERM): its stream's entities turn ``unavailable`` within ``offline_grace_s`` plus a
   second or two.
5. **entity ids**: the ids Home Assistant gave every entity (its entity registry), for the docs.

Run with nairbus's venv (the Home Assistant venv is made on first use, as ``ha_check.py`` does)::

    .venv/bin/python deploy/homeassistant/ha_truth.py --report reports/homeassistant-truth.json

Exit status: 0 every check passed, 1 a check failed, 2 the check could not run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ha_check as hc  # the sibling script: the check's shared parts

CALL_TOPIC = "nairbus-check/call"
SNAPSHOT_TOPIC = "nairbus-check/porch/snapshot"
CHANGING, STATIC = "kitchen", "porch"
SENSOR_OF = {CHANGING: "cam-a", STATIC: "cam-p"}
AUTOMATION = f"""automation:
  - id: nairbus_check_call
    alias: nairbus check calls an action
    mode: queued
    triggers:
      - trigger: mqtt
        topic: {CALL_TOPIC}
    actions:
      - action: "{{{{ trigger.payload_json.action }}}}"
        target:
          entity_id: "{{{{ trigger.payload_json.entity_id }}}}"
        data: "{{{{ trigger.payload_json.data | default({{}}) }}}}"
"""
"""Home Assistant calls whatever action a message on CALL_TOPIC names: the commands reach the sensors through Home
Assistant's own entities (their command templates and topics, as a person's dashboard or automation would)."""
RECORDER_DEFAULTS = ""
"""``recorder:`` with nothing set: Home Assistant's defaults (commit every 5 s, 10 days kept)."""


# ---- pure parts: a picture, the database's size, the timing of a state -------------------------------------------


def still_png(size: int = 28) -> bytes:
    """A grey PNG of a static scene (a bright rectangle on black), written with the standard library."""
    rows = b"".join(b"\x00" + bytes(200 if 6 <= x < 22 and 4 <= y < 24 else 0 for x in range(size))
                    for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def db_usage(db: Path) -> dict[str, int]:
    """Bytes in use in Home Assistant's database, per table and index (``dbstat``: page bytes less their unused
    bytes) and ``_total``; WAL content included (a reader sees every committed transaction)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT name, SUM(pgsize) - SUM(unused) FROM dbstat GROUP BY name").fetchall()
    finally:
        con.close()
    usage = {str(name): int(used or 0) for name, used in rows}
    usage["_total"] = sum(usage.values())
    return usage


def db_horizon(db: Path) -> float:
    """The time of the newest state row in Home Assistant's database: what its recorder has committed up to."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        newest = con.execute("SELECT MAX(last_updated_ts) FROM states").fetchone()[0]
    finally:
        con.close()
    return float(newest or 0.0)


def growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What grew between two :func:`db_usage` readings (tables that shrank or stayed are left out)."""
    out = {name: after.get(name, 0) - before.get(name, 0) for name in set(before) | set(after)}
    return {name: grown for name, grown in sorted(out.items(), key=lambda kv: -kv[1]) if grown > 0}


def first_state_after(rows: list[tuple[float, str]], since: float, states: set[str]) -> float | None:
    """Time of the first row at or after ``since`` whose state is one of ``states`` (None: none)."""
    return next((ts for ts, state in rows if ts >= since and state in states), None)


def rows_of(db: Path, entity_id: str) -> list[tuple[float, str]]:
    """``(last_updated_ts, state)`` of every recorded row of one entity, oldest first."""
    return [(ts, state) for ts, state, _attrs in hc.read_states(db, [entity_id])[entity_id]]


def last_state(db: Path, entity_id: str) -> str | None:
    rows = rows_of(db, entity_id)
    return rows[-1][1] if rows else None


# ---- the bus side ------------------------------------------------------------------------------------------------


class TruthRecorder(hc.BusRecorder):
    """ha_check's recorder, subscribed to the whole topic tree of the site (controls, responses, births, stream
    states) and to the discovery prefix."""

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            hc.log(f"recorder: connection refused: {reason}")
            return
        client.subscribe([(f"{self.prefix}/#", 1), (f"{self.base}/results/+", 1), (f"{self.base}/sensors/#", 1),
                          (f"{self.base}/fusion/#", 1), (f"{self.base}/streams/#", 1)])
        self.connected.set()

    def json_on(self, topic: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        """Every JSON object published on ``topic`` since ``since``, with its receive time."""
        out = []
        for msg in self.snapshot():
            if msg.topic == topic and msg.ts >= since and msg.payload:
                try:
                    data = json.loads(msg.payload)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    out.append((msg.ts, data))
        return out

    def result_times(self, stream: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [r["ts"] for r in self.results() if r["stream_id"] == stream and since <= r["ts"] < until]


class Camera:
    """Publishes one still picture on the snapshot topic at a fixed rate while it is on (a static scene; off is a
    stalled camera). Bounded: it stops at ``max_s`` whatever happens."""

    def __init__(self, recorder: TruthRecorder, fps: float, max_s: float) -> None:
        self.recorder, self.period, self.end = recorder, 1.0 / fps, time.monotonic() + max_s
        self.on = threading.Event()
        self.stopped = threading.Event()
        self.picture = still_png()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self.stopped.is_set() and time.monotonic() < self.end:
            if self.on.is_set():
                self.recorder.client.publish(SNAPSHOT_TOPIC, self.picture, qos=0)
                self.sent += 1
            next_at += self.period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self.on.set()
        self.thread.start()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)


# ---- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Entities:
    """The entity ids Home Assistant gave the entities this check drives (from its entity registry)."""

    by_unique_id: dict[str, str] = field(default_factory=dict)

    def of(self, unique_id: str) -> str:
        try:
            return self.by_unique_id[unique_id]
        except KeyError:
            raise hc.CheckError(f"Home Assistant has no entity with unique id {unique_id}") from None


@dataclass
class Run:
    """What one run of the check holds: its settings, processes, clients and findings."""

    args: argparse.Namespace
    procs: hc.Processes
    deadline: hc.Deadline
    workdir: Path
    config_dir: Path
    recorder: TruthRecorder
    ha: hc.HomeAssistant
    env: dict[str, str]
    nairbus: str
    report: dict[str, Any]
    camera: Camera | None = None
    fusion: Any = None
    sensors: dict[str, Any] = field(default_factory=dict)
    entities: Entities = field(default_factory=Entities)
    t0: float = field(default_factory=time.time)

    @property
    def db(self) -> Path:
        return self.config_dir / "home-assistant_v2.db"

    @property
    def base(self) -> str:
        return self.recorder.base

    def mark(self, name: str) -> float:
        now = time.time()
        self.report.setdefault("timeline", {})[name] = round(now - self.t0, 2)
        return now

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.deadline.left() - 60)))

    def call(self, action: str, entity_id: str, **data: Any) -> float:
        """Make Home Assistant call ``action`` on ``entity_id`` (the automation on CALL_TOPIC); the time sent."""
        sent = time.time()
        payload = {"action": action, "entity_id": entity_id, "data": data}
        self.recorder.publish(CALL_TOPIC, json.dumps(payload).encode(), retain=False)
        hc.log(f"Home Assistant is asked to call {action} on {entity_id} {data or ''}")
        return sent

    def controls_since(self, sensor: str, since: float, predicate: Any, timeout: float = 20.0) -> dict[str, Any] | None:
        """The first retained controls of ``sensor`` since ``since`` that satisfy ``predicate``."""
        topic = f"{self.base}/sensors/{sensor}/controls"
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [dict(data, _ts=ts) for ts, data in self.recorder.json_on(topic, since) if predicate(data)]
            return bool(found)

        hc.wait_for(seen, timeout, self.deadline)
        return found[0] if found else None

    def start_sensor(self, stream: str) -> None:
        sensor = SENSOR_OF[stream]
        common = ["--sensor-id", sensor, "--stream-id", stream]
        source = (["--fps", f"{self.args.fps:g}", "--count", "10000000"] if stream == CHANGING
                  else ["--image-topic", SNAPSHOT_TOPIC])
        self.sensors[stream] = self.procs.start(f"sensor {sensor} ({stream})",
                                                [self.nairbus, "sensor", *common, *source],
                                                self.workdir / f"sensor-{sensor}.log", env=self.env, cwd=self.workdir)
        status = f"{self.base}/sensors/{sensor}/status"
        started = time.time()
        if not hc.wait_for(lambda: self.recorder.status_of(status, "online", since=started) is not None,
                           self.args.agent_start_timeout, self.deadline, alive=[self.sensors[stream]]):
            raise hc.CheckError(f"sensor {sensor} did not come online:\n"
                                + (self.workdir / f"sensor-{sensor}.log").read_text(errors="replace")[-3000:])

    def stop_sensor(self, stream: str) -> tuple[float, int]:
        stopped = time.time()
        return stopped, self.procs.stop(self.sensors[stream], 30)


def _unique_ids(args: argparse.Namespace) -> dict[str, str]:
    """The unique ids of the entities the check drives, from nairbus's own id builders."""
    from nairbus.agents.home.discovery import sensor_object_id, stream_object_id
    from nairbus.schemas.topics import TopicTree

    topics = TopicTree(args.root, args.site)
    ids = {}
    for stream, sensor in SENSOR_OF.items():
        for key in ("label", "fps", "classification"):
            ids[f"{stream}.{key}"] = f"{stream_object_id(topics, stream)}_{key}"
        for key in ("budget", "fps_limit", "paused"):
            ids[f"{sensor}.{key}"] = f"{sensor_object_id(topics, sensor)}_{key}"
    return ids


def wait_for_entities(run: Run) -> None:
    """Until Home Assistant's entity registry (saved a few seconds after a change) holds every entity driven here."""
    wanted = set(_unique_ids(run.args).values())

    def ready() -> bool:
        registry = hc.read_storage(run.config_dir, "core.entity_registry")
        run.entities.by_unique_id = {e["unique_id"]: e["entity_id"] for e in registry.get("entities", [])
                                     if e.get("platform") == "mqtt"}
        return wanted <= set(run.entities.by_unique_id)

    if not hc.wait_for(ready, 120, run.deadline, poll=1.0):
        missing = sorted(wanted - set(run.entities.by_unique_id))
        raise hc.CheckError(f"Home Assistant's entity registry lacks {missing} after 120 s")


def entity(run: Run, name: str) -> str:
    return run.entities.of(_unique_ids(run.args)[name])


def rate(run: Run, stream: str, since: float, until: float) -> float:
    frames = run.recorder.result_times(stream, since, until)
    return round(len(frames) / max(until - since, 1e-9), 2)


# ---- phase 1: commands sent by Home Assistant ---------------------------------------------------------------------


def phase_commands(run: Run) -> dict[str, Any]:
    """Frame rate 2 then 0 (no cap), budget 300, all from Home Assistant; an invalid request's answer; the budget
    after a restart of the sensor."""
    sensor, fps_limit, budget = "cam-a", entity(run, "cam-a.fps_limit"), entity(run, "cam-a.budget")
    out: dict[str, Any] = {"sensor": sensor, "entities": {"fps_limit": fps_limit, "budget": budget}}
    sent = run.call("number.set_value", fps_limit, value=2)
    capped = run.controls_since(sensor, sent, lambda c: c.get("fps") == 2.0)
    run.sleep(2)
    window = time.time()
    run.sleep(8)
    out["cap_2"] = {"controls_fps": capped and capped.get("fps"), "after_s": capped and round(capped["_ts"] - sent, 3),
                    "result_fps": rate(run, CHANGING, window, time.time())}
    sent = run.call("number.set_value", fps_limit, value=0)
    cleared = run.controls_since(sensor, sent, lambda c: "fps" in c and c.get("fps") is None)
    run.sleep(2)
    window = time.time()
    run.sleep(8)
    out["cap_0"] = {"controls_fps": "none" if cleared else "not cleared",
                    "after_s": cleared and round(cleared["_ts"] - sent, 3),
                    "result_fps": rate(run, CHANGING, window, time.time())}
    sent = run.call("number.set_value", budget, value=300)
    set_budget = run.controls_since(sensor, sent, lambda c: c.get("budget_bytes") == 300)
    out["budget"] = {"controls_budget_bytes": set_budget and set_budget.get("budget_bytes"),
                     "after_s": set_budget and round(set_budget["_ts"] - sent, 3)}
    out["invalid"] = invalid_request(run, sensor)
    out["restart"] = restart_keeps_budget(run, budget)
    run.call("number.set_value", budget, value=65000)  # the largest budget: the link decides again
    cap_ok = (out["cap_2"]["controls_fps"] == 2.0 and out["cap_2"]["result_fps"] <= 2.6
              and cleared is not None and out["cap_0"]["result_fps"] >= 0.8 * run.args.fps)
    out["passed"] = bool(cap_ok and out["budget"]["controls_budget_bytes"] == 300 and out["invalid"]["passed"]
                         and out["restart"]["passed"])
    return out


def invalid_request(run: Run, sensor: str) -> dict[str, Any]:
    """A request the sensor must refuse (a negative deadline), with a transaction: its answer echoes it."""
    transaction = "check-invalid-1"
    topic = f"{run.base}/sensors/{sensor}/response"
    sent = time.time()
    run.recorder.publish(f"{run.base}/sensors/{sensor}/set",
                         json.dumps({"deadline_ms": -5, "transaction": transaction}).encode(), retain=False)
    answers: list[dict[str, Any]] = []

    def answered() -> bool:
        answers[:] = [d for _ts, d in run.recorder.json_on(topic, sent) if d.get("transaction") == transaction]
        return bool(answers)

    hc.wait_for(answered, 15, run.deadline)
    answer = answers[0] if answers else {}
    return {"request": {"deadline_ms": -5, "transaction": transaction}, "status": answer.get("status"),
            "transaction": answer.get("transaction"), "error": answer.get("error"),
            "passed": answer.get("status") == "error" and answer.get("transaction") == transaction}


def restart_keeps_budget(run: Run, budget_entity: str) -> dict[str, Any]:
    """Stop cam-a (SIGTERM) and start it again: the budget Home Assistant set is in its controls, its birth and the
    number entity."""
    stopped, status = run.stop_sensor(CHANGING)
    run.sleep(2)
    restarted = time.time()
    run.start_sensor(CHANGING)
    controls = run.controls_since("cam-a", restarted, lambda c: "budget_bytes" in c)
    hc.wait_for(lambda: bool(run.recorder.json_on(f"{run.base}/sensors/cam-a/birth", restarted)), 15, run.deadline)
    births = run.recorder.json_on(f"{run.base}/sensors/cam-a/birth", restarted)
    run.sleep(7)  # the recorder commits every 5 s by default
    birth_budget = births[-1][1].get("budget_bytes") if births else None
    ha_state = last_state(run.db, budget_entity)
    return {"exit_status": status, "stopped_s": round(restarted - stopped, 2),
            "controls_budget_bytes": controls and controls.get("budget_bytes"), "birth_budget_bytes": birth_budget,
            "home_assistant_state": ha_state,
            "passed": bool(controls and controls.get("budget_bytes") == 300 and birth_budget == 300
                           and ha_state is not None and float(ha_state) == 300.0)}


# ---- phase 2: paused and stalled streams go unknown and 0 fps -----------------------------------------------------


def phase_truth(run: Run) -> dict[str, Any]:
    """cam-a paused from Home Assistant and cam-p's camera stalled at once; how long after each stream's last decided
    frame its label is ``unknown`` and its frame rate ``0`` in Home Assistant's database; then both resume."""
    assert run.camera is not None
    paused_entity = entity(run, "cam-a.paused")
    started = run.call("switch.turn_on", paused_entity)
    run.camera.on.clear()
    bound_label = run.args.quiet_after_s + run.args.slack_s
    bound_fps = 2 * run.args.metrics_interval_s + run.args.slack_s
    run.sleep(bound_label + run.args.deadline_s + 10)
    out: dict[str, Any] = {"bounds_s": {"label_unknown": bound_label, "fps_zero": bound_fps}}
    for stream, how in ((CHANGING, "paused from Home Assistant (switch.turn_on)"), (STATIC, "camera stalled")):
        out[stream] = went_quiet(run, stream, how, started)
    controls = run.controls_since("cam-a", started, lambda c: c.get("paused") is True, timeout=1)
    out[CHANGING]["controls_paused"] = bool(controls)
    resumed = run.call("switch.turn_off", paused_entity)
    run.camera.on.set()
    run.sleep(12)
    for stream in (CHANGING, STATIC):
        out[stream]["resumed_result_fps"] = rate(run, stream, resumed + 4, time.time())
        out[stream]["label_after_resume"] = last_state(run.db, entity(run, f"{stream}.label"))
    out["passed"] = all(
        s["last_frame_to_unknown_s"] is not None and s["last_frame_to_unknown_s"] <= bound_label
        and s["last_frame_to_zero_fps_s"] is not None and s["last_frame_to_zero_fps_s"] <= bound_fps
        and s["resumed_result_fps"] > 0 and s["label_after_resume"] not in hc.NO_VALUE
        for s in (out[CHANGING], out[STATIC])) and out[CHANGING]["controls_paused"]
    return out


def went_quiet(run: Run, stream: str, how: str, since: float) -> dict[str, Any]:
    """The stream's last decided frame after ``since`` and when its label went unknown and its rate 0."""
    frames = run.recorder.result_times(stream, 0.0)
    last = max(frames) if frames else since
    # Unknown, not unavailable: the stream is there (its sensor online), it has no current label.
    label_rows = rows_of(run.db, entity(run, f"{stream}.label"))
    unknown = first_state_after(label_rows, last, {"unknown"})
    zero = first_state_after(rows_of(run.db, entity(run, f"{stream}.fps")), last, {"0", "0.0"})
    return {"how": how, "last_frame_after_command_s": round(last - since, 2),
            "last_frame_to_unknown_s": None if unknown is None else round(unknown - last, 2),
            "label_state_then": next((state for ts, state in label_rows if ts == unknown), None),
            "last_frame_to_zero_fps_s": None if zero is None else round(zero - last, 2)}


# ---- phase 3: the recorder's bytes per frame ----------------------------------------------------------------------


def phase_recorder(run: Run) -> dict[str, Any]:
    """The static scene alone, then the changing one alone, each for ``--recorder-s``: the database's growth per
    decided frame (everything the recorder wrote meanwhile, the hub's and the quiet stream's rows included)."""
    assert run.camera is not None
    paused_entity = entity(run, "cam-a.paused")
    out: dict[str, Any] = {"seconds": run.args.recorder_s, "bars_bytes_per_frame": {
        STATIC: run.args.static_bar, CHANGING: run.args.changing_bar}}
    run.call("switch.turn_on", paused_entity)
    run.camera.on.set()
    out[STATIC] = measure_growth(run, STATIC)
    run.call("switch.turn_off", paused_entity)
    run.camera.on.clear()
    out[CHANGING] = measure_growth(run, CHANGING)
    out["passed"] = all(out[stream]["frames"] > 0 and out[stream]["bytes_per_frame"] <= bar
                        for stream, bar in ((STATIC, run.args.static_bar), (CHANGING, run.args.changing_bar)))
    return out


def measure_growth(run: Run, stream: str) -> dict[str, Any]:
    """``--warmup-s`` to settle, then ``--recorder-s`` of one stream: bytes in use at both ends and the frames the
    stream decided between the two readings' recorder horizons (the newest state row each holds: what the recorder
    had committed, every 5 s by default), the label changes among them."""
    run.sleep(run.args.warmup_s)
    before, start = db_usage(run.db), db_horizon(run.db)
    run.sleep(run.args.recorder_s)
    after, end = db_usage(run.db), db_horizon(run.db)
    results = [r for r in run.recorder.results() if r["stream_id"] == stream and start <= r["ts"] < end]
    labels = [r["label"] for r in sorted(results, key=lambda r: r["ts"])]
    changes = sum(1 for a, b in itertools.pairwise(labels) if a != b)
    grown = growth(before, after)
    frames = len(results)
    return {"window_s": round(end - start, 1), "frames": frames, "label_changes": changes,
            "changes_per_frame": round(changes / frames, 3) if frames else None,
            "bytes_grown": grown.get("_total", 0),
            "bytes_per_frame": round(grown.get("_total", 0) / frames, 1) if frames else None,
            "per_table": {k: v for k, v in grown.items() if k != "_total"},
            "measured_from_s": round(start - run.t0, 1)}


# ---- phase 4: a stopped stream goes unavailable ------------------------------------------------------------------


def phase_stop(run: Run) -> dict[str, Any]:
    """cam-p stopped with SIGTERM while its camera sends: its stream's label goes unavailable."""
    assert run.camera is not None
    run.camera.on.set()
    run.sleep(8)
    stopped, status = run.stop_sensor(STATIC)
    bound = run.args.offline_grace_s + run.args.slack_s
    run.sleep(bound + 8)
    label = entity(run, f"{STATIC}.label")
    gone = first_state_after(rows_of(run.db, label), stopped, {hc.UNAVAILABLE})
    after = None if gone is None else round(gone - stopped, 2)
    return {"sensor": "cam-p", "exit_status": status, "entity": label, "stop_to_unavailable_s": after,
            "bound_s": bound, "passed": after is not None and after <= bound}


# ---- phase 5: the entity ids Home Assistant gave ------------------------------------------------------------------


def asked_entity_ids(recorder: TruthRecorder, prefix: str) -> dict[str, str]:
    """unique id -> the ``default_entity_id`` its discovery config asked for (the configs seen on the broker)."""
    asked: dict[str, str] = {}
    for msg in recorder.snapshot():
        if not (msg.topic.startswith(prefix + "/") and msg.topic.endswith("/config") and msg.payload):
            continue
        try:
            config = json.loads(msg.payload)
        except ValueError:
            continue
        for cmp in (config.get("cmps") or config.get("components") or {}).values():
            if isinstance(cmp, dict) and cmp.get("unique_id") and cmp.get("default_entity_id"):
                asked[str(cmp["unique_id"])] = str(cmp["default_entity_id"])
    return asked


def entity_ids(run: Run) -> list[dict[str, str]]:
    """Every entity of this site in Home Assistant's registry: its unique id, the id Home Assistant gave it and the
    one its discovery config asked for (``default_entity_id``, which Home Assistant honours from 2025.10)."""
    from nairbus.agents.home.discovery import id_base
    from nairbus.schemas.topics import TopicTree

    site = id_base(TopicTree(run.args.root, run.args.site))
    asked = asked_entity_ids(run.recorder, run.args.prefix)
    registry = hc.read_storage(run.config_dir, "core.entity_registry")
    rows = [{"unique_id": e["unique_id"], "entity_id": e["entity_id"], "default_entity_id": asked.get(
             e["unique_id"], "")} for e in registry.get("entities", []) if e.get("platform") == "mqtt"
            and str(e.get("unique_id", "")).startswith(site)]
    return sorted(rows, key=lambda r: r["unique_id"])


# ---- orchestration -----------------------------------------------------------------------------------------------


def start_everything(run: Run) -> None:
    """Home Assistant, fusion, the camera and both sensors; until Home Assistant has every entity."""
    hc.log("starting Home Assistant")
    run.ha.start(run.args.ha_start_timeout, run.deadline)
    run.mark("ha_online")
    run.fusion = run.procs.start("nairbus fusion", [run.nairbus, "fusion", "--fusion-id", run.args.fusion_id],
                                 run.workdir / "fusion.log", env=run.env, cwd=run.workdir)
    status = f"{run.base}/fusion/{run.args.fusion_id}/status"
    if not hc.wait_for(lambda: run.recorder.status_of(status, "online") is not None, run.args.agent_start_timeout,
                       run.deadline, alive=[run.fusion]):
        raise hc.CheckError("fusion did not come online:\n"
                            + (run.workdir / "fusion.log").read_text(errors="replace")[-3000:])
    run.camera = Camera(run.recorder, run.args.fps, run.args.max_run_s)
    run.camera.start()
    for stream in (CHANGING, STATIC):
        run.start_sensor(stream)
    wait_for_entities(run)
    run.mark("entities_registered")


def agent_env(args: argparse.Namespace, host: str, port: int, workdir: Path) -> dict[str, str]:
    """The agents' environment: the broker, the site, a state directory of the check's own (controls memory), and
    the discovery timings the check's bounds are computed from (the shipped defaults unless given)."""
    return {**os.environ, "NAIRBUS_BROKER__HOST": host, "NAIRBUS_BROKER__PORT": str(port),
            "NAIRBUS_TOPICS__SITE": args.site, "NAIRBUS_TOPICS__ROOT": args.root, "COLUMNS": "160", "TERM": "dumb",
            "XDG_STATE_HOME": str(workdir / "state"), "STATE_DIRECTORY": "",
            "NAIRBUS_DISCOVERY__EXPIRE_AFTER_S": str(args.expire_after_s),
            "NAIRBUS_DISCOVERY__HEARTBEAT_S": f"{args.heartbeat_s:g}",
            "NAIRBUS_DISCOVERY__LABEL_INTERVAL_S": f"{args.label_interval_s:g}",
            "NAIRBUS_DISCOVERY__QUIET_AFTER_S": f"{args.quiet_after_s:g}",
            "NAIRBUS_DISCOVERY__EVENTS": args.events,
            "NAIRBUS_DISCOVERY__METRICS_INTERVAL_S": f"{args.metrics_interval_s:g}",
            "NAIRBUS_DISCOVERY__OFFLINE_GRACE_S": f"{args.offline_grace_s:g}"}


def run_check(args: argparse.Namespace, procs: hc.Processes, report: dict[str, Any]) -> None:
    deadline = hc.Deadline(args.max_run_s)
    venv = Path(args.ha_venv).expanduser()
    info = hc.ensure_ha_venv(venv, hc.find_python(args.python), args.ha_version,
                             {"mqtt", "recorder", "logger", "http", "homeassistant", "automation"},
                             args.install_timeout, allow_install=not args.no_install)
    report["home_assistant"] = {"version": info["ha_version"], "python": info["python"], "venv": str(venv)}
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="nairbus-ha-truth-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report["workdir"] = str(workdir)
    config_dir = workdir / "ha-config"
    shutil.rmtree(config_dir, ignore_errors=True)
    config_dir.mkdir()
    broker = hc.OwnMosquitto(procs, workdir)
    broker.start()
    recorder = TruthRecorder(broker.host, broker.port, args.prefix, args.root, args.site, None, None)
    recorder.start()
    hc.write_ha_config(config_dir, hc.ha_package_dir(venv), broker.host, broker.port, hc.free_port(), args.prefix,
                       None, None, recorder_options=RECORDER_DEFAULTS, extra=AUTOMATION)
    run = Run(args, procs, deadline, workdir, config_dir, recorder,
              hc.HomeAssistant(info["hass"], config_dir, procs, recorder, args.prefix, workdir),
              agent_env(args, broker.host, broker.port, workdir), hc.nairbus_binary(args.nairbus), report)
    checks: dict[str, Any] = {}
    report["checks"] = checks
    try:
        start_everything(run)
        for name, phase in (("a_commands", phase_commands), ("b_truth", phase_truth),
                            ("c_recorder", phase_recorder), ("d_stop", phase_stop)):
            hc.log(f"phase {name}")
            checks[name] = phase(run)
            run.mark(name)
            hc.log(f"{'PASS' if checks[name]['passed'] else 'FAIL'} {name}")
        report["entity_ids"] = entity_ids(run)
    finally:
        if run.camera is not None:
            run.camera.close()
        if run.fusion is not None:
            procs.stop(run.fusion, 30)
        for proc in run.sensors.values():
            procs.stop(proc, 30)
        if run.ha.proc is not None:
            run.ha.stop(args.ha_stop_timeout)
        recorder.stop()
        broker.close()
    records = [r for ha_run in run.ha.runs for r in ha_run.log_records]
    problems = [f"{r['level']} [{r['logger']}] {r['message'].splitlines()[0][:300]}" for r in records
                if r["level"] in ("ERROR", "CRITICAL") or (r["level"] == "WARNING" and hc.MQTT_WORDS.search(
                    r["logger"] + " " + r["message"]))]
    checks["e_log"] = {"passed": not problems, "problems": problems[:20]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Against a real Home Assistant Core: commands sent by Home Assistant, paused/stalled/stopped "
                    "streams' states, and the recorder's bytes per frame with the defaults.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ha-venv", default=str(hc.DEFAULT_HA_VENV),
                        help="Home Assistant's own venv (made if missing)")
    parser.add_argument("--python", help="Python >= 3.13 for a new HA venv")
    parser.add_argument("--ha-version", default=hc.DEFAULT_HA_VERSION, help="homeassistant version to install")
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing anything")
    parser.add_argument("--install-timeout", type=float, default=3600, help="seconds for each pip install")
    parser.add_argument("--prefix", default="homeassistant", help="Home Assistant's discovery prefix")
    parser.add_argument("--root", default="nairbus", help="nairbus topic root")
    parser.add_argument("--site", default="home", help="nairbus site")
    parser.add_argument("--fusion-id", default="fusion-1")
    parser.add_argument("--nairbus", help="the nairbus command (default: beside this Python, or the repo's .venv)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second of each stream")
    parser.add_argument("--events", choices=("change", "frame"), default="change",
                        help="[discovery] events: the classification event per label change (the default) or per "
                             "frame (measure its recorder cost with larger --static-bar/--changing-bar)")
    parser.add_argument("--recorder-s", type=float, default=300.0, help="seconds measured per scene (phase 3)")
    parser.add_argument("--warmup-s", type=float, default=15.0, help="settle time before each measured scene")
    parser.add_argument("--static-bar", type=float, default=50.0, help="recorder bytes per frame, static scene")
    parser.add_argument("--changing-bar", type=float, default=250.0, help="recorder bytes per frame, changing scene")
    # nairbus's discovery timings: the shipped defaults (DiscoverySettings); shorter ones make a quick test run.
    parser.add_argument("--expire-after-s", type=int, default=75, help="[discovery] expire_after_s")
    parser.add_argument("--heartbeat-s", type=float, default=30.0, help="[discovery] heartbeat_s")
    parser.add_argument("--label-interval-s", type=float, default=1.0, help="[discovery] label_interval_s")
    parser.add_argument("--quiet-after-s", type=float, default=30.0, help="[discovery] quiet_after_s")
    parser.add_argument("--metrics-interval-s", type=float, default=5.0, help="[discovery] metrics_interval_s")
    parser.add_argument("--offline-grace-s", type=float, default=5.0, help="[discovery] offline_grace_s")
    parser.add_argument("--deadline-s", type=float, default=1.0, help="the frames' deadline (the sensors' default)")
    parser.add_argument("--slack-s", type=float, default=3.0,
                        help="allowed beyond each documented time (the hub's update loop, Home Assistant's handling)")
    parser.add_argument("--ha-start-timeout", type=float, default=300.0, help="seconds for Home Assistant to start")
    parser.add_argument("--ha-stop-timeout", type=float, default=90.0, help="seconds for it to stop, then SIGKILL")
    parser.add_argument("--agent-start-timeout", type=float, default=90.0, help="seconds for an agent to come online")
    parser.add_argument("--max-run-s", type=float, default=2400.0, help="bound on the whole run (after install)")
    parser.add_argument("--workdir", help="keep the HA config dir, logs and database here (default: a new tmp dir)")
    parser.add_argument("--report", default="reports/homeassistant-truth.json", help="JSON report path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs = hc.Processes()

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    report: dict[str, Any] = {"tool": "deploy/homeassistant/ha_truth.py",
                              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                              "checker_python": platform.python_version(), "settings": vars(args)}
    status = 2
    try:
        run_check(args, procs, report)
        report["failed"] = [name for name, check in report["checks"].items() if not check.get("passed")]
        status = 1 if report["failed"] else 0
    except hc.CheckError as exc:
        report["error"] = str(exc)
        hc.log(f"ERROR: {exc}")
    except KeyboardInterrupt as exc:
        report["error"] = f"interrupted ({exc or 'SIGINT'})"
    finally:
        procs.kill_all()
    report.update(passed=status == 0, exit_status=status,
                  finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    from nairbus.agents.tools.reports import HomeAssistantTruthReport, write_report

    write_report(Path(args.report), HomeAssistantTruthReport.from_data(report, lenient=True))
    hc.log(f"report: {args.report} (exit {status})")
    return status


if __name__ == "__main__":
    sys.exit(main())
