"""The ``nairbus`` command: one entry point with a sub-command for every job, one module per command group.

:mod:`nairbus.agents.cli.common` holds the app, its groups and the shared helpers; each other module registers its
commands on it when imported here: training, calibration, the agents and ``watch``, the demo, evaluation (NAIR, wire,
images, VP), models (import, export, images), benchmarks and the docs renderer.
"""

from nairbus.agents.cli import calibrate, defaults, demo, docs, evaluate, run, train  # noqa: F401  (each registers)
from nairbus.agents.cli.bench import bench_app
from nairbus.agents.cli.common import app, evaluate_app, train_app
from nairbus.agents.cli.images import register as _register_images
from nairbus.agents.cli.models import register as _register_models
from nairbus.agents.cli.vp import register as _register_vp

_register_images(evaluate_app)
_register_vp(app, train_app)
_register_models(app)
app.add_typer(bench_app, name="bench")

__all__ = ["app"]
