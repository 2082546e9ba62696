"""Circuit breaker per payment device, persisted in ``breaker_states`` so every app instance and
``/health`` see the same state.

closed ──N transport faults within the window──▶ open ──cool-down──▶ half_open (one probe: the provider's
``health()``, a Poll, never a sale) ──ok──▶ closed / ──fails──▶ open again.

Only transport faults count (no receipt, port errors, time-outs without an answer). Declines prove the device
works and close nothing open by themselves; they just do not count.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db.engine import rowcount
from ..fallback.policy import FallbackPolicy
from .models import BreakerState
from .sql import insert_ignore

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
LABELS = {CLOSED: "Normal", OPEN: "Fuera de servicio (no se envían cobros)", HALF_OPEN: "Probando el terminal"}


class BreakerView(msgspec.Struct, kw_only=True):
    device_key: str
    state: str
    failure_count: int
    opened_at: datetime | None
    last_failure: str
    probe_due: bool

    @property
    def blocks_sales(self) -> bool:
        return self.state != CLOSED

    @property
    def label(self) -> str:
        return LABELS.get(self.state, self.state)


async def _row(s: AsyncSession, device_key: str, *, lock: bool = False) -> BreakerState | None:
    stmt = select(BreakerState).where(BreakerState.device_key == device_key)
    if lock:
        stmt = stmt.with_for_update()
    return (await s.execute(stmt)).scalar_one_or_none()


async def view(s: AsyncSession, device_key: str, policy: FallbackPolicy, now: datetime) -> BreakerView:
    row = await _row(s, device_key)
    if row is None:
        return BreakerView(
            device_key=device_key, state=CLOSED, failure_count=0, opened_at=None, last_failure="", probe_due=False
        )
    due = (
        row.state == OPEN
        and row.opened_at is not None
        and now >= row.opened_at + timedelta(seconds=policy.breaker_cooldown_s)
    )
    return BreakerView(
        device_key=device_key,
        state=row.state,
        failure_count=row.failure_count,
        opened_at=row.opened_at,
        last_failure=row.last_failure,
        probe_due=due,
    )


async def _ensure(
    s: AsyncSession, device_key: str, venue_id: int, register_id: int | None, now: datetime
) -> BreakerState:
    await s.execute(
        insert_ignore(
            s,
            BreakerState,
            {
                "device_key": device_key,
                "venue_id": venue_id,
                "register_id": register_id,
                "state": CLOSED,
                "failure_count": 0,
                "last_failure": "",
                "updated_at": now,
            },
        )
    )
    row = await _row(s, device_key, lock=True)
    assert row is not None
    return row


async def record_fault(
    s: AsyncSession,
    *,
    device_key: str,
    venue_id: int,
    register_id: int | None,
    policy: FallbackPolicy,
    now: datetime,
    description: str,
) -> bool:
    """Count one transport fault; returns True when this fault opened the breaker."""
    row = await _ensure(s, device_key, venue_id, register_id, now)
    row.last_failure = description[:300]
    row.updated_at = now
    if row.state != CLOSED:
        if row.state == HALF_OPEN:
            row.state, row.opened_at = OPEN, now
        return False
    if row.window_started_at is None or now - row.window_started_at > timedelta(seconds=policy.breaker_window_s):
        row.window_started_at, row.failure_count = now, 0
    row.failure_count += 1
    if row.failure_count >= policy.breaker_failures:
        row.state, row.opened_at = OPEN, now
        return True
    return False


async def record_success(s: AsyncSession, *, device_key: str, now: datetime) -> bool:
    """The device answered properly; returns True if that closed an open breaker."""
    row = await _row(s, device_key, lock=True)
    if row is None:
        return False
    was_open = row.state != CLOSED
    row.state, row.failure_count, row.window_started_at, row.opened_at = CLOSED, 0, None, None
    row.updated_at = now
    return was_open


async def claim_probe(s: AsyncSession, *, device_key: str, now: datetime) -> bool:
    """Move an open breaker to half_open; only one instance wins the probe."""
    result = await s.execute(
        update(BreakerState)
        .where(BreakerState.device_key == device_key, BreakerState.state == OPEN)
        .values(state=HALF_OPEN, updated_at=now)
    )
    return rowcount(result) == 1


async def probe_failed(s: AsyncSession, *, device_key: str, now: datetime, description: str) -> None:
    await s.execute(
        update(BreakerState)
        .where(BreakerState.device_key == device_key)
        .values(state=OPEN, opened_at=now, last_failure=description[:300], updated_at=now)
    )


async def due_probes(s: AsyncSession, now: datetime, max_cooldown_s: int = 3600) -> list[BreakerState]:
    rows = (await s.execute(select(BreakerState).where(BreakerState.state.in_((OPEN, HALF_OPEN))))).scalars()
    return list(rows)


async def all_states(s: AsyncSession, venue_id: int) -> list[BreakerState]:
    return list(
        (
            await s.execute(
                select(BreakerState).where(BreakerState.venue_id == venue_id).order_by(BreakerState.device_key)
            )
        ).scalars()
    )
