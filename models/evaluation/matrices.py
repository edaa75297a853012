"""The experiment matrices as data: ``models/experiments/<name>.toml`` (shipped as package data).

Each evaluation reads what it compares from its file — the NAIR methods, ablation steps and rate bands
(``nair.toml``), the image codecs' quality ladders and wire caps (``images.toml``), the Variant-Parallelism family
and its budget (``vp.toml``) — so a new method, codec rung or variant is a line of data, not an edit of the code.
Models are named by their manifest names.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENTS_DIR", "load_matrix"]

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"


@cache
def load_matrix(name: str) -> dict[str, Any]:
    """The matrix ``experiments/<name>.toml``; a clear error naming the file when it is missing or malformed."""
    path = EXPERIMENTS_DIR / f"{name}.toml"
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml")))
        raise FileNotFoundError(f"no experiment matrix {path}; there are: {known}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
