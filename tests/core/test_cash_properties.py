"""Whatever the cashier does, the drawer balances: expected = initial + cash sales − cancelled + in − out,
and the close difference is counted − expected."""

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caja_core.db.engine import Database
from caja_core.errors import Conflict
from caja_core.permissions import Action
from caja_core.permissions.service import authorize
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN, make_setup

actions = st.lists(
    st.one_of(
        st.tuples(st.just("sale"), st.sampled_from(["Cerveza", "Piscola", "Agua"]), st.integers(1, 5)),
        st.tuples(st.just("cancel"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("in"), st.integers(1, 50_000), st.just(0)),
        st.tuples(st.just("out"), st.integers(1, 50_000), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.integers(0, 100_000), steps=actions, counted_extra=st.integers(-5_000, 5_000))
def test_expected_cash_and_difference(sqlite_template, initial, steps, counted_extra):
    asyncio.run(_run(sqlite_template.fresh_url(), initial, steps, counted_extra))


async def _run(url, initial, steps, counted_extra):
    db = Database(url)
    try:
        stp = await make_setup(db)
        async with db.session() as s:
            sess = await sessions.open_session(
                s,
                venue_id=stp.venue_id,
                register_id=stp.register_id,
                user_id=stp.cashier_id,
                initial_cash=initial,
                open_key="k",
            )
        paid: list[tuple[int, int]] = []
        cash_sales = cancelled = cash_in = cash_out = 0
        alone = 0  # the cashier's cash-outs without a supervisor, which the venue's limit adds up
        for kind, a, b in steps:
            grant = None  # a cashier voids a paid sale, or takes out more than the limit, with a supervisor's PIN
            if kind == "cancel" and paid:
                grant = await authorize(
                    db,
                    venue_id=stp.venue_id,
                    action=Action.VOID_PAID,
                    actor_id=stp.cashier_id,
                    code=SUPERVISOR_PIN,
                    sale_id=paid[a % len(paid)][0],
                )
            elif kind == "out" and alone + a > 20_000:
                grant = await authorize(
                    db,
                    venue_id=stp.venue_id,
                    action=Action.CASH_OUT,
                    actor_id=stp.cashier_id,
                    code=SUPERVISOR_PIN,
                    session_id=sess.id,
                    amount=a,
                )
            async with db.session() as s:
                if kind == "sale":
                    sale = await sales.create_sale(
                        s,
                        venue_id=stp.venue_id,
                        session_id=sess.id,
                        cashier_id=stp.cashier_id,
                        idempotency_key=str(uuid.uuid4()),
                        items=[sales.ItemInput(product_id=stp.products[a], quantity=b)],
                    )
                    await sales.pay_cash(
                        s, venue_id=stp.venue_id, sale_id=sale.id, cash_received=None, user_id=stp.cashier_id
                    )
                    paid.append((sale.id, sale.total))
                    cash_sales += sale.total
                elif kind == "cancel" and paid:
                    sale_id, total = paid.pop(a % len(paid))
                    await sales.cancel_sale(
                        s,
                        venue_id=stp.venue_id,
                        sale_id=sale_id,
                        user_id=stp.cashier_id,
                        reason="prueba",
                        authorization_id=grant,
                    )
                    cancelled += total
                elif kind in ("in", "out"):
                    try:
                        await sessions.add_cash_movement(
                            s,
                            venue_id=stp.venue_id,
                            session_id=sess.id,
                            kind=kind,
                            amount=a,
                            reason="movimiento",
                            user_id=stp.cashier_id,
                            authorization_id=grant,
                        )
                    except Conflict:
                        assert kind == "out" and a > initial + cash_sales - cancelled + cash_in - cash_out
                        continue
                    if kind == "in":
                        cash_in += a
                    else:
                        cash_out += a
                        alone += a if grant is None else 0
        expected = initial + cash_sales - cancelled + cash_in - cash_out
        counted_total = max(0, expected + counted_extra)
        counted = {"10": counted_total // 10}
        async with db.session() as s:
            res = await sessions.close_session(
                s, venue_id=stp.venue_id, session_id=sess.id, user_id=stp.cashier_id, counted=counted
            )
        assert res.expected_cash == expected
        assert res.counted_cash == (counted_total // 10) * 10
        assert res.difference == res.counted_cash - expected
        assert res.needs_approval == (abs(res.difference) > 1000)
    finally:
        await db.dispose()
