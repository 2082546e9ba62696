"""Back from the pay screen to the order ("Editar pedido") keeps what the cashier gave there, in a real Chromium:
a line's discount while its line is still in the order, the sale's discount (asked again of a supervisor when
it needed one), the tip as the same percent of the new total."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS
from test_pos_cashier import browser, cashier_at, discount, site, terminal  # noqa: F401 - shared fixtures

from caja_core.testing.factories import SUPERVISOR_PIN

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def line_step(page, name: str, label: str) -> None:
    page.locator("#cart .cart-lines li", has_text=name).get_by_label(label).click()


@pytest.mark.parametrize("viewport", ["1024x768", "390x844"])
def test_discounts_and_tip_survive_editar_pedido(browser, site, viewport):  # noqa: F811
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    c.product("Cerveza")
    c.product("Cerveza")
    c.product("Agua")
    expect(page.locator("#cart-count")).to_contain_text("3 artículos")
    c.tap("#checkout")
    discount(c, "2× Cerveza ($7.000)", "percent", "10", "Happy hour")
    expect(page.locator("#sale-total")).to_have_text("$8.300")
    discount(c, "Toda la venta", "amount", "1000", "Cumpleaños")
    expect(page.locator("#sale-total")).to_have_text("$7.300")
    c.tap("#tip-suggested")
    expect(page.locator("#sale-total")).to_have_text("$8.030")

    c.tap("#back-to-cart")  # "one more": a Piscola, and no Agua after all
    carried = page.locator("#carried")
    expect(carried).to_contain_text("Descuento 10 % · Happy hour (Cerveza)")
    expect(carried).to_contain_text("Descuento $1.000 · Cumpleaños")
    expect(carried).to_contain_text("propina 10 %")
    c.product("Piscola")
    line_step(page, "Agua", "Uno menos")
    expect(page.locator("#cart-total")).to_have_text("$13.000")
    c.tap("#checkout")

    items = page.locator("#pay-items")
    expect(items).to_contain_text("Descuento 10 % · Happy hour")
    expect(items).to_contain_text("Descuento · Cumpleaños")
    expect(items).not_to_contain_text("Agua")
    expect(page.locator("#tip-amount")).to_have_text("$1.130")  # 10 % of $11.300
    expect(page.locator("#sale-total")).to_have_text("$12.430")  # $13.000 − $700 − $1.000 + $1.130
    expect(page.locator("#carried-notes")).to_have_count(0)
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    expect(page.locator("#receipt-tip")).to_contain_text("$1.130")


def test_a_discount_a_supervisor_authorized_is_asked_again_and_a_removed_lines_is_gone(browser, site):  # noqa: F811
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    c.product("Agua")
    expect(page.locator("#cart-count")).to_contain_text("2 artículos")
    c.tap("#checkout")
    discount(c, "1× Agua ($2.000)", "percent", "10", "Vaso trizado")
    expect(page.locator("#sale-total")).to_have_text("$7.800")
    discount(c, "Toda la venta", "amount", "5500", "Cliente frecuente")  # over the $5.000 limit
    expect(page.locator("#panel .field-error")).to_contain_text("autorización de un supervisor")
    page.fill("#discount-form input[name=supervisor_code]", SUPERVISOR_PIN)
    c.tap("#apply-discount")
    expect(page.locator("#sale-total")).to_have_text("$2.300")

    c.tap("#back-to-cart")
    line_step(page, "Agua", "Uno menos")  # its discount goes with it
    expect(page.locator("#carried")).not_to_contain_text("Vaso trizado")
    expect(page.locator("#carried")).to_contain_text("Descuento $5.500 · Cliente frecuente")
    c.product("Cerveza")
    c.tap("#checkout")

    expect(page.locator("#carried-notes")).to_contain_text("necesita otra vez la autorización de un supervisor")
    expect(page.locator("#sale-total")).to_have_text("$9.500")  # not given until a supervisor says so
    expect(page.locator("details#discount")).to_have_attribute("open", "")
    expect(page.locator("#discount-value")).to_have_value("5500")
    expect(page.locator("#discount-reason")).to_have_value("Cliente frecuente")
    page.fill("#discount-form input[name=supervisor_code]", SUPERVISOR_PIN)
    c.tap("#apply-discount")
    expect(page.locator("#sale-total")).to_have_text("$4.000")
    expect(page.locator("#pay-items")).not_to_contain_text("Vaso trizado")
