"""Who may do what with the money, enforced by the services: voids, cash movements, handovers, approvals and
the supervisor's authorization at the register (PIN or badge, throttled, used once)."""

import uuid

import pytest
from sqlalchemy import func, select

from caja_core.audit import service as audit
from caja_core.audit.models import AuditEvent
from caja_core.errors import AuthFailed, Forbidden, NotFound, RateLimited
from caja_core.permissions import TABLE, Action, Rule, decide
from caja_core.permissions.service import SupervisorRequired, authorize, require, set_controls
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import PIN, SUPERVISOR_PIN
from caja_core.users import service as users

from .conftest import open_session

OTHER_PIN = "305718"


async def second_cashier(db, st) -> int:
    async with db.session() as s:
        user = await users.create_user(
            s, venue_id=st.venue_id, username="diego", display_name="Diego", role="cashier", secret=OTHER_PIN
        )
    return user.id


async def sell(db, st, session_id, cashier_id, product="Piscola"):
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session_id,
            cashier_id=cashier_id,
            items=[sales.ItemInput(product_id=st.products[product])],
            idempotency_key=str(uuid.uuid4()),
        )
        return await sales.pay_cash(s, venue_id=st.venue_id, sale_id=sale.id, cash_received=None, user_id=cashier_id)


async def void(db, st, sale_id, user_id, grant=None):
    async with db.session() as s:
        return await sales.cancel_sale(
            s, venue_id=st.venue_id, sale_id=sale_id, user_id=user_id, reason="Cliente devolvió", authorization_id=grant
        )


async def count_audit(db, action):
    async with db.session() as s:
        return await s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


def test_the_permission_table():
    assert decide("cashier", Action.SELL) is Rule.ALLOW
    assert decide("cashier", Action.VOID_UNPAID) is Rule.ALLOW
    assert decide("cashier", Action.VOID_PAID) is Rule.SUPERVISOR
    assert decide("supervisor", Action.VOID_PAID) is Rule.ALLOW
    assert decide("cashier", Action.CASH_OUT, amount=20_000) is Rule.ALLOW
    assert decide("cashier", Action.CASH_OUT, amount=20_001) is Rule.SUPERVISOR
    assert decide("cashier", Action.TAKE_OVER) is Rule.SUPERVISOR
    assert decide("intruso", Action.SELL) is Rule.DENY
    assert set(TABLE) == set(Action)


async def test_a_cashier_voids_a_paid_sale_only_with_a_supervisors_pin(any_db, setup):
    """Found: any cashier could void any paid cash sale, with no supervisor."""
    sess = await open_session(any_db, setup, initial_cash=0)
    sale = await sell(any_db, setup, sess.id, setup.cashier_id)
    with pytest.raises(SupervisorRequired):
        await void(any_db, setup, sale.id, setup.cashier_id)
    with pytest.raises(AuthFailed):  # the cashier's own PIN authorizes nothing
        await authorize(
            any_db,
            venue_id=setup.venue_id,
            action=Action.VOID_PAID,
            actor_id=setup.cashier_id,
            code=PIN,
            sale_id=sale.id,
        )
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.VOID_PAID,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        sale_id=sale.id,
    )
    voided = await void(any_db, setup, sale.id, setup.cashier_id, grant)
    assert voided.status == "cancelled" and voided.cancel_authorized_by == setup.supervisor_id
    async with any_db.session() as s:
        events = await audit.list_audit(s, setup.venue_id, action_prefix="authorization.granted")
    assert events[0].payload["requested_by"] == setup.cashier_id
    assert events[0].payload["authorized_by"] == setup.supervisor_id


