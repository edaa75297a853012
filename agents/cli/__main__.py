"""``python -m agents.cli``: the ``nairbus`` command."""

from agents.cli.main import app

app()
