"""Tips: suggested, set on the sale before payment, paid with it by cash or card (the terminal charges total +
tip and is told the tip), kept apart from revenue per sale, cashier, session and jornada; a cash tip is in the
drawer, so the blind close balances with discounts and tips."""

from __future__ import annotations

import pytest

from caja_core.errors import Conflict, ValidationFailed
from caja_core.reports import service as reports
from caja_core.sales import discounts, tips
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.fake import Step


async def tip(env, sale_id, amount):
    async with env.db.session() as s:
        return await tips.set_tip(
            s, venue_id=env.venue_id, sale_id=sale_id, user_id=env.setup.cashier_id, amount=amount
        )


async def pay_cash(env, sale_id, received=None):
    async with env.db.session() as s:
        return await sales.pay_cash(
            s, venue_id=env.venue_id, sale_id=sale_id, cash_received=received, user_id=env.setup.cashier_id
        )


async def discount(env, sale_id, kind, value, line=None):
    async with env.db.session() as s:
        return await discounts.apply_discount(
            s,
            venue_id=env.venue_id,
            sale_id=sale_id,
            user_id=env.setup.cashier_id,
            kind=kind,
            value=value,
            reason="Happy hour",
            line=line,
        )


async def session_row(env):
    async with env.db.session() as s:
        return await sessions.get_session(s, env.venue_id, env.session_id)


def test_the_suggested_tip_is_whole_pesos():
    assert tips.suggested_tip(12500, 10) == 1250
    assert tips.suggested_tip(3550, 10) == 355
    assert tips.suggested_tip(3545, 10) == 355  # 354,5 rounds up
    assert tips.suggested_tip(9000, 0) == 0


async def test_a_cash_tip_is_paid_with_the_sale_and_stays_in_the_drawer(env):
    sale_id = await env.sale(12500)
    sale = await tip(env, sale_id, "$1.250")
    assert (sale.total, sale.tip, sale.due) == (12500, 1250, 13750)
    with pytest.raises(ValidationFailed) as err:  # the tip is due too
        await pay_cash(env, sale_id, "13000")
    assert "total con propina ($13.750)" in err.value.message
    paid = await pay_cash(env, sale_id, "15000")
    assert (paid.change_given, paid.tip, paid.total) == (1250, 1250, 12500)
    session = await session_row(env)
    assert (session.sales_total, session.cash_sales_total) == (12500, 12500)  # revenue without the tip
    assert (session.tip_count, session.tip_total, session.cash_tip_total) == (1, 1250, 1250)
    assert sessions.expected_cash(session) == 13750


async def test_a_card_tip_is_charged_by_the_terminal_and_told_to_it(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(12500)
    await tip(env, sale_id, "2000")
    env.provider.script("charge", Step(delay_s=0.05))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    done = await env.settle(orch, sale_id)
    assert done.paid, (done.state, done.message, env.provider.calls)
    (attempt,) = await env.attempts(sale_id)
    assert (attempt.amount, attempt.tip) == (14500, 2000)
    assert env.provider.ledger == {attempt.ticket: 14500} and env.provider.tips == {attempt.ticket: 2000}
    session = await session_row(env)
    assert (session.card_sales_total, session.tip_total, session.cash_tip_total) == (12500, 2000, 0)
    assert sessions.expected_cash(session) == 0  # a card tip is not in the drawer


@pytest.mark.parametrize("raw", ["12501", "-5", "1.000,5", "mucho"])
async def test_a_bad_tip_is_refused_and_changes_nothing(env, raw):
    sale_id = await env.sale(12500)
    await tip(env, sale_id, "1000")
    with pytest.raises(ValidationFailed) as err:
        await tip(env, sale_id, raw)
    assert "tip" in err.value.fields
    assert (await env.sale_row(sale_id)).tip == 1000


async def test_no_tip_change_once_a_card_payment_started(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(8000)
    env.provider.script("charge", Step(delay_s=2.0))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    with pytest.raises(Conflict):
        await tip(env, sale_id, "800")
    await env.settle(orch, sale_id, timeout=10)
    assert (await env.sale_row(sale_id)).tip == 0
    (attempt,) = await env.attempts(sale_id)
    assert attempt.amount == 8000


async def test_tip_zero_takes_it_away(env):
    sale_id = await env.sale(5000)
    await tip(env, sale_id, "500")
    sale = await tip(env, sale_id, "0")
    assert (sale.tip, sale.due) == (0, 5000)


async def test_the_blind_close_balances_with_discounts_and_tips(env):
    """Cash sales with a discount and a tip, a card sale with a discount and a tip: the drawer holds the
    discounted cash sales and the cash tips, and the blind close finds no difference."""
    orch = await env.orchestrator()
    cash_id = await env.sale(10000)
    await discount(env, cash_id, "percent", "10", line=1)  # $9.000
    sale = await tip(env, cash_id, str(tips.suggested_tip(9000, 10)))  # $900
    assert sale.due == 9900
    await pay_cash(env, cash_id, "10000")  # $100 of change

    card_id = await env.sale(12500)
    await discount(env, card_id, "amount", "2500")  # $10.000
    await tip(env, card_id, "1000")
    await orch.start_payment(env.venue_id, card_id, env.setup.cashier_id)
    assert (await env.settle(orch, card_id)).paid
    (attempt,) = await env.attempts(card_id)
    assert attempt.amount == 11000

    plain_id = await env.sale(3000)  # no discount, no tip
    await pay_cash(env, plain_id, "5000")

    session = await session_row(env)
    assert (session.sales_total, session.cash_sales_total, session.card_sales_total) == (22000, 12000, 10000)
    assert (session.discount_count, session.discount_total) == (2, 3500)
    assert (session.tip_count, session.tip_total, session.cash_tip_total) == (2, 1900, 900)
    async with env.db.session() as s:
        report = await reports.session_report(s, env.venue_id, env.session_id)
    (cashier,) = report.controls.cashiers
    assert (cashier.tip_count, cashier.tip_total, cashier.cash_tip_total) == (2, 1900, 900)
    assert (cashier.discount_count, cashier.discount_total) == (2, 3500)

    async with env.db.session() as s:
        result = await sessions.close_session(
            s,
            venue_id=env.venue_id,
            session_id=env.session_id,
            user_id=env.setup.cashier_id,
            counted={"10000": 1, "2000": 1, "500": 1, "100": 4},  # $12.900
        )
    assert (result.expected_cash, result.counted_cash, result.difference) == (12900, 12900, 0)
    assert result.status == "closed"
    async with env.db.session() as s:
        jornada = await reports.jornada_report(s, env.venue_id, env.setup.jornada_id)
    totals = jornada.totals
    assert (totals["tip_count"], totals["tip_total"], totals["cash_tip_total"]) == (2, 1900, 900)
    assert (totals["discount_count"], totals["discount_total"]) == (2, 3500)


async def test_no_tip_on_a_paid_sale_and_the_refusal_speaks_of_the_tip(env):
    sale_id = await env.sale(5000)
    await pay_cash(env, sale_id)
    with pytest.raises(Conflict) as refused:
        await tip(env, sale_id, 500)
    assert "propina" in refused.value.message and "descontar" not in refused.value.message
    assert (await pay_cash(env, sale_id)).tip == 0
