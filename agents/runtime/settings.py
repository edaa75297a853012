"""Settings shared by every agent: how to reach the broker, where the topic tree lives, how to log, and the
``[discovery]`` section read by the Home Assistant observer (:mod:`nairbus.agents.home`) a fusion agent is given.

Configuration is data: plain pydantic v2 models, validated on construction. Agent-specific settings
live in their own modules and embed these; the command line and environment loading are layered on
top elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX = re.compile(r"[^#+\s]+")


def _check_segment(value: str, what: str) -> str:
    if not _SEGMENT.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be 1-64 characters from A-Z, a-z, 0-9, '_' and '-'")
    return value


class BrokerSettings(BaseModel):
    """How an agent connects to its MQTT broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    """File holding the password (its first line), instead of ``password``: a systemd credential
    (``%d/broker-password`` in a unit), a Docker secret, or a 0600 file. Read at connect time, never logged."""
    tls_ca: Path | None = None
    """CA bundle that signed the broker's certificate; setting it (or a client certificate) enables TLS."""
    tls_cert: Path | None = None
    """Client certificate for mutual TLS; requires ``tls_key``."""
    tls_key: Path | None = None
    tls_insecure: bool = False
    """Skip the broker host name check (test certificates only)."""
    tls: bool = False
    """TLS with the system's CA certificates (an ``mqtts://`` broker URL); a ``tls_ca`` or a client certificate
    turns TLS on too."""
    fallbacks: tuple[str, ...] = ()
    """Other nodes of the same broker cluster, ``host:port`` each (NATS, EMQX, HiveMQ clusters; RabbitMQ's): when the
    node in use drops the connection or cannot be reached, the agent tries the next one, in turn."""
    keepalive: int = Field(default=30, ge=5, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version. ``3.1.1`` for brokers without MQTT 5 (NATS's MQTT support, RabbitMQ's MQTT plugin before 3.13):
    no topic aliases (every PUBLISH carries its topic), no message expiry, content type or reason strings, no
    session expiry (a persistent session lasts until the broker drops it), no shared subscriptions."""
    reconnect_min_s: float = Field(default=0.25, gt=0)
    """First wait before reconnecting after the broker went away; each failed try doubles it up to
    ``reconnect_max_s``. Each client draws its first wait from ``[reconnect_min_s, 2 × reconnect_min_s]`` and its
    longest from the upper half of ``reconnect_max_s`` (jitter), so a fleet that lost its broker at the same moment
    does not come back in one stampede."""
    reconnect_max_s: float = Field(default=1.0, gt=0)
    """Longest wait between tries: a broker that is back is found within about this long (an outage of any length
    costs at most this much more)."""
    max_outgoing: int = Field(default=20000, ge=1)
    """Publishes that may wait to be sent (or, at QoS > 0, acknowledged) before new ones are dropped."""
    inbox_size: int = Field(default=50000, ge=1)
    """Received messages that may wait for the agent before the oldest of the busiest sender are dropped."""
    inbox_per_key: int = Field(default=4096, ge=1)
    """Received messages one sender (for fusion: one sensor) may have waiting; beyond it, its own oldest go."""
    inbox_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Bytes of received messages (topic + payload) that may wait in all."""
    notsent_lowat: int | None = Field(default=4096, ge=1)
    """``TCP_NOTSENT_LOWAT`` of the broker connection: unsent bytes the kernel may hold before it stops taking more
    (None: the kernel's default, which lets a slow link hide a backlog of hundreds of kilobytes)."""
    tcp_congestion: tuple[str, ...] = ("cubic", "reno")
    """Congestion control of the broker connection: the first of these the kernel lets this process use (empty: the
    system's default). Not BBR, which some systems default to: every ten seconds it shrinks its window to four
    packets for at least a round trip to measure the path's minimum RTT, and on a long path (cellular, satellite)
    every frame sent in that second arrives late. A sensor paces itself to the measured rate, so a loss-based
    algorithm rarely sees a loss."""

    @model_validator(mode="after")
    def _check_pairs(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        has_password = self.password is not None or self.password_file is not None
        if self.username is not None and not has_password:
            raise ValueError("a password is required when a username is set (password or password_file)")
        if has_password and self.username is None:
            raise ValueError("a username is required when a password is set")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        for entry in self.fallbacks:
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"fallback {entry!r} is not host:port")
        return self

    def addresses(self) -> list[tuple[str, int]]:
        """The broker's node and its fallbacks, in the order they are tried."""
        out = [(self.host, self.port)]
        for entry in self.fallbacks:
            host, _sep, port = entry.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    def password_value(self) -> str | None:
        """The password, read from ``password_file`` when one is given; ``None`` without a username.

        Raises ``ValueError`` (naming the file, never its content) when the file cannot be read or is empty.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            lines = self.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read password_file {self.password_file}: {exc.strerror or exc}") from None
        if not lines or not lines[0]:
            raise ValueError(f"password_file {self.password_file} is empty")
        return lines[0]

    @property
    def tls_enabled(self) -> bool:
        """Whether the connection uses TLS (a CA bundle or a client certificate is configured)."""
        return self.tls or self.tls_ca is not None or self.tls_cert is not None


_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def parse_broker(text: str) -> dict[str, Any]:
    """The broker settings a ``--broker`` value names: ``host``, ``host:port``, ``[v6::addr]:port``,
    ``mqtt://[user@]host[:port]`` or ``mqtts://[user@]host[:port]`` (TLS with the system's CAs; default ports 1883
    and 8883). A password never travels in the URL (``broker.password_file``, ``NAIRBUS_BROKER__PASSWORD``).

    >>> parse_broker("hub.local"), parse_broker("10.0.0.2:1884")
    ({'host': 'hub.local'}, {'host': '10.0.0.2', 'port': 1884})
    >>> parse_broker("mqtts://cam-01@hub.example.org")
    {'host': 'hub.example.org', 'port': 8883, 'tls': True, 'username': 'cam-01'}
    >>> parse_broker("[::1]:1883")
    {'host': '::1', 'port': 1883}
    """
    from urllib.parse import urlsplit

    text = text.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else None
    if scheme is not None and scheme not in _DEFAULT_PORTS:
        raise ValueError(f"broker URL {text!r}: the scheme must be mqtt:// or mqtts://")
    try:
        parts = urlsplit(text if scheme else f"mqtt://{text}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker {text!r}: {exc}") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker {text!r}: expected host, host:port or mqtt[s]://[user@]host[:port]")
    if parts.password is not None:
        raise ValueError("a broker URL carries no password: use broker.password_file or NAIRBUS_BROKER__PASSWORD")
    out: dict[str, Any] = {"host": parts.hostname}
    if scheme is not None:
        out["port"] = port or _DEFAULT_PORTS[scheme]
        if scheme == "mqtts":
            out["tls"] = True
    elif port is not None:
        out["port"] = port
    if parts.username:
        out["username"] = parts.username
    return out


class TopicSettings(BaseModel):
    """Where the nairbus topic tree lives: ``<root>/v1/<site>/...``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str = "nairbus"
    """One or more ``/``-joined segments, e.g. ``nairbus`` or ``acme/lab``."""
    site: str = "default"

    @field_validator("root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        for segment in value.split("/"):
            _check_segment(segment, "topic root segment")
        return value

    @field_validator("site")
    @classmethod
    def _check_site(cls, value: str) -> str:
        return _check_segment(value, "site")


class LogSettings(BaseModel):
    """How agents log: JSON lines for services, readable console for people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["console", "json", "auto"] = "auto"
    """``auto``: JSON when stderr is not a terminal (services, pipes), console otherwise."""

    @field_validator("level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class DiscoverySettings(BaseModel):
    """Home Assistant MQTT discovery, done by the fusion agent (``[discovery]`` in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    prefix: str = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration setting of the same name)."""
    settle_s: float = Field(default=2.0, ge=0)
    """After connecting, wait this long for the retained configs on the broker before publishing or clearing any."""
    announce_delay_s: tuple[float, float] = (1.0, 5.0)
    """Re-publish configs and states this many seconds (uniformly random in the range) after Home Assistant comes
    online."""
    announce_min_interval_s: float = Field(default=30.0, ge=0)
    """At most one re-announce in this many seconds, however often ``<prefix>/status`` says ``online``."""
    events: Literal["frame", "change"] = "change"
    """The classification event entity fires once per label change (the default: Home Assistant's recorder writes a
    row per event), or once per decided frame (``frame``: with the label alone, so that the recorder's attributes
    row is shared by every event of a label — confidence and frame id would make one per frame)."""
    heartbeat_s: float = Field(default=30.0, gt=0)
    """The current label is published again with the first result this long after its last publication (it keeps
    ``expire_after`` alive while frames arrive; with no frame nothing is re-published)."""
    label_interval_s: float = Field(default=1.0, ge=0)
    """The label state is published at most this often: the latest label, at most this late (a change within it is
    sent when it ends). A label that changes on most frames then makes at most one recorder row per interval; every
    change is still an event."""
    quiet_after_s: float = Field(default=30.0, gt=0)
    """A stream with no frame decided for this long has no current label: its state says so (``label`` null, Home
    Assistant's *unknown*), again every ``heartbeat_s`` while it stays quiet."""
    expire_after_s: int = Field(default=75, ge=1)
    """Home Assistant shows the label as unavailable when no state came for this long: the safety net for a hub that
    stopped publishing while its status still says online (a quiet stream's state keeps coming, saying no label)."""
    metrics_interval_s: float = Field(default=5.0, gt=0)
    """Confidence, latency and frames per second are published at most this often per stream."""
    offline_grace_s: float = Field(default=5.0, ge=0)
    """A stream turns unavailable this long after its last sensor went offline (at least the deadline plus a
    second), so the results of its last frames still land."""

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value) or value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError(f"discovery prefix {value!r} must be a topic without wildcards or empty levels")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        low, high = self.announce_delay_s
        if not 0 <= low <= high:
            raise ValueError("announce_delay_s must be (low, high) with 0 <= low <= high")
        if self.expire_after_s <= max(self.heartbeat_s, self.quiet_after_s):
            raise ValueError("expire_after_s must be longer than heartbeat_s and quiet_after_s (states keep the label "
                             "alive)")
        return self
