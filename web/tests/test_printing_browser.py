"""Printing in a real Chromium: the POS warns when the printer is down (the sale stays paid) and offers the
retry; the browser printer's ticket is laid out at 80 mm and prints on an 80 mm page. Screenshots go to
$CAJA_SCREENSHOTS (docs/screenshots/ when refreshing the docs)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import ProvidersPlugin
from livesite import LiveSite
from playwright.sync_api import expect, sync_playwright

from caja_core.catalog import service as catalog
from caja_core.db import Database
from caja_core.printing import PrinterRegistry, PrintService
from caja_core.testing.factories import PASSWORD, PIN
from caja_core.testing.fake import FakeProvider
from caja_core.testing.fake_printer import closed_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"]
MM = 96 / 25.4  # CSS pixels per millimetre


@pytest.fixture
def shots(tmp_path):
    target = Path(os.environ.get("CAJA_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def run(coro):
    """Run a coroutine from this (Playwright's) thread: in a thread of its own with its own event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


async def prepare(url: str, venue_id: int, register_id: int, category_id: int, config: dict) -> None:
    db = Database(url)
    try:
        async with db.session() as s:
            await catalog.create_product(s, venue_id=venue_id, category_id=category_id, name="Piña colada", price=5500)
        await PrintService(db, PrinterRegistry.builtin(), secret_key="x" * 32).save_config(
            venue_id, register_id, config, None
        )
    finally:
        await db.dispose()


async def set_printer(url: str, venue_id: int, register_id: int, config: dict) -> None:
    db = Database(url)
    try:
        await PrintService(db, PrinterRegistry.builtin(), secret_key="x" * 32).save_config(
            venue_id, register_id, config, None
        )
    finally:
        await db.dispose()


def test_printer_down_warning_and_the_80mm_ticket(sqlite_url, shots):
    site = LiveSite(sqlite_url, ProvidersPlugin(FakeProvider("fake"), FakeProvider("fakebackup"))).start()
    try:
        st = site.setup
        dead = {"printer": "escpos_network", "settings": {"host": "127.0.0.1", "port": closed_port(), "timeout_s": 1}}
        run(prepare(sqlite_url, st.venue_id, st.register_id, st.category_id, dead))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-CL", base_url=site.url)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto("/login")
            page.click("a:has-text('Cajera')")
            for key in PIN:
                page.click(f".keypad [data-key='{key}']")
            page.click(".keypad button[type=submit]")
            expect(page).to_have_url(re.compile(r"/caja/$"))
            page.locator("[data-register='CAJA1'] a:has-text('Abrir caja')").click()
            page.fill("input[name=initial_cash]", "20000")
            page.click("#open-form button[type=submit]")
            expect(page).to_have_url(re.compile(r"/caja/venta$"))

            # --- the printer is off: the sale is paid, the POS warns and offers the retry --------------------
            page.click("[data-product='Piña colada']")
            expect(page.locator("#cart-total")).to_have_text("$5.500")
            page.click("[data-product='Cerveza']")
            expect(page.locator("#cart-total")).to_have_text("$9.000")
            page.click("#checkout")
            expect(page.locator("#sale-total")).to_have_text("$9.000")
            page.fill("#cash_received", "10000")
            page.keyboard.press("Enter")
            expect(page.locator("#change")).to_contain_text("$1.000")
            expect(page.locator("#print-warning")).to_contain_text("No se pudo imprimir", timeout=30_000)
            expect(page.locator("#print-warning")).to_contain_text("La venta está pagada")
            expect(page.locator("#print-retry")).to_be_visible()
            expect(page.locator("#receipt-qr svg")).to_be_visible()
            page.screenshot(path=shots / "pos-impresora-caida.png", full_page=True)
            page.goto("/caja/incidentes")
            expect(page.locator("body")).to_contain_text("Impresora caída")

            # --- the browser printer: the ticket page at 80 mm ----------------------------------------------
            run(set_printer(sqlite_url, st.venue_id, st.register_id, {"printer": "browser", "paper_width": 80}))
            page.goto("/caja/ventas")
            sale_id = int(page.locator("#sales tbody tr").first.get_attribute("id").split("-")[1])
            ticket = context.new_page()
            ticket.goto(f"{site.url}/caja/venta/{sale_id}/ticket")
            box = ticket.locator("#ticket").bounding_box()
            assert abs(box["width"] - 80 * MM) < 1.5, box
            overflowing = ticket.eval_on_selector_all(
                "#ticket .tk-line", "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length"
            )
            assert overflowing == 0
            for text in ("Piña colada", "TOTAL", "$9.000", "Vuelto", "Ticket N°"):
                expect(ticket.locator("#ticket")).to_contain_text(text)
            expect(ticket.locator("#ticket .tk-code svg")).to_be_visible()
            expect(ticket.locator("#ticket .tk-qr svg")).to_be_visible()
            ticket.locator("#ticket").screenshot(path=shots / "ticket-80mm.png")
            pdf = ticket.pdf(prefer_css_page_size=True, print_background=True)
            width_pt = float(re.search(rb"/MediaBox \[0 0 ([\d.]+) ", pdf).group(1))
            assert abs(width_pt - 80 / 25.4 * 72) < 1.0, width_pt  # an 80 mm wide page

            # --- the admin's printer section on the register's page -----------------------------------------
            admin = browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-CL", base_url=site.url)
            page = admin.new_page()
            page.goto("/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("button:has-text('Ingresar')")
            page.goto(f"/admin/cajas/{st.register_id}/editar")
            expect(page.locator("#printer-form select[name=printer]")).to_have_value("browser")
            page.locator("#printer-form select[name=printer]").select_option("escpos_network")
            page.fill("input[name='settings.escpos_network.host']", "192.168.1.60")
            page.check("#printer-form input[name=open_drawer]")
            page.click("#printer-save")
            expect(page.locator("#printer-saved")).to_be_visible()
            page.locator("#impresora").screenshot(path=shots / "admin-impresora.png")
            browser.close()
    finally:
        site.stop()
