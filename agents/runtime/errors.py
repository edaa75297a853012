"""Typed errors of the MQTT communicator, with the broker's reason code (after aiomqtt's ``MqttCodeError(rc)``).

Every error :meth:`nairbus.agents.runtime.mqtt.Communicator.start` raises is still a ``ConnectionError`` with the
same message as before, so ``except ConnectionError`` keeps catching it; the classes below say what went wrong, carry
the MQTT 5 reason code where the broker sent one (``rc``), and say whether waiting and retrying can help::

    MqttError (ConnectionError)          .will_not_fix_itself
    ├── MqttConfigError                   True: an unreadable password or TLS file
    ├── MqttUnreachableError              False: no MQTT connection (nothing listens, TLS handshake failed, ...)
    ├── MqttTimeoutError                  False: no CONNACK / SUBACK within the start timeout
    └── MqttCodeError                     .rc, the broker's reason code
        ├── MqttConnectError              True for bad credentials, not authorised, banned, bad auth method
        └── MqttSubscribeError            True for not authorised, invalid or unsupported filters

``will_not_fix_itself`` tells a supervisor (systemd, a CLI) whether to retry later or to stop and ask a person: bad
credentials or an ACL that forbids the client stay wrong however often it reconnects; a broker that is down or busy
may come back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "REFUSAL_HINTS",
    "MqttCodeError",
    "MqttConfigError",
    "MqttConnectError",
    "MqttError",
    "MqttSubscribeError",
    "MqttTimeoutError",
    "MqttUnreachableError",
]

REFUSAL_HINTS: Final = {
    134: "bad user name or password",
    135: "not authorised",
    138: "banned",
    140: "bad authentication method",
}
"""CONNACK reason codes that mean "fix your credentials / ACL", with a hint for the error message."""
SUBSCRIBE_FOREVER: Final = frozenset({
    135,  # not authorised
    143,  # topic filter invalid
    158,  # shared subscriptions not supported
    161,  # subscription identifiers not supported
    162,  # wildcard subscriptions not supported
})
"""SUBACK reason codes that a retry cannot change (the others: unspecified or implementation-specific error, quota
exceeded)."""


class MqttError(ConnectionError):
    """The communicator could not get connected and subscribed; ``str()`` is the reason, as before."""

    def __init__(self, message: str, *, will_not_fix_itself: bool = False) -> None:
        super().__init__(message)
        self.will_not_fix_itself = will_not_fix_itself
        """True: retrying with the same settings cannot succeed (credentials, ACL, files); a person must act."""

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError pickles as cls(*args), which the subclasses' own signatures do not take.
        return _restore, (type(self), self.args, dict(self.__dict__))


def _restore(cls: type[MqttError], args: tuple[Any, ...], state: dict[str, Any]) -> MqttError:
    """Unpickle an :class:`MqttError` (see ``MqttError.__reduce__``)."""
    error = ConnectionError.__new__(cls, *args)
    ConnectionError.__init__(error, *args)
    error.__dict__.update(state)
    return error


class MqttConfigError(MqttError):
    """The client's own settings are unusable (a password file or TLS file that cannot be read)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, will_not_fix_itself=True)


class MqttUnreachableError(MqttError):
    """No MQTT connection to the broker: nothing listens, or the TCP connection does not become an MQTT one."""


class MqttTimeoutError(MqttError):
    """The broker did not answer (CONNACK, or SUBACK for every subscription) within the start timeout."""


class MqttCodeError(MqttError):
    """The broker answered with a failure reason code ``rc`` (an MQTT 5 reason code, e.g. 135: not authorised)."""

    def __init__(self, message: str, rc: int, *, will_not_fix_itself: bool = False) -> None:
        super().__init__(message, will_not_fix_itself=will_not_fix_itself)
        self.rc = rc
        """The MQTT 5 reason code the broker sent."""


class MqttConnectError(MqttCodeError):
    """The broker refused the connection (CONNACK with a failure reason code)."""

    @classmethod
    def from_connack(cls, endpoint: str, reason_code: ReasonCode) -> MqttConnectError:
        """The error for a refused CONNACK from the broker at ``endpoint``, with a hint for credential refusals."""
        hint = REFUSAL_HINTS.get(reason_code.value, "")
        message = f"refused by the broker at {endpoint}: {reason_code}" + (
            f" ({hint}: check the username, password and ACL)" if hint else ""
        )
        return cls(message, reason_code.value, will_not_fix_itself=bool(hint))


class MqttSubscribeError(MqttCodeError):
    """The broker refused one or more subscriptions (SUBACK); ``rc`` is the first refused one's reason code."""

    def __init__(self, message: str, refused: Iterable[tuple[str, int]]) -> None:
        self.refused = tuple(refused)
        """Every refused filter with its reason code."""
        codes = [rc for _, rc in self.refused]
        super().__init__(message, codes[0] if codes else 128,
                         will_not_fix_itself=any(rc in SUBSCRIBE_FOREVER for rc in codes))

    @classmethod
    def from_suback(cls, endpoint: str, refused: list[tuple[str, ReasonCode]]) -> MqttSubscribeError:
        """The error for the filters the broker at ``endpoint`` refused, each with its SUBACK reason code."""
        message = "; ".join(f"subscription to {f!r} refused by the broker at {endpoint}: {rc}" for f, rc in refused)
        return cls(message, [(f, rc.value) for f, rc in refused])
