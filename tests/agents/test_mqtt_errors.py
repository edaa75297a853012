"""The communicator's typed errors: still ``ConnectionError`` with the same messages, now with the reason code and
whether retrying can help (credentials and ACL refusals will not fix themselves, an unreachable broker may)."""

from __future__ import annotations

import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from nairbus.agents.runtime.errors import (
    MqttCodeError,
    MqttConfigError,
    MqttConnectError,
    MqttError,
    MqttSubscribeError,
    MqttTimeoutError,
    MqttUnreachableError,
)
from nairbus.agents.runtime.mosquitto import PrivateMosquitto, free_port
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings

ENDPOINT = "broker.example:1883"


def _connack(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=code)


def _suback(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.SUBACK, identifier=code)


@pytest.mark.parametrize("cls", [MqttConfigError, MqttUnreachableError, MqttTimeoutError, MqttConnectError,
                                 MqttSubscribeError, MqttCodeError])
def test_every_error_is_still_a_connection_error(cls: type[MqttError]) -> None:
    assert issubclass(cls, MqttError)
    assert issubclass(cls, ConnectionError)


def test_bad_credentials_will_not_fix_themselves() -> None:
    error = MqttConnectError.from_connack(ENDPOINT, _connack(134))
    assert str(error) == (f"refused by the broker at {ENDPOINT}: Bad user name or password "
                          "(bad user name or password: check the username, password and ACL)")
    assert (error.rc, error.will_not_fix_itself) == (134, True)
    assert isinstance(error, MqttCodeError)


@pytest.mark.parametrize(("code", "forever"), [(135, True), (138, True), (140, True), (136, False), (137, False),
                                               (159, False)])
def test_only_credential_refusals_are_final(code: int, forever: bool) -> None:
    error = MqttConnectError.from_connack(ENDPOINT, _connack(code))
    assert (error.rc, error.will_not_fix_itself) == (code, forever)
    assert str(error).startswith(f"refused by the broker at {ENDPOINT}: {_connack(code)}")
    assert ("check the username, password and ACL" in str(error)) == forever


def test_a_refused_subscription_names_each_filter_and_its_code() -> None:
    error = MqttSubscribeError.from_suback(ENDPOINT, [("a/#", _suback(135)), ("b", _suback(151))])
    assert str(error) == (f"subscription to 'a/#' refused by the broker at {ENDPOINT}: Not authorized; "
                          f"subscription to 'b' refused by the broker at {ENDPOINT}: Quota exceeded")
    assert (error.rc, error.refused, error.will_not_fix_itself) == (135, (("a/#", 135), ("b", 151)), True)
    quota = MqttSubscribeError.from_suback(ENDPOINT, [("b", _suback(151))])
    assert (quota.rc, quota.will_not_fix_itself) == (151, False)


def test_unreachable_and_timeout_may_fix_themselves_config_does_not() -> None:
    assert not MqttUnreachableError("broker unreachable").will_not_fix_itself
    assert not MqttTimeoutError("timeout").will_not_fix_itself
    assert MqttConfigError("broker.tls_ca x does not exist or is not readable").will_not_fix_itself


@pytest.mark.parametrize("error", [
    MqttConnectError.from_connack(ENDPOINT, _connack(135)),
    MqttSubscribeError.from_suback(ENDPOINT, [("a", _suback(135))]),
    MqttUnreachableError("broker unreachable at x"),
    MqttConfigError("cannot read password_file"),
])
def test_errors_survive_pickling(error: MqttError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), vars(copy)) == (type(error), str(error), vars(error))


# ---------------------------------------------------------------------------- against Mosquitto


@pytest.fixture
def closed_broker() -> Iterator[PrivateMosquitto]:
    """A private Mosquitto that refuses anonymous clients."""
    with tempfile.TemporaryDirectory(prefix="nairbus-closed-") as tmp:
        config = Path(tmp) / "closed.conf"
        config.write_text("listener 1883 127.0.0.1\nallow_anonymous false\n", encoding="utf-8")
        with PrivateMosquitto(config) as broker:
            yield broker


def _communicator(settings: BrokerSettings) -> Communicator:
    return Communicator(settings, "test-mqtt-errors", None, lambda _state: b"")


@pytest.mark.broker
@pytest.mark.timeout(30)
def test_an_unreachable_broker_raises_a_retryable_error() -> None:
    port = free_port()
    comm = _communicator(BrokerSettings(port=port))
    with pytest.raises(ConnectionError, match=f"unreachable at 127.0.0.1:{port}") as raised:
        comm.start(timeout=5.0)
    comm.stop()
    assert isinstance(raised.value, MqttUnreachableError)
    assert not raised.value.will_not_fix_itself


@pytest.mark.broker
@pytest.mark.timeout(30)
def test_a_refused_client_gets_the_reason_code(closed_broker: PrivateMosquitto) -> None:
    comm = _communicator(BrokerSettings(host=closed_broker.host, port=closed_broker.port))
    with pytest.raises(ConnectionError, match=r"refused by the broker.*check the username, password and ACL") as raised:
        comm.start(timeout=5.0)
    comm.stop()
    assert isinstance(raised.value, MqttConnectError)
    assert (raised.value.rc, raised.value.will_not_fix_itself) == (135, True)


def test_an_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-password"
    comm = _communicator(BrokerSettings(port=free_port(), username="cam-a", password_file=missing))
    with pytest.raises(ConnectionError, match=re.escape(f"cannot read password_file {missing}")) as raised:
        comm.start(timeout=1.0)
    comm.stop()
    assert isinstance(raised.value, MqttConfigError)
    assert raised.value.will_not_fix_itself
