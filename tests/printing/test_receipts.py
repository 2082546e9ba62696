"""Receipts, copies, comandas and the drawer against a fake ESC/POS printer on a real loopback socket."""

import pytest
from sqlalchemy import func, select

from caja_core.audit.models import AuditEvent
from caja_core.audit.service import list_incidents
from caja_core.catalog import service as catalog
from caja_core.errors import Conflict, ValidationFailed
from caja_core.permissions import Action
from caja_core.permissions.service import SupervisorRequired, authorize
from caja_core.printing.models import PrintJob
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN
from caja_core.testing.fake_printer import FakeNetworkPrinter, closed_port

from .conftest import network_config, open_session, paid_cash_sale

CUT = b"\x1dV\x00"  # GS V 0: full cut
KICK = b"\x1bp\x00"  # ESC p 0: drawer kick on pin 2
CP858 = b"\x1bt\x13"  # ESC t 19: code page 858


async def test_a_cash_sale_prints_its_receipt_cuts_and_opens_the_drawer(any_db, setup, service, printer):
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer, open_drawer=True), None)
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id, received=10000)

    service.sale_paid(setup.venue_id, sale.id)
    job = (await printer.jobs_after(1))[0]

    assert KICK in job and job.index(KICK) < job.index(b"Cerveza")  # the drawer opens while it prints
    assert job.rstrip(b"\n").endswith(CUT)
    assert CP858 in job
    for text in (b"Local local", b"Caja 1", b"Cajera", b"2 x Cerveza", b"$7.000", b"TOTAL", b"Efectivo", b"$3.000"):
        assert text in job, text
    assert f"Ticket N\xf8 {sale.id:08d}".encode("latin-1") in job  # N° in CP858
    assert b"\x1dkE" in job and f"{sale.id:08d}".encode() in job  # CODE39 barcode of the ticket number
    assert b"http://caja.local/boleta/" in job  # QR of the digital receipt
    await service.drain()
    status = await service.sale_status(setup.venue_id, sale.id)
    assert [(j.kind, j.status) for j in status.jobs] == [("receipt", "printed")]


async def test_the_receipt_prints_once_however_often_it_is_asked(any_db, setup, service, printer):
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer), None)
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id)
    for _ in range(3):
        service.sale_paid(setup.venue_id, sale.id)
    await service.drain()
    assert len(await printer.jobs_after(1)) == 1
    async with any_db.session() as s:
        assert await s.scalar(select(func.count()).select_from(PrintJob)) == 1


async def test_a_dead_printer_opens_one_incident_and_the_sale_stays_paid(any_db, setup, service):
    dead = {"host": "127.0.0.1", "port": closed_port(), "timeout_s": 1.0}
    await service.save_config(
        setup.venue_id, setup.register_id, {"printer": "escpos_network", "settings": dead}, setup.admin_id
    )
    sess = await open_session(any_db, setup)
    first = await paid_cash_sale(any_db, setup, sess.id)
    second = await paid_cash_sale(any_db, setup, sess.id)
    service.sale_paid(setup.venue_id, first.id)
    service.sale_paid(setup.venue_id, second.id)
    await service.drain()

    status = await service.sale_status(setup.venue_id, first.id)
    assert status.failed and "no responde" in status.failed[0].error
    async with any_db.session() as s:
        assert (await sales.get_sale(s, setup.venue_id, first.id)).status == "paid"
        assert (await sessions.get_session(s, setup.venue_id, sess.id)).ticket_count == 2
        incidents = await list_incidents(s, setup.venue_id, session_id=sess.id)
    assert [i.kind for i in incidents] == ["printer_down"]  # one, not one per ticket
    assert "venta #" in incidents[0].description


async def test_retry_prints_once_the_printer_is_back(any_db, setup, service):
    port = closed_port()
    cfg = {"printer": "escpos_network", "settings": {"host": "127.0.0.1", "port": port, "timeout_s": 1.0}}
    await service.save_config(setup.venue_id, setup.register_id, cfg, None)
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id)
    service.sale_paid(setup.venue_id, sale.id)
    await service.drain()
    assert (await service.sale_status(setup.venue_id, sale.id)).failed

    with FakeNetworkPrinter() as printer:
        cfg["settings"]["port"] = printer.port
        await service.save_config(setup.venue_id, setup.register_id, cfg, None)
        status = await service.retry_sale(setup.venue_id, sale.id, setup.cashier_id)
        assert not status.failed and [j.status for j in status.jobs] == ["printed"]
        assert b"Cerveza" in (await printer.jobs_after(1))[0]


