"""``Communicator`` satisfies the ``Bus`` protocol the agents use: by name and signature at run time, and for mypy."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nairbus.agents.runtime.bus import Bus
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings

REPO = Path(__file__).resolve().parents[2]

# What the agents (agents/nair, agents/vp, agents/runtime/agent.py, fusion_base.py, commands.py) use of their bus.
AGENTS_USE = {
    "session", "connected", "endpoint", "counters", "wire_bytes", "last_wire_bytes",
    "start", "stop", "subscribe", "route", "publish", "announce", "get", "wait_published",
    "on_session_lost", "replay_since", "pending_bytes", "socket_outq", "min_rtt", "tcp_info",
    "alias_extra_bytes",
}


def _members(protocol: type) -> set[str]:
    """The protocol's own members (typing.get_protocol_members is Python 3.13+)."""
    names = {name for name in vars(protocol) if not name.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


def _communicator() -> Communicator:
    # Never started: building one makes a paho client but opens no connection.
    return Communicator(BrokerSettings(), "test-bus-protocol", None, lambda _state: b"")


def test_the_bus_names_what_the_agents_use() -> None:
    assert _members(Bus) == AGENTS_USE


def test_a_communicator_is_a_bus() -> None:
    communicator = _communicator()
    bus: Bus = communicator  # the static check: mypy accepts a Communicator where a Bus is wanted
    assert isinstance(bus, Bus)  # runtime_checkable: every member is there
    missing = [name for name in _members(Bus) if not hasattr(communicator, name)]
    assert missing == []


@pytest.mark.parametrize("name", sorted(n for n in AGENTS_USE if inspect.isfunction(getattr(Bus, n, None))))
def test_each_method_has_the_protocols_signature(name: str) -> None:
    wanted = inspect.signature(getattr(Bus, name))
    actual = inspect.signature(getattr(Communicator, name))
    assert list(actual.parameters.values()) == list(wanted.parameters.values())
    assert actual.return_annotation == wanted.return_annotation


@pytest.mark.parametrize("name", sorted(n for n in AGENTS_USE if isinstance(getattr(Bus, n, None), property)))
def test_each_property_is_readable_on_a_communicator(name: str) -> None:
    getattr(_communicator(), name)


def test_something_without_publish_is_not_a_bus() -> None:
    class Listener:
        def get(self, timeout: float | None = None) -> None:
            return None

    assert not isinstance(Listener(), Bus)


@pytest.mark.slow
def test_mypy_accepts_a_communicator_as_a_bus_and_refuses_half_a_bus(tmp_path: Path) -> None:
    # mypy reads the packages under their installed names: a tree of links, as tests/test_lint.py builds it.
    (tmp_path / "nairbus").mkdir()
    for package in ("agents", "models", "schemas", "broker"):
        (tmp_path / "nairbus" / package).symlink_to(REPO / package, target_is_directory=True)
    (tmp_path / "check_bus.py").write_text(textwrap.dedent("""\
        from nairbus.agents.runtime.bus import Bus
        from nairbus.agents.runtime.mqtt import Communicator


        class HalfABus:
            def start(self, timeout: float = 10.0) -> None: ...


        def whole(communicator: Communicator) -> Bus:
            return communicator


        def half(other: HalfABus) -> Bus:
            return other  # line 14: the only error
        """))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "--follow-imports=silent", "check_bus.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout + done.stderr
    assert errors[0].startswith("check_bus.py:14:"), done.stdout
    assert 'got "HalfABus", expected "Bus"' in errors[0]