async def test_an_authorization_is_used_once_and_only_for_what_it_was_given(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=0)
    first = await sell(any_db, setup, sess.id, setup.cashier_id)
    second = await sell(any_db, setup, sess.id, setup.cashier_id)
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.VOID_PAID,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        sale_id=first.id,
    )
    with pytest.raises(SupervisorRequired):  # another sale
        await void(any_db, setup, second.id, setup.cashier_id, grant)
    await void(any_db, setup, first.id, setup.cashier_id, grant)
    with pytest.raises(SupervisorRequired):  # replayed
        await void(any_db, setup, second.id, setup.cashier_id, grant)
    async with any_db.session() as s:  # another action
        with pytest.raises(SupervisorRequired):
            await require(
                s,
                venue_id=setup.venue_id,
                action=Action.TAKE_OVER,
                actor_id=setup.cashier_id,
                session_id=sess.id,
                authorization_id=grant,
            )


async def test_wrong_supervisor_codes_are_counted_and_then_blocked(any_db, setup):
    """Found: the forms that check a supervisor's password had no throttle (60 guesses in 8.5 s)."""
    sess = await open_session(any_db, setup, initial_cash=0)
    sale = await sell(any_db, setup, sess.id, setup.cashier_id)
    errors = []
    for code in ("100001", "100002", "100003", "100004", "100005", "100006", SUPERVISOR_PIN):
        with pytest.raises((AuthFailed, RateLimited)) as err:
            await authorize(
                any_db,
                venue_id=setup.venue_id,
                action=Action.VOID_PAID,
                actor_id=setup.cashier_id,
                code=code,
                sale_id=sale.id,
                address="10.0.0.3",
            )
        errors.append(type(err.value).__name__)
    assert errors == ["AuthFailed"] * 4 + ["RateLimited"] * 3  # the right PIN is refused too while blocked
    assert await count_audit(any_db, "authorization.failed") == 5


async def test_unknown_sale_is_404_before_any_code_is_checked(any_db, setup):
    with pytest.raises(NotFound):
        await authorize(
            any_db,
            venue_id=setup.venue_id,
            action=Action.VOID_PAID,
            actor_id=setup.cashier_id,
            code="100001",
            sale_id=999_999,
        )
    assert await count_audit(any_db, "authorization.failed") == 0


async def test_a_badge_code_authorizes_like_a_pin(sqlite_db, sqlite_setup):
    st = sqlite_setup
    async with sqlite_db.session() as s:
        await users.update_user(s, st.venue_id, st.supervisor_id, actor_id=st.admin_id, badge="0004471923AB")
    sess = await open_session(sqlite_db, st, initial_cash=0)
    sale = await sell(sqlite_db, st, sess.id, st.cashier_id)
    grant = await authorize(
        sqlite_db,
        venue_id=st.venue_id,
        action=Action.VOID_PAID,
        actor_id=st.cashier_id,
        code="0004471923AB",
        sale_id=sale.id,
    )
    assert (await void(sqlite_db, st, sale.id, st.cashier_id, grant)).cancel_authorized_by == st.supervisor_id


async def test_a_cashier_acts_only_in_a_session_they_hold(any_db, setup):
    """Found: any cashier could continue another cashier's open session and take cash out of it."""
    diego = await second_cashier(any_db, setup)
    sess = await open_session(any_db, setup, initial_cash=20_000)
    with pytest.raises(Forbidden) as err:
        async with any_db.session() as s:
            await sessions.resume_session(s, venue_id=setup.venue_id, register_id=setup.register_id, user_id=diego)
    assert err.value.code == "session.not_holder"
    with pytest.raises(Forbidden):
        async with any_db.session() as s:
            await sessions.add_cash_movement(
                s, venue_id=setup.venue_id, session_id=sess.id, kind="out", amount=5000, reason="retiro", user_id=diego
            )
    with pytest.raises(Forbidden):
        await sell(any_db, setup, sess.id, diego)
    with pytest.raises(Forbidden):
        async with any_db.session() as s:
            await sessions.close_session(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=diego, counted={"20000": 1}
            )
    mine = await sell(any_db, setup, sess.id, setup.cashier_id, "Agua")
    with pytest.raises(Forbidden):  # nor void someone else's unpaid or paid sale
        await void(any_db, setup, mine.id, diego)
    async with any_db.session() as s:
        assert (await sessions.get_session(s, setup.venue_id, sess.id)).cash_out_total == 0


