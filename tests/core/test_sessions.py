import asyncio

import pytest
from sqlalchemy import select, update

from caja_core.audit.models import AuditEvent
from caja_core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from caja_core.payments.models import PaymentAttempt
from caja_core.registers import service as registers
from caja_core.registers.models import BackupPhone
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup

from .conftest import cash_sale, count_rows, open_session


async def _open(db, st, **kw):
    async with db.session() as s:
        return await sessions.open_session(
            s, venue_id=st.venue_id, register_id=st.register_id, user_id=st.cashier_id, **kw
        )


async def test_open_is_idempotent_and_one_per_register(any_db, setup):
    first = await _open(any_db, setup, initial_cash=5000, open_key="abc")
    again = await _open(any_db, setup, initial_cash=5000, open_key="abc")
    assert again.id == first.id
    with pytest.raises(Conflict) as err:
        await _open(any_db, setup, initial_cash=5000, open_key="other")
    assert err.value.code == "session.already_open"
    assert await count_rows(any_db, "cash_sessions") == 1


async def test_open_with_count_by_denomination(any_db, setup):
    sess = await _open(any_db, setup, count={"10000": 2, "500": 4}, open_key="k")
    assert sess.initial_cash == 22000 and sess.initial_count == {"10000": 2, "500": 4}
    with pytest.raises(ValidationFailed):
        async with any_db.session() as s:
            await sessions.close_session(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={"7000": 1}
            )


@pytest.mark.parametrize("initial", [-100, 12.5, "12,5", "abc", True, 10**12])
async def test_open_rejects_bad_initial_cash_and_writes_nothing(sqlite_db, sqlite_setup, initial):
    with pytest.raises(ValidationFailed) as err:
        await _open(sqlite_db, sqlite_setup, initial_cash=initial, open_key="k")
    assert err.value.fields.get("initial_cash")
    assert await count_rows(sqlite_db, "cash_sessions") == 0


async def test_open_refused_without_jornada(sqlite_db):
    st = await make_setup(sqlite_db, open_jornada=False)
    with pytest.raises(Conflict) as err:
        await _open(sqlite_db, st, initial_cash=0, open_key="k")
    assert err.value.code == "jornada.none_open" and "jornada" in err.value.message


async def test_open_refused_in_maintenance_or_inactive(sqlite_db, sqlite_setup):
    async with sqlite_db.session() as s:
        await registers.set_operational_status(
            s,
            venue_id=sqlite_setup.venue_id,
            register_id=sqlite_setup.register_id,
            status="maintenance",
            actor_id=sqlite_setup.admin_id,
        )
    with pytest.raises(Conflict) as err:
        await _open(sqlite_db, sqlite_setup, initial_cash=0, open_key="k")
    assert err.value.code == "register.not_operational" and "mantención" in err.value.message
    assert await count_rows(sqlite_db, "cash_sessions") == 0


async def test_open_refused_unknown_register(sqlite_db, sqlite_setup):
    with pytest.raises(NotFound):
        async with sqlite_db.session() as s:
            await sessions.open_session(
                s,
                venue_id=sqlite_setup.venue_id,
                register_id=9999,
                user_id=sqlite_setup.cashier_id,
                initial_cash=0,
                open_key="k",
            )


async def test_open_refused_when_policy_backup_phones_missing(sqlite_db):
    st = await make_setup(sqlite_db, phones=1)
    with pytest.raises(Conflict) as err:
        await _open(sqlite_db, st, initial_cash=0, open_key="k")
    assert err.value.code == "session.backup_phones_missing" and "2 celular" in err.value.message
    async with sqlite_db.session() as s:
        s.add(BackupPhone(venue_id=st.venue_id, name="Extra", identifier="x-1", available=True))
    assert (await _open(sqlite_db, st, initial_cash=0, open_key="k")).status == "open"


async def test_cash_movements_enter_expected_cash(any_db, setup):
    sess = await _open(any_db, setup, initial_cash=10000, open_key="k")
    async with any_db.session() as s:
        await sessions.add_cash_movement(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            kind="in",
            amount=5000,
            reason="Sencillo extra",
            user_id=setup.cashier_id,
        )
        out = await sessions.add_cash_movement(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            kind="out",
            amount=3000,
            reason="Retiro a caja fuerte",
            user_id=setup.cashier_id,
        )
    assert out.cash_in_total == 5000 and out.cash_out_total == 3000
    with pytest.raises(Conflict):
        async with any_db.session() as s:
            await sessions.add_cash_movement(
                s,
                venue_id=setup.venue_id,
                session_id=sess.id,
                kind="out",
                amount=50000,
                reason="Demasiado",
                user_id=setup.cashier_id,
            )
    with pytest.raises(ValidationFailed):
        async with any_db.session() as s:
            await sessions.add_cash_movement(
                s,
                venue_id=setup.venue_id,
                session_id=sess.id,
                kind="in",
                amount=100,
                reason="",
                user_id=setup.cashier_id,
            )
    async with any_db.session() as s:
        res = await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={"10000": 1, "2000": 1}
        )
    assert res.expected_cash == 12000 and res.difference == 0


