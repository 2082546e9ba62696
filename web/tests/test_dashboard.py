"""The owner's dashboard (/jornada/tablero) and the charts on the report pages, through the real app."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET

from webkit import text_of

from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import cash_sale, make_setup


async def sell(db, st, **quantities):
    async with db.session() as s:
        session = await sessions.current_session(s, st.venue_id, st.register_id)
    if session is None:
        async with db.session() as s:
            session = await sessions.open_session(
                s,
                venue_id=st.venue_id,
                register_id=st.register_id,
                user_id=st.cashier_id,
                initial_cash=10000,
                open_key=str(uuid.uuid4()),
            )
    await cash_sale(
        db,
        venue_id=st.venue_id,
        session_id=session.id,
        cashier_id=st.cashier_id,
        items=[sales.ItemInput(product_id=st.products[n], quantity=q) for n, q in quantities.items()],
        idempotency_key=str(uuid.uuid4()),
    )


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", html, flags=re.S)]


async def test_the_dashboard_shows_the_night_and_its_partial_refreshes_itself(supervisor, setup, sqlite_db):
    await sell(sqlite_db, setup, Cerveza=2, Agua=1)  # 9 000
    await sell(sqlite_db, setup, Piscola=1)  # 6 000
    full = await supervisor.get("/jornada/tablero")
    assert full.status_code == 200 and "<html" in full.text
    text = text_of(full.text)
    assert "Tablero de la noche" in text
    assert re.search(r"Vendido \$15\.000 Tickets 2 Ticket promedio \$7\.500", text)
    assert "Cerveza Bar 2 $7.000" in text and "CAJA1 Cajera" in text
    drawn = svgs(full.text)
    assert len(drawn) == 7 and all(svg.get("role") == "img" for svg in drawn)
    assert full.text.count("Ver datos") == 7

    partial = await supervisor.get("/jornada/tablero", htmx=True)
    assert partial.status_code == 200 and "<html" not in partial.text
    assert 'id="tablero"' in partial.text and 'hx-trigger="every 5s"' in partial.text
    await sell(sqlite_db, setup, Agua=1)
    again = await supervisor.get("/jornada/tablero", htmx=True)
    assert "Vendido $17.000 Tickets 3" in text_of(again.text)


async def test_the_dashboard_is_for_supervisors_of_their_own_venue(client, setup, sqlite_db, registry):
    other = await make_setup(sqlite_db, registry, slug="otro")
    await sell(sqlite_db, other, Piscola=5)  # 30 000 in the other venue
    await client.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
    assert (await client.get("/jornada/tablero")).status_code == 403
    await client.post("/logout")
    await client.login("super", venue_id=setup.venue_id)
    page = text_of((await client.get("/jornada/tablero")).text)
    assert "Vendido $0 Tickets 0" in page and "$30.000" not in page


async def test_without_an_open_jornada_the_dashboard_says_so(client, sqlite_db, registry):
    st = await make_setup(sqlite_db, registry, slug="cerrado", open_jornada=False)
    await client.login("super", venue_id=st.venue_id)
    r = await client.get("/jornada/tablero")
    assert r.status_code == 200 and "No hay jornada abierta" in text_of(r.text)


async def test_report_pages_and_the_z_report_carry_the_charts(supervisor, setup, sqlite_db):
    await sell(sqlite_db, setup, Cerveza=1)
    for path in (
        f"/admin/cajas/reportes/jornada/{setup.jornada_id}",
        f"/admin/cajas/reportes/jornada/{setup.jornada_id}/z",
    ):
        page = await supervisor.get(path)
        assert page.status_code == 200
        assert 'id="jornada-charts"' in page.text and len(svgs(page.text)) == 7, path
        assert "Ventas cada 15 minutos" in page.text
    async with sqlite_db.session() as s:
        session = await sessions.current_session(s, setup.venue_id, setup.register_id)
    page = await supervisor.get(f"/admin/cajas/reportes/sesion/{session.id}")
    assert 'id="session-charts"' in page.text and len(svgs(page.text)) == 6  # no per-register chart
    assert "Cerveza Bar 1 $3.500" in text_of(page.text)


async def test_tips_and_the_same_weekday_of_last_week_on_the_dashboard(supervisor, setup, sqlite_db):
    from datetime import timedelta

    from caja_core.dashboard.models import SalesQuarter
    from caja_core.jornadas.models import Jornada
    from caja_core.sales import tips
    from caja_core.sessions.models import CashSession

    await sell(sqlite_db, setup, Agua=1)
    async with sqlite_db.session() as s:
        session = await sessions.current_session(s, setup.venue_id, setup.register_id)
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=session.id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products["Piscola"], quantity=1)],
            idempotency_key=str(uuid.uuid4()),
        )
        who = {"venue_id": setup.venue_id, "sale_id": sale.id, "user_id": setup.cashier_id}
        await tips.set_tip(s, **who, amount=600)
        await sales.pay_cash(s, **who, cash_received=None)
        tonight = await s.get(Jornada, setup.jornada_id)
        last_week = Jornada(
            venue_id=setup.venue_id,
            label_date=tonight.label_date - timedelta(days=7),
            status="closed",
            opened_at=tonight.opened_at - timedelta(days=7),
        )
        s.add(last_week)
        await s.flush()
        old = CashSession(
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            jornada_id=last_week.id,
            opened_by=setup.cashier_id,
            cashier_id=setup.cashier_id,
            open_key="semana-pasada",
            status="closed",
            ticket_count=3,
            sales_total=20000,
        )
        s.add(old)
        await s.flush()
        start = int((tonight.opened_at - timedelta(days=7)).timestamp()) // 900
        for n, amount in ((0, 5000), (4, 15000)):  # two quarters an hour apart
            s.add(
                SalesQuarter(
                    jornada_id=last_week.id,
                    quarter=start + n,
                    session_id=old.id,
                    cashier_id=setup.cashier_id,
                    provider_id="cash",
                    method="cash",
                    count=1,
                    amount=amount,
                )
            )

    page = await supervisor.get("/jornada/tablero", htmx=True)
    text = text_of(page.text)
    assert "Vendido $8.000 Tickets 2 Ticket promedio $4.000 Propinas $600" in text
    assert re.search(r"Cajera 2 \$8\.000 \$600 \(1\)", text), text
    assert "Otras noches del mismo día" in text and "$20.000" in text
    (chart,) = [svg for svg in svgs(page.text) if svg.get("id") == "mismo-dia"]
    ns = "{http://www.w3.org/2000/svg}"
    lines = [g for g in chart.iter(f"{ns}g") if (g.get("class") or "").startswith("night ")]
    assert len(lines) == 2  # tonight and last week
    points = [len([c for c in g.iter(f"{ns}circle") if c.get("class") == "point"]) for g in lines]
    assert points[1] == 2 and points[0] >= 1  # last week: two hours of the night; tonight: the hours so far
    assert "Comparación con el mismo día de semanas anteriores" in page.text
