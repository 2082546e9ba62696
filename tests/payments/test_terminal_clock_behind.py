"""A GETNET terminal whose clock runs behind caja's (its clock was never set, it drifted, or its zone is not the
register's ``terminal_timezone``: here a venue on Easter Island keeps the default America/Santiago, two hours
ahead). It charges a card and the line drops before its answer: the payment is in doubt. Its LastVoucher then
shows our very ticket and amount, and reconciliation must find the charge and pay the sale once.

It used to reject the answer as "approved before this payment was sent" (the terminal's time, read in the wrong
zone, is more than the 300 s tolerance before the send), ask again forever, and leave the sale in doubt for a
supervisor, with the terminal locked for every later card sale. GETNET has no command that reads the terminal's
clock; caja now measures it off the terminal's own time on each answer to a charge (its RealDate), so a
terminal that has answered one sale is matched within its measured difference. On the first sale a terminal
ever makes, the difference is unknown: a supervisor decides, told that the clock may be wrong."""

from __future__ import annotations

from sqlalchemy import select

from caja_core.payments.models import PaymentAttempt
from caja_getnet.simulator import Simulator

from .stack import Stack, checkout, open_session, pay_card, shows, wait_for


async def test_a_terminal_whose_clock_runs_behind_still_has_its_charge_found(sqlite_url):
    from caja_core.db import Database

    db = Database(sqlite_url)
    stack = Stack(db, sqlite_url)
    try:
        sim = Simulator(
            terminal_id="T0001",
            serial_number="SN-0001",
            step_delay_s=0.02,
            message_gap_s=0.002,
            timezone="Pacific/Easter",
        )
        await sim.start_tcp()
        stack.simulators.append(sim)
        await stack.build(sim)
        app = await stack.instance()
        cashier = await app.cashier()
        await open_session(cashier, stack)
        first = await checkout(cashier, stack)  # a sale answered as usual: its RealDate shows the clock's difference
        await pay_card(cashier, first)
        assert "APROBADO" in await shows(cashier, first, 'id="receipt"', timeout_s=30)
        sale_id = await checkout(cashier, stack)
        sim.add_fault({"kind": "disconnect_after_receipt", "charged": True})
        await pay_card(cashier, sale_id)

        async def charged():
            return sim.charge_count() == 2 or None

        await wait_for(charged, "the terminal charged the card")
        page = await shows(cashier, sale_id, 'id="receipt"', timeout_s=30)
        assert "APROBADO" in page
        async with db.reader() as s:
            (attempt,) = (await s.execute(select(PaymentAttempt).where(PaymentAttempt.sale_id == sale_id))).scalars()
        assert attempt.state == "approved" and sim.charged()[attempt.ticket] == attempt.amount
        assert len(sim.charged()) == 2  # each sale charged once
    finally:
        await stack.close()
        await db.dispose()
