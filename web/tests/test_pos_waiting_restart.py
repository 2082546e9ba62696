"""Ventas en espera survive a restart of the server, through the real stack: `caja serve` killed with SIGKILL and
started again on the same database, the GETNET simulator over a real socket keeping the card payment in doubt
(the acquirer is busy: the terminal answers "busy" to every question) meanwhile, and a real Chromium. After the
restart the sale left waiting is still listed with its state, and once the terminal can tell, it ends there."""

from __future__ import annotations

import concurrent.futures
import re
import time

import pytest
from playwright.sync_api import expect, sync_playwright
from posbrowser import Cashier, launch, login_cashier, new_tab, open_register
from restartkit import Terminal, prepare
from test_pos_restart import rows

from caja_core.testing.serve import ServeProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: How long the acquirer keeps the charge: the payment stays in doubt through the park and the restart.
ACQUIRER_BUSY_S = 40.0


def read_sale(url: str, sale_id: int):
    """The sale's row, read from a thread of its own (this one runs the browser's event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(rows, url, sale_id).result(timeout=60)[0]


@pytest.fixture
def terminal():
    t = Terminal()
    yield t
    t.stop()


def test_a_waiting_sale_is_still_listed_after_a_restart_and_ends_there(terminal, sqlite_url, tmp_path):
    setup = prepare(sqlite_url, terminal)
    server = ServeProcess(tmp_path, sqlite_url).start()
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = new_tab(browser, server.url)
            login_cashier(page)
            open_register(page, setup.register_id)
            c = Cashier(page)
            terminal.add_fault(kind="acquirer_busy", delay_s=ACQUIRER_BUSY_S, answer="busy", drop=True, charged=True)
            c.product("Piscola")
            c.tap("#checkout")
            sale_id = int(page.locator("#panel [name=sale]").input_value())
            c.tap("#pay-card")
            expect(page.locator("#outcome .headline")).to_have_text("EN DUDA", timeout=30_000)
            c.tap("#park-sale")
            listed = page.locator(f"#parked-sales [data-parked='{sale_id}']")
            expect(listed).to_contain_text("EN DUDA")
            parked_at = time.monotonic()

            server.kill()
            server.start()
            page.goto(server.url + "/caja/venta")
            if "/login" in page.url:  # the login did not survive the process: the cashier logs in again
                login_cashier(page)
                open_register(page, setup.register_id)
            listed = page.locator(f"#parked-sales [data-parked='{sale_id}']")
            # Still listed, with its state: in doubt, or already approved when the new process asked the
            # terminal during its start-up after the acquirer answered (the restart's length decides which).
            expect(listed).to_contain_text(re.compile(r"\$6\.000 · (EN DUDA|APROBADO)"), timeout=10_000)
            print(f"after the restart ({time.monotonic() - parked_at:.0f} s after the park): {listed.inner_text()}")
            sale = read_sale(sqlite_url, sale_id)
            assert sale.parked_at is not None and sale.status in ("pending_payment", "paid")

            # The acquirer answers: the restarted server's worker settles it and the list says so; the cashier
            # opens it and sees the receipt, and it leaves the list.
            expect(listed).to_contain_text("APROBADO", timeout=(ACQUIRER_BUSY_S + 60) * 1000)
            c.tap(listed)
            expect(page.locator("#outcome .headline")).to_have_text("APROBADO")
            expect(page.locator("#receipt")).to_contain_text("1× Piscola")
            expect(page.locator("#parked-sales")).to_have_count(0, timeout=5_000)
            browser.close()
    finally:
        server.stop()
    sale, _ = rows(sqlite_url, sale_id)
    assert sale.status == "paid" and sale.parked_at is None
    assert terminal.sales_sent() == 1 and list(terminal.charges().values()) == [6000]  # charged once
