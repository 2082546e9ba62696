"""Printing at the POS and in the admin pages, through the test client, against a fake ESC/POS printer on a
real loopback socket: the receipt after a cash or card sale, a dead printer (warning, incident, retry, the
sale still paid), copies, the drawer, the printer form and test print, reports, the customer's receipt."""

import asyncio
import time

import pytest
from sqlalchemy import select
from test_pos import checkout, open_session, poll_until
from webkit import text_of

from caja_core.audit.models import AuditEvent
from caja_core.printing.links import receipt_token
from caja_core.providers import OutcomeKind
from caja_core.testing.factories import SUPERVISOR_PIN
from caja_core.testing.fake import Step
from caja_core.testing.fake_printer import FakeNetworkPrinter, closed_port


@pytest.fixture
def printer():
    with FakeNetworkPrinter() as p:
        yield p


async def configure(app, setup, **config):
    await app.state.printing.save_config(setup.venue_id, setup.register_id, config, setup.admin_id)


def network(printer, **extra):
    return {"printer": "escpos_network", "name": "Epson caja", "settings": printer.settings, **extra}


async def print_status(client, sale_id, marker, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        r = await client.get(f"/caja/venta/{sale_id}/impresion", htmx=True)
        assert r.status_code == 200
        if marker in r.text:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never shown; last: {text_of(r.text)[:400]}")
        await asyncio.sleep(0.05)


async def cash_sale(client, setup, *products, received=""):
    sale_id, _ = await checkout(client, setup, *products)
    r = await client.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": received}, htmx=True)
    assert r.status_code == 200 and "Siguiente venta" in r.text, text_of(r.text)
    return sale_id, r


async def test_cash_sale_prints_the_receipt_and_the_screen_says_so(cashier, app, setup, printer):
    await configure(app, setup, **network(printer, open_drawer=True))
    await open_session(cashier, setup)
    sale_id, r = await cash_sale(cashier, setup, "Cerveza", "Piscola", received="10000")
    assert f'hx-get="/caja/venta/{sale_id}/impresion"' in r.text  # the receipt asks how printing went
    job = (await printer.jobs_after(1))[0]
    assert b"1 x Cerveza" in job and b"1 x Piscola" in job and b"$9.500" in job and b"\x1bp\x00" in job
    r = await print_status(cashier, sale_id, "Ticket impreso")
    assert "Reimprimir (COPIA)" in r.text
    assert 'id="receipt-qr"' in r.text and "<svg" in r.text and "Boleta digital" in r.text


async def test_a_slow_printer_never_holds_the_sale(cashier, app, setup, sqlite_db):
    with FakeNetworkPrinter(held=True) as printer:
        await configure(app, setup, **network(printer))
        await open_session(cashier, setup)
        sale_id, r = await cash_sale(cashier, setup, "Cerveza")  # answered while the printer says nothing
        assert "Vuelto" in r.text
        r = await cashier.get(f"/caja/venta/{sale_id}/impresion", htmx=True)
        assert "Imprimiendo ticket" in r.text and 'hx-trigger="every 1s"' in r.text
        assert printer.jobs == []
        printer.release()
        r = await print_status(cashier, sale_id, "Ticket impreso")
        assert 'hx-trigger="every 1s"' not in r.text  # the status stops polling once printed
        assert b"Cerveza" in (await printer.jobs_after(1))[0]


async def test_dead_printer_warns_opens_an_incident_and_retry_prints(cashier, app, setup, sqlite_db):
    port = closed_port()
    await configure(app, setup, printer="escpos_network", settings={"host": "127.0.0.1", "port": port, "timeout_s": 1})
    await open_session(cashier, setup)
    sale_id, r = await cash_sale(cashier, setup, "Agua")
    assert "Vuelto" in r.text  # the sale is paid and the receipt is on screen
    r = await print_status(cashier, sale_id, "No se pudo imprimir")
    text = text_of(r.text)
    assert "La venta está pagada" in text and "no responde en 127.0.0.1" in text and "Reintentar impresión" in text
    r = await cashier.get("/caja/incidentes")
    assert "Impresora caída" in r.text and "Ticket de la venta" in r.text

    with FakeNetworkPrinter() as printer:
        await configure(app, setup, **network(printer))
        r = await cashier.post(f"/caja/venta/{sale_id}/impresion/reintentar", htmx=True)
        assert r.status_code == 200 and "Ticket impreso" in r.text and "No se pudo" not in r.text
        assert b"Agua" in (await printer.jobs_after(1))[0]
    r = await cashier.get(f"/caja/venta/{sale_id}")
    assert "Siguiente venta" in r.text  # still the paid sale's receipt


async def test_card_sale_prints_with_masked_card_data(cashier, app, setup, fakes, printer):
    await configure(app, setup, **network(printer))
    fakes[0].script("charge", Step(kind=OutcomeKind.APPROVED, delay_s=0.1))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    await poll_until(cashier, sale_id, "Siguiente venta")
    job = (await printer.jobs_after(1))[0]
    assert b"Tarjeta" in job and b"****4242" in job and b"A1B2C3" in job and b"\x1bp" not in job
    assert len(await printer.jobs_after(1)) == 1


async def test_copy_from_the_sales_list(cashier, app, setup, printer, sqlite_db):
    await configure(app, setup, **network(printer, auto_print=False))
    await open_session(cashier, setup)
    sale_id, _ = await cash_sale(cashier, setup, "Cerveza")
    r = await cashier.get("/caja/ventas")
    assert r.status_code == 200 and f'id="sale-{sale_id}"' in r.text and "Reimprimir (COPIA)" in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/reimprimir", htmx=True)
    assert "Copia impresa" in r.text
    assert (await printer.jobs_after(1))[0].count(b"COPIA") == 2
    async with sqlite_db.session() as s:
        assert (
            await s.scalar(select(AuditEvent.user_id).where(AuditEvent.action == "sale.reprinted")) == setup.cashier_id
        )


async def test_open_drawer_needs_a_reason(cashier, app, setup, printer, sqlite_db):
    await configure(app, setup, **network(printer))
    await open_session(cashier, setup)
    r = await cashier.post("/caja/cajon", {"reason": ""})
    assert r.status_code == 422 and "Indique el motivo para abrir el cajón" in r.text
    assert printer.jobs == []
    r = await cashier.post("/caja/cajon", {"reason": "Cambio para la barra"})
    assert r.status_code == 403 and 'name="supervisor_code"' in r.text  # a cashier needs a supervisor
    assert printer.jobs == []
    r = await cashier.post("/caja/cajon", {"reason": "Cambio para la barra", "supervisor_code": SUPERVISOR_PIN})
    assert r.status_code == 200 and "Cajón abierto" in r.text
    assert (await printer.jobs_after(1))[0] == b"\x1bp\x0022"
    async with sqlite_db.session() as s:
        event = await s.scalar(select(AuditEvent).where(AuditEvent.action == "drawer.opened"))
    assert event.payload["reason"] == "Cambio para la barra" and event.user_id == setup.cashier_id
    assert event.payload["authorized_by"] == setup.supervisor_id
    await cashier.post("/logout")
    await cashier.login("super", venue_id=setup.venue_id)
    r = await cashier.get(f"/admin/cajas/reportes/sesion/{event.entity_id}/impresion", htmx=True)
    assert "Aperturas manuales del cajón" in r.text and "Cambio para la barra" in text_of(r.text)
    assert "Cajera" in r.text and "Imprimir informe X" in r.text


async def test_cash_movement_opens_the_drawer_when_configured(cashier, app, setup, printer):
    await configure(app, setup, **network(printer, drawer_on_movements=True))
    await open_session(cashier, setup)
    r = await cashier.post("/caja/movimientos", {"kind": "out", "amount": "2000", "reason": "Compra de hielo"})
    assert r.status_code == 303
    assert (await printer.jobs_after(1))[0] == b"\x1bp\x0022"


async def test_admin_printer_form_validates_saves_and_test_prints(admin, setup, printer):
    r = await admin.get(f"/admin/cajas/{setup.register_id}/editar")
    assert f'hx-get="/admin/cajas/{setup.register_id}/impresora"' in r.text
    r = await admin.get(f"/admin/cajas/{setup.register_id}/impresora", htmx=True)
    assert 'id="printer-form"' in r.text and "ESC/POS en red (TCP)" in r.text and "Navegador" in r.text
    bad = {"printer": "escpos_network", "paper_width": "80", "settings.escpos_network.host": "no es un host!"}
    r = await admin.post(f"/admin/cajas/{setup.register_id}/impresora", bad, htmx=True)
    assert r.status_code == 422 and "Indique la dirección IP o el nombre de la impresora" in r.text
    assert 'value="no es un host!"' in r.text
    good = {
        "printer": "escpos_network",
        "name": "Epson TM-T20",
        "paper_width": "58",
        "auto_print": "1",
        "open_drawer": "1",
        "settings.escpos_network.host": printer.host,
        "settings.escpos_network.port": str(printer.port),
        "settings.escpos_network.codepage": "CP858",
        "settings.escpos_network.check_status": "1",
        "settings.escpos_network.timeout_s": "2",
    }
    r = await admin.post(f"/admin/cajas/{setup.register_id}/impresora", good, htmx=True)
    assert r.status_code == 200 and "Impresora guardada" in r.text and "Imprimir prueba" in r.text
    r = await admin.post(f"/admin/cajas/{setup.register_id}/impresora/probar", htmx=True)
    assert "Prueba de impresión: impreso" in text_of(r.text)
    page = (await printer.jobs_after(1))[0]
    assert "PRUEBA DE IMPRESIÓN".encode("cp858") in page and b"Epson TM-T20" in page and b"58 mm" in page


async def test_browser_printer_opens_a_printable_ticket(cashier, app, setup):
    await configure(app, setup, printer="browser", paper_width=58)
    await open_session(cashier, setup)
    sale_id, _ = await cash_sale(cashier, setup, "Cerveza")
    r = await print_status(cashier, sale_id, "print-frame")
    assert f"/caja/venta/{sale_id}/ticket?imprimir=1" in r.text
    r = await cashier.get(f"/caja/venta/{sale_id}/ticket?imprimir=1")
    assert r.status_code == 200 and 'class="ticket w58"' in r.text and 'data-autoprint="1"' in r.text
    assert 'data-paper="58"' in r.text and "1 x Cerveza" in r.text


async def test_reports_print_on_the_register_printer(supervisor, app, setup, printer):
    await configure(app, setup, **network(printer))
    r = await supervisor.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}/impresion", htmx=True)
    assert "Imprimir informe Z en la impresora" in r.text and "Caja 1" in r.text
    r = await supervisor.post(
        f"/admin/cajas/reportes/jornada/{setup.jornada_id}/imprimir", {"register_id": setup.register_id}, htmx=True
    )
    assert "impreso" in r.text
    assert b"INFORME Z JORNADA" in (await printer.jobs_after(1))[0]
    r = await supervisor.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}/ticket")
    assert r.status_code == 200 and "INFORME Z JORNADA" in r.text


