"""docs/reliability.md, the policy and orchestration cases: cases 13–18, 23 and 28."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select, update

from caja_core.audit.models import AuditEvent, Incident
from caja_core.errors import Busy, Conflict, Forbidden, NotFound, ValidationFailed
from caja_core.payments.models import BreakerState, DeviceLease
from caja_core.payments.service import PaymentOrchestrator, supervisor_items, unresolved_attempt_summaries
from caja_core.providers import OutcomeKind
from caja_core.registers import service as registers
from caja_core.registers.models import BackupPhone
from caja_core.sales.models import Sale
from caja_core.sessions import service as sessions
from caja_core.sessions.models import FallbackEvent
from caja_core.testing.fake import Step
from caja_core.testing.waiting import wait_until


# 13 ---------------------------------------------------------------------------------------------------
async def test_13_max_wait_cancels_and_reconciles_before_offering_backup(env):
    orch = await env.orchestrator()
    sale_id = await env.sale()
    env.provider.script("charge", Step(hang=True, progress=["Inserte o acerque tarjeta"]))
    env.provider.script("cancel", Step(kind=OutcomeKind.APPROVED, delay_s=0.3))  # the terminal takes its time
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    first = await env.until(orch, sale_id, lambda p: p.state == "awaiting")
    assert first.seconds_left is not None and 0 <= first.seconds_left <= 5 and not first.backup_offered
    # While the cancel is on its way and the reconciliation has not answered, no backup.
    while ("cancel", None) not in [(m, None) for m, _ in env.provider.calls]:
        p = await orch.poll(env.venue_id, sale_id)
        assert not p.backup_offered
        await asyncio.sleep(0.01)
    # The screen then says so (the cancel's state may be written a moment after the terminal got the call).
    saying = ("Cancelando en el terminal…", "Consultando al terminal si se cobró…")
    p = await env.until(orch, sale_id, lambda p: p.backup_offered or p.message in saying)
    assert not p.backup_offered and p.message in saying, p.message
    done = await env.until(orch, sale_id, lambda p: p.backup_offered)
    calls = [m for m, _ in env.provider.calls]
    assert calls == ["charge", "cancel", "status"]
    assert done.state == "failed_not_sent" and "espera" in done.backup_reason
    assert env.provider.ledger == {}


async def test_13_max_wait_when_the_terminal_did_charge_ends_approved_without_backup(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(7000)
    env.provider.script("charge", Step(hang=True))
    env.provider.script("status", Step(kind=OutcomeKind.APPROVED))  # the terminal says our ticket was approved
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    done = await env.settle(orch, sale_id)
    assert done.paid and done.state == "approved" and not done.backup_offered
    (attempt,) = await env.attempts(sale_id)
    assert attempt.classification == "reconciled"


# 14 ---------------------------------------------------------------------------------------------------
async def _settled_breaker(env) -> str:
    """The breaker's state once no probe is in flight (the background worker may be the one probing)."""
    for _ in range(300):
        async with env.db.reader() as s:
            state = (await s.execute(select(BreakerState.state))).scalar_one()
        if state != "half_open":
            return state
        await asyncio.sleep(0.01)
    return state


async def test_14_breaker_opens_sends_nothing_probes_with_poll_and_closes(env):
    orch = await env.orchestrator(worker_interval_s=3600)  # the test drives the probes with run_once()
    for _ in range(3):  # declines never trip it
        sale_id = await env.sale()
        env.provider.script("charge", Step(kind=OutcomeKind.DECLINED, code="05"))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.settle(orch, sale_id)
    assert (await orch.poll(env.venue_id, sale_id)).breaker_state == "closed"
    for _ in range(3):  # three transport faults within the window
        sale_id = await env.sale()
        env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Conexión rechazada"))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.settle(orch, sale_id)
    charges = env.provider.count("charge")
    sale_id = await env.sale()
    first = await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert first.breaker_state == "open" and first.backup_offered and first.state == "failed_not_sent"
    assert env.provider.count("charge") == charges  # nothing sent to the dead terminal
    # Cool-down not over: the worker does not probe.
    await orch.run_once()
    assert env.provider.count("health") == 0
    # A wall-clock step is not time passing: still no probe.
    env.clock.jump(3600)
    await orch.run_once()
    assert env.provider.count("health") == 0
    # After the cool-down, the half-open probe is a Poll (health), never a sale; it fails: open again.
    env.clock.advance(11)
    env.provider.script("health", Step(kind=OutcomeKind.UNAVAILABLE, message="Sin respuesta"))
    await orch.run_once()
    assert await _settled_breaker(env) == "open"
    assert env.provider.count("health") == 1 and env.provider.count("charge") == charges
    env.clock.jump(-7200)
    env.clock.advance(11)
    await orch.run_once()
    assert await _settled_breaker(env) == "closed"
    assert env.provider.count("health") == 2
    sale_id = await env.sale()
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert (await env.settle(orch, sale_id)).paid
    assert env.provider.count("charge") == charges + 1
    assert {"breaker_opened", "breaker_closed"} <= set(env.events.kinds())


