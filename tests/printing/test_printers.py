"""The printers themselves: Spanish on the printer's code page, serial and USB device files, settings
validated like provider settings, the printer hook, and the customer's signed receipt link."""

import asyncio
import os
import pty
import tty

import pytest

from caja_core import hookimpl
from caja_core.errors import NotFound, PluginError, ValidationFailed
from caja_core.plugins import make_plugin_manager
from caja_core.printing import Document, PrinterConfig, PrinterRegistry, render_escpos, validate_config
from caja_core.printing.links import receipt_token, sale_for_token
from caja_core.printing.service import PrintService
from caja_core.printing.tickets import CardLine, ItemLine, SaleData, sale_receipt

from .conftest import SECRET, network_config, open_session, paid_cash_sale


def test_spanish_text_is_encoded_for_the_printers_code_page():
    doc = Document(title="t", paper_width=80).add("Piña, ñandú: ¿Cómo está? ¡Sí! Ü É", "$1.000")
    data = render_escpos(doc, codepage="CP858")
    assert data.count(b"\x1bt\x13") == 1  # ESC t 19 selects CP858 once
    assert "Piña, ñandú: ¿Cómo está? ¡Sí! Ü É".encode("cp858") in data
    assert b"Pi\xa4a, \xa4and\xa3: \xa8C\xa2mo est\xa0? \xadS\xa1! \x9a \x90" in data
    assert "ñ".encode() not in data  # never UTF-8 bytes on a code-page printer

    old = render_escpos(Document(title="t").add("ÁRBOL Ñandú €"), codepage="CP437")
    assert b"\x1bt\x00" in old and b"ARBOL \xa5and\xa3 EUR" not in old
    assert b"ARBOL \xa5and\xa3" in old  # no Á in CP437: printed without the accent, Ñ kept


def test_long_names_wrap_and_amounts_stay_flush_right():
    doc = Document(title="t", paper_width=58).add("2 x Piscola doble con limón de pica y hielo", "$12.000")
    text = render_escpos(doc).decode("cp858", "replace")
    rows = [r for r in text.split("\n") if "$12.000" in r]
    assert rows and rows[0].endswith("$12.000") and len(rows[0].split("\x1b")[-1]) <= 32 + 4


async def test_serial_printer_gets_the_ticket_over_a_serial_line(any_db, setup, service):
    master, slave = pty.openpty()
    tty.setraw(slave)
    try:
        cfg = {"printer": "escpos_serial", "settings": {"path": os.ttyname(slave), "baudrate": 9600}}
        await service.save_config(setup.venue_id, setup.register_id, cfg, None)
        job = await service.test_print(setup.venue_id, setup.register_id, setup.admin_id)
        assert job.status == "printed", job.error
        received = b""
        loop = asyncio.get_running_loop()
        while b"\x1dV" not in received:
            received += await asyncio.wait_for(loop.run_in_executor(None, os.read, master, 65536), 10)
        assert "PRUEBA DE IMPRESIÓN".encode("cp858") in received
    finally:
        os.close(master)
        os.close(slave)


async def test_usb_printer_device_file(any_db, setup, service, tmp_path):
    device = tmp_path / "lp0"
    device.touch()
    cfg = {"printer": "escpos_usb", "settings": {"path": str(device)}}
    await service.save_config(setup.venue_id, setup.register_id, cfg, None)
    assert (await service.test_print(setup.venue_id, setup.register_id, setup.admin_id)).status == "printed"
    assert "ñandú".encode("cp858") in device.read_bytes()
    cfg["settings"]["path"] = str(tmp_path / "missing" / "lp0")
    await service.save_config(setup.venue_id, setup.register_id, cfg, None)
    job = await service.test_print(setup.venue_id, setup.register_id, setup.admin_id)
    assert job.status == "failed" and "No se encontró la impresora" in job.error


@pytest.mark.parametrize(
    "config,field",
    [
        ({"printer": "escpos_network", "settings": {"host": "bad host!", "port": 9100}}, "printer.settings.host"),
        ({"printer": "escpos_network", "settings": {"host": "10.0.0.5", "port": 70000}}, "printer.settings.port"),
        ({"printer": "escpos_network", "settings": {"host": "10.0.0.5", "colour": "x"}}, "printer.settings.settings"),
        (
            {"printer": "escpos_serial", "settings": {"path": "/dev/ttyS0", "baudrate": 1234}},
            "printer.settings.baudrate",
        ),
        ({"printer": "browser", "open_drawer": True}, "printer.open_drawer"),
        ({"printer": "escpos_network", "printer_type": "laser", "settings": {"host": "p1"}}, "printer.printer_type"),
        ({"printer": "nope"}, "printer.printer"),
        (
            {
                "comandas": [
                    {"name": "Barra", "printer": "escpos_network", "settings": {"host": "p"}, "categories": [999]}
                ]
            },
            "printer.comandas.0.categories",
        ),
        ({"comandas": [{"name": "", "printer": "browser", "categories": [1]}]}, "printer.comandas.0.name"),
    ],
)
async def test_bad_settings_are_refused_in_spanish_and_nothing_is_saved(any_db, setup, service, config, field):
    with pytest.raises(ValidationFailed) as err:
        await service.save_config(setup.venue_id, setup.register_id, config, setup.admin_id)
    assert field in err.value.fields, err.value.fields
    assert (await service.get_config(setup.venue_id, setup.register_id)) == PrinterConfig()


