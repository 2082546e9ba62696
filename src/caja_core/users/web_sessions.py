"""Server-side web session data in the ``web_sessions`` table: the shared session store when no Redis is
configured (several app instances see the same sessions). Values are opaque bytes; expired rows are never
returned and are purged lazily.

Every function is one Core statement (no ORM objects), runnable on a session or on a bare connection: the web
store runs each on a connection of its own in autocommit (``Database.autocommit``), since a session's row is
read once and written once per request and neither needs a transaction around it."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..clock import utcnow
from ..db.engine import rowcount
from .models import WebSession

Executor = AsyncSession | AsyncConnection

_TABLE = cast(Table, WebSession.__table__)


async def get_data(s: Executor, key: str, *, renew_until: datetime | None = None) -> bytes | None:
    """The session's data; None when there is none or it expired (an expired row is deleted)."""
    row = (await s.execute(select(_TABLE.c.data, _TABLE.c.expires_at).where(_TABLE.c.key == key))).first()
    if row is None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        await delete_data(s, key)
        return None
    if renew_until is not None and row.expires_at is not None:
        await s.execute(update(_TABLE).where(_TABLE.c.key == key).values(expires_at=renew_until))
    return row.data


async def put_data(s: Executor, key: str, data: bytes, *, expires_at: datetime | None) -> None:
    """One UPDATE for a session that exists (every write but a login's), an INSERT for a new one."""
    result = await s.execute(update(_TABLE).where(_TABLE.c.key == key).values(data=data, expires_at=expires_at))
    if not rowcount(result):
        await s.execute(insert(_TABLE).values(key=key, data=data, expires_at=expires_at))


async def expires_at(s: Executor, key: str) -> datetime | None:
    row = (await s.execute(select(_TABLE.c.expires_at).where(_TABLE.c.key == key))).first()
    if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
        return None
    return row.expires_at


async def delete_data(s: Executor, key: str) -> None:
    await s.execute(delete(_TABLE).where(_TABLE.c.key == key))


async def delete_all(s: Executor) -> None:
    await s.execute(delete(_TABLE))


async def purge_expired(s: Executor) -> int:
    result = await s.execute(delete(_TABLE).where(_TABLE.c.expires_at <= utcnow()))
    return rowcount(result)
