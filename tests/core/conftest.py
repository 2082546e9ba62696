import uuid

import pytest

from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup


@pytest.fixture
async def setup(any_db):
    return await make_setup(any_db)


@pytest.fixture
async def sqlite_setup(sqlite_db):
    return await make_setup(sqlite_db)


async def open_session(db, st, *, initial_cash=10000, key=None):
    async with db.session() as s:
        return await sessions.open_session(
            s,
            venue_id=st.venue_id,
            register_id=st.register_id,
            user_id=st.cashier_id,
            initial_cash=initial_cash,
            open_key=key or str(uuid.uuid4()),
        )


async def cash_sale(db, st, session_id, items, *, received=None, key=None):
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session_id,
            cashier_id=st.cashier_id,
            items=items,
            idempotency_key=key or str(uuid.uuid4()),
        )
        return await sales.pay_cash(
            s, venue_id=st.venue_id, sale_id=sale.id, cash_received=received, user_id=st.cashier_id
        )


async def count_rows(db, table):
    from sqlalchemy import text

    async with db.session() as s:
        return (await s.execute(text(f"select count(*) from {table}"))).scalar()
