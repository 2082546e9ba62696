"""One migration history for SQLite and PostgreSQL: up, down, up again, and no drift from the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from caja_core.db import migrate
from caja_core.db.engine import make_engine
from caja_core.db.models import metadata


async def _diff(url):
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()


async def _tables(url):
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names())) - {"alembic_version"}
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    db = request.getfixturevalue("pg_test_database")
    return db.url


async def test_upgrade_downgrade_upgrade_and_no_drift(empty_url):
    await migrate.upgrade_async(empty_url)
    assert await _tables(empty_url) == set(metadata.tables)
    await migrate.downgrade_async(empty_url, "base")
    assert await _tables(empty_url) == set()
    await migrate.upgrade_async(empty_url)
    assert await _diff(empty_url) == []
    engine = make_engine(empty_url)
    try:
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


async def test_the_dashboard_revision_fills_the_tips_and_prorates_the_product_mix(empty_url):
    """0012 on a database whose sales were paid before it: the quarter-hour totals get their tips and the product
    mix takes each sale discount's prorated part, as the sales keep them from then on."""
    import uuid

    from sqlalchemy import text

    from caja_core.db import Database
    from caja_core.sales import discounts, tips
    from caja_core.sales import service as sales
    from caja_core.sessions import service as sessions
    from caja_core.testing.factories import make_setup

    await migrate.upgrade_async(empty_url)
    db = Database(empty_url)
    try:
        st = await make_setup(db)
        async with db.session() as s:
            session = await sessions.open_session(
                s,
                venue_id=st.venue_id,
                register_id=st.register_id,
                user_id=st.cashier_id,
                initial_cash=10000,
                open_key="migracion",
            )
        for lines, off, tip, card in (
            ([("Cerveza", 2), ("Agua", 1)], 1000, 800, False),  # 9 000 − 1 000: Cerveza 6 222, Agua 1 778
            ([("Piscola", 1), ("Agua", 1)], 0, 700, True),
            ([("Piscola", 1), ("Agua", 3)], 1, 0, False),  # 6 000 and 6 000: the peso goes to the first line
        ):
            async with db.session() as s:
                sale = await sales.create_sale(
                    s,
                    venue_id=st.venue_id,
                    session_id=session.id,
                    cashier_id=st.cashier_id,
                    items=[sales.ItemInput(product_id=st.products[n], quantity=q) for n, q in lines],
                    idempotency_key=str(uuid.uuid4()),
                )
                who = {"venue_id": st.venue_id, "sale_id": sale.id, "user_id": st.cashier_id}
                if off:
                    await discounts.apply_discount(s, **who, kind="amount", value=off, reason="cliente")
                if tip:
                    await tips.set_tip(s, **who, amount=tip)
                if card:
                    await sales.mark_paid(s, sale_id=sale.id, provider_id="fake")
                else:
                    await sales.pay_cash(s, **who, cash_received=None)

        quarters_sql = "SELECT provider_id, method, count, amount, tip_count, tip FROM sales_quarters ORDER BY 1, 2"
        products_sql = "SELECT product_id, units, amount FROM product_sales ORDER BY 1"

        async def read(sql):
            async with db.reader() as s:
                return [tuple(r) for r in (await s.execute(text(sql))).all()]

        kept = (await read(quarters_sql), await read(products_sql))
        assert kept[0] == [("cash", "cash", 2, 19999, 1, 800), ("fake", "card", 1, 8000, 1, 700)]
        assert sum(amount for _, _, amount in kept[1]) == 19999 + 8000
        # Before 0012 the quarters had no tips and a product counted its lines without the sale discount.
        await db.dispose()
        await migrate.downgrade_async(empty_url, "0011_split_payments")
        async with db.session() as s:
            await s.execute(
                text(
                    "UPDATE product_sales SET amount = (SELECT sum(i.line_total - i.discount) FROM sale_items i "
                    "WHERE coalesce(i.product_id, 0) = product_sales.product_id)"
                )
            )
        await db.dispose()
        await migrate.upgrade_async(empty_url)
        assert (await read(quarters_sql), await read(products_sql)) == kept
    finally:
        await db.dispose()
