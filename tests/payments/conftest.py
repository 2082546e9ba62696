"""A ready-to-sell register whose primary is a scriptable terminal and whose backup is a manual phone, with a
running orchestrator. Deadlines are short: the test clock's monotonic time runs ``speed`` times faster."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from caja_core import hookimpl
from caja_core.clock import Clock
from caja_core.fallback.policy import FallbackPolicy
from caja_core.payments.models import PaymentAttempt
from caja_core.payments.service import PaymentOrchestrator
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.sales import service as sales
from caja_core.sales.models import Sale
from caja_core.sessions import service as sessions
from caja_core.testing.events import RecordingListener
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import ScriptableProvider, manual_provider

TEST_POLICY = {
    "max_wait_s": 5,
    "triggers": ["unavailable", "transport_error", "timeout", "decline"],
    "decline_codes": ["51"],
    "breaker_failures": 3,
    "breaker_window_s": 60,
    "breaker_cooldown_s": 10,
    "backup_phones_required": 1,
}


class JumpClock(Clock):
    """Wall clock that can step either way (``jump``); monotonic clock that runs ``speed`` times faster than real
    time and can be moved forward (``advance``)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self.offset = timedelta()
        self.elapsed = 0.0
        self._mono0 = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return self._mono0 + (time.monotonic() - self._mono0) * self.speed + self.elapsed

    def timer(self, seconds: float) -> float:
        return seconds / self.speed

    def jump(self, seconds: float) -> None:
        """A wall-clock step (NTP, an operator): forward or back."""
        self.offset += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move forward."""
        self.elapsed += seconds
        self.offset += timedelta(seconds=seconds)


class ProvidersPlugin:
    def __init__(self, *providers) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider):
        for p in self.providers:
            add_provider(p)


Events = RecordingListener


class Env:
    def __init__(self, db, provider, backup, pm, registry, setup, session_id, clock, events) -> None:
        self.db, self.provider, self.backup, self.pm, self.registry = db, provider, backup, pm, registry
        self.setup, self.session_id, self.clock, self.events = setup, session_id, clock, events
        self.venue_id = setup.venue_id
        self.orchestrators: list[PaymentOrchestrator] = []

    async def orchestrator(self, instance_id: str = "inst-1", **kw) -> PaymentOrchestrator:
        options = {
            "clock": self.clock,
            "instance_id": instance_id,
            "worker_interval_s": 0.05,
            "cancel_timeout_s": 1.0,
            "cancel_grace_s": 0.2,
            "status_timeout_s": 1.0,
            "health_timeout_s": 1.0,
            "reconcile_backoff_s": (0.05, 0.2),
            "lease_beat_s": 0.05,
            # The clock runs 4× faster: 40 s of it are 10 real seconds, so a loaded machine never looks like a
            # dead instance (the tests of a dead instance move the clock forward themselves).
            "lease_ttl_s": 40.0,
        }
        options.update(kw)
        orch = PaymentOrchestrator(self.db, self.registry, self.pm, **options)
        await orch.start()
        self.orchestrators.append(orch)
        return orch

    async def sale(self, amount: int = 12500, session_id: int | None = None) -> int:
        async with self.db.session() as s:
            holder = (await sessions.get_session(s, self.venue_id, session_id or self.session_id)).cashier_id
            out = await sales.create_sale(
                s,
                venue_id=self.venue_id,
                session_id=session_id or self.session_id,
                cashier_id=holder,  # whoever holds that session's drawer rings its sales
                idempotency_key=uuid.uuid4().hex,
                items=[sales.ItemInput(name="Consumo", unit_price=amount, quantity=1, free_reason="barra")],
            )
        return out.id

    async def attempts(self, sale_id: int | None = None) -> list[PaymentAttempt]:
        async with self.db.reader() as s:
            q = select(PaymentAttempt).order_by(PaymentAttempt.id)
            if sale_id is not None:
                q = q.where(PaymentAttempt.sale_id == sale_id)
            return list((await s.execute(q)).scalars())

    async def sale_row(self, sale_id: int) -> Sale:
        async with self.db.reader() as s:
            return (await s.execute(select(Sale).where(Sale.id == sale_id))).scalar_one()

    async def until(self, orch, sale_id: int, predicate, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            progress = await orch.poll(self.venue_id, sale_id)
            if predicate(progress):
                return progress
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached; last progress: {progress}")
            await asyncio.sleep(0.01)

    async def settle(self, orch, sale_id: int, timeout: float = 5.0):
        """Wait until the sale is paid or its payment is resolved as not charged (nothing in flight)."""
        return await self.until(
            orch,
            sale_id,
            lambda p: p.paid or (not p.in_doubt and p.state not in ("created", "sending", "awaiting")),
            timeout,
        )


async def build_env(db, *, speed: float = 4.0, policy: dict | None = None, primary=None, backup=None) -> Env:
    provider = primary or ScriptableProvider("fake")
    backup_provider = backup or manual_provider("fakebackup")
    events = Events()
    pm = make_plugin_manager(ProvidersPlugin(provider, backup_provider), events, load_entrypoints=False)
    registry = ProviderRegistry.from_plugin_manager(pm)
    setup = await make_setup(
        db,
        registry,
        primary=provider.id,
        backup=backup_provider.id,
        policy=FallbackPolicy(**{**TEST_POLICY, **(policy or {})}),
        phones=1,
    )
    async with db.session() as s:
        session = await sessions.open_session(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            user_id=setup.cashier_id,
            initial_cash=0,
            open_key="apertura-1",
        )
    return Env(db, provider, backup_provider, pm, registry, setup, session.id, JumpClock(speed), events)


@pytest.fixture
async def env(any_db):
    e = await build_env(any_db)
    yield e
    for orch in e.orchestrators:
        await orch.stop()


@pytest.fixture
async def patient_env(any_db):
    """``env`` whose terminal wait is a minute, for tests about something else than the wait: on a loaded
    machine the usual 5 s (1.25 s real) can run out before a scripted answer comes and offer the backup."""
    e = await build_env(any_db, policy={"max_wait_s": 60})
    yield e
    for orch in e.orchestrators:
        await orch.stop()


@pytest.fixture
async def sqlite_env(sqlite_db):
    e = await build_env(sqlite_db)
    yield e
    for orch in e.orchestrators:
        await orch.stop()


@pytest.fixture
async def pg_env(pg_db):
    e = await build_env(pg_db)
    yield e
    for orch in e.orchestrators:
        await orch.stop()
