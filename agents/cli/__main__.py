"""``python -m nairbus.agents.cli``: the ``nairbus`` command."""

from nairbus.agents.cli import main

main()
