"""Server-side web session data in the ``web_sessions`` table: the shared session store when no Redis is
configured (several app instances see the same sessions). Values are opaque bytes; expired rows are never
returned and are purged lazily."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import utcnow
from ..db.engine import rowcount
from .models import WebSession


async def load(s: AsyncSession, key: str) -> WebSession | None:
    row = await s.get(WebSession, key)
    if row is None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        await s.delete(row)
        return None
    return row


async def get_data(s: AsyncSession, key: str, *, renew_until: datetime | None = None) -> bytes | None:
    row = await load(s, key)
    if row is None:
        return None
    if renew_until is not None and row.expires_at is not None:
        row.expires_at = renew_until
    return row.data


async def put_data(s: AsyncSession, key: str, data: bytes, *, expires_at: datetime | None) -> None:
    """One UPDATE for a session that exists (every write but a login's), an INSERT for a new one."""
    result = await s.execute(update(WebSession).where(WebSession.key == key).values(data=data, expires_at=expires_at))
    if not rowcount(result):
        s.add(WebSession(key=key, data=data, expires_at=expires_at))
        await s.flush()


async def expires_at(s: AsyncSession, key: str) -> datetime | None:
    row = await load(s, key)
    return row.expires_at if row else None


async def delete_data(s: AsyncSession, key: str) -> None:
    await s.execute(delete(WebSession).where(WebSession.key == key))


async def delete_all(s: AsyncSession) -> None:
    await s.execute(delete(WebSession))


async def purge_expired(s: AsyncSession) -> int:
    result = await s.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))
    return rowcount(result)