async def test_out_of_paper_fails_with_the_reason_and_sends_no_ticket(any_db, setup, service):
    with FakeNetworkPrinter(paper="out") as printer:
        await service.save_config(setup.venue_id, setup.register_id, network_config(printer), None)
        sess = await open_session(any_db, setup)
        sale = await paid_cash_sale(any_db, setup, sess.id)
        service.sale_paid(setup.venue_id, sale.id)
        await service.drain()
        assert printer.status_queries >= 1 and printer.jobs == []
    failed = (await service.sale_status(setup.venue_id, sale.id)).failed
    assert failed and "no tiene papel" in failed[0].error


async def test_a_printer_that_ignores_status_queries_still_prints(any_db, setup, service):
    with FakeNetworkPrinter(answers_status=False) as printer:
        await service.save_config(setup.venue_id, setup.register_id, network_config(printer), None)
        sess = await open_session(any_db, setup)
        sale = await paid_cash_sale(any_db, setup, sess.id)
        service.sale_paid(setup.venue_id, sale.id)
        assert b"Cerveza" in (await printer.jobs_after(1))[0]


async def test_copy_is_marked_and_audited(any_db, setup, service, printer):
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer, auto_print=False), None)
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id)
    job = await service.reprint(setup.venue_id, sale.id, setup.cashier_id)
    assert job.status == "printed"
    data = (await printer.jobs_after(1))[0]
    assert data.count(b"COPIA") == 2 and b"\x1bp" not in data  # a copy never opens the drawer
    async with any_db.session() as s:
        actions = list(await s.scalars(select(AuditEvent.action).where(AuditEvent.entity == "sale")))
    assert "sale.reprinted" in actions


async def test_comanda_routes_products_by_category_without_prices(any_db, setup, service, printer):
    async with any_db.session() as s:
        kitchen = await catalog.create_category(s, venue_id=setup.venue_id, name="Cocina")
        fries = await catalog.create_product(
            s, venue_id=setup.venue_id, category_id=kitchen.id, name="Papas fritas", price=4500
        )
    with FakeNetworkPrinter() as kitchen_printer:
        route = {"name": "Cocina", "printer": "escpos_network", "settings": kitchen_printer.settings}
        cfg = network_config(printer, comandas=[{**route, "categories": [kitchen.id]}])
        await service.save_config(setup.venue_id, setup.register_id, cfg, None)
        sess = await open_session(any_db, setup)
        items = [
            sales.ItemInput(product_id=setup.products["Cerveza"]),
            sales.ItemInput(product_id=fries.id, quantity=2),
        ]
        sale = await paid_cash_sale(any_db, setup, sess.id, items=items)
        service.sale_paid(setup.venue_id, sale.id)
        ticket = (await kitchen_printer.jobs_after(1))[0]
    assert b"COMANDA Cocina" in ticket and b"2 x Papas fritas" in ticket
    assert b"Cerveza" not in ticket and b"$" not in ticket
    assert b"Papas fritas" in (await printer.jobs_after(1))[0]  # the customer's receipt has everything


async def test_manual_drawer_opening_needs_a_reason_and_is_audited(any_db, setup, service, printer):
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer), None)
    sess = await open_session(any_db, setup)
    with pytest.raises(ValidationFailed):
        await service.open_drawer(setup.venue_id, sess.id, setup.cashier_id, "  ")
    with pytest.raises(SupervisorRequired):  # a cashier opens the drawer with a supervisor's authorization
        await service.open_drawer(setup.venue_id, sess.id, setup.cashier_id, "Cambio de billete")
    grant = await authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.OPEN_DRAWER,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        session_id=sess.id,
    )
    job = await service.open_drawer(setup.venue_id, sess.id, setup.cashier_id, "Cambio de billete", grant)
    assert job.status == "printed" and (await printer.jobs_after(1))[0] == b"\x1bp\x0022"
    with pytest.raises(SupervisorRequired):  # an authorization opens the drawer once
        await service.open_drawer(setup.venue_id, sess.id, setup.cashier_id, "Otra vez", grant)
    async with any_db.session() as s:
        events = list(await s.scalars(select(AuditEvent).where(AuditEvent.action == "drawer.opened")))
    assert len(events) == 1 and events[0].user_id == setup.cashier_id
    assert events[0].payload["reason"] == "Cambio de billete"
    assert events[0].payload["authorized_by"] == setup.supervisor_id
    openings = await service.drawer_openings(setup.venue_id, sess.id)
    assert [(o.user_name, o.reason) for o in openings] == [("Cajera", "Cambio de billete")]