async def test_the_customers_receipt_link(client, cashier, app, setup, settings):
    await open_session(cashier, setup)
    sale_id, _ = await cash_sale(cashier, setup, "Piscola")
    r = await cashier.get(f"/caja/venta/{sale_id}/impresion", htmx=True)
    assert 'id="receipt-qr"' in r.text and "<svg" in r.text  # no printer: the screen still shows the QR
    token = receipt_token(settings.secret_key, sale_id)
    await client.post("/logout")
    r = await client.get(f"/boleta/{token}")
    assert r.status_code == 200 and "1 x Piscola" in r.text and "$6.000" in r.text
    assert "Cajera" in r.text and "****" not in r.text and r.headers["cache-control"] == "no-store"
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (forged, f"{sale_id}", "1-" + "x" * 22):
        assert (await client.get(f"/boleta/{bad}")).status_code == 404


async def test_a_cashier_never_sees_the_expected_cash_of_an_open_session(cashier, setup, sqlite_db):
    """The close is blind: the X report of an open session (its expected cash) is for supervisors, on the
    printable page as on paper; the cashier gets the Z report once the drawer is counted."""
    from caja_core.sessions.models import CashSession

    await open_session(cashier, setup, cash="10000")
    await cash_sale(cashier, setup, "Cerveza", received="3500")
    async with sqlite_db.session() as s:
        session_id = await s.scalar(select(CashSession.id))
    r = await cashier.get(f"/caja/sesion/{session_id}/ticket")
    assert r.status_code == 403 and "$13.500" not in r.text and "esperado" not in r.text.lower()
    r = await cashier.get(f"/caja/sesion/{session_id}/ticket?imprimir=1", htmx=True)
    assert r.status_code == 403 and "$13.500" not in r.text
    r = await cashier.post(f"/caja/sesion/{session_id}/imprimir", htmx=True)
    assert r.status_code == 403 and "$13.500" not in r.text
    r = await cashier.post(
        "/caja/session/close", {"count_10000": "1", "count_2000": "1", "count_1000": "1", "count_500": "1"}
    )
    assert r.status_code == 200 and "Caja cerrada" in r.text
    r = await cashier.get(f"/caja/sesion/{session_id}/ticket")
    assert r.status_code == 200 and "INFORME Z" in r.text and "$13.500" in r.text


