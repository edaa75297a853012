"""Validation of the shared agent settings (fast, no broker)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from nairbus.agents.runtime.connection import jittered
from nairbus.agents.runtime.settings import BrokerSettings, LogSettings, TopicSettings


def test_defaults() -> None:
    broker = BrokerSettings()
    assert (broker.host, broker.port, broker.keepalive) == ("127.0.0.1", 1883, 30)
    assert not broker.tls_enabled
    assert TopicSettings().root == "nairbus"
    assert LogSettings().format == "auto"


def test_password_required_with_username() -> None:
    with pytest.raises(ValidationError, match="password is required"):
        BrokerSettings(username="sensor-1")
    settings = BrokerSettings(username="sensor-1", password="s3cret")
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_tls_cert_and_key_together() -> None:
    with pytest.raises(ValidationError, match="together"):
        BrokerSettings(tls_cert=Path("client.crt"))
    assert BrokerSettings(tls_ca=Path("ca.crt")).tls_enabled


@pytest.mark.parametrize("port", [0, 65536])
def test_port_range(port: int) -> None:
    with pytest.raises(ValidationError):
        BrokerSettings(port=port)


@pytest.mark.parametrize("site", ["", "a/b", "has space", "plus+", "hash#", "x" * 65])
def test_bad_site_rejected(site: str) -> None:
    with pytest.raises(ValidationError):
        TopicSettings(site=site)


def test_root_may_have_segments() -> None:
    assert TopicSettings(root="acme/lab-1", site="kitchen_2").root == "acme/lab-1"
    for root in ["", "/nairbus", "a//b", "a/+/b"]:
        with pytest.raises(ValidationError):
            TopicSettings(root=root)


def test_log_level_case_insensitive() -> None:
    assert LogSettings(level="DEBUG").level == "debug"  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LogSettings(format="xml")  # type: ignore[arg-type]


def test_a_fleet_reconnects_soon_and_not_in_one_stampede() -> None:
    """The shipped back-off finds a returning broker within a second, and clients draw their own waits (issue 35:
    the old 0.5-30 s back-off came back 11.5 s after a 20 s outage, all clients on the same schedule)."""
    settings = BrokerSettings()
    assert settings.reconnect_max_s <= 1.0
    rng = random.Random(7)
    draws = [jittered(settings.reconnect_min_s, settings.reconnect_max_s, rng) for _ in range(200)]
    for low, high in draws:
        assert settings.reconnect_min_s <= low <= 2 * settings.reconnect_min_s  # never sooner than configured
        assert low <= high <= settings.reconnect_max_s
    assert len({round(high, 3) for _low, high in draws}) > 100  # spread, not one schedule


def test_fallback_nodes_are_host_port_and_tried_after_the_first() -> None:
    settings = BrokerSettings(host="a", port=1883, fallbacks=("b:1884", "[::1]:1885"))
    assert settings.addresses() == [("a", 1883), ("b", 1884), ("::1", 1885)]
    for bad in ("b", "b:", ":1883", "b:x", "b:70000"):
        with pytest.raises(ValidationError, match="host:port"):
            BrokerSettings(fallbacks=(bad,))
