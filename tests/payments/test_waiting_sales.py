"""Ventas en espera kept with the sale: a sale whose payment is in doubt is listed for its session; one left
waiting stays listed after its payment is settled until someone at the register has seen how it ended; the list
has no cap (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from caja_core.errors import Conflict
from caja_core.providers import OutcomeKind
from caja_core.sales import waiting
from caja_core.sales.models import Sale
from caja_core.testing.fake import Step


async def listed(env) -> list[tuple[int, bool, str]]:
    async with env.db.reader() as s:
        return [(x.id, x.parked, x.status) for x in await waiting.waiting_sales(s, env.venue_id, env.session_id)]


async def park(env, sale_id: int):
    async with env.db.session() as s:
        return await waiting.park_sale(s, venue_id=env.venue_id, sale_id=sale_id, user_id=env.setup.cashier_id)


async def seen(env, sale_id: int) -> bool:
    async with env.db.session() as s:
        return await waiting.seen_ended(s, venue_id=env.venue_id, sale_id=sale_id, user_id=env.setup.cashier_id)


async def test_a_sale_in_doubt_is_listed_and_a_parked_one_stays_until_its_end_is_seen(env):
    orch = await env.orchestrator()
    paid_in_cash = await env.sale(2000)
    with pytest.raises(Conflict):
        await park(env, paid_in_cash)  # nothing in doubt: nothing to wait for
    sale_id = await env.sale(6000)
    env.provider.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
    env.provider.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    await orch.start_payment(env.venue_id, sale_id, env.setup.cashier_id)
    await env.until(orch, sale_id, lambda p: p.in_doubt)
    assert await listed(env) == [(sale_id, False, "pending_payment")]  # in doubt: listed before anyone parks it
    assert (await park(env, sale_id)).parked
    assert await listed(env) == [(sale_id, True, "pending_payment")]
    env.provider.set_default("status", None)  # the terminal answers: charged
    assert (await env.settle(orch, sale_id)).paid
    assert await listed(env) == [(sale_id, True, "paid")]  # ended, not yet seen: still listed
    assert await seen(env, sale_id)
    assert await listed(env) == []
    assert not await seen(env, sale_id)  # once


async def test_no_cap_loses_a_waiting_sale(env):
    ids = [await env.sale(1000 + n) for n in range(25)]
    async with env.db.session() as s:
        await s.execute(update(Sale).where(Sale.id.in_(ids)).values(parked_at=Sale.created_at))
    assert [x[0] for x in await listed(env)] == ids
