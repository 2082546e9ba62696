"""Money controls at the register, through the real app: voiding a paid sale, cash-outs over the limit, a
drawer handover with a blind count, and the supervisor's PIN typed on the cashier's screen."""

from __future__ import annotations

from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from test_pos import checkout, open_session
from webkit import text_of

from caja_core.payments.models import PaymentAttempt
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN
from caja_core.users import service as users

OTHER_PIN = "305718"


async def paid_cash_sale(client, setup, product="Piscola") -> int:
    sale_id, _ = await checkout(client, setup, product)
    r = await client.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": ""}, htmx=True)
    assert r.status_code == 200 and "Siguiente venta" in r.text, text_of(r.text)
    await client.post("/caja/venta/siguiente", htmx=True)
    return sale_id


async def second_cashier(app, db, setup):
    from conftest import WebClient

    async with db.session() as s:
        user = await users.create_user(
            s, venue_id=setup.venue_id, username="diego", display_name="Diego", role="cashier", secret=OTHER_PIN
        )
    raw = AsyncTestClient(app=app)
    await raw.__aenter__()
    client = WebClient(raw)
    await client.login_cashier(user.id, pin=OTHER_PIN, venue_id=setup.venue_id)
    return client, user.id, raw


async def test_a_cashier_cannot_void_a_paid_cash_sale_alone(cashier, setup, sqlite_db):
    """Found: any cashier could void any paid cash sale, with no supervisor; reports then showed nothing."""
    await open_session(cashier, setup)
    sale_id = await paid_cash_sale(cashier, setup)
    r = await cashier.post(f"/caja/venta/{sale_id}/anular", {"reason": "Cliente arrepentido", "panel": "receipt"})
    assert r.status_code == 403 and "requiere la autorización de un supervisor" in r.text
    assert 'name="supervisor_code"' in r.text and 'value="Cliente arrepentido"' in r.text
    async with sqlite_db.session() as s:
        assert (await sales.get_sale(s, setup.venue_id, sale_id)).status == "paid"
    r = await cashier.post(
        f"/caja/venta/{sale_id}/anular",
        {"reason": "Cliente arrepentido", "panel": "receipt", "supervisor_code": SUPERVISOR_PIN},
    )
    assert r.status_code == 303
    async with sqlite_db.session() as s:
        sale = await sales.get_sale(s, setup.venue_id, sale_id)
    assert sale.status == "cancelled" and sale.cancel_authorized_by == setup.supervisor_id
    assert SUPERVISOR_PIN not in r.text


async def test_another_cashier_cannot_continue_a_session_and_take_cash_out(cashier, app, setup, sqlite_db):
    """Found: a cashier could "continue" another cashier's open session and take cash out of it."""
    await open_session(cashier, setup, cash="50000")
    diego, _diego_id, raw = await second_cashier(app, sqlite_db, setup)
    try:
        home = await diego.get("/caja/")
        assert "Relevar caja" in home.text and "Continuar en esta caja" not in home.text
        r = await diego.post("/caja/session/resume", {"register_id": setup.register_id})
        assert r.status_code == 403 and "relevo de caja" in r.text
        r = await diego.post("/caja/movimientos", {"kind": "out", "amount": "5000", "reason": "me lo llevo"})
        assert r.status_code == 409  # this browser has no session of its own
        async with sqlite_db.session() as s:
            session = await sessions.current_session(s, setup.venue_id, setup.register_id)
        assert session.cash_out_total == 0 and session.cashier_id == setup.cashier_id
    finally:
        await raw.__aexit__(None, None, None)


async def test_a_handover_with_a_blind_count_moves_the_drawer_and_later_sales(cashier, app, setup, sqlite_db):
    await open_session(cashier, setup, cash="10000")
    await paid_cash_sale(cashier, setup)  # 16 000 expected now
    diego, diego_id, raw = await second_cashier(app, sqlite_db, setup)
    try:
        page = await diego.get(f"/caja/session/relevo?register_id={setup.register_id}")
        assert page.status_code == 200 and "Cajera" in page.text and "16.000" not in page.text  # blind
        form = {"register_id": setup.register_id, "count_10000": "1", "count_5000": "1"}
        r = await diego.post("/caja/session/relevo", form)
        assert r.status_code == 403 and 'name="supervisor_code"' in r.text and 'value="1"' in r.text
        r = await diego.post("/caja/session/relevo", form | {"supervisor_code": SUPERVISOR_PIN})
        assert r.status_code == 200 and "-$1.000" in text_of(r.text), text_of(r.text)
        sale_id = await paid_cash_sale(diego, setup, "Cerveza")
        r = await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
        r = await cashier.post("/caja/venta/cobrar", htmx=True)
        assert r.status_code == 403 and "la tiene otro cajero" in r.text
    finally:
        await raw.__aexit__(None, None, None)
    async with sqlite_db.session() as s:
        assert (await sales.get_sale(s, setup.venue_id, sale_id)).cashier_id == diego_id
        handovers = await sessions.list_handovers(s, setup.venue_id, jornada_id=setup.jornada_id)
    assert [(h.from_user_id, h.to_user_id, h.difference) for h in handovers] == [(setup.cashier_id, diego_id, -1000)]


