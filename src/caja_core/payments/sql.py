"""Small dialect helpers (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_ignore(s: AsyncSession, model: Any, values: dict[str, Any]):
    """``INSERT … ON CONFLICT DO NOTHING``: on PostgreSQL a concurrent insert of the same key waits for the
    other transaction and then does nothing, without aborting ours."""
    dialect = s.bind.dialect.name if s.bind is not None else "sqlite"
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model).values(**values).on_conflict_do_nothing()
