"""The connection life cycle's pieces: the paho client and its settings, and the gate ``start`` waits at.

The client speaks MQTT 5 (or 3.1.1, ``BrokerSettings.protocol``) with paho's callback API version 2 and reconnects by
itself with exponential backoff between ``reconnect_min_s`` and ``reconnect_max_s``, each drawn per client around its
value (:func:`jittered`); the retained status topic gets ``status_payload("offline")`` as the last will.
:class:`StartGate` is where ``Communicator.start`` waits for "connected and subscribed", or for the first failure the
network thread reports (a typed :class:`~nairbus.agents.runtime.errors.MqttError`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from nairbus.agents.runtime.errors import MqttConfigError, MqttError
from nairbus.agents.runtime.properties import JSON_CONTENT_TYPE, will_properties
from nairbus.agents.runtime.settings import BrokerSettings

__all__ = ["UNREACHABLE", "StartGate", "check_tls_files", "configure_client", "jittered", "new_client",
           "timeout_message"]

UNREACHABLE: Final = "unreachable"
"""The failure of a first connection that never got a CONNACK; ``start`` probes the broker to say why."""
Failure: TypeAlias = MqttError | Literal["unreachable"]
"""What ends ``start``'s wait before it is ready: an error the broker sent, or no connection at all."""


class _PahoNoiseFilter(logging.Filter):
    """Drops paho 2.2's ERROR "Client is not connected" that its loop logs on every clean disconnect."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


PAHO_LOGGER: Final = logging.getLogger("paho.mqtt.client")
PAHO_LOGGER.addFilter(_PahoNoiseFilter())


def new_client(client_id: str, protocol: str = "5", *, persistent: bool = False) -> mqtt.Client:
    """A paho client speaking MQTT ``protocol`` (``5`` or ``3.1.1``; for 3.1.1 ``persistent`` keeps the session,
    MQTT 5 says so when connecting) that reconnects by itself and logs through ``paho.mqtt.client``."""
    if protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             reconnect_on_failure=True)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=not persistent, reconnect_on_failure=True)
    client.enable_logger(PAHO_LOGGER)
    return client


def jittered(min_s: float, max_s: float, rng: random.Random | None = None) -> tuple[float, float]:
    """The reconnect back-off bounds of one client: the first wait drawn from ``[min_s, 2 min_s]`` and the longest
    from ``[max_s / 2, max_s]`` (never below the first), so clients that lost the broker together retry at different
    moments — never sooner than ``reconnect_min_s`` nor, once backed off, later than ``reconnect_max_s``."""
    draw = (rng or random).uniform
    low = min(draw(min_s, 2 * min_s), max_s)
    return low, max(low, draw(max_s / 2, max_s))


def check_tls_files(settings: BrokerSettings) -> None:
    """Raise ``MqttConfigError`` naming any configured TLS file that cannot be read (paho's own error does not)."""
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise MqttConfigError(f"broker.{name} {path} does not exist or is not readable")


def configure_client(client: mqtt.Client, settings: BrokerSettings, status_topic: str | None,
                     status_payload: Callable[[str], bytes], timeout: float) -> None:
    """Credentials, TLS, the last will (``status_payload("offline")``, retained, on ``status_topic`` unless None),
    reconnect backoff, the outgoing bound and the connect timeout; ``MqttConfigError`` for unreadable files."""
    if settings.username is not None:
        try:
            password = settings.password_value()
        except ValueError as exc:
            raise MqttConfigError(str(exc)) from None
        client.username_pw_set(settings.username, password)
    if settings.tls_enabled:
        check_tls_files(settings)
        client.tls_set(
            ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
            certfile=str(settings.tls_cert) if settings.tls_cert else None,
            keyfile=str(settings.tls_key) if settings.tls_key else None,
        )
        client.tls_insecure_set(settings.tls_insecure)
    will = will_properties(JSON_CONTENT_TYPE) if settings.protocol == "5" else None
    if status_topic is not None:
        client.will_set(status_topic, status_payload("offline"), qos=1, retain=True, properties=will)
    # paho's type hints say int, but the delays are used as floats (time.sleep).
    client.reconnect_delay_set(*jittered(settings.reconnect_min_s, settings.reconnect_max_s))  # type: ignore[arg-type]
    client.max_queued_messages_set(settings.max_outgoing)
    client.connect_timeout = min(5.0, max(timeout, 0.1))


def timeout_message(endpoint: str, timeout: float, *, connected: bool, tls: bool) -> str:
    """Why ``start`` gave up after ``timeout`` seconds without a failure reported (``connected``: CONNACK came)."""
    what = "subscriptions not granted" if connected else "no CONNACK"
    message = f"timeout: {what} from the broker at {endpoint} within {timeout:g} s"
    if tls and not connected:
        message += " (TLS: a listener that requires a client certificate drops clients without an accepted one;"
        message += " the broker's log says why)"
    return message


class StartGate:
    """Where ``start`` waits for "connected and subscribed" (:attr:`ready`) or the first :attr:`failure`.

    The network thread opens it (:meth:`set_ready`) or reports a failure that ends the wait; failures after the first
    connection or once ready are left to paho's reconnects. :attr:`connections` counts the successful connections.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.ready = False
        self.failure: Failure | None = None
        self.connections = 0

    def set_ready(self) -> None:
        """Connected and every subscription granted."""
        with self._cond:
            self.ready = True
            self._cond.notify_all()

    def connect_refused(self, error: MqttError) -> None:
        """A CONNACK with a failure reason code: ends the wait unless a connection was made before."""
        with self._cond:
            if not self.ready and self.failure is None and self.connections == 0:
                self.failure = error
            self._cond.notify_all()

    def connect_failed(self) -> bool:
        """No MQTT connection came up; whether it was the first attempt (that ends the wait as :data:`UNREACHABLE`)."""
        with self._cond:
            first = self.connections == 0 and not self.ready
            if first and self.failure is None:
                self.failure = UNREACHABLE
            self._cond.notify_all()
        return first

    def subscription_refused(self, error: MqttError) -> None:
        """A SUBACK refused a filter: ends the wait unless already ready."""
        with self._cond:
            if not self.ready and self.failure is None:
                self.failure = error
            self._cond.notify_all()

    def wait(self, timeout: float) -> tuple[bool, Failure | None]:
        """Wait up to ``timeout`` seconds for ready or a failure; (ready, failure) then."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.ready and self.failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self.ready, self.failure
