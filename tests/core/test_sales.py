import asyncio

import pytest
from sqlalchemy import text

from caja_core.errors import Conflict, NotFound, ValidationFailed
from caja_core.permissions import Action
from caja_core.permissions.service import authorize
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN, make_setup
from caja_core.testing.waiting import wait_until

from .conftest import cash_sale, count_rows, open_session


async def test_total_is_computed_by_the_server_from_catalogue_prices(any_db, setup):
    sess = await open_session(any_db, setup)
    sale = await cash_sale(
        any_db,
        setup,
        sess.id,
        [
            sales.ItemInput(product_id=setup.products["Cerveza"], quantity=2),
            sales.ItemInput(product_id=setup.products["Piscola"], quantity=1, unit_price=1),  # price ignored
            sales.ItemInput(name="Descorche", unit_price="1.500", free_reason="Botella propia"),
        ],
    )
    assert sale.total == 2 * 3500 + 6000 + 1500
    assert [i.line_total for i in sale.items] == [7000, 6000, 1500]
    assert sale.provider_id == "cash" and sale.session_id == sess.id


async def test_repeated_submit_returns_the_first_sale(any_db, setup):
    sess = await open_session(any_db, setup)
    items = [sales.ItemInput(product_id=setup.products["Agua"])]
    a = await cash_sale(any_db, setup, sess.id, items, key="click-1")
    b = await cash_sale(any_db, setup, sess.id, items, key="click-1")
    assert a.id == b.id
    async with any_db.session() as s:
        assert (await sessions.get_session(s, setup.venue_id, sess.id)).ticket_count == 1


async def test_the_same_submit_racing_another_gets_the_first_sale(pg_db):
    """Two «Cobrar» of the same cart at once (two tabs, a retried request): the second, which did not see the
    first's uncommitted sale when it looked, waits on its INSERT and then answers with the first sale; one sale,
    one set of lines."""
    setup = await make_setup(pg_db)
    sess = await open_session(pg_db, setup)

    async def create(s):
        return await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Agua"], quantity=2)],
            idempotency_key="both-tabs",
        )

    async def second():
        async with pg_db.session() as s:
            return await create(s)

    async def waiting_on_a_lock():
        async with pg_db.session() as s:
            return await s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO sales %'"
                )
            )

    async with pg_db.session() as s:
        first = await create(s)
        racing = asyncio.create_task(second())
        await wait_until(waiting_on_a_lock, timeout_s=10, what="the second submit waits on the first's sale")
    again = await asyncio.wait_for(racing, 10)
    assert again.id == first.id and again.total == first.total == 4000
    assert [i.quantity for i in again.items] == [2]
    assert await count_rows(pg_db, "sales") == 1 and await count_rows(pg_db, "sale_items") == 1


@pytest.mark.parametrize(
    "item,field",
    [
        ({"product_id": None, "name": "Libre", "unit_price": -5, "free_reason": "motivo"}, "unit_price"),
        ({"product_id": None, "name": "Libre", "unit_price": 10.5, "free_reason": "motivo"}, "unit_price"),
        ({"product_id": None, "name": "Libre", "unit_price": 10**9, "free_reason": "motivo"}, "unit_price"),
        ({"product_id": None, "name": "Libre", "unit_price": 1000, "free_reason": ""}, "free_reason"),
        ({"product_id": 999999, "quantity": 1}, "product_id"),
        ({"product_id": 0, "quantity": 0}, "quantity"),
    ],
)
async def test_bad_lines_are_rejected_and_nothing_is_written(sqlite_db, sqlite_setup, item, field):
    sess = await open_session(sqlite_db, sqlite_setup)
    if item.get("product_id") == 0:
        item["product_id"] = sqlite_setup.products["Agua"]
    with pytest.raises(ValidationFailed) as err:
        async with sqlite_db.session() as s:
            await sales.create_sale(
                s,
                venue_id=sqlite_setup.venue_id,
                session_id=sess.id,
                cashier_id=sqlite_setup.cashier_id,
                items=[sales.ItemInput(**item)],
                idempotency_key="k",
            )
    assert field in err.value.fields
    assert await count_rows(sqlite_db, "sales") == 0 and await count_rows(sqlite_db, "sale_items") == 0


async def test_cash_received_below_total_is_refused(sqlite_db, sqlite_setup):
    sess = await open_session(sqlite_db, sqlite_setup)
    with pytest.raises(ValidationFailed) as err:
        await cash_sale(
            sqlite_db,
            sqlite_setup,
            sess.id,
            [sales.ItemInput(product_id=sqlite_setup.products["Piscola"])],
            received=5000,
        )
    assert "menor que el total" in err.value.message


