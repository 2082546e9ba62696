"""Ventas en espera come from the database, in a real Chromium against a real server: a sale left waiting stays
listed after the cashier logs out and logs in on another device of the same register, and it ends there when
the terminal's answer settles it (issue: the list lived in the browser's session, capped at 20, so a logout, a
second device or a supervisor did not see it)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS, Cashier, login_cashier, new_tab, open_register
from posstack import cashier_at, core

from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.sales import waiting
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def waiting_now(live) -> list:
    async def work(s):
        sale = (await sales.list_sales(s, live.setup.venue_id))[-1]
        return await waiting.waiting_sales(s, live.setup.venue_id, sale.session_id)

    return core(live, work)


def test_a_waiting_sale_survives_a_logout_shows_on_another_device_and_ends_there(browser, site, terminal):
    terminal.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True, message="Sin respuesta final"))
    terminal.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    first = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = first.page
    first.product("Piscola")
    first.tap("#checkout")
    first.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("EN DUDA", timeout=20_000)
    first.tap("#park-sale")
    expect(page.locator("#parked-sales")).to_contain_text("EN DUDA")
    [parked] = waiting_now(site)
    assert parked.parked and parked.status == "pending_payment"
    page.click("button:has-text('Salir')")
    expect(page).to_have_url(re.compile(r"/login"))
    page.context.close()

    # Another device of the same register (another browser context: nothing of the first one's session).
    other = new_tab(browser, site.url, VIEWPORTS["390x844"])
    login_cashier(other)
    open_register(other, site.setup.register_id)
    second = Cashier(other)
    listed = other.locator(f"#parked-sales [data-parked='{parked.id}']")
    expect(listed).to_contain_text("EN DUDA")
    expect(listed).to_contain_text("$6.000")
    second.product("Agua")  # the register serves the next customer meanwhile
    second.tap("#checkout")
    second.tap("#cash-exact")
    expect(other.locator("#outcome .headline")).to_have_text("PAGADO")
    expect(listed).to_contain_text("EN DUDA")

    terminal.set_default("status", None)  # the terminal answers: its memory shows the sale charged
    expect(listed).to_contain_text("APROBADO", timeout=30_000)
    second.tap(listed)
    expect(other.locator("#outcome .headline")).to_have_text("APROBADO")
    expect(other.locator("#receipt")).to_contain_text("1× Piscola")
    expect(other.locator("#parked-sales")).to_have_count(0, timeout=5_000)
    assert waiting_now(site) == []  # seen ended: gone for every device
    assert terminal.count("charge") == 1
