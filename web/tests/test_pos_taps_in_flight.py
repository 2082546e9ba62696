"""A Cobrar tap made while a product tap is still on its way is not lost: it is applied once the cart has the
product, and the sale charged includes it (in a real Chromium, the product's request held back by the test)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Route, expect
from posbrowser import VIEWPORTS
from test_pos_cashier import browser, cashier_at, site, terminal  # noqa: F401 - shared fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]


class HeldRequests:
    """The cart's product requests, held on the network until the test lets them go (a slow network)."""

    def __init__(self, page) -> None:
        self.page = page
        self.routes: list[Route] = []
        page.route("**/caja/venta/item", self.hold)

    def hold(self, route: Route) -> None:
        self.routes.append(route)

    def release_all(self) -> None:
        assert self.routes, "no product request was held"
        while self.routes:
            self.routes.pop(0).continue_()


@pytest.mark.parametrize("viewport", ["1024x768", "390x844"])
def test_cobrar_while_a_product_tap_is_in_flight_charges_that_product(browser, site, viewport):  # noqa: F811
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    c.product("Cerveza")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")

    held = HeldRequests(page)
    c.product("Agua")  # on its way…
    expect(page.locator("#keys [data-product='Agua']")).to_have_class(re.compile("htmx-request"))
    page.locator("#checkout").click(force=True)  # …and Cobrar tapped before the cart came back
    expect(page.locator("#checkout")).to_have_attribute("aria-busy", "true")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")
    held.release_all()

    expect(page.locator("#sale-total")).to_have_text("$5.500")  # Cerveza $3.500 + Agua $2.000
    expect(page.locator("#pay-items")).to_contain_text("1× Agua")
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    expect(page.locator("#receipt")).to_contain_text("$5.500")


def test_the_first_product_and_cobrar_tapped_before_the_cart_answers(browser, site):  # noqa: F811
    """The empty cart's Cobrar takes the tap while the first product is on its way: product, Cobrar, Exacto
    stays three taps however slow the network."""
    c = cashier_at(browser, site)
    page = c.page
    expect(page.locator("#checkout")).to_be_disabled()
    held = HeldRequests(page)
    c.product("Piscola")
    expect(page.locator("#checkout")).to_be_enabled()
    c.tap("#checkout")
    c.key("F4")  # a second Cobrar (the key) while waiting changes nothing
    expect(page.locator("#checkout")).to_have_attribute("aria-busy", "true")
    held.release_all()
    expect(page.locator("#sale-total")).to_have_text("$6.000")
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    assert c.taps == 4  # product, Cobrar, the extra F4, Exacto


def test_a_refused_product_tap_does_not_charge_the_old_cart(browser, site):  # noqa: F811
    """When the cart refuses the product (here: the tab is stale), the waiting Cobrar is dropped: the cashier
    sees why before charging."""
    c = cashier_at(browser, site)
    page = c.page
    c.product("Cerveza")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")
    held = HeldRequests(page)
    page.evaluate("document.getElementById('cart-version').value = '-5'")  # another tab moved the cart on
    c.product("Agua")
    c.tap("#checkout")
    held.release_all()
    expect(page.locator("#panel")).to_contain_text("otra pestaña")
    expect(page.locator("#sale-total")).to_have_count(0)
