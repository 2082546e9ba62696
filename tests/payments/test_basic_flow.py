"""The everyday paths: approve, decline, terminal unavailable → backup on the phone."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from caja_core.audit.models import AuditEvent
from caja_core.errors import Conflict, NotFound, ValidationFailed
from caja_core.providers import OutcomeKind
from caja_core.sessions.models import CashSession, FallbackEvent
from caja_core.testing.fake import Step


async def test_card_payment_approved_pays_the_sale_once(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(12500)
    env.provider.script("charge", Step(delay_s=0.05, progress=["Inserte o acerque tarjeta"]))
    progress = await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert progress.state in ("created", "sending", "awaiting") and not progress.paid
    seen = await env.until(orch, sale_id, lambda p: p.message == "Inserte o acerque tarjeta" or p.paid)
    done = await env.settle(orch, sale_id)
    assert done.paid and done.paid_via == "primary" and done.state == "approved", (
        done.state,
        done.message,
        env.provider.calls,
    )
    assert seen.message == "Inserte o acerque tarjeta" or seen.paid
    (attempt,) = await env.attempts(sale_id)
    assert attempt.last4 == "4242" and attempt.authorization_code == "A1B2C3" and attempt.sent_at is not None
    assert env.provider.ledger == {attempt.ticket: 12500}
    async with env.db.reader() as s:
        session = await s.get(CashSession, env.session_id)
        assert session.primary_count == 1 and session.card_sales_total == 12500
    # The same Pay again: the sale is paid, nothing is sent.
    with pytest.raises(Conflict):
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert env.provider.count("charge") == 1
    assert "attempt_started" in env.events.kinds() and "approved" in env.events.kinds()


async def test_payment_events_reach_the_audit_log(env):
    orch = await env.orchestrator()
    sale_id = await env.sale()
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.settle(orch, sale_id)
    await orch.stop()
    env.orchestrators.remove(orch)
    async with env.db.reader() as s:
        actions = set((await s.execute(select(AuditEvent.action))).scalars())
    assert {"payment.attempt_started", "payment.approved"} <= actions


async def test_plain_decline_does_not_offer_backup_but_listed_code_does(patient_env):
    env = patient_env
    orch = await env.orchestrator()
    sale_id = await env.sale()
    env.provider.script("charge", Step(kind=OutcomeKind.DECLINED, code="05", message="Fondos insuficientes"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.settle(orch, sale_id)
    assert p.state == "declined" and not p.backup_offered and p.message == "Fondos insuficientes"
    with pytest.raises(Conflict) as err:
        await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    assert err.value.code == "payment.backup_not_offered"
    # Retry on the terminal: a listed decline code (51) offers the backup.
    env.provider.script("charge", Step(kind=OutcomeKind.DECLINED, code="51", message="Tarjeta no soportada"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.until(orch, sale_id, lambda p: p.backup_offered)
    assert "Rechazo" in p.backup_reason


async def test_unavailable_terminal_offers_backup_and_manual_confirmation_pays(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(8000)
    env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Puerto no encontrado"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.until(orch, sale_id, lambda p: p.backup_offered)
    assert p.state == "failed_not_sent" and "no está disponible" in p.backup_reason
    p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    assert p.state == "manual_pending" and p.manual is not None
    assert p.manual.amount == 8000 and p.manual.phone_name == "Celular 1" and p.manual.reference
    # Malformed references are rejected, nothing changes.
    for code, last4 in [("", "1234"), ("12345", "1234"), ("ABC12!", "1234"), ("ABC123", "123"), ("ABC123", "12a4")]:
        with pytest.raises(ValidationFailed):
            await orch.confirm_manual(
                env.venue_id, p.manual.attempt_id, env.setup.cashier_id, code, last4, "Visa", "debito"
            )
    assert not (await orch.poll(env.venue_id, sale_id)).paid
    done = await orch.confirm_manual(
        env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "ab12cd", "4321", "Visa", "crédito"
    )
    assert done.paid and done.paid_via == "backup" and done.state == "approved_manual"
    again = await orch.confirm_manual(
        env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "AB12CD", "4321", "Visa", "credito"
    )
    assert again.paid
    async with env.db.reader() as s:
        session = await s.get(CashSession, env.session_id)
        assert (session.primary_count, session.backup_count) == (0, 1)
        (fallback,) = (await s.execute(select(FallbackEvent))).scalars()
        assert (fallback.from_provider, fallback.to_provider, fallback.override) == ("fake", "fakebackup", False)
        assert fallback.user_id == env.setup.cashier_id


async def test_a_backup_confirmation_sent_for_another_sale_is_refused(env):
    """Found: the POS confirmed a backup phone charge by the attempt number alone, whatever sale it was posted
    for, so a cashier could mark a sale of a drawer they do not hold as paid from their own sale's screen."""
    orch = await env.orchestrator()
    sale_id = await env.sale(8000)
    other_sale = await env.sale(3000)
    env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Puerto no encontrado"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(orch, sale_id, lambda p: p.backup_offered)
    p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    with pytest.raises(NotFound) as err:
        await orch.confirm_manual(
            env.venue_id,
            p.manual.attempt_id,
            env.setup.cashier_id,
            "AB12CD",
            "4321",
            "Visa",
            "debito",
            sale_id=other_sale,
        )
    assert err.value.code == "payment.manual_other_sale"
    assert not (await orch.poll(env.venue_id, sale_id)).paid
    done = await orch.confirm_manual(
        env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "AB12CD", "4321", "Visa", "debito", sale_id=sale_id
    )
    assert done.paid and done.paid_via == "backup"


