"""The ``nairbus`` command: one entry point with a sub-command for every job, one module per command group.

:mod:`agents.cli.main` holds the app and the agent, training, calibration and evaluation commands; the other
modules register their groups on it (models, images, VP, benchmarks).
"""

from agents.cli.main import app

__all__ = ["app"]
