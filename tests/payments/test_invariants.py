"""docs/reliability.md cases 21 and 24: the database goes away when an approval arrives; random provider behaviour
never breaks "charges made by the provider == approved attempts == paid sales, no sale paid twice"."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as stt
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.db.engine import Database
from caja_core.payments.models import PaymentAttempt
from caja_core.providers import OutcomeKind
from caja_core.sales.models import Sale
from caja_core.testing.fake import Step
from caja_core.testing.waiting import count_calls, wait_until

from .conftest import TEST_POLICY, build_env


# 21 ---------------------------------------------------------------------------------------------------------
async def test_21_database_unavailable_when_the_approval_arrives(pg_db, pg_test_database):
    env = await build_env(pg_db, speed=1.0)
    orch = await env.orchestrator()
    admin = create_async_engine(pg_test_database.admin_url, isolation_level="AUTOCOMMIT")
    name = pg_test_database.name
    try:
        sale_id = await env.sale(18000)
        refused = count_calls(orch, "_apply", raising=(OSError, DBAPIError))  # writing the answer, refused
        env.provider.script("charge", Step(delay_s=1.0))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.until(orch, sale_id, lambda p: p.state == "awaiting")
        async with admin.connect() as conn:  # the database goes away while the customer taps the card
            await conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
        deadline = time.monotonic() + 5
        while not env.provider.ledger:  # the terminal approves and charges
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # The approval cannot be written for a while: the orchestrator tries and is refused, twice.
        await wait_until(lambda: refused() >= 2, timeout_s=10, what="la aprobación no se pudo escribir dos veces")
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        done = await env.until(orch, sale_id, lambda p: p.paid, timeout=15)
        assert done.state == "approved" and done.paid_via == "primary"
        (attempt,) = await env.attempts(sale_id)
        assert env.provider.ledger == {attempt.ticket: 18000} and env.provider.count("charge") == 1
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        await admin.dispose()
        await orch.stop()


# 24 ---------------------------------------------------------------------------------------------------------
BEHAVIOURS = {
    "approved": [Step()],
    "declined": [Step(kind=OutcomeKind.DECLINED, code="05")],
    "declined_listed": [Step(kind=OutcomeKind.DECLINED, code="51")],
    "unavailable": [Step(kind=OutcomeKind.UNAVAILABLE)],
    "lost_approval": [Step(kind=OutcomeKind.UNKNOWN, charged=True)],
    "lost_request": [Step(kind=OutcomeKind.UNKNOWN, charged=False)],
    "transport_fault": [Step(raise_exc=True)],
    "silent": [Step(hang=True)],
    "slow_approval": [Step(delay_s=0.03, progress=["Ingrese PIN"])],
    "other_ticket": [Step(kind=OutcomeKind.APPROVED, ticket="999999", charged=False)],
}


class PaymentsMachine(RuleBasedStateMachine):
    """Random sales against a terminal with random behaviour, reconciled until nothing is in doubt."""

    template = None

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.template.fresh_url())
        self.env = self.loop.run_until_complete(build_env(self.db, speed=50.0, policy={"breaker_failures": 50}))
        self.orch = self.loop.run_until_complete(
            self.env.orchestrator(cancel_grace_s=0.05, reconcile_backoff_s=(0.01, 0.05))
        )
        self.sales: list[int] = []

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _settle(self, sale_id: int) -> None:
        deadline = time.monotonic() + 10
        while True:
            await self.orch.run_once()
            p = await self.orch.poll(self.env.venue_id, sale_id)
            if not p.in_doubt and p.state not in ("created", "sending", "awaiting"):
                return
            assert time.monotonic() < deadline, p
            await asyncio.sleep(0.01)

    async def _pay(self, sale_id: int, behaviour: str, flaky_status: bool) -> None:
        self.env.provider.script("charge", *BEHAVIOURS[behaviour])
        if flaky_status:
            self.env.provider.script("status", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta"))
        await self.orch.start_payment(self.env.venue_id, sale_id, self.env.setup.cashier_id)
        await self._settle(sale_id)
        self.env.provider.scripts["status"].clear()
        self.env.provider.scripts["charge"].clear()

    @rule(behaviour=stt.sampled_from(sorted(BEHAVIOURS)), amount=stt.integers(1, 300_000), flaky=stt.booleans())
    def new_sale(self, behaviour, amount, flaky):
        sale_id = self.run(self.env.sale(amount))
        self.sales.append(sale_id)
        self.run(self._pay(sale_id, behaviour, flaky))

    def _unpaid(self) -> list[int]:
        async def q():
            async with self.db.reader() as s:
                return list(
                    (
                        await s.execute(select(Sale.id).where(Sale.status == "pending_payment").order_by(Sale.id))
                    ).scalars()
                )

        return self.run(q())

    @precondition(lambda self: self.sales)
    @rule(behaviour=stt.sampled_from(sorted(BEHAVIOURS)), pick=stt.integers(0, 1000), flaky=stt.booleans())
    def retry_unpaid(self, behaviour, pick, flaky):
        unpaid = self._unpaid()
        if unpaid:
            self.run(self._pay(unpaid[pick % len(unpaid)], behaviour, flaky))

    @precondition(lambda self: self.sales)
    @rule(pick=stt.integers(0, 1000))
    def backup_when_offered(self, pick):
        async def go():
            for sale_id in self._unpaid_now:
                p = await self.orch.poll(self.env.venue_id, sale_id)
                if p.backup_offered:
                    p = await self.orch.start_backup(self.env.venue_id, sale_id, self.env.setup.cashier_id)
                    code = f"{pick:06d}"
                    await self.orch.confirm_manual(
                        self.env.venue_id,
                        p.manual.attempt_id,
                        self.env.setup.cashier_id,
                        code,
                        "4242",
                        "Visa",
                        "debito",
                    )
                    return

        self._unpaid_now = self._unpaid()
        self.run(go())

    @invariant()
    def charges_equal_approved_attempts_equal_paid_sales(self):
        async def check():
            async with self.db.reader() as s:
                attempts = list((await s.execute(select(PaymentAttempt))).scalars())
                sales = {sale.id: sale for sale in (await s.execute(select(Sale))).scalars()}
            approved_primary = {a.ticket: a.amount for a in attempts if a.role == "primary" and a.state == "approved"}
            assert approved_primary == self.env.provider.ledger
            paying = {}
            for a in attempts:
                assert a.state not in ("created", "sending", "awaiting", "in_doubt", "reconciling"), a.state
                if a.state in ("approved", "approved_manual"):
                    assert a.sale_id not in paying, f"sale {a.sale_id} paid twice"
                    paying[a.sale_id] = a
            paid = {sid for sid, sale in sales.items() if sale.status == "paid"}
            assert paid == set(paying)
            for sid, a in paying.items():
                assert sales[sid].paid_via == a.role and sales[sid].total == a.amount

        self.run(check())

    def teardown(self):
        self.run(self.orch.stop())
        self.run(self.db.dispose())
        self.loop.close()


#: Case 24's clock runs this many times faster than real time (the policy's 5 s max wait is 0.25 s).
P24_SPEED = float(os.environ.get("CAJA_P24_SPEED", "20"))
#: The orchestrators' timings in the test clock's seconds. The worker and the lease heartbeat look once a second
#: of that clock (50 ms): more often only burns the database's time, not the run's; a lease whose beat stands
#: still for 40 s of it (2 real seconds, a starved instance) is taken over, as in a real night.
P24_TIMINGS: dict = {
    "worker_interval_s": 1.0,
    "lease_beat_s": 1.0,
    "lease_ttl_s": 40.0,
    "cancel_timeout_s": 1.0,
    "cancel_grace_s": 0.05,
    "status_timeout_s": 1.0,
    "reconcile_backoff_s": (0.01, 0.05),
}
#: How often the cashier's screen asks how the payment stands (real seconds).
P24_POLL_S = 0.02
#: Real seconds a loaded 2-core machine may add to a sale's longest legitimate path (``CAJA_P24_SLACK_S``).
P24_SLACK_S = 30.0


def settle_limit_s(max_wait_s: float | None) -> float:
    """Real seconds a sale may take to settle: the attempt's own max wait, the cancel at its end, a lease of a
    stalled instance taken over, and a few questions to the terminal — in the test clock, scaled to real time —
    plus the machine's slack."""
    import os

    t = P24_TIMINGS
    clock_s = (
        (max_wait_s if max_wait_s is not None else TEST_POLICY["max_wait_s"])
        + t["cancel_timeout_s"]
        + t["cancel_grace_s"]
        + t["lease_ttl_s"]
        + 8 * (t["status_timeout_s"] + t["reconcile_backoff_s"][1])
    )
    return clock_s / P24_SPEED + float(os.environ.get("CAJA_P24_SLACK_S", P24_SLACK_S))


