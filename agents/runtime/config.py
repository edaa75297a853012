"""Agent configuration as data: sensor and fusion settings, composed with broker/topic/log settings.

Values come, lowest to highest priority, from defaults, a TOML config file (``--config`` or ``NAIRBUS_CONFIG``),
environment variables (``NAIRBUS_<SECTION>__<FIELD>``, e.g. ``NAIRBUS_BROKER__PORT=1884``) and command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nairbus.agents.runtime.settings import BrokerSettings, DiscoverySettings, LogSettings, TopicSettings
from nairbus.schemas.ids import ID_FIELD_PATTERN

Id = Field(pattern=ID_FIELD_PATTERN)


FLAT_SOURCE_KEYS = ("camera", "folder", "watch", "image_topic")
"""Source options a sensor's settings still take flat (``SensorSettings(folder=...)``), moved to ``source_options``."""


FLAT_METHOD_KEYS: dict[str, Any] = {
    "variant": None, "k": 5, "frame_stream": None,
    "artifact": None, "runtime": "torch", "device_budget": None, "link_memory": True, "link_trace": None,
    "fragments_by_plan": False, "loss": {"kind": "none", "rate": 0.0, "mean_burst": 3.0, "seed": 0},
    "image_codecs": ("grey8+zstd", "grey7+zstd", "grey6+zstd", "grey5+zstd", "grey4+zstd", "down22:grey5+zstd",
                     "grey3+zstd", "down22:grey4+zstd", "down20:grey4+zstd", "down24:grey3+zstd", "down22:grey3+zstd",
                     "down20:grey3+zstd", "down16:grey4+zstd", "down13:grey5+zstd", "down14:grey4+deflate",
                     "down13:grey4+zstd", "down12:grey4+zstd", "down11:grey4+zstd", "down13:grey3+zstd",
                     "down12:grey3+zstd", "down11:grey3+zstd", "down14:grey2+zstd", "down13:grey2+zstd",
                     "down10:grey3+zstd", "down12:grey2+zstd", "down11:grey2+zstd", "down10:grey2+deflate",
                     "down9:grey2+zstd", "down12:grey1+zstd", "down11:grey1+zstd", "down10:grey1+zstd"),
}
"""Method options a sensor's settings still take flat (``SensorSettings(variant=...)``), moved to
``method_options``, each with the default its method gives it (VP: ``variant``, ``k``, ``frame_stream``; NAIR:
``artifact``, ``runtime``, ``fragments_by_plan``, ``loss``, ``image_codecs``)."""

_FALSE = {"false", "0", "no", "off", "f", "n"}


def _is_default(key: str, value: Any) -> bool:
    """Whether a flat source key holds its default (an environment variable gives ``watch`` as a string)."""
    if value is None:
        return True
    return key == "watch" and str(value).strip().lower() in _FALSE


def _is_method_default(key: str, value: Any) -> bool:
    """Whether a flat method key holds its default (an environment variable gives a string)."""
    default = FLAT_METHOD_KEYS[key]
    if value is None or value == default:
        return True
    if isinstance(default, bool):
        return str(value).strip().lower() in _FALSE
    if isinstance(default, int):
        return str(value).strip() == str(default)
    if isinstance(default, tuple):
        return isinstance(value, list | tuple) and tuple(value) == default
    if isinstance(default, dict):
        dumped = value.model_dump() if isinstance(value, BaseModel) else value
        return isinstance(dumped, dict) and {**default, **dumped} == default
    return False


def _move_flat(data: dict[str, Any], keys: Any, into: str, is_default: Any) -> dict[str, Any]:
    """``data`` with its flat ``keys`` moved into the dict ``data[into]``; one left at its default is dropped unless
    that dict names it."""
    data = dict(data)
    options = dict(data.get(into) or {})
    for key in (key for key in keys if key in data):
        value = data.pop(key)
        if key in options or not is_default(key, value):
            options[key] = value
    data[into] = options
    return data