async def test_14_breaker_state_is_shared_by_instances(env):
    a = await env.orchestrator("inst-a")
    b = await env.orchestrator("inst-b")
    for _ in range(3):
        sale_id = await env.sale()
        env.provider.script("charge", Step(raise_exc=True))
        await a.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.settle(a, sale_id)
    charges = env.provider.count("charge")
    sale_id = await env.sale()
    p = await b.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert p.breaker_state == "open" and p.backup_offered
    assert env.provider.count("charge") == charges
    (view,) = await b.breaker_states(env.venue_id)
    assert view.state == "open" and view.failure_count == 3


# 15 ---------------------------------------------------------------------------------------------------
async def _override_then_paid_on_backup(env, orch) -> tuple[int, object]:
    sale_id = await env.sale(9900)
    # The terminal charged but the answer was lost, and it cannot be asked for now.
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.until(orch, sale_id, lambda p: p.in_doubt and p.can_override)
    assert not p.backup_offered and p.doubt_message
    with pytest.raises(Conflict):
        await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    with pytest.raises(Forbidden):
        await orch.override_to_backup(env.venue_id, sale_id, env.setup.cashier_id, "cliente apurado")
    p = await orch.override_to_backup(env.venue_id, sale_id, env.setup.supervisor_id, "terminal no responde")
    assert p.state == "manual_pending" and p.in_doubt
    primary = (await env.attempts(sale_id))[0]
    assert primary.state in ("in_doubt", "reconciling") and primary.overridden_by == env.setup.supervisor_id
    p = await orch.confirm_manual(
        env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "QW12ER", "9876", "Visa", "debito"
    )
    assert p.paid and p.paid_via == "backup"
    async with env.db.reader() as s:
        (event,) = (await s.execute(select(FallbackEvent))).scalars()
        assert event.override and "posible doble cobro" in event.reason
        audit = (await s.execute(select(AuditEvent).where(AuditEvent.action == "payment.override"))).scalar_one()
        assert "posible doble cobro" in audit.payload["reason"]
    return sale_id, p


async def test_15_override_then_late_primary_approval_is_refunded_through_the_provider(env):
    orch = await env.orchestrator()
    sale_id, _ = await _override_then_paid_on_backup(env, orch)
    # Still reconciled; the terminal comes back and says the ticket was approved: a second charge, which caja
    # returns through the terminal at once.
    env.provider.set_default("status", None)
    primary = (await env.attempts(sale_id))[0]
    await env.until(orch, sale_id, lambda p: p.attempts[0].state == "refunded")
    assert env.provider.refunded == {primary.ticket: 9900} and env.provider.ledger == {}
    async with env.db.reader() as s:
        incident = (await s.execute(select(Incident))).scalar_one()
        assert incident.kind == "double_charge_suspected" and incident.attempt_id == primary.id
        assert incident.resolved and "automáticamente" in incident.resolution
        assert (await s.execute(select(Sale.paid_via).where(Sale.id == sale_id))).scalar_one() == "backup"
    async with env.db.session() as s:
        await sessions.close_session(
            s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
        )


