"""Default provider selection: the register's primary provider (overridable: marked trylast)."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def select_provider(intent: Any, candidates: list[str], policy: Any) -> str | None:
    return candidates[0] if candidates else None
