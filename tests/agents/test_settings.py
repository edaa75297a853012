"""Validation of the shared agent settings (fast, no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

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