async def test_15_a_duplicate_the_provider_cannot_refund_is_a_supervisor_task_that_blocks_the_close(env):
    orch = await env.orchestrator()
    sale_id, _ = await _override_then_paid_on_backup(env, orch)
    env.provider.set_default("refund", Step(kind=OutcomeKind.DECLINED, message="Anulación no permitida"))
    env.provider.set_default("status", None)
    await env.until(orch, sale_id, lambda p: p.refund_offered)
    primary = (await env.attempts(sale_id))[0]
    deadline = time.monotonic() + 5
    while not (primary.details or {}).get("refund_error") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        primary = (await env.attempts(sale_id))[0]
    p = await orch.poll(env.venue_id, sale_id)
    assert primary.state == "refund_due" and p.refund_offered == [primary.id] and p.paid_via == "backup"
    assert "no permitida" in primary.details["refund_error"]
    with pytest.raises(Conflict) as err:
        async with env.db.session() as s:
            await sessions.close_session(
                s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
            )
    assert err.value.code == "session.unresolved_payments" and "devolver" in err.value.message
    with pytest.raises(Forbidden):
        await orch.refund_attempt(env.venue_id, primary.id, env.setup.cashier_id)
    with pytest.raises(ValidationFailed):
        await orch.refund_attempt(env.venue_id, primary.id, env.setup.supervisor_id, by_hand=True, note="")
    # A supervisor authorizing a refund on another sale's screen cannot refund this sale's charge.
    with pytest.raises(NotFound):
        await orch.refund_attempt(
            env.venue_id,
            primary.id,
            env.setup.supervisor_id,
            by_hand=True,
            note="Anulado, voucher 1",
            sale_id=sale_id + 1,
        )
    assert (await env.attempts(sale_id))[0].state == "refund_due"
    p = await orch.refund_attempt(
        env.venue_id, primary.id, env.setup.supervisor_id, by_hand=True, note="Anulado en el terminal, voucher 443"
    )
    assert p.refund_offered == [] and (await env.attempts(sale_id))[0].state == "refunded"
    async with env.db.reader() as s:
        audit = (await s.execute(select(AuditEvent).where(AuditEvent.action == "payment.refunded"))).scalar_one()
        assert audit.payload["by_hand"] and "voucher 443" in audit.payload["note"]
    async with env.db.session() as s:
        await sessions.close_session(
            s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
        )


async def test_15_a_refund_the_terminal_never_answered_is_not_sent_again(env):
    """The duplicate's refund goes to the terminal and no answer comes back: caja cannot know whether the money
    was returned, so neither it nor the supervisor's "Anular en el proveedor" sends it again; the supervisor
    checks the terminal and records the return."""
    orch = await env.orchestrator()
    sale_id, _ = await _override_then_paid_on_backup(env, orch)
    env.provider.set_default("refund", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta del terminal"))
    env.provider.set_default("status", None)
    primary = (await env.attempts(sale_id))[0]

    async def unanswered():
        # Unanswered once the terminal's time for the refund is over (while it runs, it is "en curso").
        progress = await orch.poll(env.venue_id, sale_id)
        return progress if progress.refund_unanswered == [primary.id] else None

    await wait_until(unanswered, timeout_s=10, what="la anulación sin respuesta")
    async with env.db.reader() as s:
        (item,) = await supervisor_items(s, env.venue_id)
    assert item.refund_unanswered and item.kind == "return" and "no se envía de nuevo" in item.reason
    with pytest.raises(Conflict) as err:
        await orch.refund_attempt(env.venue_id, primary.id, env.setup.supervisor_id)
    assert err.value.code == "payment.refund_unanswered"
    assert env.provider.count("refund") == 1 and (await env.attempts(sale_id))[0].state == "refund_due"
    # The sale's screen says so instead of offering a refund button that can only be refused.
    progress = await orch.poll(env.venue_id, sale_id)
    assert progress.refund_offered == [primary.id] and progress.refund_unanswered == [primary.id]
    await orch.refund_attempt(
        env.venue_id, primary.id, env.setup.supervisor_id, by_hand=True, note="Anulada en el terminal, voucher 12"
    )
    assert (await env.attempts(sale_id))[0].state == "refunded" and env.provider.count("refund") == 1


# 16 ---------------------------------------------------------------------------------------------------
async def test_16_double_click_two_tabs_two_instances_one_active_attempt(patient_env):
    env = patient_env
    a = await env.orchestrator("inst-a")
    b = await env.orchestrator("inst-b")
    sale_id = await env.sale()
    env.provider.set_default("charge", Step(delay_s=0.2))
    results = await asyncio.gather(
        *[orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id) for orch in (a, a, b, b, a, b)],
        return_exceptions=True,
    )
    # A click that arrives after the approval is told the sale is paid; every other one sees the same attempt.
    late = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, Conflict) and r.code == "sale.already_paid" for r in late), late
    assert len({r.attempt_id for r in results if not isinstance(r, Exception)}) == 1
    done = await env.settle(a, sale_id)
    assert done.paid, (done.state, done.message, env.provider.calls, env.provider.ledger)
    assert len(await env.attempts(sale_id)) == 1 and env.provider.count("charge") == 1
    assert len(env.provider.ledger) == 1


