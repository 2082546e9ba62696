"""Default provider selection: the register's primary provider (overridable: marked trylast)."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def select_provider(intent, candidates, policy):
    return candidates[0] if candidates else None
