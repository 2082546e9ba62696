"""One command in flight per device, across app instances.

A ``DeviceLease`` row is the lock: inserting it acquires the device, a row already there means
"Terminal ocupado" at once (no waiting in a queue while a customer stands at the bar). ``expires_at`` makes a
lease left behind by a crashed instance harmless: an expired lease is taken over.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.engine import rowcount
from ..errors import Busy
from .models import DeviceLease
from .sql import insert_ignore

BUSY_MESSAGE = "Terminal ocupado: otra caja o proceso está usando este terminal. Intente en unos segundos."


async def acquire_lease(
    s: AsyncSession, *, device_key: str, owner: str, attempt_id: int | None, now: datetime, ttl_s: float
) -> None:
    """Take the device or raise ``Busy``. Runs inside the caller's transaction."""
    await s.execute(delete(DeviceLease).where(DeviceLease.device_key == device_key, DeviceLease.expires_at < now))
    result = await s.execute(
        insert_ignore(
            s,
            DeviceLease,
            {
                "device_key": device_key,
                "attempt_id": attempt_id,
                "owner": owner,
                "acquired_at": now,
                "expires_at": now + timedelta(seconds=ttl_s),
            },
        )
    )
    if rowcount(result) != 1:
        raise Busy(BUSY_MESSAGE, code="payment.device_busy", details={"device_key": device_key})


async def release_lease(
    s: AsyncSession, *, device_key: str, attempt_id: int | None = None, owner: str | None = None
) -> None:
    stmt = delete(DeviceLease).where(DeviceLease.device_key == device_key)
    if attempt_id is not None:
        stmt = stmt.where(DeviceLease.attempt_id == attempt_id)
    if owner is not None:
        stmt = stmt.where(DeviceLease.owner == owner)
    await s.execute(stmt)


async def extend_lease(s: AsyncSession, *, device_key: str, attempt_id: int, now: datetime, ttl_s: float) -> None:
    await s.execute(
        update(DeviceLease)
        .where(DeviceLease.device_key == device_key, DeviceLease.attempt_id == attempt_id)
        .values(expires_at=now + timedelta(seconds=ttl_s))
    )


async def live_lease(s: AsyncSession, device_key: str, now: datetime) -> DeviceLease | None:
    lease = (await s.execute(select(DeviceLease).where(DeviceLease.device_key == device_key))).scalar_one_or_none()
    if lease is None or lease.expires_at < now:
        return None
    return lease