# 17 ---------------------------------------------------------------------------------------------------
async def test_17_second_register_on_the_same_terminal_gets_busy_at_once(env):
    orch = await env.orchestrator()
    async with env.db.session() as s:
        other = await registers.create_register(
            s,
            venue_id=env.venue_id,
            registry=env.registry,
            actor_id=env.setup.admin_id,
            data=registers.RegisterInput(
                code="CAJA2",
                name="Caja 2",
                primary_provider="fake",
                backup_provider="fakebackup",
                policy=(await registers.get_register(s, env.venue_id, env.setup.register_id)).policy,
            ),
        )
        s.add(
            BackupPhone(
                venue_id=env.venue_id, name="Celular 2", identifier="tel-2", register_id=other.id, available=True
            )
        )
        await s.flush()
        session2 = await sessions.open_session(
            s,
            venue_id=env.venue_id,
            register_id=other.id,
            user_id=env.setup.supervisor_id,
            initial_cash=0,
            open_key="apertura-2",
        )
    sale1 = await env.sale()
    sale2 = await env.sale(session_id=session2.id)
    env.provider.script("charge", Step(delay_s=0.8))  # busy long enough to be seen; max wait is 1.25 s here
    await orch.start_payment(env.venue_id, sale1, env.setup.cashier_id)
    await wait_until(lambda: env.provider.in_flight == 1, timeout_s=5, what="the first charge on the terminal")
    with pytest.raises(Busy) as err:
        await orch.start_payment(env.venue_id, sale2, env.setup.cashier_id)
    # Refused at once: while the first charge is still on the terminal, not after waiting for it to end.
    assert env.provider.in_flight == 1 and "Terminal ocupado" in err.value.message
    assert await env.attempts(sale2) == []
    p1 = await env.settle(orch, sale1)
    assert p1.paid, (p1.state, p1.message, env.provider.calls)
    await orch.start_payment(env.venue_id, sale2, env.setup.cashier_id)  # free again
    assert (await env.settle(orch, sale2)).paid
    assert env.provider.max_in_flight == 1


async def test_17_lease_of_a_dead_instance_is_taken_over_once_its_beat_stands_still(env):
    orch = await env.orchestrator(worker_interval_s=3600)  # the test drives the worker
    async with env.db.session() as s:
        s.add(
            DeviceLease(
                device_key="fake:fake-1",
                attempt_id=None,
                owner="muerta",
                acquired_at=env.clock.now(),
                expires_at=env.clock.now(),
                token="t" * 32,
                beat=7,
            )
        )
    sale_id = await env.sale()
    await orch.run_once()  # the worker sees the lease
    env.clock.jump(3 * 3600)  # a wall-clock step is not time passing: the holder may be alive
    with pytest.raises(Busy):
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    for _ in range(5):  # its beat stands still for the lease's time while this instance keeps looking
        env.clock.advance(orch.leases.ttl_s / 4)
        await orch.run_once()
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.settle(orch, sale_id)
    assert p.paid, (p.state, p.message, env.provider.calls)


# 18 ---------------------------------------------------------------------------------------------------
async def test_18_close_refused_while_an_attempt_is_unresolved(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(4500)
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(orch, sale_id, lambda p: p.in_doubt)
    (attempt,) = await env.attempts(sale_id)
    async with env.db.reader() as s:
        lines = await unresolved_attempt_summaries(s, env.session_id)
    assert len(lines) == 1 and f"#{attempt.id}" in lines[0] and "$4.500" in lines[0]
    with pytest.raises(Conflict) as err:
        async with env.db.session() as s:
            await sessions.close_session(
                s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
            )
    assert err.value.code == "session.unresolved_payments" and f"#{attempt.id}" in err.value.message
    env.provider.set_default("status", None)  # the terminal answers: never charged
    await env.until(orch, sale_id, lambda p: not p.in_doubt)
    async with env.db.session() as s:
        assert await unresolved_attempt_summaries(s, env.session_id) == []
        await sessions.close_session(
            s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
        )


# 23 ---------------------------------------------------------------------------------------------------
async def test_23_clock_jump_during_a_sale_causes_no_timeout_or_fallback(any_db):
    from .conftest import build_env

    env = await build_env(any_db, speed=1.0)
    orch = await env.orchestrator()
    try:
        sale_id = await env.sale()
        env.provider.script("charge", Step(delay_s=1.0))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.until(orch, sale_id, lambda p: p.state == "awaiting")
        env.clock.jump(3 * 3600)  # NTP fixes the wall clock by hours
        p = await orch.poll(env.venue_id, sale_id)
        assert p.seconds_left is not None and 3 <= p.seconds_left <= 5 and not p.backup_offered
        env.clock.jump(-6 * 3600)
        await orch.run_once()  # the worker sees a wildly different wall clock: no orphan handling
        done = await env.settle(orch, sale_id)
        assert done.paid and env.provider.count("cancel") == 0 and env.provider.count("status") == 0
    finally:
        await orch.stop()


# 28 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_total", [0, -500, 10**12])
async def test_28_bad_amounts_are_rejected_before_sending(env, bad_total):
    orch = await env.orchestrator()
    sale_id = await env.sale()
    async with env.db.session() as s:  # a row written by hand (old data, manual fix): still never sent
        await s.execute(update(Sale).where(Sale.id == sale_id).values(total=bad_total))
    with pytest.raises(ValidationFailed):
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert env.provider.calls == [] and await env.attempts(sale_id) == []


async def test_28_amount_under_the_providers_minimum_is_rejected(env):
    env.provider.min_amount = 1000
    orch = await env.orchestrator()
    sale_id = await env.sale(500)
    with pytest.raises(ValidationFailed) as err:
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert "$1.000" in err.value.message
    with pytest.raises(ValidationFailed):
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id, method="cheque")
    assert env.provider.calls == [] and await env.attempts(sale_id) == []
    env.provider.min_amount = 1


