"""The owner's dashboard in a real Chromium on a phone: it follows a sale made at a register in another
browser, by itself, without a reload. The screenshot goes to $CAJA_SCREENSHOTS (docs/screenshots/ when
refreshing the docs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ProvidersPlugin
from livesite import LiveSite
from playwright.sync_api import expect, sync_playwright
from posbrowser import Cashier, horizontal_overflow, launch, login_cashier, login_staff, new_tab, open_register

from caja_core.testing.fake import FakeProvider

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def shots(tmp_path):
    target = Path(os.environ.get("CAJA_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def site(sqlite_url):
    live = LiveSite(
        sqlite_url,
        ProvidersPlugin(FakeProvider("fake", "GETNET de prueba"), FakeProvider("fakebackup", "KLAP de prueba")),
    ).start()
    yield live
    live.stop()


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def test_the_dashboard_on_a_phone_follows_a_sale_made_at_a_register(browser, site, shots):
    owner = new_tab(browser, site.url, (390, 844))
    login_staff(owner, "super")
    owner.goto("/jornada/tablero")
    expect(owner.locator("#kpi-total")).to_have_text("$0")
    owner.evaluate("() => { window.sameDocument = true; }")

    register = new_tab(browser, site.url, (1024, 768))  # another browser context: the cashier's register
    login_cashier(register)
    open_register(register, site.setup.register_id)
    cashier = Cashier(register)
    for product in ("Cerveza", "Cerveza", "Piscola"):
        cashier.product(product)
    cashier.tap("#checkout")
    cashier.tap("#cash-exact")
    expect(register.locator("#outcome")).to_contain_text("PAGADO")

    # The next poll brings the sale: 3 500 × 2 + 6 000.
    expect(owner.locator("#kpi-total")).to_have_text("$13.000", timeout=20_000)
    expect(owner.locator("#kpi-tickets")).to_have_text("1")
    expect(owner.locator("#product-mix")).to_contain_text("Cerveza")
    expect(owner.locator("#open-sessions")).to_contain_text("Cajera")
    assert owner.evaluate("() => window.sameDocument === true")  # updated in place, never reloaded
    bars = owner.locator("#ventas-15min rect.bar")
    expect(bars).to_have_count(1)
    wide = owner.eval_on_selector_all(
        "#tablero *",
        "els => els.filter(e => e.getBoundingClientRect().right > innerWidth + 0.5).map(e => e.id || e.tagName)",
    )
    assert horizontal_overflow(owner) == 0, f"the dashboard is wider than the phone: {wide[:10]}"

    owner.locator("#ventas-15min-grafico summary").click()  # the data behind the chart
    expect(owner.locator("#ventas-15min-grafico table")).to_contain_text("$13.000")
    owner.screenshot(path=shots / "tablero-noche.png", full_page=True)