async def test_a_handover_counts_the_drawer_and_attributes_later_sales(any_db, setup):
    """Found: the second cashier's sales were attributed to the first, and the close still balanced."""
    diego = await second_cashier(any_db, setup)
    sess = await open_session(any_db, setup, initial_cash=10_000)
    await sell(any_db, setup, sess.id, setup.cashier_id)  # 6 000 in cash: 16 000 expected
    with pytest.raises(SupervisorRequired):
        async with any_db.session() as s:
            await sessions.take_over(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=diego, counted={"10000": 1, "5000": 1}
            )
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.TAKE_OVER,
        actor_id=diego,
        code=SUPERVISOR_PIN,
        session_id=sess.id,
    )
    async with any_db.session() as s:  # 15 000 counted: the first cashier handed over 1 000 short
        handover = await sessions.take_over(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            user_id=diego,
            counted={"10000": 1, "5000": 1},
            authorization_id=grant,
        )
    assert (handover.expected_cash, handover.counted_cash, handover.difference) == (16_000, 15_000, -1_000)
    assert handover.from_user_id == setup.cashier_id and handover.authorized_by == setup.supervisor_id
    with pytest.raises(Forbidden):  # the first cashier's browser can no longer sell in it
        await sell(any_db, setup, sess.id, setup.cashier_id)
    later = await sell(any_db, setup, sess.id, diego, "Cerveza")
    assert later.cashier_id == diego
    async with any_db.session() as s:  # 15 000 + 3 500 counted: Diego's own part is square
        res = await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=diego, counted={"10000": 1, "5000": 1, "500": 7}
        )
        assert (res.difference, res.handover_difference, res.cashier_difference) == (-1_000, -1_000, 0)
        assert res.status == "closed"
        assert [h.to_user_id for h in await sessions.list_handovers(s, setup.venue_id, session_id=sess.id)] == [diego]


async def test_a_large_handover_difference_is_an_incident_of_the_jornada(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=10_000)
    async with any_db.session() as s:  # a supervisor takes over alone (their role allows it)
        await sessions.take_over(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.supervisor_id, counted={"5000": 1}
        )
        incidents = await audit.list_incidents(s, setup.venue_id, jornada_id=setup.jornada_id)
    assert [i.kind for i in incidents] == ["cash_difference"] and "-$5.000" in incidents[0].description


async def test_cash_out_above_the_venue_limit_needs_a_supervisor_for_that_amount(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=100_000)

    async def cash_out(amount, grant=None):
        async with any_db.session() as s:
            return await sessions.add_cash_movement(
                s,
                venue_id=setup.venue_id,
                session_id=sess.id,
                kind="out",
                amount=amount,
                reason="Retiro a caja fuerte",
                user_id=setup.cashier_id,
                authorization_id=grant,
            )

    await cash_out(20_000)
    with pytest.raises(SupervisorRequired):
        await cash_out(30_000)
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.CASH_OUT,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        session_id=sess.id,
        amount=30_000,
    )
    with pytest.raises(SupervisorRequired):  # more than what was authorized
        await cash_out(50_000, grant)
    out = await cash_out(30_000, grant)
    assert out.cash_out_total == 50_000
    async with any_db.session() as s:
        await set_controls(s, setup.venue_id, actor_id=setup.admin_id, cash_out_limit=0)
        movements = await sessions.list_cash_movements(s, setup.venue_id, sess.id)
    assert [m["authorized_by"] for m in movements] == [None, setup.supervisor_id]
    with pytest.raises(SupervisorRequired):  # the venue's threshold is read on every cash-out
        await cash_out(1_000)


