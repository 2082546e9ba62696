"""Failed-credential throttling, stored in the database so that every app instance sees the same counts.

Three kinds of counter, each a row of ``auth_throttle`` keyed by a string:

* **per person and client address** (``ua:…``): a few failures block that person *from that address*; the
  block doubles each time it comes back (back-off). Someone guessing from one machine never locks the real
  user out of another one.
* **per client address** (``a:…``): failures for any person from one address; the block also doubles.
* **per account** (``u:<user id>``): failures from anywhere; over the limit the account itself is locked
  (``users.locked_until``), which an admin can lift. The account limit is several times the per-address
  one, so one machine can never reach it alone.

A failure is recorded by the caller in its own committed transaction (``record_failure``), so a refused
login always leaves its trace, whatever happens to the request's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import utcnow
from ..db.engine import rowcount
from .models import AuthThrottle

#: Counters with no failure for this long start again from zero.
QUIET_RESET = timedelta(hours=1)
#: A back-off level is forgotten after this long without a block.
LEVEL_RESET = timedelta(hours=24)


@dataclass(frozen=True)
class Limit:
    failures: int  # failures that trigger a block
    block_s: int  # first block; each further one doubles
    max_block_s: int


#: One person from one address (password or PIN logins, supervisor codes).
PERSON_ADDRESS = Limit(failures=5, block_s=60, max_block_s=3600)
#: One address, any person.
ADDRESS = Limit(failures=20, block_s=60, max_block_s=3600)
#: One PIN account from anywhere (a 6-digit PIN has 10^6 values: its account must lock).
PIN_ACCOUNT = Limit(failures=10, block_s=900, max_block_s=4 * 3600)
#: One password account from anywhere.
PASSWORD_ACCOUNT = Limit(failures=30, block_s=900, max_block_s=3600)


def person_address_key(person: str, address: str) -> str:
    return f"ua:{person}:{address or '?'}"[:200]


def address_key(address: str) -> str:
    return f"a:{address or '?'}"[:200]


def account_key(user_id: int) -> str:
    return f"u:{user_id}"


async def blocked_until(s: AsyncSession, keys: list[str]) -> datetime | None:
    """The latest block among ``keys`` still in force, or None."""
    now = utcnow()
    rows = await s.scalars(
        select(AuthThrottle.blocked_until).where(AuthThrottle.key.in_(keys), AuthThrottle.blocked_until > now)
    )
    return max((r for r in rows if r is not None), default=None)


async def record_failure(s: AsyncSession, key: str, limit: Limit) -> datetime | None:
    """Count one failure under ``key``; returns the new block's end when this failure triggers one."""
    now = utcnow()
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    await s.execute(
        insert(AuthThrottle)
        .values(key=key, failures=0, level=0, blocked_until=None, updated_at=now)
        .on_conflict_do_nothing(index_elements=[AuthThrottle.key])
    )
    row = await s.scalar(select(AuthThrottle).where(AuthThrottle.key == key).with_for_update())
    assert row is not None
    if row.updated_at < now - QUIET_RESET and (row.blocked_until is None or row.blocked_until < now):
        row.failures = 0
    if row.level and row.updated_at < now - LEVEL_RESET:
        row.level = 0
    row.failures += 1
    row.updated_at = now
    if row.failures < limit.failures:
        return None
    row.failures = 0
    row.level += 1
    seconds = min(limit.block_s * 2 ** (row.level - 1), limit.max_block_s)
    row.blocked_until = now + timedelta(seconds=seconds)
    return row.blocked_until


async def clear(s: AsyncSession, keys: list[str]) -> None:
    """Forget the failures of ``keys`` (after a success): the back-off level stays for a day."""
    rows = await s.scalars(select(AuthThrottle).where(AuthThrottle.key.in_(keys)))
    for row in rows:
        if row.level == 0:
            await s.delete(row)
        else:
            row.failures = 0
            row.blocked_until = None


async def lift(s: AsyncSession, *, user_id: int) -> None:
    """An admin lifts every block on a person: the account's and its per-address ones."""
    await s.execute(
        delete(AuthThrottle).where(
            or_(AuthThrottle.key == account_key(user_id), AuthThrottle.key.like(f"ua:{user_id}:%"))
        )
    )


async def purge(s: AsyncSession) -> int:
    """Drop counters that hold nothing any more (no block, quiet for a day)."""
    now = utcnow()
    result = await s.execute(
        delete(AuthThrottle).where(
            AuthThrottle.updated_at < now - LEVEL_RESET,
            or_(AuthThrottle.blocked_until.is_(None), AuthThrottle.blocked_until < now),
        )
    )
    return rowcount(result)
