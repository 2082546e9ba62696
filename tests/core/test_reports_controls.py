"""The owner sees the controls: voids paid and unpaid (who, when, why, who authorized), cash movements,
handovers, supervisor authorizations and a per-cashier summary, in the session and jornada reports."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from caja_core.audit.models import AuditEvent
from caja_core.payments.models import PaymentAttempt
from caja_core.permissions import Action
from caja_core.permissions.service import authorize
from caja_core.reports import service as reports
from caja_core.reports.controls import controls
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.sessions.models import CashSession
from caja_core.testing.factories import SUPERVISOR_PIN
from caja_core.users import service as users

from .conftest import open_session


async def _sale(db, st, session_id, cashier_id, product, *, pay=True):
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session_id,
            cashier_id=cashier_id,
            items=[sales.ItemInput(product_id=st.products[product])],
            idempotency_key=str(uuid.uuid4()),
        )
        if pay:
            sale = await sales.pay_cash(
                s, venue_id=st.venue_id, sale_id=sale.id, cash_received=None, user_id=cashier_id
            )
        return sale


async def test_a_night_of_controls_in_the_jornada_report(any_db, setup):
    st = setup
    async with any_db.session() as s:
        diego = (
            await users.create_user(
                s, venue_id=st.venue_id, username="diego", display_name="Diego", role="cashier", secret="305718"
            )
        ).id
    sess = await open_session(any_db, st, initial_cash=50_000)
    unpaid = await _sale(any_db, st, sess.id, st.cashier_id, "Agua", pay=False)
    async with any_db.session() as s:
        await sales.cancel_sale(
            s, venue_id=st.venue_id, sale_id=unpaid.id, user_id=st.cashier_id, reason="Cliente se fue"
        )
    paid = await _sale(any_db, st, sess.id, st.cashier_id, "Piscola")
    grant = await authorize(
        any_db,
        venue_id=st.venue_id,
        action=Action.VOID_PAID,
        actor_id=st.cashier_id,
        code=SUPERVISOR_PIN,
        sale_id=paid.id,
    )
    async with any_db.session() as s:
        await sales.cancel_sale(
            s,
            venue_id=st.venue_id,
            sale_id=paid.id,
            user_id=st.cashier_id,
            reason="Trago mal hecho",
            authorization_id=grant,
        )
    await _sale(any_db, st, sess.id, st.cashier_id, "Cerveza")
    grant = await authorize(
        any_db,
        venue_id=st.venue_id,
        action=Action.CASH_OUT,
        actor_id=st.cashier_id,
        code=SUPERVISOR_PIN,
        session_id=sess.id,
        amount=30_000,
    )
    async with any_db.session() as s:
        await sessions.add_cash_movement(
            s,
            venue_id=st.venue_id,
            session_id=sess.id,
            kind="out",
            amount=30_000,
            reason="Caja fuerte",
            user_id=st.cashier_id,
            authorization_id=grant,
        )
    grant = await authorize(
        any_db, venue_id=st.venue_id, action=Action.TAKE_OVER, actor_id=diego, code=SUPERVISOR_PIN, session_id=sess.id
    )
    async with any_db.session() as s:  # 50 000 + 3 500 − 30 000 = 23 500 expected; 22 000 counted
        await sessions.take_over(
            s,
            venue_id=st.venue_id,
            session_id=sess.id,
            user_id=diego,
            counted={"20000": 1, "2000": 1},
            authorization_id=grant,
        )
    await _sale(any_db, st, sess.id, diego, "Piscola")
    async with any_db.session() as s:  # 22 000 + 6 000 counted: Diego is square
        await sessions.close_session(
            s, venue_id=st.venue_id, session_id=sess.id, user_id=diego, counted={"20000": 1, "5000": 1, "1000": 3}
        )
        report = await reports.jornada_report(s, st.venue_id, st.jornada_id)
        session_report = await reports.session_report(s, st.venue_id, sess.id)

    k = report.controls
    assert [(v.reason, v.was_paid, v.voided_by, v.authorized_by) for v in k.voids] == [
        ("Cliente se fue", False, "Cajera", None),
        ("Trago mal hecho", True, "Cajera", "Supervisora"),
    ]
    assert [(m.kind, m.amount, m.by, m.authorized_by) for m in k.movements] == [
        ("out", 30_000, "Cajera", "Supervisora")
    ]
    assert [(h.from_name, h.to_name, h.difference, h.authorized_by) for h in k.handovers] == [
        ("Cajera", "Diego", -1_500, "Supervisora")
    ]
    assert [(a.action, a.requested_by, a.authorized_by, a.used) for a in k.authorizations] == [
        ("void_paid", "Cajera", "Supervisora", True),
        ("cash_out", "Cajera", "Supervisora", True),
        ("take_over", "Diego", "Supervisora", True),
    ]
    by_name = {c.name: c for c in k.cashiers}
    cajera, diego_line = by_name["Cajera"], by_name["Diego"]
    assert (cajera.sales_count, cajera.sales_total, cajera.voids_count, cajera.paid_voids_count) == (1, 3_500, 2, 1)
    assert (cajera.cash_out_total, cajera.difference) == (30_000, -1_500)
    assert (diego_line.sales_count, diego_line.sales_total, diego_line.difference) == (1, 6_000, 0)
    assert report.sessions[0].cashier_name == "Cajera" and report.sessions[0].holder_name == "Diego"
    assert session_report.controls.voids == k.voids
    csv = reports.jornada_csv(report)
    assert "Cliente se fue" in csv and "Trago mal hecho" in csv and "Supervisora" in csv


async def test_refunded_and_manual_card_payments_say_who_and_when(any_db, setup):
    """Refunds name who returned the money and when (from the audit), else when the attempt ended; manual
    backup payments name the cashier who confirmed them."""
    st = setup
    sess = await open_session(any_db, st)
    sale = await _sale(any_db, st, sess.id, st.cashier_id, "Piscola", pay=False)
    ended = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    returned = ended + timedelta(minutes=5)
    async with any_db.session() as s:
        attempts = []
        for n, (state, by) in enumerate((("refunded", None), ("refunded", None), ("approved_manual", st.cashier_id))):
            attempt = PaymentAttempt(
                venue_id=st.venue_id,
                sale_id=sale.id,
                session_id=sess.id,
                register_id=st.register_id,
                provider_id="fake",
                device_key="fake:1",
                role="primary",
                amount=6000,
                ticket=f"T{n}",
                state=state,
                active=False,
                authorization_code=f"AUT{n}",
                last4="4242",
                confirmed_by=by,
                created_at=ended - timedelta(minutes=1),
                finished_at=ended + timedelta(minutes=n),
            )
            s.add(attempt)
            attempts.append(attempt)
        await s.flush()
        s.add(
            AuditEvent(
                venue_id=st.venue_id,
                user_id=st.supervisor_id,
                action="payment.refunded",
                entity="payment_attempt",
                entity_id=str(attempts[0].id),
                created_at=returned,
            )
        )
    async with any_db.session() as s:
        k = await controls(s, st.venue_id, select(CashSession.id).where(CashSession.id == sess.id))
    async with any_db.session() as s:
        names = await users.user_names(s, st.venue_id)
    assert [(r.attempt_id, r.state, r.authorization_code, r.by, r.at) for r in k.refunds] == [
        (attempts[0].id, "refunded", "AUT0", names[st.supervisor_id], returned),
        (attempts[1].id, "refunded", "AUT1", None, ended + timedelta(minutes=1)),
    ]
    assert [(m.attempt_id, m.state, m.last4, m.by, m.at) for m in k.manual_payments] == [
        (attempts[2].id, "approved_manual", "4242", names[st.cashier_id], ended + timedelta(minutes=2))
    ]
    assert {(r.sale_id, r.session_id, r.provider_id, r.amount) for r in k.refunds + k.manual_payments} == {
        (sale.id, sess.id, "fake", 6000)
    }