async def test_after_a_handover_the_cashier_who_closes_gets_the_z_report(cashier, app, setup, sqlite_db):
    from test_pos_controls import second_cashier

    from caja_core.sessions.models import CashSession

    await open_session(cashier, setup, cash="10000")
    diego, _, raw = await second_cashier(app, sqlite_db, setup)
    try:
        form = {"register_id": setup.register_id, "count_10000": "1", "supervisor_code": SUPERVISOR_PIN}
        assert (await diego.post("/caja/session/relevo", form)).status_code == 200
        async with sqlite_db.session() as s:
            session_id = await s.scalar(select(CashSession.id))
        assert (await diego.get(f"/caja/sesion/{session_id}/ticket")).status_code == 403  # open: blind
        r = await diego.post("/caja/session/close", {"count_10000": "1"})
        assert r.status_code == 200 and "Caja cerrada" in r.text
        r = await diego.get(f"/caja/sesion/{session_id}/ticket")
        assert r.status_code == 200 and "INFORME Z" in r.text
    finally:
        await raw.__aexit__(None, None, None)


async def test_a_retry_opens_the_drawer_only_for_its_holder_on_the_last_sale(cashier, app, setup, sqlite_db):
    """Found: "Reintentar impresión" re-sent a failed cash receipt with its drawer kick for anyone, at any
    time: another cashier at another register, or the holder on an old sale, opened the drawer without a
    reason or a supervisor. A retry prints the ticket; it opens the drawer only for the drawer's holder, on
    the session's last sale (the kick that sale never had), once."""
    from test_pos_controls import second_cashier

    await open_session(cashier, setup)
    never_planned, _ = await cash_sale(cashier, setup, "Agua")  # paid before the register had a printer
    port = closed_port()
    dead = {"printer": "escpos_network", "open_drawer": True, "settings": {"host": "127.0.0.1", "port": port}}
    await configure(app, setup, **dead)
    older, _ = await cash_sale(cashier, setup, "Cerveza")
    last, _ = await cash_sale(cashier, setup, "Piscola")
    for sale_id in (older, last):
        await print_status(cashier, sale_id, "No se pudo imprimir")
    diego, _, raw = await second_cashier(app, sqlite_db, setup)
    try:
        with FakeNetworkPrinter() as printer:
            await configure(app, setup, **network(printer, open_drawer=True))
            r = await diego.post(f"/caja/venta/{last}/impresion/reintentar", htmx=True)
            assert r.status_code == 200 and "Ticket impreso" in r.text
            job = (await printer.jobs_after(1))[0]
            assert b"1 x Piscola" in job and b"\x1bp" not in job  # not their drawer
            for sale_id in (older, never_planned):
                r = await cashier.post(f"/caja/venta/{sale_id}/impresion/reintentar", htmx=True)
                assert r.status_code == 200 and "Ticket impreso" in r.text
            jobs = await printer.jobs_after(3)
            assert b"1 x Cerveza" in jobs[1] and b"1 x Agua" in jobs[2]
            assert all(b"\x1bp" not in job for job in jobs)  # old sales: the ticket, not the drawer
    finally:
        await raw.__aexit__(None, None, None)

    await configure(app, setup, **dead)
    sale_id, _ = await cash_sale(cashier, setup, "Cerveza")
    await print_status(cashier, sale_id, "No se pudo imprimir")
    with FakeNetworkPrinter() as printer:
        await configure(app, setup, **network(printer, open_drawer=True))
        retries = [cashier.post(f"/caja/venta/{sale_id}/impresion/reintentar", htmx=True) for _ in range(2)]
        assert all(r.status_code == 200 for r in await asyncio.gather(*retries))  # a double tap
        jobs = await printer.jobs_after(1)
        assert b"1 x Cerveza" in jobs[0] and jobs[0].count(b"\x1bp") == 1  # the holder's last sale: once
        await asyncio.sleep(0.5)
        assert len(printer.jobs) == 1
