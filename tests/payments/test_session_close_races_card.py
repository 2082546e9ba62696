"""The cashier closes the register at the very moment a card payment of one of its sales starts (another tab,
another device), on PostgreSQL, through the real app and the GETNET simulator: one of the two wins cleanly —
either the sale is cancelled at the close and nothing is sent to the terminal, or the payment is sent and the
close is refused while it is unresolved — and neither request ends in a server error.

The two used to take their row locks in opposite orders (the close: the session, then the sale it cancels; the
payment: the sale, then the session its attempt refers to), and PostgreSQL broke the deadlock by aborting one of
them: a 500. The interleaving is made deterministic by holding the ticket series (the payment waits there with
its sale locked) until the close is waiting for that sale."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from caja_core.db import Database
from caja_core.payments.models import PaymentAttempt, TicketSeries
from caja_core.sales.models import Sale
from caja_core.sessions.models import CashSession

from .stack import Stack, checkout, open_session, text_of, wait_for


@pytest.fixture
async def pg_stack(pg_test_database):
    db = Database(pg_test_database.url, pool_size=25)
    await pg_test_database.truncate(db)
    s = Stack(db, pg_test_database.url)
    yield s
    await s.close()
    await db.dispose()


async def waiting_on(db: Database, pattern: str) -> bool:
    """A backend of the app is blocked on a row lock while running a statement matching ``pattern`` (a regular
    expression)."""
    async with db.reader() as s:
        rows = (
            await s.execute(
                text(
                    "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ~* :q"
                ),
                {"q": pattern},
            )
        ).all()
    return bool(rows) or None


async def test_closing_the_register_while_its_sale_starts_a_card_payment_is_never_a_server_error(pg_stack):
    stack = pg_stack
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier = await app.cashier()
    await open_session(cashier, stack)
    sale_id = await checkout(cashier, stack)

    holder = Database(stack.url)
    try:
        async with holder.session() as hold:
            # The payment will lock its sale, then wait here for its ticket.
            await hold.execute(select(TicketSeries).with_for_update())
            pay = asyncio.create_task(cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True))
            await wait_for(lambda: waiting_on(stack.db, r"^UPDATE ticket_series"), "the payment waits for its ticket")
            close = asyncio.create_task(cashier.post("/caja/session/close", {"note": ""}))
            await wait_for(lambda: waiting_on(stack.db, r"\msales\M"), "the close waits for the sale")
            await hold.rollback()
        paid, closed = await pay, await close
    finally:
        await holder.dispose()

    assert paid.status_code in (200, 409), text_of(paid.text)[:300]
    assert closed.status_code in (200, 409), text_of(closed.text)[:300]
    async with stack.db.reader() as s:
        sale = (await s.execute(select(Sale).where(Sale.id == sale_id))).scalar_one()
        sent = list((await s.execute(select(PaymentAttempt).where(PaymentAttempt.sale_id == sale_id))).scalars())
        session = (await s.execute(select(CashSession))).scalar_one()
    if sent:  # the payment won: the sale is still the customer's, the close was refused
        assert sale.status != "cancelled" and session.status == "open", (sale.status, session.status)
        assert "sin resolver" in text_of(closed.text)
    else:  # the close won: the sale was cancelled and nothing reached the terminal
        assert sale.status == "cancelled" and sim.charge_count() == 0