async def test_a_sale_left_unpaid_is_voided_at_the_close_and_the_owner_sees_it(any_db, setup):
    """A cart rung up and never paid does not survive the close; the owner's audit log names each such sale."""
    sess = await _open(any_db, setup, initial_cash=0, open_key="k")
    async with any_db.session() as s:
        left = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Cerveza"], quantity=2)],
            idempotency_key="left-unpaid",
        )
    async with any_db.session() as s:
        await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={}
        )
    async with any_db.reader() as s:
        sale = await sales.get_sale(s, setup.venue_id, left.id)
        (row,) = (
            await s.scalars(
                select(AuditEvent).where(AuditEvent.action == "sale.cancelled", AuditEvent.entity_id == str(left.id))
            )
        ).all()
    assert sale.status == "cancelled" and sale.cancel_reason == "Venta sin pagar al cierre de caja"
    assert row.user_id == setup.cashier_id and row.payload["total"] == left.total and not row.payload["was_paid"]


async def test_blind_close_over_tolerance_needs_supervisor_note(any_db, setup):
    sess = await _open(any_db, setup, initial_cash=10000, open_key="k")
    await cash_sale(any_db, setup, sess.id, [sales.ItemInput(product_id=setup.products["Piscola"], quantity=2)])
    async with any_db.session() as s:
        res = await sessions.close_session(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            user_id=setup.cashier_id,
            counted={"10000": 2},
            note="faltan 2 mil",
        )
    assert (res.counted_cash, res.expected_cash, res.difference) == (20000, 22000, -2000)
    assert res.needs_approval and res.status == "closing"
    with pytest.raises(Conflict):  # no more sales while closing
        await cash_sale(any_db, setup, sess.id, [sales.ItemInput(product_id=setup.products["Agua"])])
    with pytest.raises(Forbidden):
        async with any_db.session() as s:
            await sessions.approve_close(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, note="yo mismo apruebo"
            )
    with pytest.raises(ValidationFailed):
        async with any_db.session() as s:
            await sessions.approve_close(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.supervisor_id, note=""
            )
    async with any_db.session() as s:
        done = await sessions.approve_close(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            user_id=setup.supervisor_id,
            note="Vuelto mal dado, conversado",
        )
    assert done.status == "closed"
    async with any_db.session() as s:
        closed = await sessions.get_session(s, setup.venue_id, sess.id)
        assert closed.approved_by == setup.supervisor_id and closed.counted_breakdown == {"10000": 2}
    with pytest.raises(Conflict) as err:
        async with any_db.session() as s:
            await sessions.close_session(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={"10000": 2}
            )
    assert err.value.code == "session.closed"


async def test_close_refused_while_a_payment_is_unresolved(any_db, setup):
    sess = await _open(any_db, setup, initial_cash=0, open_key="k")
    async with any_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Cerveza"])],
            idempotency_key="s1",
        )
        s.add(
            PaymentAttempt(
                venue_id=setup.venue_id,
                sale_id=sale.id,
                session_id=sess.id,
                register_id=setup.register_id,
                provider_id="fake",
                device_key="fake:t1",
                role="primary",
                amount=sale.total,
                ticket="101",
                state="in_doubt",
                active=True,
            )
        )
    with pytest.raises(Conflict) as err:
        async with any_db.session() as s:
            await sessions.close_session(
                s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={}
            )
    assert err.value.code == "session.unresolved_payments"
    assert "ticket 101" in err.value.message and "en duda" in err.value.message
    async with any_db.session() as s:
        assert (await sessions.get_session(s, setup.venue_id, sess.id)).status == "open"
        await s.execute(update(PaymentAttempt).values(state="failed_not_sent", active=False))
    async with any_db.session() as s:
        res = await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=sess.id, user_id=setup.cashier_id, counted={}
        )
    assert res.status == "closed"
    async with any_db.session() as s:  # the unpaid cart did not survive the close
        assert (await sales.get_sale(s, setup.venue_id, sale.id)).status == "cancelled"


@pytest.mark.postgres
async def test_twenty_concurrent_opens_make_exactly_one_session(pg_db):
    st = await make_setup(pg_db)

    async def attempt(n):
        try:
            async with pg_db.session() as s:
                return await sessions.open_session(
                    s,
                    venue_id=st.venue_id,
                    register_id=st.register_id,
                    user_id=st.cashier_id,
                    initial_cash=1000,
                    open_key=f"k{n}",
                )
        except Conflict as exc:
            return exc

    results = await asyncio.gather(*(attempt(n) for n in range(20)))
    opened = [r for r in results if not isinstance(r, Conflict)]
    assert len(opened) == 1
    assert all(r.code == "session.already_open" for r in results if isinstance(r, Conflict))
    assert await count_rows(pg_db, "cash_sessions") == 1


@pytest.mark.postgres
async def test_twenty_concurrent_submits_of_one_sale_make_one_sale(pg_db):
    st = await make_setup(pg_db)
    sess = await open_session(pg_db, st)

    async def submit():
        async with pg_db.session() as s:
            return await sales.create_sale(
                s,
                venue_id=st.venue_id,
                session_id=sess.id,
                cashier_id=st.cashier_id,
                items=[sales.ItemInput(product_id=st.products["Cerveza"], quantity=3)],
                idempotency_key="same-click",
            )

    results = await asyncio.gather(*(submit() for _ in range(20)))
    assert len({r.id for r in results}) == 1 and results[0].total == 10500
    assert await count_rows(pg_db, "sales") == 1 and await count_rows(pg_db, "sale_items") == 1