async def test_cash_movements_kick_the_drawer_when_the_register_says_so(any_db, setup, service, printer):
    await service.save_config(
        setup.venue_id, setup.register_id, network_config(printer, drawer_on_movements=True), None
    )
    sess = await open_session(any_db, setup)
    async with any_db.session() as s:
        await sessions.add_cash_movement(
            s,
            venue_id=setup.venue_id,
            session_id=sess.id,
            kind="in",
            amount=5000,
            reason="Sencillo",
            user_id=setup.cashier_id,
        )
    service.cash_movement(setup.venue_id, sess.id)
    assert (await printer.jobs_after(1))[0] == b"\x1bp\x0022"


async def test_no_printer_no_jobs_and_a_clear_refusal(any_db, setup, service):
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id)
    service.sale_paid(setup.venue_id, sale.id)
    await service.drain()
    assert (await service.sale_status(setup.venue_id, sale.id)).jobs == []
    with pytest.raises(Conflict, match="no tiene impresora"):
        await service.reprint(setup.venue_id, sale.id, setup.cashier_id)


async def test_session_and_jornada_reports_print(any_db, setup, service, printer):
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer), None)
    sess = await open_session(any_db, setup)
    await paid_cash_sale(any_db, setup, sess.id)
    assert (await service.print_session_report(setup.venue_id, sess.id, setup.supervisor_id)).status == "printed"
    x = (await printer.jobs_after(1))[0]
    assert b"INFORME X" in x and b"$7.000" in x and b"Efectivo esperado" in x
    job = await service.print_jornada_report(setup.venue_id, setup.jornada_id, setup.register_id, setup.admin_id)
    assert job.status == "printed"
    assert b"INFORME Z JORNADA" in (await printer.jobs_after(2))[1]


async def test_a_failed_copy_is_not_the_sales_warning(any_db, setup, service, printer):
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer, open_drawer=True), None)
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id)
    service.sale_paid(setup.venue_id, sale.id)
    await printer.jobs_after(1)
    await service.drain()
    dead = {"printer": "escpos_network", "settings": {"host": "127.0.0.1", "port": closed_port(), "timeout_s": 1}}
    await service.save_config(setup.venue_id, setup.register_id, dead, None)
    copy = await service.reprint(setup.venue_id, sale.id, setup.cashier_id)
    assert copy.status == "failed"
    status = await service.sale_status(setup.venue_id, sale.id)
    assert [(j.kind, j.status) for j in status.jobs] == [("receipt", "printed")] and not status.failed


def printed_rows(job: bytes) -> list[str]:
    """The text rows a job prints, without the ESC/POS commands before them."""
    import re

    body = job.split(b"\x1dV")[0]  # up to the cut
    return [
        re.sub(rb"\x1b[!Eat].|\x1b@|\x1bd.", b"", row).decode("cp858")
        for row in body.split(b"\n")
        if b"\x1d" not in row
    ]


async def test_on_58_mm_paper_words_stay_whole_and_nothing_is_cut_off(any_db, setup, service, printer):
    """Found: on 58 mm paper a label next to a long value was cut every few letters ("Impre" / "sora"), and a
    value wider than the paper lost its end."""
    name = "Epson TM-T20II barra pista"
    config = network_config(printer, paper_width=58, name=name)
    await service.save_config(setup.venue_id, setup.register_id, config, None)
    assert (await service.test_print(setup.venue_id, setup.register_id, setup.admin_id)).status == "printed"
    rows = printed_rows((await printer.jobs_after(1))[0])
    assert all(len(row) <= 32 for row in rows), rows
    words = " ".join(rows).split()
    assert "Impresora" in words and "Conexión" in words and name in " ".join(" ".join(rows).split())

    long_name = "Impresora térmica Epson TM-T20II de la barra de la pista central del segundo piso"[:80]
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer, name=long_name), None)
    await service.test_print(setup.venue_id, setup.register_id, setup.admin_id)
    rows = printed_rows((await printer.jobs_after(2))[1])
    assert all(len(row) <= 48 for row in rows), rows
    assert long_name in " ".join(" ".join(rows).split())  # all of it, on as many rows as it takes