async def test_other_venue_cannot_see_or_pay_the_sale(env):
    from caja_core.errors import NotFound

    orch = await env.orchestrator()
    sale_id = await env.sale()
    with pytest.raises(NotFound):
        await orch.start_payment(env.venue_id + 1000, sale_id, env.setup.cashier_id)
    with pytest.raises(NotFound):
        await orch.poll(env.venue_id + 1000, sale_id)
    assert isinstance(orch, PaymentOrchestrator)


async def test_a_terminal_with_an_attempt_in_doubt_takes_no_new_sale_until_reconciled(env):
    orch = await env.orchestrator()
    first = await env.sale()
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=False))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    await orch.start_payment(env.venue_id, first, env.setup.cashier_id)
    await env.until(orch, first, lambda p: p.in_doubt)
    charges = env.provider.count("charge")
    second = await env.sale()
    p = await orch.start_payment(env.venue_id, second, env.setup.cashier_id)
    assert p.state == "failed_not_sent" and p.backup_offered and "sin resolver" in p.message
    assert env.provider.count("charge") == charges  # nothing sent while the first is in doubt
    env.provider.set_default("status", None)  # the terminal is back: never charged
    await env.until(orch, first, lambda p: not p.in_doubt)
    third = await env.sale()
    await orch.start_payment(env.venue_id, third, env.setup.cashier_id)
    assert (await env.settle(orch, third)).paid and env.provider.count("charge") == charges + 1


async def test_a_new_card_sale_goes_on_when_the_check_it_triggers_clears_the_payment_in_doubt(env):
    """The terminal is back and the reconciliation's next turn is far away: the new card sale asks about the
    earlier payment in doubt at once and, when the answer clears it, is sent in the same tap (never refused
    "cobro sin resolver" for a payment that was cleared that same second)."""
    # The check is given 10 real seconds (this clock runs 4× faster): on a loaded machine the answer that clears
    # the earlier payment may take more than the default's one real second, and the sale would be refused.
    orch = await env.orchestrator(reconcile_backoff_s=(600.0, 600.0), pre_sale_check_s=40.0)
    first = await env.sale()
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=False))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    await orch.start_payment(env.venue_id, first, env.setup.cashier_id)
    await env.until(orch, first, lambda p: p.in_doubt)
    env.provider.set_default("status", None)  # the terminal is back; it never charged the first sale
    charges = env.provider.count("charge")
    second = await env.sale()
    p = await orch.start_payment(env.venue_id, second, env.setup.cashier_id)
    assert "sin resolver" not in (p.message or "")
    assert (await env.settle(orch, second)).paid and env.provider.count("charge") == charges + 1
    first_progress = await orch.poll(env.venue_id, first)
    assert first_progress.state == "failed_not_sent" and not first_progress.paid


async def test_a_new_card_sale_is_never_sent_while_the_earlier_payment_was_charged_and_not_yet_known(env):
    """The check finds the earlier payment charged: that sale is paid, and the new one goes on once (one
    charge each, nothing sent twice)."""
    orch = await env.orchestrator(reconcile_backoff_s=(600.0, 600.0), pre_sale_check_s=40.0)
    first = await env.sale()
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    await orch.start_payment(env.venue_id, first, env.setup.cashier_id)
    await env.until(orch, first, lambda p: p.in_doubt)
    env.provider.set_default("status", None)  # back: its ledger shows the first sale charged
    second = await env.sale()
    await orch.start_payment(env.venue_id, second, env.setup.cashier_id)
    assert (await env.settle(orch, second)).paid
    assert (await orch.poll(env.venue_id, first)).paid
    assert env.provider.count("charge") == 2