async def test_the_cash_out_limit_adds_up_a_cashiers_withdrawals_in_the_session(any_db, setup):
    """Found: five withdrawals of $20.000 each took $100.000 out of a drawer with no supervisor."""
    sess = await open_session(any_db, setup, initial_cash=200_000)

    async def cash_out(amount, grant=None):
        async with any_db.session() as s:
            return await sessions.add_cash_movement(
                s,
                venue_id=setup.venue_id,
                session_id=sess.id,
                kind="out",
                amount=amount,
                reason="Retiro a caja fuerte",
                user_id=setup.cashier_id,
                authorization_id=grant,
            )

    await cash_out(15_000)
    await cash_out(5_000)
    with pytest.raises(SupervisorRequired):  # $20.000 already out without a supervisor
        await cash_out(1_000)
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.CASH_OUT,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        session_id=sess.id,
        amount=1_000,
    )
    out = await cash_out(1_000, grant)
    assert out.cash_out_total == 21_000
    with pytest.raises(SupervisorRequired):  # an authorized withdrawal does not reset the count
        await cash_out(1_000)
    async with any_db.session() as s:  # cash paid in does not raise the limit either
        await sessions.add_cash_movement(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            kind="in",
            amount=50_000,
            reason="Sencillo",
            user_id=setup.cashier_id,
        )
    with pytest.raises(SupervisorRequired):
        await cash_out(1_000)


async def test_nobody_approves_the_difference_of_a_drawer_they_hold(any_db, setup):
    async with any_db.session() as s:
        sess = await sessions.open_session(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            user_id=setup.supervisor_id,
            initial_cash=10_000,
            open_key="sup",
        )
        res = await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.supervisor_id, counted={"5000": 1}
        )
    assert res.status == "closing"
    with pytest.raises(Forbidden) as err:
        async with any_db.session() as s:
            await sessions.approve_close(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.supervisor_id, note="me lo apruebo"
            )
    assert err.value.code == "session.own_difference"
    async with any_db.session() as s:
        done = await sessions.approve_close(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.admin_id, note="Revisado con la supervisora"
        )
    assert done.status == "closed"


async def test_a_cashier_closes_with_a_difference_using_the_supervisors_pin(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=10_000)
    async with any_db.session() as s:
        await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={"5000": 1}
        )
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.APPROVE_DIFFERENCE,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        session_id=sess.id,
    )
    async with any_db.session() as s:
        await sessions.approve_close(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            user_id=setup.cashier_id,
            note="Vuelto mal entregado",
            authorization_id=grant,
        )
        closed = await sessions.get_session(s, setup.venue_id, sess.id)
    assert closed.status == "closed" and closed.approved_by == setup.supervisor_id


async def test_an_unpaid_void_is_the_holders_call_and_keeps_its_reason(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=0)
    async with any_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Agua"])],
            idempotency_key="u1",
        )
    voided = await void(any_db, setup, sale.id, setup.cashier_id)
    assert voided.status == "cancelled" and voided.cancel_reason == "Cliente devolvió"
    assert voided.cancel_authorized_by is None


async def test_incidents_filed_in_a_session_belong_to_its_jornada(any_db, setup):
    """Found: cashier incidents filed at the POS had no jornada, so the jornada and Z reports missed them."""
    sess = await open_session(any_db, setup)
    async with any_db.session() as s:
        await audit.open_incident(
            s,
            venue_id=setup.venue_id,
            kind="printer",
            description="Impresora sin papel",
            session_id=sess.id,
            register_id=setup.register_id,
            user_id=setup.cashier_id,
        )
        incidents = await audit.list_incidents(s, setup.venue_id, jornada_id=setup.jornada_id)
    assert [i.description for i in incidents] == ["Impresora sin papel"]


async def test_a_paid_sale_cannot_be_paid_in_cash_by_someone_else(any_db, setup):
    diego = await second_cashier(any_db, setup)
    sess = await open_session(any_db, setup, initial_cash=0)
    async with any_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Agua"])],
            idempotency_key="p1",
        )
    with pytest.raises(Forbidden):
        async with any_db.session() as s:
            await sales.pay_cash(s, venue_id=setup.venue_id, sale_id=sale.id, cash_received=None, user_id=diego)
    async with any_db.session() as s:
        assert (await sales.get_sale(s, setup.venue_id, sale.id)).status == "pending_payment"
