"""Shared fixtures: one private Mosquitto for the whole suite, and a topic root unique to each test; the test tiers.

Tiers: a test marked ``slow``, ``broker`` (it talks to a private Mosquitto), ``e2e`` (it runs the CLI as a user does)
or ``homeassistant`` belongs to the full suite only; every other test is also marked ``unit`` — the fast tier of the
pure core and the units (``.venv/bin/python -m pytest -m unit``). A test that asks for the ``broker`` fixture is
marked ``broker`` here, whether or not its module says so.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator

import pytest

from nairbus.agents.runtime.mosquitto import PrivateMosquitto

# What agents keep between runs (a sensor's remembered link rate) goes to a directory of this test session's own,
# for the agents run here and the processes they start; each test then gets one of its own (``_own_state``).
os.environ["STATE_DIRECTORY"] = tempfile.mkdtemp(prefix="nairbus-test-state-")


@pytest.fixture(autouse=True)
def _own_state(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A state directory per test: one test never starts from a link another test's sensor remembered."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))


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


_FULL_SUITE_ONLY = ("slow", "broker", "e2e", "homeassistant")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker ``broker``, and every test of the fast tier ``unit``."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)
        if not any(item.get_closest_marker(name) for name in _FULL_SUITE_ONLY):
            item.add_marker(pytest.mark.unit)
