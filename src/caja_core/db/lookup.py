"""The one lookup of a row by id within a venue: another venue's row is as absent as a missing one (404)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import NotFound

M = TypeVar("M")


async def get_in_venue(
    s: AsyncSession,
    model: type[M],
    row_id: int,
    venue_id: int,
    message: str,
    code: str,
    *,
    field: str | None = None,
    **options: Any,
) -> M:
    """``model`` ``row_id`` if it belongs to ``venue_id``, else ``NotFound(message, code)``. ``options`` go to
    ``AsyncSession.get`` (``with_for_update``, ``populate_existing``)."""
    row = await s.get(model, row_id, **options)
    if row is None or getattr(row, "venue_id", None) != venue_id:
        raise NotFound(message, code=code, field=field)
    return row
