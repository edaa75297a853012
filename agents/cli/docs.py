"""``nairbus readme``: the README's and docs' figure tables, rendered from the reports."""

from __future__ import annotations

from typing import Annotated

import typer

from nairbus.agents.cli.common import (
    _fail,
    app,
    console,
)


@app.command()
def readme(
    check: Annotated[bool, typer.Option(
        "--check", help="Only say whether the documents are current (non-zero exit if not).")] = False,
) -> None:
    """Rewrite the figure tables of README.md and docs/ from the JSON reports under reports/ (none typed by hand)."""
    from nairbus.agents.tools.readme import refresh, stale

    try:
        changed = stale() if check else refresh()
    except ValueError as exc:
        _fail(str(exc))
    if check and changed:
        _fail(f"out of date with reports/: {', '.join(changed)}; run 'nairbus readme'")
    console.print(("updated from reports/: " + ", ".join(changed)) if changed and not check
                  else "README.md and docs/ match reports/")


if __name__ == "__main__":
    app()
