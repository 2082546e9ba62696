"""What a cashier used to Square, Toast or Odoo POS expects, in a real Chromium against a real server: search
the catalogue by typing, modifiers on a line, discounts with a reason (and a supervisor above the venue's
threshold), a suggested tip."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import ProvidersPlugin
from livesite import LiveSite
from playwright.sync_api import expect, sync_playwright
from posbrowser import (
    VIEWPORTS,
    Cashier,
    launch,
    login_cashier,
    login_staff,
    new_tab,
    open_register,
    out_of_view,
    run,
)

from caja_core.catalog import service as catalog
from caja_core.db import Database
from caja_core.testing.factories import SUPERVISOR_PIN
from caja_core.testing.fake import FakeProvider, manual_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MORE_PRODUCTS = [
    ("Pisco sour", 5500),
    ("Jägermeister", 5000),
    ("Piña colada", 6500),
    ("Gin tonic", 7000),
    ("Empanada", 3500),
]


@pytest.fixture
def terminal():
    return FakeProvider("fake", "GETNET de prueba")


@pytest.fixture
def site(sqlite_url, terminal):
    live = LiveSite(sqlite_url, ProvidersPlugin(terminal, manual_provider("fakebackup", "KLAP de prueba"))).start()
    yield live
    live.stop()


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


async def _with_db(url: str, work):
    db = Database(url)
    try:
        async with db.session() as s:
            return await work(s)
    finally:
        await db.dispose()


def core(site: LiveSite, work):
    """Run ``work(s)`` on the site's database in one transaction (what an admin does elsewhere)."""
    return run(_with_db(site.database_url, work))


