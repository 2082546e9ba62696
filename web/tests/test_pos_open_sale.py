"""An unpaid sale is never invisible, in a real Chromium against a real server: a cashier who takes a sale to
its pay screen and logs out (or whose login expires) lands back on it when they come back to the register; and
another device of the register lists it as «VENTA ABIERTA», to charge or void."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS, Cashier, login_cashier, new_tab, open_register
from posstack import cashier_at, core

from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def the_sales(site) -> list:
    async def work(s):
        return await sales.list_sales(s, site.setup.venue_id)

    return core(site, work)


def test_a_sale_left_on_its_pay_screen_by_a_logout_is_where_the_cashier_comes_back(browser, site):
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    c.product("Agua")
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$8.000")
    [sale] = the_sales(site)
    assert sale.status == "pending_payment"
    page.click("button:has-text('Salir')")
    expect(page).to_have_url(re.compile(r"/login"))

    login_cashier(page)
    open_register(page, site.setup.register_id)  # «Continuar en esta caja»
    expect(page).to_have_url(re.compile(rf"/caja/venta/{sale.id}$"))
    expect(page.locator("#pay h2")).to_have_text(f"Cobrar venta #{sale.id}")
    expect(page.locator("#sale-total")).to_have_text("$8.000")
    expect(page.locator("#pay-items")).to_contain_text("1× Piscola")
    c.tap("#cash-exact")
    expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    assert [s.status for s in the_sales(site)] == ["paid"]


def test_another_device_lists_an_open_sale_to_charge_or_void(browser, site):
    first = cashier_at(browser, site)
    other = new_tab(browser, site.url, VIEWPORTS["390x844"])  # a second device of the same register
    login_cashier(other)
    open_register(other, site.setup.register_id)
    second = Cashier(other)

    first.product("Cerveza")
    first.tap("#checkout")
    expect(first.page.locator("#sale-total")).to_have_text("$3.500")
    [sale] = the_sales(site)
    first.page.context.close()  # the tablet is gone, and its login with it (an expired cookie)

    listed = other.locator(f"#parked-sales [data-parked='{sale.id}']")  # within one status poll
    expect(listed).to_contain_text("VENTA ABIERTA")
    expect(listed).to_contain_text("$3.500")
    second.tap(listed)
    expect(other.locator("#sale-total")).to_have_text("$3.500")
    other.click("details.void summary")
    other.fill("details.void input[name=reason]", "Cliente se fue")
    other.click("details.void button[type=submit]")
    expect(other.locator("#cart-count")).to_be_visible()  # back to this device's own sale screen
    expect(other.locator("#parked-sales")).to_have_count(0)
    assert [s.status for s in the_sales(site)] == ["cancelled"]


@pytest.mark.parametrize("card_first", [False, True], ids=["no-payment", "card-not-charged"])
def test_a_sale_recovered_after_a_logout_goes_back_to_its_cart(browser, site, terminal, card_first):
    """Found: «← Editar pedido» was missing on a sale the cashier came back to after a logout: «one more beer»
    meant voiding it and ringing it all again."""
    terminal.script("charge", Step(kind=OutcomeKind.DECLINED, message="Fondos insuficientes"))
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    c.product("Agua")
    c.product("Agua")
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$10.000")
    if card_first:
        c.tap("#pay-card")
        expect(page.locator("#outcome .headline")).to_have_text("NO SE COBRÓ")
    [sale] = the_sales(site)
    page.click("button:has-text('Salir')")
    expect(page).to_have_url(re.compile(r"/login"))

    login_cashier(page)
    open_register(page, site.setup.register_id)  # «Continuar en esta caja»: back on the sale
    expect(page).to_have_url(re.compile(rf"/caja/venta/{sale.id}$"))
    c.tap("#back-to-cart")  # one more Piscola, and one Agua less
    expect(page.locator("#cart-total")).to_have_text("$10.000")
    expect(page.locator("#cart .cart-lines")).to_contain_text("Piscola")
    page.locator("#cart .cart-lines li", has_text="Agua").get_by_label("Uno menos").click()
    expect(page.locator("#cart-total")).to_have_text("$8.000")
    c.product("Piscola")
    expect(page.locator("#cart-total")).to_have_text("$14.000")
    c.tap("#checkout")
    expect(page.locator("#pay-items")).to_contain_text("2× Piscola")
    expect(page.locator("#pay-items")).to_contain_text("1× Agua")
    c.tap("#cash-exact")
    expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    by_status = {s.status: s for s in the_sales(site)}
    assert sorted(by_status) == ["cancelled", "paid"]
    assert by_status["paid"].total == 14_000
    assert by_status["cancelled"].id == sale.id
    assert by_status["cancelled"].cancel_reason == "Pedido modificado antes de pagar"


def test_a_recovered_sale_goes_back_to_its_cart_with_its_modifiers(browser, site):
    from test_pos_modifiers import define_modifiers_as_admin

    define_modifiers_as_admin(browser, site)  # Piscola: «Doble» +$2.000
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    c.tap("[data-modifier='Doble']")
    c.tap("#modifier-add")
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$8.000")
    page.click("button:has-text('Salir')")
    login_cashier(page)
    open_register(page, site.setup.register_id)
    c.tap("#back-to-cart")
    expect(page.locator("#cart .cart-lines")).to_contain_text("Doble +$2.000")
    expect(page.locator("#cart-total")).to_have_text("$8.000")
    c.tap("#checkout")
    expect(page.locator("#pay-items")).to_contain_text("Doble")
    c.tap("#cash-exact")
    expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    assert sorted((s.status, s.total) for s in the_sales(site)) == [("cancelled", 8_000), ("paid", 8_000)]