async def test_a_backup_phone_charge_confirmed_after_a_cancel_pays_the_waiting_sale(env):
    """Found: with the backup phone's form open in a second tab, a cancel in the first tab made the phone's real
    charge unconfirmable: the screen said "No se cobró nada" to the cashier typing its authorization code."""
    orch = await env.orchestrator()
    sale_id = await env.sale(8000)
    env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Puerto no encontrado"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(orch, sale_id, lambda p: p.backup_offered)
    p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    cancelled = await orch.cancel(env.venue_id, sale_id, env.setup.cashier_id)
    assert cancelled.state == "cancelled" and not cancelled.paid
    done = await orch.confirm_manual(
        env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "AB12CD", "4321", "Visa", "debito", sale_id=sale_id
    )
    assert done.paid and done.paid_via == "backup" and done.state == "approved_manual"
    async with env.db.reader() as s:
        session = await s.get(CashSession, env.session_id)
        assert (session.primary_count, session.backup_count) == (0, 1)


async def test_duplicate_authorization_code_in_jornada_raises_incident(env):
    from caja_core.audit.models import Incident

    orch = await env.orchestrator()
    codes = []
    for _ in range(2):
        sale_id = await env.sale(5000)
        env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.until(orch, sale_id, lambda p: p.backup_offered)
        p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
        codes.append(p.manual.reference)
        await orch.confirm_manual(
            env.venue_id, p.manual.attempt_id, env.setup.cashier_id, "ZZ9999", "1111", "Mastercard", "debito"
        )
    assert codes[0] != codes[1]
    async with env.db.reader() as s:
        kinds = list((await s.execute(select(Incident.kind))).scalars())
    assert kinds == ["duplicate_authorization"]


async def test_cancel_before_the_terminal_answers(env):
    orch = await env.orchestrator()
    sale_id = await env.sale()
    env.provider.script("charge", Step(hang=True))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(orch, sale_id, lambda p: p.state == "awaiting")
    started = time.monotonic()
    p = await orch.cancel(env.venue_id, sale_id, env.setup.cashier_id)
    assert p.can_cancel is True or p.state != "awaiting"
    p = await env.settle(orch, sale_id)
    assert p.state == "failed_not_sent" and not p.paid and not p.backup_offered
    assert time.monotonic() - started < 3
    calls = [m for m, _ in env.provider.calls]
    assert calls.index("cancel") < calls.index("status")
    assert env.provider.ledger == {}


async def test_start_payment_consults_select_provider_and_refuses_an_unconfigured_choice(env):
    from caja_core import hookimpl

    class Chooser:
        def __init__(self, answer):
            self.answer, self.seen = answer, []

        @hookimpl(tryfirst=True)
        def select_provider(self, intent, candidates, policy):
            self.seen.append((intent.id, list(candidates), policy.max_wait_s))
            return self.answer

    chooser = Chooser("cash")
    env.pm.register(chooser)
    orch = await env.orchestrator()
    sale_id = await env.sale()
    with pytest.raises(Conflict) as err:
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert err.value.code == "payment.provider_not_configured" and env.provider.calls == []
    assert chooser.seen == [(sale_id, ["fake"], 5)]
    chooser.answer = None  # no opinion: the default picks the register's primary
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert (await env.settle(orch, sale_id)).paid


