from caja_core.reports import service as reports
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions

from .conftest import cash_sale, open_session


async def test_jornada_report_adds_up_sessions_and_providers(any_db, setup):
    sess = await open_session(any_db, setup, initial_cash=5000)
    await cash_sale(any_db, setup, sess.id, [sales.ItemInput(product_id=setup.products["Piscola"], quantity=2)])
    async with any_db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Cerveza"])],
            idempotency_key="card",
        )
        await sales.mark_paid(s, sale_id=sale.id, provider_id="fakebackup", paid_via="backup")
        await sessions.add_fallback_event(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            sale_id=sale.id,
            attempt_id=None,
            from_provider="fake",
            to_provider="fakebackup",
            reason="Terminal sin conexión",
            user_id=setup.cashier_id,
        )
    async with any_db.session() as s:
        rep = await reports.jornada_report(s, setup.venue_id, setup.jornada_id)
        srep = await reports.session_report(s, setup.venue_id, sess.id)
    assert rep.totals["ticket_count"] == 2 and rep.totals["sales_total"] == 15500
    assert {t.key: t.amount for t in rep.by_provider} == {"cash": 12000, "fakebackup": 3500}
    assert {t.key: t.count for t in rep.by_method} == {"cash": 1, "card": 1}
    assert rep.fallback_events[0]["reason"] == "Terminal sin conexión"
    assert srep.summary.session.backup_count == 1 and srep.summary.expected_cash_now == 17000
    csv_text = reports.jornada_csv(rep)
    assert "CAJA1" in csv_text and "fakebackup;1;3500" in csv_text