async def test_a_large_cash_out_needs_the_supervisors_pin(cashier, setup):
    await open_session(cashier, setup, cash="100000")
    form = {"kind": "out", "amount": "30000", "reason": "Retiro a caja fuerte"}
    r = await cashier.post("/caja/movimientos", form)
    assert r.status_code == 403 and "supervisor" in r.text and 'value="30000"' in r.text
    r = await cashier.post("/caja/movimientos", form | {"supervisor_code": "975310"})
    assert r.status_code == 401 and "incorrecto" in r.text
    r = await cashier.post("/caja/movimientos", form | {"supervisor_code": SUPERVISOR_PIN})
    assert r.status_code == 303
    page = await cashier.get("/caja/movimientos")
    assert "$30.000" in page.text and "Sí" in page.text


async def test_supervisor_codes_at_the_register_are_throttled(cashier, setup, sqlite_db):
    """Found: 60 guesses of a supervisor's password in 8.5 s, with no throttle."""
    await open_session(cashier, setup, cash="10000")
    await cashier.post("/caja/session/close", {"count_5000": "1"})
    statuses = []
    for n in range(8):
        r = await cashier.post("/caja/session/close/aprobar", {"supervisor_code": f"90{n}418", "note": "nota larga"})
        statuses.append(r.status_code)
    assert statuses == [401] * 4 + [429] * 4
    r = await cashier.post("/caja/session/close/aprobar", {"supervisor_code": SUPERVISOR_PIN, "note": "nota larga"})
    assert r.status_code == 429 and "Espere" in r.text
    async with sqlite_db.session() as s:
        assert (await sessions.get_session(s, setup.venue_id, 1)).status == "closing"


async def test_approving_a_close_that_was_never_requested_is_a_clear_refusal(cashier, setup):
    """Found: a wrong password on the close approval before the close was a 500."""
    await open_session(cashier, setup)
    r = await cashier.post("/caja/session/close/aprobar", {"supervisor_code": "975310", "note": "x"})
    assert r.status_code in (401, 409) and "Traceback" not in r.text and "error inesperado" not in r.text
    r = await cashier.post("/caja/session/close/aprobar", {"supervisor_code": SUPERVISOR_PIN, "note": "nota larga"})
    assert r.status_code == 409 and "no está esperando aprobación" in r.text


async def test_an_incident_filed_at_the_pos_shows_in_the_jornada_report(cashier, setup, app):
    """Found: cashier incidents had no jornada, so the jornada and Z reports missed them."""
    await open_session(cashier, setup)
    r = await cashier.post("/caja/incidentes", {"kind": "printer", "description": "Impresora sin papel"})
    assert r.status_code == 303
    from conftest import WebClient

    async with AsyncTestClient(app=app) as raw:
        boss = WebClient(raw)
        await boss.login("super", venue_id=setup.venue_id)
        z = await boss.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}/z")
    assert "Impresora sin papel" in z.text


def test_no_supervisor_code_is_echoed_back():
    """The supervisor's code never comes back in a page (it is a password)."""
    from caja_web.pos.routes import ApproveForm, echo

    assert echo(ApproveForm(supervisor_code="730614", note="n")) == {"note": "n"}


async def test_the_reports_show_every_void_with_its_reason_and_who(cashier, setup, app):
    """Found: the reports showed "Anuladas 0 ($0)": unpaid voids and their reasons appeared nowhere."""
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    r = await cashier.post(f"/caja/venta/{sale_id}/anular", {"reason": "Cliente se fue sin pagar"})
    assert r.status_code == 303
    paid_id = await paid_cash_sale(cashier, setup)
    r = await cashier.post(
        f"/caja/venta/{paid_id}/anular",
        {"reason": "Trago devuelto", "panel": "receipt", "supervisor_code": SUPERVISOR_PIN},
    )
    assert r.status_code == 303
    from conftest import WebClient

    async with AsyncTestClient(app=app) as raw:
        boss = WebClient(raw)
        await boss.login("super", venue_id=setup.venue_id)
        z = text_of((await boss.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}/z")).text)
        jornada = text_of((await boss.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}")).text)
        session = text_of((await boss.get("/admin/cajas/reportes/sesion/1")).text)
    assert "Anuladas pagadas 1 ($6.000)" in z and "Anuladas sin pagar 1 ($3.500)" in z
    for page in (z, jornada, session):
        assert "Cliente se fue sin pagar" in page and "Trago devuelto" in page
        assert "Pagadas: 1 ($6.000) · sin pagar: 1 ($3.500)" in page
        assert "Supervisora" in page  # who authorized the paid void


async def test_a_cashier_cannot_charge_another_cashiers_sale_on_its_terminal(cashier, app, setup, sqlite_db, fakes):
    """Found: a cashier of another register could send a sale of a drawer they do not hold to its card terminal
    (or to its backup) by posting to the sale's card actions, while cash, voids and tips were refused."""
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    diego, _diego_id, raw = await second_cashier(app, sqlite_db, setup)
    try:
        for path in ("tarjeta", "respaldo", "respaldo/confirmar", "forzar-respaldo", "cancelar-pago"):
            r = await diego.post(f"/caja/venta/{sale_id}/{path}", htmx=True)
            assert r.status_code == 403 and "la tiene otro cajero" in r.text, (path, text_of(r.text)[:300])
    finally:
        await raw.__aexit__(None, None, None)
    async with sqlite_db.session() as s:
        assert await s.scalar(select(func.count()).where(PaymentAttempt.sale_id == sale_id)) == 0
        assert (await sales.get_sale(s, setup.venue_id, sale_id)).status == "pending_payment"
    assert fakes[0].ledger == {} and fakes[0].count("charge") == 0
    r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)  # the holder still charges it
    assert r.status_code == 200, text_of(r.text)
