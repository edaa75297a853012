"""The production broker config, enforced by a real Mosquitto: authentication, the ACL, mutual TLS, size limits.

Each "never arrives" check is bounded by a barrier rather than a sleep: after the forbidden publish, the same client
publishes an allowed marker, and the observer (which reads everything) waits for that marker; Mosquitto delivers one
client's messages in order, so once the marker is in, the forbidden message would have been too.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from nairbus.agents.runtime.mqtt import Communicator, InboundMessage
from nairbus.agents.tools.secure_broker import OBSERVER, OBSERVER_STATUS, SecureBroker

pytestmark = pytest.mark.broker
SITE_PREFIX = "nairbus/v1"
CT = "application/json"


def _client(secure: SecureBroker, user: str | None, status: str | None, **kw: object) -> Communicator:
    return Communicator(secure.settings(user, **kw), f"t-{user}-{uuid.uuid4().hex[:6]}", status,
                        lambda state: f'{{"state": "{state}"}}'.encode())


class Observer:
    """Reads every topic of a site and remembers what arrived."""

    def __init__(self, secure: SecureBroker, site: str) -> None:
        self.prefix = f"{SITE_PREFIX}/{site}"
        self.comm = _client(secure, OBSERVER, OBSERVER_STATUS)
        self.comm.subscribe(f"{self.prefix}/#", qos=1)
        self.comm.start()
        self.seen: list[InboundMessage] = []

    def wait_for(self, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(m.topic == topic and m.payload == payload for m in self.seen):
                return True
            msg = self.comm.get(timeout=0.05)
            if msg is not None:
                self.seen.append(msg)
        return False

    def topics(self) -> set[str]:
        return {m.topic for m in self.seen}

    def close(self) -> None:
        self.comm.stop()


@pytest.fixture
def site(request: pytest.FixtureRequest) -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def observer(secure: SecureBroker, site: str) -> Observer:
    obs = Observer(secure, site)
    yield obs  # type: ignore[misc]
    obs.close()


def _forbidden_then_marker(client: Communicator, observer: Observer, forbidden: list[str], marker: str) -> None:
    """Publish a QoS 1 message to each forbidden topic, then a marker to an allowed topic, and wait for the marker."""
    for topic in forbidden:
        assert client.publish(topic, b"forged", qos=1, content_type=CT)
    token = uuid.uuid4().hex.encode()
    assert client.publish(marker, token, qos=1, content_type=CT)
    assert client.wait_published(5.0)
    assert observer.wait_for(marker, token), "the allowed marker never arrived: the barrier is broken"


def test_anonymous_client_is_refused(secure: SecureBroker) -> None:
    client = _client(secure, None, None)
    with pytest.raises(ConnectionError, match="Not authorized"):
        client.start(timeout=5)


def test_wrong_password_is_refused(secure: SecureBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    client = Communicator(secure.settings("cam-a").model_copy(update={"password_file": wrong}), "t-wrong", None,
                          lambda s: b"")
    with pytest.raises(ConnectionError, match=r"refused by the broker.*check the username, password and ACL"):
        client.start(timeout=5)


def test_sensor_writes_only_its_own_topics(secure: SecureBroker, site: str, observer: Observer) -> None:
    own = f"{SITE_PREFIX}/{site}/sensors/cam-a"
    sensor = _client(secure, "cam-a", f"{own}/status")
    sensor.start()
    try:
        assert observer.wait_for(f"{own}/status", b'{"state": "online"}'), "the sensor's own status did not arrive"
        forbidden = [f"{SITE_PREFIX}/{site}/sensors/cam-b/{leaf}" for leaf in ("status", "birth", "frag", "topk")]
        forbidden += [f"{SITE_PREFIX}/{site}/results/cam-a", f"{SITE_PREFIX}/{site}/fusion/fusion-1/status",
                      "homeassistant/sensor/nairbus-fusion-1/x/config"]
        _forbidden_then_marker(sensor, observer, forbidden, f"{own}/frag")
        for leaf in ("birth", "topk"):
            token = uuid.uuid4().hex.encode()
            assert sensor.publish(f"{own}/{leaf}", token, qos=1, content_type=CT)
            assert observer.wait_for(f"{own}/{leaf}", token)
        assert not observer.topics() & set(forbidden)
        assert sensor.counters["publish_rejected"] == len(forbidden)  # MQTT 5: PUBACK "Not authorized"
    finally:
        sensor.stop()


def test_sensor_reads_nothing(secure: SecureBroker, site: str, observer: Observer) -> None:
    spy = _client(secure, "cam-a", f"{SITE_PREFIX}/{site}/sensors/cam-a/status")
    for topic_filter in (f"{SITE_PREFIX}/{site}/sensors/+/frag", f"{SITE_PREFIX}/{site}/results/+", "#"):
        spy.subscribe(topic_filter, qos=1)
    spy.start()
    other = _client(secure, "cam-b", f"{SITE_PREFIX}/{site}/sensors/cam-b/status")
    fusion = _client(secure, "fusion.fusion-1", f"{SITE_PREFIX}/{site}/fusion/fusion-1/status")
    other.start()
    fusion.start()
    try:
        frag, result = f"{SITE_PREFIX}/{site}/sensors/cam-b/frag", f"{SITE_PREFIX}/{site}/results/cam-b"
        assert other.publish(frag, b"frag", qos=1, content_type=CT)
        assert fusion.publish(result, b"result", qos=1, content_type=CT)
        assert observer.wait_for(frag, b"frag")
        assert observer.wait_for(result, b"result")
        time.sleep(0.3)  # the spy is a different subscriber: give the broker the same time it took for the observer
        got = spy.get(timeout=0.2)
        assert got is None, f"a sensor read {got.topic}"
    finally:
        for client in (spy, other, fusion):
            client.stop()


def test_fusion_cannot_impersonate_a_sensor(secure: SecureBroker, site: str, observer: Observer) -> None:
    fusion = _client(secure, "fusion.fusion-1", f"{SITE_PREFIX}/{site}/fusion/fusion-1/status")
    fusion.start()
    try:
        forbidden = [f"{SITE_PREFIX}/{site}/sensors/cam-a/{leaf}" for leaf in ("status", "birth", "frag", "topk")]
        forbidden.append(f"{SITE_PREFIX}/{site}/fusion/fusion-2/status")
        _forbidden_then_marker(fusion, observer, forbidden, f"{SITE_PREFIX}/{site}/results/cam-a")
        assert not observer.topics() & set(forbidden)
        assert fusion.counters["publish_rejected"] == len(forbidden)
    finally:
        fusion.stop()


def test_tls_client_with_the_ca_and_a_certificate_connects(secure: SecureBroker, site: str) -> None:
    client = _client(secure, "cam-a", f"{SITE_PREFIX}/{site}/sensors/cam-a/status", tls=True)
    client.start(timeout=5)
    assert client.connected.is_set()
    client.stop()


@pytest.mark.parametrize(("ca", "cert"), [(False, True), (True, False)], ids=["without-ca", "without-client-cert"])
def test_tls_client_without_the_ca_or_a_certificate_is_refused(secure: SecureBroker, site: str, ca: bool,
                                                               cert: bool) -> None:
    client = _client(secure, "cam-a", f"{SITE_PREFIX}/{site}/sensors/cam-a/status", tls=True, ca=ca, cert=cert)
    if not ca:  # paho verifies against the system CAs then: tls_set() with a client certificate only
        assert client.broker.tls_enabled
        assert client.broker.tls_ca is None
    with pytest.raises(ConnectionError) as refused:
        client.start(timeout=2)
    assert not client.connected.is_set()
    hint = "not an MQTT listener" if not ca else "requires a client certificate"
    assert hint in str(refused.value)


def test_plain_mqtt_on_the_tls_listener_is_refused(secure: SecureBroker) -> None:
    settings = secure.settings("cam-a").model_copy(update={"port": secure.tls_port})
    client = Communicator(settings, "t-plain-on-tls", None, lambda s: b"")
    with pytest.raises(ConnectionError):
        client.start(timeout=2)


def test_oversize_publish_is_refused(secure: SecureBroker, site: str, observer: Observer) -> None:
    topic = f"{SITE_PREFIX}/{site}/sensors/cam-a/frag"
    big = b"x" * 70000  # over the config's max_packet_size of 65536
    sensor = _client(secure, "cam-a", f"{SITE_PREFIX}/{site}/sensors/cam-a/status")
    sensor.start()
    try:  # nairbus's own client learns the limit from CONNACK and refuses locally
        assert not sensor.publish(topic, big, qos=1, content_type=CT)
        assert sensor.counters["oversize_dropped"] == 1
    finally:
        sensor.stop()

    # A client that ignores the limit is disconnected by the broker and the message goes nowhere.
    disconnected = threading.Event()
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-raw-oversize", protocol=mqtt.MQTTv5)
    raw.username_pw_set("cam-a", secure.password_file("cam-a").read_text())
    raw.on_disconnect = lambda *args: disconnected.set()
    raw.connect(secure.host, secure.port)
    raw.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not raw.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert raw.is_connected()
        raw.publish(topic, big, qos=1)
        assert disconnected.wait(5), "the broker did not disconnect the client that sent an oversize packet"
    finally:
        raw.loop_stop()
    probe = _client(secure, "cam-a", f"{SITE_PREFIX}/{site}/sensors/cam-a/status")
    probe.start()
    try:
        _forbidden_then_marker(probe, observer, [], topic)
    finally:
        probe.stop()
    assert not any(len(m.payload) == len(big) for m in observer.seen)


@pytest.mark.parametrize("tls", [False, True])
def test_a_client_id_cannot_be_taken_over_by_another_account(secure: SecureBroker, tls: bool) -> None:
    # Issue 17: a device that logged in with another client's id kicked it off. With use_username_as_clientid the
    # broker replaces every client id by the user name, so the victim stays connected.
    victim = Communicator(secure.settings("fusion.fusion-1", tls=tls), "nairbus-fusion-fusion-1", None,
                          lambda state: b"{}")
    victim.start()
    try:
        for _ in range(3):
            attacker = Communicator(secure.settings("cam-b", tls=tls), "nairbus-fusion-fusion-1", None,
                                    lambda state: b"{}")
            attacker.start()
            time.sleep(0.5)
            assert attacker.connected.is_set()
            assert victim.connected.is_set()
            attacker.stop(timeout=1.0)
        assert victim.counters["disconnects"] == 0
    finally:
        victim.stop(timeout=1.0)


def test_a_certificate_is_its_own_account_whatever_password_comes_with_it(secure: SecureBroker, site: str,
                                                                           observer: Observer) -> None:
    # Issue 17: a client certificate worked with any user's password. On the TLS listener the certificate's common
    # name is the user name (use_identity_as_username): cam-a's certificate with the fusion account's name and
    # password is cam-a, which may write cam-a's topics and may not write the fusion's results.
    settings = secure.settings("fusion.fusion-1", tls=True).model_copy(update={
        "tls_cert": secure.dir / "clients" / "cam-a.crt", "tls_key": secure.dir / "clients" / "cam-a.key"})
    own = f"{SITE_PREFIX}/{site}/sensors/cam-a"
    client = Communicator(settings, "anything", f"{own}/status", lambda state: f'{{"state": "{state}"}}'.encode())
    client.start()
    try:
        assert observer.wait_for(f"{own}/status", b'{"state": "online"}'), "cam-a's certificate is not cam-a"
        forbidden = [f"{SITE_PREFIX}/{site}/results/cam-a", f"{SITE_PREFIX}/{site}/fusion/fusion-1/status"]
        _forbidden_then_marker(client, observer, forbidden, f"{own}/frag")
        assert not observer.topics() & set(forbidden)
        assert client.counters["publish_rejected"] == len(forbidden)
    finally:
        client.stop()
    log = secure.log()
    assert "as cam-a (" in log
    assert "u'cam-a'" in log


def test_a_certificate_alone_logs_in_as_its_common_name(secure: SecureBroker, site: str, observer: Observer) -> None:
    settings = secure.settings(None, tls=True).model_copy(update={
        "tls_cert": secure.dir / "clients" / "cam-b.crt", "tls_key": secure.dir / "clients" / "cam-b.key"})
    own = f"{SITE_PREFIX}/{site}/sensors/cam-b"
    client = Communicator(settings, "anything", f"{own}/status", lambda state: f'{{"state": "{state}"}}'.encode())
    client.start()
    try:
        assert observer.wait_for(f"{own}/status", b'{"state": "online"}')
    finally:
        client.stop()
