"""Circuit breaker per payment device, persisted in ``breaker_states`` so every app instance and
``/health`` see the same state.

closed ──N transport faults within the window──▶ open ──cool-down──▶ half_open (one probe: the provider's
``health()``, a Poll, never a sale) ──ok──▶ closed / ──fails──▶ open again.

Only transport faults count (no receipt, port errors, time-outs without an answer). Declines prove the device
works and close nothing open by themselves; they just do not count.

Durations (the fault window, the cool-down, a probe that never reported back) are measured on each instance's
own **monotonic** clock: the row carries a ``generation`` that goes up whenever a window starts or the state
changes, and each instance times a generation from the moment it first sees it (``BreakerClock``). A wall
clock step, forward or back, changes nothing. An instance that starts while a breaker is open waits a full
cool-down from its start before probing (never less).
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import Clock
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


class BreakerClock:
    """When this instance first saw each device's current generation, on its monotonic clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._seen: dict[str, tuple[int, float]] = {}

    def age(self, device_key: str, generation: int) -> float:
        """Seconds since this instance first saw ``generation`` of the device's breaker."""
        mono = self.clock.monotonic()
        seen = self._seen.get(device_key)
        if seen is None or seen[0] != generation:
            self._seen[device_key] = (generation, mono)
            return 0.0
        return mono - seen[1]

    def started(self, device_key: str, generation: int) -> None:
        """This instance began ``generation`` itself: its age counts from now."""
        self._seen[device_key] = (generation, self.clock.monotonic())


async def _row(s: AsyncSession, device_key: str, *, lock: bool = False) -> BreakerState | None:
    stmt = select(BreakerState).where(BreakerState.device_key == device_key)
    if lock:
        stmt = stmt.with_for_update()
    return (await s.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


def view_of(row: BreakerState | None, device_key: str, policy: FallbackPolicy, times: BreakerClock) -> BreakerView:
    if row is None:
        return BreakerView(
            device_key=device_key, state=CLOSED, failure_count=0, opened_at=None, last_failure="", probe_due=False
        )
    age = times.age(device_key, row.generation)
    return BreakerView(
        device_key=device_key,
        state=row.state,
        failure_count=row.failure_count,
        opened_at=row.opened_at,
        last_failure=row.last_failure,
        probe_due=row.state == OPEN and age >= policy.breaker_cooldown_s,
    )


async def row(s: AsyncSession, device_key: str) -> BreakerState | None:
    return await _row(s, device_key)


async def view(s: AsyncSession, device_key: str, policy: FallbackPolicy, times: BreakerClock) -> BreakerView:
    return view_of(await _row(s, device_key), device_key, policy, times)


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
                "generation": 0,
            },
        )
    )
    row = await _row(s, device_key, lock=True)
    assert row is not None
    return row


def _next_generation(row: BreakerState, times: BreakerClock) -> None:
    row.generation = (row.generation or 0) + 1
    times.started(row.device_key, row.generation)


async def record_fault(
    s: AsyncSession,
    *,
    device_key: str,
    venue_id: int,
    register_id: int | None,
    policy: FallbackPolicy,
    now: datetime,
    times: BreakerClock,
    description: str,
) -> bool:
    """Count one transport fault; returns True when this fault opened the breaker."""
    row = await _ensure(s, device_key, venue_id, register_id, now)
    row.last_failure = description[:300]
    row.updated_at = now
    if row.state != CLOSED:
        if row.state == HALF_OPEN:
            row.state, row.opened_at = OPEN, now
            _next_generation(row, times)
        return False
    if row.failure_count == 0 or times.age(device_key, row.generation) > policy.breaker_window_s:
        row.window_started_at, row.failure_count = now, 0
        _next_generation(row, times)
    row.failure_count += 1
    if row.failure_count >= policy.breaker_failures:
        row.state, row.opened_at = OPEN, now
        _next_generation(row, times)
        return True
    return False


async def record_success(s: AsyncSession, *, device_key: str, now: datetime, times: BreakerClock) -> bool:
    """The device answered properly; returns True if that closed an open breaker."""
    row = await _row(s, device_key, lock=True)
    if row is None:
        return False
    was_open = row.state != CLOSED
    if not was_open and row.failure_count == 0:
        return False
    row.state, row.failure_count, row.window_started_at, row.opened_at = CLOSED, 0, None, None
    row.updated_at = now
    _next_generation(row, times)
    return was_open


async def claim_probe(s: AsyncSession, *, device_key: str, generation: int, now: datetime, times: BreakerClock) -> bool:
    """Move an open breaker to half_open; only one instance wins the probe."""
    result = await s.execute(
        update(BreakerState)
        .where(BreakerState.device_key == device_key, BreakerState.state == OPEN, BreakerState.generation == generation)
        .values(state=HALF_OPEN, updated_at=now, generation=generation + 1)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) == 1:
        times.started(device_key, generation + 1)
        return True
    return False


async def probe_failed(
    s: AsyncSession, *, device_key: str, now: datetime, times: BreakerClock, description: str
) -> None:
    row = await _row(s, device_key, lock=True)
    if row is None:
        return
    row.state, row.opened_at, row.last_failure, row.updated_at = OPEN, now, description[:300], now
    _next_generation(row, times)


async def open_rows(s: AsyncSession) -> list[BreakerState]:
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