def test_paper_width_and_type_are_checked_before_anything_else():
    with pytest.raises(ValidationFailed):
        validate_config({"paper_width": 70}, PrinterRegistry.builtin(), set())
    assert validate_config({"paper_width": 58}, PrinterRegistry.builtin(), set()).paper_width == 58


def test_a_plugin_adds_a_printer_through_the_hook_and_duplicates_stop_start_up():
    class Cloud:
        id = "nube"
        name = "Impresora en la nube"
        Settings = PrinterConfig
        browser = False

        def check(self, settings):
            return {}

        def describe(self, settings):
            return "nube"

        def connect(self, settings):
            raise OSError("sin red")

    class Plugin:
        @hookimpl
        def register_printers(self, add_printer):
            add_printer(Cloud())

    pm = make_plugin_manager(Plugin(), load_entrypoints=False)
    assert [p.id for p in PrinterRegistry.from_plugin_manager(pm).all()] == [
        "browser",
        "escpos_network",
        "escpos_serial",
        "escpos_usb",
        "nube",
    ]

    class Twice:
        @hookimpl
        def register_printers(self, add_printer):
            add_printer(Cloud())

    pm = make_plugin_manager(Plugin(), Twice(), load_entrypoints=False)
    with pytest.raises(PluginError, match="duplicada"):
        PrinterRegistry.from_plugin_manager(pm)


def test_receipt_links_are_signed_and_unguessable():
    token = receipt_token(SECRET, 41)
    assert sale_for_token(SECRET, token) == 41
    mac = token.split("-", 1)[1]
    forged = [
        f"42-{mac}",
        token[:-1] + ("B" if token[-1] != "B" else "C"),
        token[:-2],
        "41",
        receipt_token("otra-clave" * 4, 41),
        "41-" + "A" * 22,
        "",
    ]
    assert [sale_for_token(SECRET, t) for t in forged] == [None] * len(forged)


def _card_sale() -> SaleData:
    from datetime import UTC, datetime

    return SaleData(
        sale_id=9,
        venue_id=1,
        venue_name="Club",
        timezone="America/Santiago",
        register_id=1,
        register_code="C1",
        register_name="Barra",
        session_id=1,
        cashier_name="Ana",
        status="paid",
        total=7000,
        payment_method="card",
        provider_id="getnet",
        paid_via="primary",
        no_revenue=False,
        courtesy_reason="",
        cash_received=None,
        change_given=None,
        paid_at=datetime(2026, 12, 6, 3, 15, tzinfo=UTC),
        created_at=datetime(2026, 12, 6, 3, 14, tzinfo=UTC),
        items=[ItemLine(name="Cerveza", quantity=2, unit_price=3500, line_total=7000, category_id=1)],
        cards=[CardLine(provider_id="getnet", brand="VI", card_type="DB", last4="4242", authorization_code="A1B2C3")],
        printer_config={},
    )


def test_card_receipt_shows_masked_card_data_and_the_digital_receipt_none():
    printed = render_escpos(sale_receipt(_card_sale(), PrinterConfig(), provider_names={"getnet": "GETNET"}))
    for text in ("Tarjeta · GETNET", "VI débito ****4242", "Cód. autorización", "A1B2C3", "06-12-2026 00:15"):
        assert text.encode("cp858") in printed, text  # 03:15 UTC is 00:15 in Santiago
    public = sale_receipt(_card_sale(), PrinterConfig(), public=True)
    text = " ".join(f"{line.text} {line.right}" for line in public.lines)
    assert "4242" not in text and "A1B2C3" not in text and "VI" not in text
    assert "Cerveza" in text and "$7.000" in text and public.qr is None and public.barcode is None


async def test_the_public_receipt_refuses_forged_links(any_db, setup, printer):
    service = PrintService(any_db, PrinterRegistry.builtin(), secret_key=SECRET)
    sess = await open_session(any_db, setup)
    sale = await paid_cash_sale(any_db, setup, sess.id)
    doc, data = await service.public_receipt(receipt_token(SECRET, sale.id))
    assert data.sale_id == sale.id and any("Cerveza" in line.text for line in doc.lines)
    for token in (receipt_token("x" * 40, sale.id), receipt_token(SECRET, sale.id + 1000)):
        with pytest.raises(NotFound):
            await service.public_receipt(token)
    await service.save_config(setup.venue_id, setup.register_id, network_config(printer), None)