async def test_cancel_removes_a_paid_sale_from_the_totals(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=0)
    sale = await cash_sale(any_db, setup, sess.id, [sales.ItemInput(product_id=setup.products["Piscola"])])
    with pytest.raises(ValidationFailed):
        async with any_db.session() as s:
            await sales.cancel_sale(s, venue_id=setup.venue_id, sale_id=sale.id, user_id=setup.cashier_id, reason="")
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.VOID_PAID,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        sale_id=sale.id,
    )
    async with any_db.session() as s:
        cancelled = await sales.cancel_sale(
            s,
            venue_id=setup.venue_id,
            sale_id=sale.id,
            user_id=setup.cashier_id,
            reason="Cliente se arrepintió",
            authorization_id=grant,
        )
        assert cancelled.status == "cancelled" and cancelled.cancel_reason == "Cliente se arrepintió"
        assert cancelled.cancelled_by == setup.cashier_id and cancelled.cancel_authorized_by == setup.supervisor_id
    async with any_db.session() as s:
        after = await sessions.get_session(s, setup.venue_id, sess.id)
    assert (after.ticket_count, after.sales_total, after.cash_sales_total) == (0, 0, 0)
    assert (after.cancelled_count, after.cancelled_total) == (1, 6000)
    with pytest.raises(Conflict):
        async with any_db.session() as s:
            await sales.cancel_sale(
                s, venue_id=setup.venue_id, sale_id=sale.id, user_id=setup.cashier_id, reason="otra vez"
            )


async def test_courtesy_only_at_oficina_and_reported_separately(sqlite_db):
    st = await make_setup(sqlite_db, register_type="OFICINA", phones=1)
    sess = await open_session(sqlite_db, st, initial_cash=0)
    async with sqlite_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=sess.id,
            cashier_id=st.cashier_id,
            items=[sales.ItemInput(product_id=st.products["Piscola"])],
            idempotency_key="c1",
            no_revenue=True,
            courtesy_reason="Artista invitado",
        )
        await sales.pay_cash(s, venue_id=st.venue_id, sale_id=sale.id, cash_received=None, user_id=st.cashier_id)
    async with sqlite_db.session() as s:
        after = await sessions.get_session(s, st.venue_id, sess.id)
    assert (after.ticket_count, after.sales_total, after.courtesy_count, after.courtesy_total) == (0, 0, 1, 6000)
    other = await make_setup(sqlite_db, slug="bar")
    osess = await open_session(sqlite_db, other)
    with pytest.raises(ValidationFailed):
        async with sqlite_db.session() as s:
            await sales.create_sale(
                s,
                venue_id=other.venue_id,
                session_id=osess.id,
                cashier_id=other.cashier_id,
                items=[sales.ItemInput(product_id=other.products["Agua"])],
                idempotency_key="c2",
                no_revenue=True,
                courtesy_reason="Amigo",
            )


async def test_sale_in_another_venues_session_is_not_found(sqlite_db, sqlite_setup):
    other = await make_setup(sqlite_db, slug="otro")
    sess = await open_session(sqlite_db, sqlite_setup)
    with pytest.raises(NotFound):
        async with sqlite_db.session() as s:
            await sales.create_sale(
                s,
                venue_id=other.venue_id,
                session_id=sess.id,
                cashier_id=other.cashier_id,
                items=[sales.ItemInput(product_id=other.products["Agua"])],
                idempotency_key="x",
            )


async def test_mark_paid_twice_is_a_conflict_not_a_silent_success(sqlite_db, sqlite_setup):
    sess = await open_session(sqlite_db, sqlite_setup)
    async with sqlite_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=sqlite_setup.venue_id,
            session_id=sess.id,
            cashier_id=sqlite_setup.cashier_id,
            items=[sales.ItemInput(product_id=sqlite_setup.products["Agua"])],
            idempotency_key="m",
        )
        await sales.mark_paid(s, sale_id=sale.id, provider_id="fake", paid_via="primary")
    with pytest.raises(Conflict) as err:
        async with sqlite_db.session() as s:
            await sales.mark_paid(s, sale_id=sale.id, provider_id="fakebackup", paid_via="backup")
    assert err.value.code == "sale.already_paid"
    async with sqlite_db.session() as s:
        after = await sessions.get_session(s, sqlite_setup.venue_id, sess.id)
    assert (after.card_sales_total, after.primary_count, after.backup_count) == (2000, 1, 0)


