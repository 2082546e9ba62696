"""Split payments: one sale paid partly in cash and partly by card or the backup. Each part is its own
payment (the card attempt charges only the rest), the sale is paid when the parts cover it, the session counts
each part by its method, and the payment rules (one active attempt, nothing charged twice, a part in doubt
blocks) hold for the part."""

from __future__ import annotations

import pytest

from caja_core.errors import Conflict, ValidationFailed
from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.fake import Step


async def cash_part(env, sale_id: int, amount: object):
    async with env.db.session() as s:
        return await sales.pay_cash_part(
            s, venue_id=env.venue_id, sale_id=sale_id, amount=amount, user_id=env.setup.cashier_id
        )


async def session_totals(env):
    async with env.db.reader() as s:
        return await sessions.get_session(s, env.venue_id, env.session_id)


async def test_cash_then_card_pays_the_sale_and_each_part_counts_by_its_method(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(12500)
    out = await cash_part(env, sale_id, "5000")
    assert out.status == "pending_payment" and out.cash_part == 5000
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert (await env.settle(orch, sale_id)).paid
    [attempt] = await env.attempts(sale_id)
    assert attempt.amount == 7500 and attempt.state == "approved"  # the card charged the rest only
    assert env.provider.count("charge") == 1
    session = await session_totals(env)
    assert session.cash_sales_total == 5000 and session.card_sales_total == 7500
    assert session.sales_total == 12500 and session.ticket_count == 1


async def test_cash_then_the_rest_in_cash_is_one_cash_sale(env):
    sale_id = await env.sale(12500)
    await cash_part(env, sale_id, 2000)
    async with env.db.session() as s:
        out = await sales.pay_cash(
            s, venue_id=env.venue_id, sale_id=sale_id, cash_received="20000", user_id=env.setup.cashier_id
        )
    assert out.status == "paid" and out.cash_received == 22000 and out.change_given == 9500
    session = await session_totals(env)
    assert session.cash_sales_total == 12500 and session.card_sales_total == 0


async def test_a_declined_rest_keeps_the_cash_part_and_the_backup_charges_only_the_rest(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(12500)
    await cash_part(env, sale_id, 4500)
    env.provider.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.settle(orch, sale_id)
    assert not p.paid and p.backup_offered
    p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    assert p.manual is not None and p.manual.amount == 8000
    await orch.confirm_manual(
        venue_id=env.venue_id,
        attempt_id=p.manual.attempt_id,
        authorization_code="ABC123",
        last4="4242",
        brand="Visa",
        card_type="debito",
        user_id=env.setup.cashier_id,
    )
    assert (await orch.poll(env.venue_id, sale_id)).paid
    session = await session_totals(env)
    assert session.cash_sales_total == 4500 and session.card_sales_total == 8000


async def test_no_cash_part_while_the_card_part_is_in_doubt_and_parts_never_cover_the_sale(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(12500)
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(orch, sale_id, lambda p: p.in_doubt)
    with pytest.raises(Conflict) as err:
        await cash_part(env, sale_id, 5000)
    assert err.value.code == "sale.payment_in_progress"
    other = await env.sale(9000)
    await cash_part(env, other, 1000)
    assert (await cash_part(env, other, 1000)).cash_part == 2000  # a second part adds up
    with pytest.raises(ValidationFailed) as bad_part:
        await cash_part(env, other, 7000)  # all that is left: the cash payment of the rest, with its change
    assert "lo que falta ($7.000)" in bad_part.value.message
    for bad in ("0", "9000", "12000", "abc"):
        with pytest.raises(ValidationFailed):
            await cash_part(env, await env.sale(9000), bad)


async def test_no_discount_once_a_cash_part_is_taken(env):
    from caja_core.sales import discounts

    sale_id = await env.sale(12500)
    await cash_part(env, sale_id, 5000)
    with pytest.raises(Conflict) as err:
        async with env.db.session() as s:
            await discounts.apply_discount(
                s,
                venue_id=env.venue_id,
                sale_id=sale_id,
                user_id=env.setup.cashier_id,
                kind="amount",
                value="10000",
                reason="Cliente frecuente",
            )
    assert err.value.code == "sale.cash_part_taken"


async def test_cash_a_declined_card_more_cash_and_the_backup_for_the_rest(env):
    """The customer pays 10 000 in cash, the card declines, they pay 5 000 more in cash and the rest on the
    backup: each part is its own payment, the backup charges only what is left, the session counts 15 000 in
    cash and the rest by card, and voiding the sale gives back both cash parts."""
    orch = await env.orchestrator()
    sale_id = await env.sale(23000)
    await cash_part(env, sale_id, "10000")
    env.provider.script("charge", Step(kind=OutcomeKind.DECLINED, code="51", message="Fondos insuficientes"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    p = await env.settle(orch, sale_id)
    assert not p.paid and p.state == "declined"
    [declined] = await env.attempts(sale_id)
    assert declined.amount == 13000
    out = await cash_part(env, sale_id, "5000")
    assert out.cash_part == 15000 and out.status == "pending_payment"
    p = await orch.start_backup(env.venue_id, sale_id, env.setup.cashier_id)
    assert p.manual is not None and p.manual.amount == 8000  # only what is left
    await orch.confirm_manual(
        venue_id=env.venue_id,
        attempt_id=p.manual.attempt_id,
        authorization_code="ZX81QW",
        last4="1111",
        brand="Visa",
        card_type="credito",
        user_id=env.setup.cashier_id,
    )
    assert (await orch.poll(env.venue_id, sale_id)).paid
    session = await session_totals(env)
    assert session.cash_sales_total == 15000 and session.card_sales_total == 8000
    assert session.sales_total == 23000 and session.ticket_count == 1
    assert env.provider.count("charge") == 1


async def test_two_cash_parts_then_the_card_for_the_rest_is_counted_once_per_part(env):
    orch = await env.orchestrator()
    sale_id = await env.sale(12500)
    await cash_part(env, sale_id, 2000)
    await cash_part(env, sale_id, 3000)
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert (await env.settle(orch, sale_id)).paid
    [attempt] = await env.attempts(sale_id)
    assert attempt.amount == 7500
    session = await session_totals(env)
    assert session.cash_sales_total == 5000 and session.card_sales_total == 7500


async def test_a_cash_part_sent_twice_is_received_once(env):
    """A double tap on "Recibir efectivo" (or a second tab) sends the same part again: the second finds more
    paid than its screen showed and is refused; the drawer counts the banknote once and the rest is right."""
    orch = await env.orchestrator()
    sale_id = await env.sale(9000)
    async with env.db.session() as s:
        out = await sales.pay_cash_part(
            s, venue_id=env.venue_id, sale_id=sale_id, amount="4000", user_id=env.setup.cashier_id, paid_before=0
        )
    assert out.cash_part == 4000
    with pytest.raises(Conflict, match="ya se había recibido"):
        async with env.db.session() as s:
            await sales.pay_cash_part(
                s, venue_id=env.venue_id, sale_id=sale_id, amount="4000", user_id=env.setup.cashier_id, paid_before=0
            )
    async with env.db.session() as s:  # the next part, typed on the screen that shows the first one
        out = await sales.pay_cash_part(
            s, venue_id=env.venue_id, sale_id=sale_id, amount="1000", user_id=env.setup.cashier_id, paid_before=4000
        )
    assert out.cash_part == 5000
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    assert (await env.settle(orch, sale_id)).paid
    [attempt] = await env.attempts(sale_id)
    assert attempt.amount == 4000  # the card charged what was really left
    session = await session_totals(env)
    assert session.cash_sales_total == 5000 and session.card_sales_total == 4000


async def test_no_close_while_a_split_sale_holds_a_cash_part(env):
    """The close would void the unpaid sale and expect the drawer without its cash part, which is in it: the
    close is refused until the sale is paid or voided (and its cash handed back)."""
    sale_id = await env.sale(6000)
    await cash_part(env, sale_id, 2000)
    with pytest.raises(Conflict, match=r"tiene \$2\.000 en efectivo ya recibidos"):
        async with env.db.session() as s:
            await sessions.close_session(
                s, venue_id=env.venue_id, session_id=env.session_id, user_id=env.setup.cashier_id, counted={}
            )
    async with env.db.reader() as s:
        assert (await sales.get_sale(s, env.venue_id, sale_id)).status == "pending_payment"
    assert (await session_totals(env)).status == "open"