def add_products(site: LiveSite) -> None:
    async def work(s):
        drinks = await catalog.create_category(s, venue_id=site.setup.venue_id, name="Tragos")
        for name, price in MORE_PRODUCTS:
            category = site.setup.category_id if name == "Empanada" else drinks.id
            await catalog.create_product(s, venue_id=site.setup.venue_id, category_id=category, name=name, price=price)

    core(site, work)


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: $CAJA_SCREENSHOTS (docs/screenshots/ when refreshing the docs), else a temporary dir."""
    target = Path(os.environ.get("CAJA_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def cashier_at(browser, site, size=(1024, 768)) -> Cashier:
    page = new_tab(browser, site.url, size)
    login_cashier(page)
    open_register(page, site.setup.register_id)
    return Cashier(page)


def shown_products(page) -> list[str]:
    return page.eval_on_selector_all(
        "#keys .qk", "els => els.filter(e => e.offsetParent !== null).map(e => e.dataset.product)"
    )


# ---- product search -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", ["390x844", "1024x768"])
def test_typing_filters_the_catalogue_and_enter_adds_the_first_match(browser, site, viewport):
    add_products(site)
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    search = page.locator("#product-search")
    expect(search).to_be_visible()
    assert not out_of_view(page, "#product-search"), "the search field is off screen"
    assert search.bounding_box()["height"] >= 43.5, "the search field is a small touch target"

    c.type("#product-search", "pis")  # Pisco sour and Piscola, nothing else
    assert sorted(shown_products(page)) == ["Pisco sour", "Piscola"]
    c.type("#product-search", "JAGER")  # case and accents ignored
    assert shown_products(page) == ["Jägermeister"]
    c.type("#product-search", "pina")
    assert shown_products(page) == ["Piña colada"]
    c.type("#product-search", "tragos gin")  # every word, in the product's or its category's name
    assert shown_products(page) == ["Gin tonic"]
    expect(page.locator("#search-empty")).to_be_hidden()
    c.type("#product-search", "caviar")
    assert shown_products(page) == []
    expect(page.locator("#search-empty")).to_be_visible()
    expect(page.locator("#keys h2:visible")).to_have_count(0)  # no empty category headings

    c.type("#product-search", "empan")
    c.key("Enter")  # the first match goes into the cart, the search is cleared for the next product
    expect(page.locator("#cart .cart-lines")).to_contain_text("Empanada")
    expect(search).to_have_value("")
    expect(search).to_be_focused()
    assert len(shown_products(page)) == 3 + len(MORE_PRODUCTS)


def test_the_search_is_keyboard_friendly(browser, site):
    add_products(site)
    c = cashier_at(browser, site)
    page = c.page
    page.locator("body").click(position={"x": 5, "y": 5})
    c.key("/")  # "/" jumps to the search from anywhere on the sale screen
    expect(page.locator("#product-search")).to_be_focused()
    page.keyboard.type("co")  # Piscola, Pisco sour and Piña colada
    assert sorted(shown_products(page)) == ["Pisco sour", "Piscola", "Piña colada"]
    first, second = shown_products(page)[:2]
    c.key("ArrowDown")
    c.key("ArrowDown")  # the arrows walk the results; Enter on one adds it
    expect(page.locator(f"#keys [data-product='{second}']")).to_be_focused()
    c.key("Enter")
    expect(page.locator("#cart .cart-lines")).to_contain_text(second)
    expect(page.locator("#cart .cart-lines")).not_to_contain_text(first)
    c.key("ArrowUp")
    c.key("ArrowUp")  # back up to the field, and Escape clears it
    expect(page.locator("#product-search")).to_be_focused()
    c.key("Escape")
    expect(page.locator("#product-search")).to_have_value("")
    assert len(shown_products(page)) == 3 + len(MORE_PRODUCTS)
    expect(page.locator("#cart-total")).to_have_text(re.compile(r"\$\d"))


# ---- discounts ------------------------------------------------------------------------------------------------------


def discount(c: Cashier, line: str, kind: str, value: str, reason: str) -> None:
    page = c.page
    if page.locator("details#discount").get_attribute("open") is None:
        c.tap("details#discount summary")
    page.select_option("#discount-line", label=line)
    page.select_option("#discount-kind", kind)
    c.type("#discount-value", value)
    page.fill("#discount-reason", reason)
    c.tap("#apply-discount")


@pytest.mark.parametrize("viewport", ["1024x768", "390x844"])
def test_a_discount_with_its_reason_and_a_supervisor_above_the_limit(browser, site, viewport, shots):
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    c.product("Cerveza")
    c.product("Cerveza")
    c.product("Agua")
    expect(page.locator("#cart-count")).to_contain_text("3 artículos")
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$9.000")

    discount(c, "2× Cerveza ($7.000)", "percent", "10", "Happy hour")  # 10 % of $7.000
    expect(page.locator("#sale-total")).to_have_text("$8.300")
    expect(page.locator("#pay-items")).to_contain_text("Descuento 10 % · Happy hour")
    expect(page.locator("#pay-items")).to_contain_text("−$700")
    expect(page.locator("#cash-exact")).to_contain_text("$8.300")

    discount(c, "Toda la venta", "amount", "5000", "Cumpleaños")  # $5.700 in all: over the $5.000 limit
    expect(page.locator("#panel .field-error")).to_contain_text("autorización de un supervisor")
    expect(page.locator("#sale-total")).to_have_text("$8.300")
    expect(page.locator("#discount-reason")).to_have_value("Cumpleaños")  # the form keeps what was typed
    page.fill("#discount-form input[name=supervisor_code]", SUPERVISOR_PIN)
    c.tap("#apply-discount")
    expect(page.locator("#sale-total")).to_have_text("$3.300")
    expect(page.locator("#pay-items")).to_contain_text("Subtotal")
    c.tap("#tip-suggested")  # the suggested tip is 10 % of the discounted total
    expect(page.locator("#sale-total")).to_have_text("$3.630")
    page.screenshot(path=shots / f"pos-descuento-propina-{viewport}.png")

    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    receipt = page.locator("#panel")
    expect(receipt).to_contain_text("Descuento 10 % · Happy hour")
    expect(receipt).to_contain_text("Descuento · Cumpleaños")
    expect(receipt).to_contain_text("$3.300")
    expect(page.locator("#receipt-tip")).to_contain_text("$330")


def test_the_session_report_says_who_discounted_how_much_why_and_who_authorized(browser, site):
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")
    c.tap("#checkout")
    discount(c, "Toda la venta", "amount", "6000", "Trago mal servido")
    expect(page.locator("#panel .field-error")).to_contain_text("$0")  # never down to $0: that is a void
    discount(c, "Toda la venta", "amount", "5500", "Trago mal servido")
    expect(page.locator("#panel .field-error")).to_contain_text("autorización de un supervisor")
    page.fill("#discount-form input[name=supervisor_code]", SUPERVISOR_PIN)
    c.tap("#apply-discount")
    expect(page.locator("#sale-total")).to_have_text("$500")
    page.locator("[data-discount] button:has-text('Quitar')").click()  # taken back, then given again smaller
    expect(page.locator("#sale-total")).to_have_text("$6.000")
    discount(c, "Toda la venta", "percent", "90", "Trago mal servido")
    expect(page.locator("#panel .field-error")).to_contain_text("autorización de un supervisor")
    page.fill("#discount-form input[name=supervisor_code]", SUPERVISOR_PIN)
    c.tap("#apply-discount")
    expect(page.locator("#sale-total")).to_have_text("$600")
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")

    boss = new_tab(browser, site.url)
    login_staff(boss, "super")
    boss.goto("/admin/cajas/reportes")
    boss.locator("a[href^='/admin/cajas/reportes/sesion/']").first.click()
    expect(boss.locator("#session-discounts")).to_contain_text("1 ($5.400)")
    row = boss.locator("#discounts tbody tr")
    expect(row).to_have_count(1)
    for text in ("Toda la venta", "90 %", "$5.400", "Trago mal servido", "Cajera", "Supervisora"):
        expect(row).to_contain_text(text)
    expect(boss.locator("#per-cashier")).to_contain_text("$5.400 (1)")


# ---- tips -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", ["1024x768", "390x844"])
def test_the_suggested_tip_in_one_tap_paid_in_cash_with_its_change(browser, site, viewport):
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    c.product("Piscola")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$6.000")
    c.tap("#tip-suggested")  # 10 % of $6.000
    expect(page.locator("#sale-total")).to_have_text("$6.600")
    expect(page.locator("#tip-included")).to_contain_text("$600")
    expect(page.locator("#cash-exact")).to_contain_text("$6.600")
    c.type("#cash_received", "10000")
    c.key("Enter")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    expect(page.locator("#change-big")).to_contain_text("$3.400")
    expect(page.locator("#receipt-tip")).to_contain_text("$600")
    expect(page.locator("#receipt")).to_contain_text("Total pagado")


def test_another_tip_or_none_then_card(browser, site, terminal):
    c = cashier_at(browser, site)
    page = c.page
    c.product("Cerveza")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")
    c.tap("#checkout")
    c.tap("#tip-other summary")
    c.type("#tip-input", "9000")  # more than the sale: a slip
    c.tap("#apply-tip")
    expect(page.locator("#panel .field-error")).to_contain_text("no puede superar el total")
    c.type("#tip-input", "500")
    c.tap("#apply-tip")
    expect(page.locator("#sale-total")).to_have_text("$4.000")
    c.tap("#tip-remove")  # the customer changed their mind: no tip
    expect(page.locator("#sale-total")).to_have_text("$3.500")
    c.tap("#tip-suggested")
    expect(page.locator("#sale-total")).to_have_text("$3.850")
    c.tap("#pay-card")
    expect(page.locator("#outcome")).to_contain_text("APROBADO")
    expect(page.locator("#outcome")).to_contain_text("$3.850")
    assert list(terminal.ledger.values()) == [3850] and list(terminal.tips.values()) == [350]