async def test_a_line_is_charged_the_price_it_had_when_it_was_added_to_the_cart(any_db, setup):
    """An admin reprices a product while it sits in a cart: the sale charges what the cashier saw, a line added
    after the change the new price, and a line with no instant today's price; the receipt's lines keep them."""
    from datetime import timedelta

    from caja_core.catalog import service as catalog
    from caja_core.clock import utcnow

    sess = await open_session(any_db, setup)
    beer = setup.products["Cerveza"]
    added = utcnow()
    async with any_db.session() as s:
        await catalog.update_product(s, venue_id=setup.venue_id, product_id=beer, price=4000)
    after = utcnow()
    async with any_db.session() as s:
        await catalog.update_product(s, venue_id=setup.venue_id, product_id=beer, price=4200)
    sale = await cash_sale(
        any_db,
        setup,
        sess.id,
        [
            sales.ItemInput(product_id=beer, quantity=2, priced_at=added, seen_price=3500),
            sales.ItemInput(product_id=beer, quantity=1, priced_at=after, seen_price=4000),
            sales.ItemInput(product_id=beer, quantity=1),
            # an instant before the session opened is the session's opening: the price then, never an older one
            sales.ItemInput(product_id=beer, quantity=1, priced_at=added - timedelta(days=400)),
        ],
    )
    assert [(i.unit_price, i.line_total) for i in sale.items] == [
        (3500, 7000),
        (4000, 4000),
        (4200, 4200),
        (3500, 3500),
    ]
    assert sale.total == 7000 + 4000 + 4200 + 3500


async def test_a_line_the_catalogue_prices_otherwise_than_the_cart_showed_is_refused_with_both_prices(any_db, setup):
    sess = await open_session(any_db, setup)
    with pytest.raises(Conflict) as err:
        async with any_db.session() as s:
            await sales.create_sale(
                s,
                venue_id=setup.venue_id,
                session_id=sess.id,
                cashier_id=setup.cashier_id,
                items=[sales.ItemInput(product_id=setup.products["Cerveza"], seen_price=3000)],
                idempotency_key="seen",
            )
    assert err.value.code == "sale.price_changed"
    assert "El precio de Cerveza cambió de $3.000 a $3.500" in str(err.value)
    assert await count_rows(any_db, "sales") == 0


async def test_an_unpaid_sale_is_the_sessions_open_sale_and_listed_until_it_ends(any_db, setup):
    from caja_core.sales import waiting

    sess = await open_session(any_db, setup)
    paid = await cash_sale(any_db, setup, sess.id, [sales.ItemInput(product_id=setup.products["Agua"])])
    async with any_db.session() as s:
        assert await waiting.open_sale(s, setup.venue_id, sess.id) is None
        unpaid = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Cerveza"])],
            idempotency_key="left-on-its-pay-screen",
        )
    async with any_db.session() as s:
        assert await waiting.open_sale(s, setup.venue_id, sess.id) == unpaid.id
        assert [x.id for x in await waiting.waiting_sales(s, setup.venue_id, sess.id, with_open=True)] == [unpaid.id]
        assert await waiting.waiting_sales(s, setup.venue_id, sess.id) == []  # not in doubt, not left waiting
        await sales.cancel_sale(
            s, venue_id=setup.venue_id, sale_id=unpaid.id, user_id=setup.cashier_id, reason="Se fue"
        )
    async with any_db.session() as s:
        assert await waiting.open_sale(s, setup.venue_id, sess.id) is None
        assert await waiting.waiting_sales(s, setup.venue_id, sess.id, with_open=True) == []
    assert paid.status == "paid"


async def test_a_product_withdrawn_while_in_a_cart_is_refused_by_its_name(any_db, setup):
    """Found: a product the admin withdrew while it sat in a cart was refused as «Línea 1: el producto no existe»;
    the refusal now names it and says what to do. One never in the catalogue keeps the line's number."""
    from caja_core.catalog import service as catalog

    sess = await open_session(any_db, setup)
    async with any_db.session() as s:
        await catalog.update_product(s, venue_id=setup.venue_id, product_id=setup.products["Cerveza"], active=False)
    for product_id, message in (
        (setup.products["Cerveza"], "Cerveza ya no se vende en esta caja: quite la línea del pedido."),
        (999_999, "Línea 1: el producto no existe o no se vende en esta caja."),
    ):
        with pytest.raises(ValidationFailed) as err:
            async with any_db.session() as s:
                await sales.create_sale(
                    s,
                    venue_id=setup.venue_id,
                    session_id=sess.id,
                    cashier_id=setup.cashier_id,
                    items=[sales.ItemInput(product_id=product_id)],
                    idempotency_key=f"withdrawn-{product_id}",
                )
        assert str(err.value) == message
    assert await count_rows(any_db, "sales") == 0
