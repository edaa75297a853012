"""A private Mosquitto running the shipped production config (broker/mosquitto.prod.conf and broker/acl), for the
tests in ``tests/deploy`` and the fault bench's takeover and exhaustion attacks.

Certificates and passwords are made by the shipped scripts (broker/scripts/) into a temporary directory; the only
changes to the config are the install paths (``/etc/mosquitto/nairbus/`` becomes the temporary directory) and, done by
:class:`nairbus.agents.runtime.mosquitto.PrivateMosquitto`, free loopback ports and no persistence. The ACL gets one
extra, clearly marked block for an observer account (test tooling only), which may read everything so it can prove a
message never arrived.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from nairbus.agents.runtime.mosquitto import PrivateMosquitto
from nairbus.agents.runtime.settings import BrokerSettings
from nairbus.broker import BROKER_DIR

SCRIPTS = BROKER_DIR / "scripts"
INSTALL_DIR = "/etc/mosquitto/nairbus/"
OBSERVER = "test.observer"
OBSERVER_STATUS = "nairbus-test/observer/status"
SENSORS = ("cam-a", "cam-b")
"""Sensor accounts (user name = sensor id)."""
SERVICES = (("fusion", "fusion-1"), ("ha", "homeassistant"), ("watch", "results"))
"""Service accounts the shipped ACL names (user name ``<role>.<id>``)."""


def _run(*args: str | Path, stdin: str | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, input=stdin, text=True, capture_output=True, timeout=30)


@dataclass
class SecureBroker:
    """The production config on a private broker; ``port`` is the loopback listener, ``tls_port`` the TLS one."""

    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nairbus-secure-")))
    broker: PrivateMosquitto | None = None
    sensors: tuple[str, ...] = SENSORS
    """Sensor accounts to make (user name = sensor id), each with a password and a client certificate."""

    def start(self) -> Self:
        self.dir.chmod(0o755)  # Mosquitto drops root privileges to the 'mosquitto' user, which must read these
        _run("bash", SCRIPTS / "make-certs.sh", "ca", self.dir)
        shutil.copy(BROKER_DIR / "acl", self.dir / "acl")
        for sensor in self.sensors:
            _run("bash", SCRIPTS / "add-user.sh", self.dir, "sensor", sensor)
            _run("bash", SCRIPTS / "make-certs.sh", "client", self.dir, sensor)
        for role, ident in SERVICES:
            _run("bash", SCRIPTS / "add-user.sh", self.dir, role, ident)
            _run("bash", SCRIPTS / "make-certs.sh", "client", self.dir, f"{role}.{ident}")
        _run("bash", SCRIPTS / "add-user.sh", self.dir, "watch", "observer-pw")  # only to reuse its password below
        password = (self.dir / "credentials" / "watch.observer-pw").read_text()
        _run("mosquitto_passwd", self.dir / "passwd", OBSERVER, stdin=f"{password}\n{password}\n")
        (self.dir / "credentials" / OBSERVER).write_text(password)
        with (self.dir / "acl").open("a") as acl:
            acl.write(f"\n# TEST ONLY: the observer reads everything to prove what never arrived.\nuser {OBSERVER}\n"
                      f"topic read #\ntopic write {OBSERVER_STATUS}\n")
        for path in self.dir.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        with contextlib.suppress(KeyError, PermissionError):
            gid = grp.getgrnam("mosquitto").gr_gid
            for name in ("passwd", "acl", "server.key"):
                os.chown(self.dir / name, -1, gid)
                (self.dir / name).chmod(0o640)
        config = (BROKER_DIR / "mosquitto.prod.conf").read_text().replace(INSTALL_DIR, f"{self.dir}/")
        assert INSTALL_DIR not in config
        (self.dir / "mosquitto.conf").write_text(config)
        (self.dir / "mosquitto.conf").chmod(0o644)
        self.broker = PrivateMosquitto(self.dir / "mosquitto.conf").start()
        return self

    @property
    def host(self) -> str:
        assert self.broker is not None
        return self.broker.host

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.ports[0]

    @property
    def tls_port(self) -> int:
        assert self.broker is not None
        return self.broker.ports[1]

    def password_file(self, user: str) -> Path:
        return self.dir / "credentials" / user

    def settings(self, user: str | None, *, tls: bool = False, ca: bool = True, cert: bool = True,
                 **extra: object) -> BrokerSettings:
        """Broker settings for ``user`` (``None``: anonymous), on the TLS listener with ``tls``."""
        values: dict[str, object] = {"host": self.host, "port": self.tls_port if tls else self.port, **extra}
        if user is not None:
            values |= {"username": user, "password_file": self.password_file(user)}
        if tls:
            if ca:
                values["tls_ca"] = self.dir / "ca.crt"
            if cert and user is not None:
                values |= {"tls_cert": self.dir / "clients" / f"{user}.crt",
                           "tls_key": self.dir / "clients" / f"{user}.key"}
        return BrokerSettings.model_validate(values)

    def log(self) -> str:
        assert self.broker is not None
        return self.broker.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
