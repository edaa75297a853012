"""Shared fixtures: one private Mosquitto for the whole suite, and a topic root unique to each test."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from nairbus.agents.runtime.mosquitto import PrivateMosquitto


@pytest.fixture(scope="session")
def broker() -> Iterator[PrivateMosquitto]:
    """A private Mosquitto on a free loopback port, started from ``broker/mosquitto.dev.conf``."""
    with PrivateMosquitto() as private:
        yield private


@pytest.fixture
def topic_root(request: pytest.FixtureRequest) -> str:
    """``nairbus-test/<sanitised test name>``: a topic root no other test uses."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name).strip("_")[:64] or "test"
    return f"nairbus-test/{name}"
