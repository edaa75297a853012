"""Broker credentials: from a config file, the environment or a systemd credential file; never in logs or reprs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog
import typer.main

from nairbus.agents.cli import app
from nairbus.agents.runtime.config import load_config
from nairbus.agents.runtime.logging import configure_logging
from nairbus.agents.runtime.mqtt import Communicator
from nairbus.agents.runtime.settings import BrokerSettings, LogSettings
from nairbus.agents.tools.secure_broker import SecureBroker

SECRET = "correct-horse-battery-staple-42"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_password_file_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAIRBUS_CONFIG", raising=False)
    secret = _write(tmp_path / "pw", SECRET + "\n")
    config = _write(tmp_path / "nairbus.toml", f'[broker]\nusername = "cam-a"\npassword_file = "{secret}"\n')
    cfg = load_config(config)
    assert cfg.broker.password_value() == SECRET  # first line, newline stripped
    assert SECRET not in repr(cfg)
    assert SECRET not in cfg.model_dump_json()


def test_password_file_from_the_environment_as_systemd_passes_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd's LoadCredential= puts the file in $CREDENTIALS_DIRECTORY; the unit names it with %d/broker-password.
    creds = tmp_path / "credentials"
    creds.mkdir()
    _write(creds / "broker-password", SECRET)
    monkeypatch.delenv("NAIRBUS_CONFIG", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("NAIRBUS_BROKER__USERNAME", "fusion.fusion-1")
    monkeypatch.setenv("NAIRBUS_BROKER__PASSWORD_FILE", str(creds / "broker-password"))
    cfg = load_config(None)
    assert cfg.broker.username == "fusion.fusion-1"
    assert cfg.broker.password_value() == SECRET


def test_password_and_password_file_are_exclusive_and_need_a_user(tmp_path: Path) -> None:
    secret = _write(tmp_path / "pw", SECRET)
    with pytest.raises(ValueError, match="not both"):
        BrokerSettings(username="u", password=SECRET, password_file=secret)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="username is required"):
        BrokerSettings(password_file=secret)


def test_unreadable_or_empty_password_file_is_a_clear_error(tmp_path: Path) -> None:
    for path, why in ((tmp_path / "missing", "cannot read password_file"), (_write(tmp_path / "e", ""), "empty")):
        comm = Communicator(BrokerSettings(username="u", password_file=path), "t-missing", None, lambda s: b"")
        with pytest.raises(ConnectionError, match=why):
            comm.start(timeout=1)


def test_missing_tls_file_is_a_clear_error(tmp_path: Path) -> None:
    comm = Communicator(BrokerSettings(tls_ca=tmp_path / "ca.crt"), "t-tls-missing", None, lambda s: b"")
    with pytest.raises(ConnectionError, match=r"broker.tls_ca .*ca.crt does not exist or is not readable"):
        comm.start(timeout=1)


@pytest.mark.broker
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_the_logs(secure: SecureBroker, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    saved_structlog, root = structlog.get_config(), logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(LogSettings(level="debug", format=fmt))  # type: ignore[arg-type]
    password = secure.password_file("cam-a").read_text()
    try:
        for settings in (secure.settings("cam-a", tls=True),
                         BrokerSettings(host=secure.host, port=secure.port, username="cam-a", password=password)):
            comm = Communicator(settings, "t-secret-log", "nairbus/v1/x/sensors/cam-a/status", lambda s: b"{}")
            comm.start()
            comm.stop()
            print(repr(settings), settings.model_dump_json())
        wrong = BrokerSettings(host=secure.host, port=secure.port, username="cam-a", password=password + "x")
        with pytest.raises(ConnectionError) as refused:
            Communicator(wrong, "t-secret-wrong", None, lambda s: b"").start(timeout=3)
        captured = capsys.readouterr()
        assert "mqtt.connected" in captured.out + captured.err  # the logs are there...
        assert password not in captured.out + captured.err + str(refused.value)  # ...the password is not
    finally:  # the logging set-up wrote to pytest's capture stream, which closes after this test
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_no_command_takes_a_password_on_the_command_line() -> None:
    group = typer.main.get_command(app)
    seen = 0
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", {name: command})
        for sub in subcommands.values():
            seen += 1
            for param in sub.params:
                assert "password" not in (param.name or "").lower(), f"{name} {sub.name}: --{param.name}"
    assert seen >= 5
