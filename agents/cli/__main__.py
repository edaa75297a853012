"""``python -m agents.cli``: the ``nairbus`` command."""

from agents.cli import app

app()