class SensorSettings(BaseModel):
    """One sensor agent: what it replays, how it encodes, and what it may spend per frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor_id: str = Field(default="sensor-1", pattern=ID_FIELD_PATTERN)
    stream_id: str | None = Field(default=None, pattern=ID_FIELD_PATTERN)
    mode: str = Field(default="nair", pattern=ID_FIELD_PATTERN)
    """A mode some registered method serves (:data:`nairbus.agents.methods.METHODS`, which also checks what each
    mode needs of these settings): ``nair`` feature fragments, ``vp`` one variant's top-k, ``image`` the frame
    compressed whole (the whole model runs at the hub), or ``auto``: per frame whichever of ``nair`` and ``image`` is
    expected to be more accurate at the bytes the link gives it (calibrated rate-accuracy tables, validation images
    only)."""
    model: str = "base"
    source: str = "replay"
    """A registered frame source (:data:`nairbus.agents.sources.SOURCES`): ``replay`` the data set (frame id = index;
    every VP variant replays the same frames); NAIR, image and auto modes also ``folder`` (the image files of
    ``folder``, your own camera's snapshots, PNG/JPEG/WebP/BMP, in name order, frame id = position from 0),
    ``image-topic`` and ``camera``, each converted to the model's input at the sensor; VP mode: ``mqtt`` classifies the
    frames a capture agent publishes on ``<prefix>/frames/<frame_stream>``."""
    source_options: dict[str, Any] = Field(default_factory=dict)
    """The chosen source's own options, checked by the settings model the source registers (its module in
    :mod:`nairbus.agents.sources` documents them) when it opens: ``folder`` (and ``watch``) for ``folder``,
    ``image_topic`` for ``image-topic``, ``camera`` for ``camera``. The flat keys ``folder``, ``watch``,
    ``image_topic`` and ``camera`` (``--folder``, ``NAIRBUS_SENSOR__FOLDER``, older config files) are moved here."""
    method_options: dict[str, Any] = Field(default_factory=dict)
    """The mode's own options, checked by the settings model its method registers (``Method.settings``; the
    method's package documents them) when the method is looked up: VP's ``variant``, ``k`` and ``frame_stream``;
    NAIR's (``nair``, ``image``, ``auto``) ``artifact``, ``image_codecs``, ``fragments_by_plan`` and ``loss``. The flat
    keys (``--variant``, ``NAIRBUS_SENSOR__VARIANT``, older config files) are moved here."""
    split: Literal["train", "test"] = "test"
    data_dir: Path | None = None
    start: int = Field(default=0, ge=0)
    count: int | None = Field(default=None, ge=1)
    shard: tuple[int, int] | None = None
    """``(i, n)``: replay every n-th frame starting at i (frames shared between n sensors)."""
    link_fit: bool = True
    """Size every frame to what the link delivers before the frame's deadline (measured, nothing to configure).
    ``False`` sends each frame's whole budget whatever the link does (the behaviour before link fitting)."""
    budget_bytes: int | None = Field(default=None, ge=16)
    """A cap on each frame's **wire** bytes (MQTT PUBLISH bytes: header, alias, envelope and payload)."""
    budget_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    """A cap on each NAIR frame's payload as a fraction of the whole IR (the demo's budgets)."""
    bytes_per_second: float | None = Field(default=None, gt=0)
    """A cap on the wire bytes per second (a token bucket holding one second)."""
    deadline_ms: float = Field(default=1000.0, gt=0)
    fps: float | None = Field(default=None, gt=0)
    threads: int = Field(default=1, ge=1, le=64)
    """Compute threads for the sensor process's model work (``nairbus sensor`` sets them for its run). One frame at
    a time gains little from more, and on a device busy with other work more threads spin against each other."""
    batch: int = Field(default=32, ge=1, le=1024)
    expiry_s: float = Field(default=10.0, gt=0)
    replay_s: float = Field(default=1.0, ge=0, le=60)
    """After a lost broker connection, the frames published in its last ``replay_s`` seconds are published again
    once it is back (QoS 0: a broker killed mid-stream loses what its socket held; fusion counts a copy of a frame
    it already has as late). 0 turns it off."""
    remember_controls: bool = True
    """Re-apply at start the controls a command last set (budget, deadline, frame-rate cap, pause: Home Assistant's
    entities, ``nairbus set``), kept in ``$STATE_DIRECTORY/controls-<sensor>.json``: a command's value wins over the
    configuration's until another command changes it. False: start from the configuration (and forget them)."""
    stay: bool = False
    """After a one-shot run (a folder without ``watch``, a replay of ``count`` frames) keep the retained birth,
    controls and status on the broker (Home Assistant keeps the stream's devices). By default a run that ends by
    itself withdraws them, once fusion had a deadline to decide its last frames; a run that is stopped (a service)
    announces ``offline`` and keeps them."""
    qos: Literal[0, 1] = 0
    """QoS of the high-rate messages. 0: a frame is one message in importance order over TCP, so QoS 1 adds a packet
    id, a PUBACK and paho's in-flight window (behind which the most important bytes queued) and gains nothing but
    redelivery after a reconnect, when the frame is stale anyway; topic aliases are used at QoS 0 only."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.budget_bytes is not None and self.budget_fraction is not None:
            raise ValueError("give budget_bytes or budget_fraction, not both")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError("shard (i, n) needs 0 <= i < n")
        return self

    @model_validator(mode="before")
    @classmethod
    def _flat_source_options(cls, data: Any) -> Any:
        """Move the flat source keys of before sources declared their settings into ``source_options``; one left
        at its default (None, or ``watch`` false), which any source takes, is dropped unless the options name it."""
        if not isinstance(data, dict) or not any(key in data for key in FLAT_SOURCE_KEYS):
            return data
        return _move_flat(data, FLAT_SOURCE_KEYS, "source_options", _is_default)

    @model_validator(mode="before")
    @classmethod
    def _flat_method_options(cls, data: Any) -> Any:
        """Move the flat method keys of before methods declared their settings into ``method_options``; one left at
        its default, which its method takes, is dropped unless the options name it (so a NAIR sensor's settings may
        still say ``k = 5``)."""
        if not isinstance(data, dict) or not any(key in data for key in FLAT_METHOD_KEYS):
            return data
        return _move_flat(data, FLAT_METHOD_KEYS, "method_options", _is_method_default)

    @property
    def stream(self) -> str:
        return self.stream_id or self.sensor_id


class FusionSettings(BaseModel):
    """The fusion agent: reassembly deadline, memory bound, batching, reporting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fusion_id: str = Field(default="fusion-1", pattern=ID_FIELD_PATTERN)
    mode: str = Field(default="nair", pattern=ID_FIELD_PATTERN)
    """``vp``: fuse the top-k of variant-parallel sensors (nairbus.agents.vp) instead of reassembling NAIR fragments."""
    model: str = "base"
    artifact: Path | None = None
    """The NAIR artifact paired with the model (default ``models/weights/<model>.nair.npz``)."""
    extra_artifacts: tuple[Path, ...] | None = None
    """Further artifacts fusion decodes (sensors at other split points or quantisations, or of the other
    ``models``; each sensor's birth names its artifact by hash, each artifact its model). None: every
    ``<model>.*.nair.npz`` beside each model's manifest."""
    discover_models: bool = False
    """Also serve a sensor whose birth names a model this agent was not configured with, when a model with that
    sha256 is in the model search path (``$NAIRBUS_MODEL_DIR``, then the shipped weights) with the artifact the
    birth names beside it; each unknown hash is looked up at most every 30 s."""
    models: tuple[str, ...] = ()
    """Further models (names, or manifest paths) this one fusion agent serves beside ``model``, each with the
    artifacts beside its manifest: a hub with two kinds of camera needs one fusion agent."""
    deadline_ms: float = Field(default=500.0, gt=0)
    max_frames: int = Field(default=4096, ge=1)
    max_frames_per_sensor: int = Field(default=512, ge=1)
    """Frames one sensor may have in reassembly; a sensor past it evicts only its own oldest frames."""
    max_fps_per_sensor: float = Field(default=200.0, gt=0)
    """New frames per second one sensor may open (a token bucket holding one second's worth); beyond it, its
    messages are rejected as ``rate_limited`` before any tail runs, so a flooding device cannot take the hub's CPU."""
    max_batch: int = Field(default=256, ge=1)
    topk: int = Field(default=3, ge=1, le=10)
    stats_interval_s: float = Field(default=5.0, gt=0)
    partition: tuple[int, int] | None = None
    """``(i, n)``: this fusion agent takes the sensors whose id hashes to i of n (a fixed split; see ``fleet``)."""
    fleet: str | None = Field(default=None, pattern=ID_FIELD_PATTERN)
    """A fusion fleet's name: the agents that share it (each with its own ``fusion_id``) share the sensors — frames
    that travel as one message through an MQTT 5 shared subscription (the broker balances them and fails over),
    VP streams by rendezvous hashing over the members online (their retained statuses). A member's session is
    clean (``session_expiry_s`` is not used): a member that is gone must not be handed frames the others would
    decide; a fleet asks no sensor to replay. Needs an MQTT 5 broker."""
    shed_late: bool = False
    """Shed a frame that is already past ``SHED_AT`` of the deadline when fusion takes it (its capture time to
    now): under overload the hub then decides the frames that can still be on time instead of a backlog of late ones,
    and its memory stays bounded; each one is counted (``shed_late`` in the stats' rejections). Off by default: a
    run whose every frame must be decided (files, an evaluation replay) wants them late rather than never. For live
    cameras turn it on."""
    session_expiry_s: int = Field(default=300, ge=0, le=2**32 - 1)
    """A persistent MQTT 5 session: the broker keeps this agent's subscriptions and queues the sensors' messages
    for this long after it goes away (a restart, a crash, a lost connection), and delivers them when it is back;
    frames whose expiry passed meanwhile are counted as ``expired``. 0: a clean session on every connection."""
    result_qos: Literal[0, 1] = 1
    """QoS of the published results. 1 (the default): the broker acknowledges each one, paho resends it after a
    reconnect, and a subscriber at QoS 1 gets every decision, queued for it when it is slow or away (a persistent
    session); a QoS 0 subscriber may still miss some. 0: cheaper, for a hub whose every reader is a live view."""

    @model_validator(mode="after")
    def _one_way_to_share(self) -> Self:
        if self.fleet is not None and self.partition is not None:
            raise ValueError("fleet and partition both split the sensors between agents: give one of them")
        return self


