"""Identifier rules shared by the topic tree and the message models.

An id (sensor, stream, fusion agent, topic root segment, site) is 1 to 64 characters from ``[A-Za-z0-9_-]``: it is
safe as one MQTT topic level (no ``/``, ``+``, ``#``, no leading ``$``) and as a file name.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ID_FIELD_PATTERN", "ID_PATTERN", "ID_REGEX", "is_valid_id", "validate_id"]

ID_REGEX: Final = r"[A-Za-z0-9_-]{1,64}"
"""The id grammar, unanchored (anchor it, or use :data:`ID_PATTERN` with ``fullmatch``)."""

ID_PATTERN: Final = re.compile(ID_REGEX)
ID_FIELD_PATTERN: Final = re.compile(rf"\A{ID_REGEX}\Z")
"""The whole value is an id: for a pydantic ``Field(pattern=...)``, which searches (an unanchored pattern would take
``a/b``)."""


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a str that is a valid id."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise ``ValueError`` naming ``what`` and the rule.

    >>> validate_id("cam-01", "sensor_id")
    'cam-01'
    """
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ValueError(f"invalid {what} {value!r}: must be 1-64 characters from [A-Za-z0-9_-]")
    return value