async def test_cancel_from_another_instance_reaches_the_terminal(env):
    a = await env.orchestrator("inst-a")
    b = await env.orchestrator("inst-b")
    sale_id = await env.sale()
    env.provider.script("charge", Step(hang=True))
    await a.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(b, sale_id, lambda p: p.state == "awaiting")
    await b.cancel(env.venue_id, sale_id, env.setup.cashier_id)  # the other tab landed on the other instance
    p = await env.settle(a, sale_id)
    assert p.state == "failed_not_sent" and env.provider.count("cancel") == 1 and env.provider.ledger == {}


async def test_policy_requiring_a_supervisor_for_the_backup_is_enforced(any_db):
    from caja_core.errors import Forbidden

    from .conftest import build_env

    env = await build_env(any_db, policy={"require_supervisor": True})
    orch = await env.orchestrator()
    try:
        sale_id = await env.sale()
        env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.until(orch, sale_id, lambda p: p.backup_offered)
        with pytest.raises(Forbidden):
            await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
        p = await orch.start_backup(env.venue_id, sale_id, env.setup.supervisor_id)
        assert p.state == "manual_pending"
        p = await orch.cancel(env.venue_id, sale_id, env.setup.cashier_id)  # nothing charged on the phone
        assert p.state == "cancelled" and not p.paid
        async with env.db.session() as s:
            from caja_core.payments.service import unresolved_attempt_summaries

            assert await unresolved_attempt_summaries(s, env.session_id) == []
    finally:
        await orch.stop()


async def test_pending_at_the_provider_is_awaiting_not_in_doubt_until_status_answers(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(6000)
    env.provider.script(
        "charge", Step(kind=OutcomeKind.PENDING, message="Orden creada; esperando el pago", receipt=False)
    )
    env.provider.script("status", Step(kind=OutcomeKind.PENDING), Step(kind=OutcomeKind.APPROVED))
    p = await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    # Awaiting between the status checks (while one is asked, the attempt reads "reconciling" for a moment).
    p = await env.until(
        orch, sale_id, lambda p: p.message == "Orden creada; esperando el pago" and p.state == "awaiting"
    )
    assert not p.in_doubt and not p.paid
    with pytest.raises(Conflict):
        await orch.cancel(env.venue_id, sale_id, env.setup.cashier_id)
    other = await env.sale(1000)  # the pending order does not hold the register hostage
    await orch.start_payment(env.venue_id, other, env.setup.cashier_id)
    assert (await env.settle(orch, other)).paid
    done = await env.until(orch, sale_id, lambda p: p.paid)
    assert done.state == "approved" and env.provider.count("status") == 2


async def test_a_repeated_final_answer_is_applied_once(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(3000)
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert (await env.settle(orch, sale_id)).paid
    (attempt,) = await env.attempts(sale_id)
    approvals = env.events.kinds().count("approved")
    for _ in range(2):  # the terminal re-sends its answer; reconciliation asks again
        assert await orch.reconcile(attempt.id) == "approved"
    async with env.db.reader() as s:
        from caja_core.sessions.models import CashSession

        session = await s.get(CashSession, env.session_id)
    assert session.card_sales_total == 3000 and session.ticket_count == 1
    assert env.events.kinds().count("approved") == approvals and env.provider.count("status") == 0


async def test_integrated_backup_terminal_is_charged_like_the_primary(any_db):
    from caja_core.testing.fake import FakeSettings, ScriptableProvider

    from .conftest import build_env

    class SecondTerminal(ScriptableProvider):
        def device_key(self, settings: FakeSettings, register_code: str) -> str:
            return f"{self.id}:{register_code}"

    backup = SecondTerminal("fakebackup")
    env = await build_env(any_db, backup=backup)
    orch = await env.orchestrator()
    try:
        sale_id = await env.sale(9000)
        env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE))
        await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
        await env.until(orch, sale_id, lambda p: p.backup_offered)
        p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
        assert p.role == "backup" and p.manual is None
        done = await env.settle(orch, sale_id)
        assert done.paid and done.paid_via == "backup" and done.provider_id == "fakebackup"
        assert backup.count("charge") == 1 and len(backup.ledger) == 1 and env.provider.ledger == {}
    finally:
        await orch.stop()
