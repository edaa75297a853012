"""The ``nairbus`` command: one entry point with a sub-command for every job, one module per command group.

:mod:`nairbus.agents.cli.common` holds the app, its groups and the shared helpers; each other module registers its
commands on it when imported (:func:`full_app`): training, calibration, the agents and ``watch``, the demo, evaluation
(NAIR, wire, images, VP), models (import, export, images), benchmarks and the docs renderer.

``nairbus sensor ...`` — what a device runs, every start — registers the agents' commands alone (:func:`main`): the
other modules' imports and the building of some thirty commands' parameters are a light sensor's start-up on a
quarter of a core. ``from nairbus.agents.cli import app`` is the whole app.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

__all__ = ["app", "full_app", "main"]

AGENT_ONLY = frozenset({"sensor"})
"""Sub-commands :func:`main` runs on the agents' commands alone (``nairbus.agents.cli.run``)."""


def full_app() -> typer.Typer:
    """The app with every command registered (once)."""
    from nairbus.agents.cli import calibrate, defaults, demo, docs, evaluate, run, train  # noqa: F401  (each registers)
    from nairbus.agents.cli.bench import bench_app
    from nairbus.agents.cli.common import app, evaluate_app, train_app
    from nairbus.agents.cli.images import register as _register_images
    from nairbus.agents.cli.models import register as _register_models
    from nairbus.agents.cli.vp import register as _register_vp

    if not getattr(app, "_nairbus_complete", False):
        _register_images(evaluate_app)
        _register_vp(app, train_app)
        _register_models(app)
        app.add_typer(bench_app, name="bench")
        app._nairbus_complete = True  # type: ignore[attr-defined]
    return app


def main() -> None:
    """The ``nairbus`` console script: the agents' commands alone for ``nairbus sensor ...``, else the whole app."""
    if sys.argv[1:2] and sys.argv[1] in AGENT_ONLY:
        from nairbus.agents.cli import run  # noqa: F401  (registers sensor, fusion, watch)
        from nairbus.agents.cli.common import app

        app()
    else:
        full_app()()


def __getattr__(name: str) -> Any:
    if name == "app":
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