async def stuck_state(env, sale_id: int) -> str:
    """Everything known about a sale's attempts, for a failure message: rows, the device's lease, agent
    commands, and what the provider did with their tickets."""
    from caja_core.payments.models import AgentCommand, DeviceLease

    lines = []
    async with env.db.reader() as s:
        attempts = list((await s.execute(select(PaymentAttempt).where(PaymentAttempt.sale_id == sale_id))).scalars())
        for a in attempts:
            cols = {c.key: getattr(a, c.key) for c in PaymentAttempt.__table__.columns}
            lines.append(f"attempt {cols}")
            lease = await s.get(DeviceLease, a.device_key)
            if lease is not None:
                lines.append(f"lease { ({c.key: getattr(lease, c.key) for c in DeviceLease.__table__.columns}) }")
            for cmd in (await s.execute(select(AgentCommand).where(AgentCommand.attempt_id == a.id))).scalars():
                lines.append(f"agent command {cmd.id} {cmd.status}")
            device = a.device_key.split(":", 1)[1]
            key = a.ticket if device == "fake-1" else f"{device}:{a.ticket}"
            calls = [m for m, t in env.provider.calls if t == a.ticket]
            lines.append(f"provider calls {calls}, charged {key in env.provider.ledger}")
    return "\n".join(lines)


