"""A product repriced while it sits in a cashier's cart, in a real Chromium against a real server: the cart's
line keeps the price the cashier saw and told the customer, the sale charges it, and the receipt and the sale's
lines show it; the same product tapped after the change is a line of its own at the new price."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posstack import cashier_at, core

from caja_core.catalog import service as catalog
from caja_core.sales import service as sales

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_price_changed_mid_cart_charges_the_price_the_cashier_saw(browser, site):
    c = cashier_at(browser, site)
    page = c.page
    c.product("Cerveza")
    c.product("Cerveza")
    expect(page.locator("#cart-total")).to_have_text("$7.000")

    async def reprice(s):
        await catalog.update_product(
            s, venue_id=site.setup.venue_id, product_id=site.setup.products["Cerveza"], price=4000
        )

    core(site, reprice)  # an admin, elsewhere
    page.reload()  # the cart as the server keeps it: still the price the cashier saw
    expect(page.locator("#cart-total")).to_have_text("$7.000")
    c.product("Cerveza")  # tapped after the change: its own line, at the new price
    lines = page.locator("#cart .cart-lines li")
    expect(lines).to_have_count(2)
    expect(lines.nth(0)).to_contain_text("$7.000")
    expect(lines.nth(1)).to_contain_text("$4.000")
    expect(page.locator("#cart-total")).to_have_text("$11.000")

    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$11.000")
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    expect(page.locator("#receipt")).to_contain_text("$11.000")

    async def sold(s):
        (sale,) = await sales.list_sales(s, site.setup.venue_id)
        return await sales.get_sale(s, site.setup.venue_id, sale.id)

    sale = core(site, sold)
    assert sale.total == 11000 and sale.status == "paid"
    assert [(i.name, i.quantity, i.unit_price) for i in sale.items] == [("Cerveza", 2, 3500), ("Cerveza", 1, 4000)]
