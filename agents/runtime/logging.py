"""structlog set-up for every agent: JSON lines for services, a readable console for people.

``configure_logging`` also routes the standard library's ``logging`` (paho, other libraries) through
the same renderer, so a service's stderr holds one format. Calling it again replaces the previous
configuration; it never stacks handlers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from nairbus.agents.runtime.settings import LogSettings

_HANDLER_NAME = "nairbus-structlog"


def _use_json(settings: LogSettings) -> bool:
    if settings.format == "json":
        return True
    if settings.format == "console":
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return not (isatty is not None and isatty())


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (test runners and CLI runners swap it), not what it was
    when logging was configured."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())


def configure_logging(settings: LogSettings) -> None:
    """Configure structlog (and the standard library's root logger) from ``settings``; idempotent."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    json_lines = _use_json(settings)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _rename_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if json_lines:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        # Not cached, so that a later configure_logging call applies to loggers already handed out.
        cache_logger_on_first_use=False,
    )

    # Standard-library records (paho's, other libraries') go through the same renderer.
    handler = logging.StreamHandler(_CurrentStderr())
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _rename_logger_name(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    # get_logger() cannot pass "logger" as an initial value (structlog reserves the keyword).
    if "logger_name" in event_dict:
        event_dict["logger"] = event_dict.pop("logger_name")
    return event_dict


def get_logger(name: str, **initial_values: Any) -> structlog.typing.FilteringBoundLogger:
    """A lazy structlog logger carrying ``logger=name`` (and any ``initial_values``) on every line.

    Safe at import time: it picks up the configuration in force when it first logs.
    """
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger_name=name, **initial_values)
    return logger