def test_24_random_provider_behaviour_keeps_the_books_straight(sqlite_template):
    PaymentsMachine.template = sqlite_template
    run_state_machine_as_test(
        PaymentsMachine,
        settings=settings(
            max_examples=8,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


async def test_24_many_registers_two_instances_random_faults_books_stay_straight(pg_db):
    """Three registers (one terminal each) sell at the same time through two app instances while the terminals
    misbehave at random; afterwards every attempt is resolved and charges == approved attempts == paid sales.
    ``CAJA_P24_SALES`` raises the number of sales per register (10 000 in total for the long run)."""
    import os
    import random

    from caja_core.registers import service as registers
    from caja_core.registers.models import BackupPhone
    from caja_core.sessions import service as sessions

    per_register = int(os.environ.get("CAJA_P24_SALES", "25"))
    started = time.monotonic()
    env = await build_env(pg_db, speed=P24_SPEED, policy={"breaker_failures": 50})
    a = await env.orchestrator("inst-a", **P24_TIMINGS)
    b = await env.orchestrator("inst-b", **P24_TIMINGS)
    sessions_by_register = [env.session_id]
    async with env.db.session() as s:
        policy = (await registers.get_register(s, env.venue_id, env.setup.register_id)).policy
        for n in (2, 3):
            reg = await registers.create_register(
                s,
                venue_id=env.venue_id,
                registry=env.registry,
                actor_id=env.setup.admin_id,
                data=registers.RegisterInput(
                    code=f"CAJA{n}",
                    name=f"Caja {n}",
                    primary_provider="fake",
                    backup_provider="fakebackup",
                    policy=policy,
                    provider_settings={"fake": {"device": f"fake-{n}"}},
                ),
            )
            s.add(BackupPhone(venue_id=env.venue_id, name=f"Cel {n}", identifier=f"cel-{n}", register_id=reg.id))
            await s.flush()
            sessions_by_register.append(
                (
                    await sessions.open_session(
                        s,
                        venue_id=env.venue_id,
                        register_id=reg.id,
                        user_id=env.setup.supervisor_id,
                        initial_cash=0,
                        open_key=f"apertura-{n}",
                    )
                ).id
            )
    kinds = [
        Step(),
        Step(),
        Step(),
        Step(kind=OutcomeKind.DECLINED, code="05"),
        Step(kind=OutcomeKind.UNAVAILABLE),
        Step(kind=OutcomeKind.UNKNOWN, charged=True),
        Step(kind=OutcomeKind.UNKNOWN, charged=False),
        Step(raise_exc=True),
        Step(delay_s=0.02),
    ]
    rng = random.Random(24)
    env.provider.set_default("charge", None)

    # Each call draws its behaviour at random, so the registers interleave freely.
    original_next = env.provider._next

    def random_next(method, default):
        if method == "charge":
            return rng.choice(kinds)
        if method == "status" and rng.random() < 0.2:
            return Step(kind=OutcomeKind.UNKNOWN)
        return original_next(method, default)

    env.provider._next = random_next

    settle_s: list[tuple[float, int]] = []

    async def register_loop(session_id: int, seed: int) -> None:
        for i in range(per_register):
            orch = a if (i + seed) % 2 else b
            sale_id = await env.sale(1000 + i, session_id=session_id)
            sent = time.monotonic()
            await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
            (first,) = await env.attempts(sale_id)
            deadline = sent + settle_limit_s((first.details or {}).get("max_wait_s"))
            while True:
                p = await orch.poll(env.venue_id, sale_id)
                if not p.in_doubt and p.state not in ("created", "sending", "awaiting"):
                    break
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"sale {sale_id} (register {seed + 1}, its sale {i + 1}) unresolved after "
                        f"{time.monotonic() - sent:.1f} s: {p}\n{await stuck_state(env, sale_id)}"
                    )
                await asyncio.sleep(P24_POLL_S)
            settle_s.append((time.monotonic() - sent, sale_id))

    try:
        await asyncio.gather(*(register_loop(sid, n) for n, sid in enumerate(sessions_by_register)))
    finally:
        await a.stop()
        await b.stop()
    async with env.db.reader() as s:
        attempts = list((await s.execute(select(PaymentAttempt))).scalars())
        sales = {x.id: x for x in (await s.execute(select(Sale))).scalars()}
    assert len(sales) == 3 * per_register
    assert all(x.state not in ("created", "sending", "awaiting", "in_doubt", "reconciling") for x in attempts)

    def ledger_key(attempt):
        device = attempt.device_key.split(":", 1)[1]
        return attempt.ticket if device == "fake-1" else f"{device}:{attempt.ticket}"

    approved = {ledger_key(x): x.amount for x in attempts if x.state == "approved"}
    assert approved == env.provider.ledger
    paying = [x.sale_id for x in attempts if x.state == "approved"]
    assert len(paying) == len(set(paying))
    assert {sid for sid, x in sales.items() if x.status == "paid"} == set(paying)
    assert env.provider.max_in_flight <= 3
    settle_s.sort()
    states = Counter(x.state for x in attempts)
    slowest = next(x for x in attempts if x.sale_id == settle_s[-1][1])
    print(
        f"\ncase 24: {len(sales)} sales in {time.monotonic() - started:.0f} s; terminal charges "
        f"{len(env.provider.ledger)}, approved attempts {states['approved']}, paid sales {len(paying)}, not charged "
        f"{states['failed_not_sent'] + states['cancelled']}, declined {states['declined']}, settled by asking the "
        f"terminal {sum(1 for x in attempts if x.classification == 'reconciled')}, lease take-overs "
        f"{sum(1 for x in attempts if (x.details or {}).get('stop_reason') == 'orphaned')}; time to settle a sale "
        f"p50 {settle_s[len(settle_s) // 2][0]:.2f} s, p99 {settle_s[int(len(settle_s) * 0.99)][0]:.2f} s, max "
        f"{settle_s[-1][0]:.2f} s (limit {settle_limit_s(None):.1f} s; the slowest: {slowest.state}, "
        f"{slowest.classification}, {slowest.reconcile_tries} question(s) to the terminal, stopped by "
        f"{(slowest.details or {}).get('stop_reason')})"
    )
