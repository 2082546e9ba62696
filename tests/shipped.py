"""The plugins this checkout ships (their ``caja`` entry points), so tests about them hold while a plugin of
one's own is installed beside caja as plugins/README.md tells (``uv pip install -e ../caja-NAME``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from caja_core.plugins import ALWAYS_LOADED

ROOT = Path(__file__).resolve().parents[1]


def shipped_entry_points() -> set[str]:
    names: set[str] = set()
    for pyproject in [ROOT / "web" / "pyproject.toml", *sorted((ROOT / "plugins").glob("*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        names |= set(project.get("entry-points", {}).get("caja", {}))
    return names


def only_shipped() -> dict[str, str]:
    """``CAJA_LOAD_PLUGINS`` for loading the shipped plugins alone."""
    return {"CAJA_LOAD_PLUGINS": ",".join(sorted(shipped_entry_points() - set(ALWAYS_LOADED)))}
