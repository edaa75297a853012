"""The methods nairbus ships, registered: the one place a new method is named.

A new method is its own package (``agents/<method>/`` with a ``method.py`` that declares one
:class:`~nairbus.agents.runtime.methods.Method`) plus one entry here. A plug-in outside this repository registers
with ``METHODS.register(...)``.
"""

from __future__ import annotations

from nairbus.agents.nair.method import NAIR
from nairbus.agents.runtime.methods import MethodRegistry
from nairbus.agents.vp.method import VP

__all__ = ["METHODS"]

METHODS = MethodRegistry(NAIR, VP)
"""Every method a sensor or fusion agent can run, by name; ``for_sensor``/``for_fusion`` look one up."""