class AgentConfig(BaseSettings):
    """Everything an agent process reads."""

    model_config = SettingsConfigDict(env_prefix="NAIRBUS_", env_nested_delimiter="__", extra="forbid")

    broker: BrokerSettings = BrokerSettings()
    topics: TopicSettings = TopicSettings()
    log: LogSettings = LogSettings()
    sensor: SensorSettings = SensorSettings()
    fusion: FusionSettings = FusionSettings()
    discovery: DiscoverySettings = DiscoverySettings()


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _flat_moved(data: dict[str, Any]) -> dict[str, Any]:
    """A config file's settings with its ``[sensor]`` flat source and method keys moved into their options already,
    so that they merge below the environment's (a file's ``variant`` below ``NAIRBUS_SENSOR__VARIANT``, which the
    environment's settings hold in ``method_options``). Flags stay flat: a flat key given overrides the options."""
    sensor = data.get("sensor")
    if not isinstance(sensor, dict):
        return data
    sensor = _move_flat(sensor, FLAT_SOURCE_KEYS, "source_options", _is_default)
    return {**data, "sensor": _move_flat(sensor, FLAT_METHOD_KEYS, "method_options", _is_method_default)}


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Defaults < config file < environment < ``overrides`` (flags given on the command line)."""
    file_data: dict[str, Any] = {}
    path = path or (Path(os.environ["NAIRBUS_CONFIG"]) if os.environ.get("NAIRBUS_CONFIG") else None)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        with path.open("rb") as handle:
            file_data = tomllib.load(handle)
    env_cfg = AgentConfig()
    env_data = env_cfg.model_dump(exclude_unset=True)
    merged = _deep_merge(_deep_merge(_flat_moved(file_data), env_data), overrides or {})
    if isinstance(merged.get("broker", {}).get("password"), SecretStr):
        merged["broker"]["password"] = merged["broker"]["password"].get_secret_value()
    return AgentConfig.model_validate(merged)
