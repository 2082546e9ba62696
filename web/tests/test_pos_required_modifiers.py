"""Required modifier groups, in a real Chromium against a real server: the admin groups a product's modifiers
("Tamaño": Simple / Doble) and marks the group required; the POS asks for the choice before the line goes into
the cart (one of the group; ticking another unticks the first), online and on the offline screen, and the server
refuses a line without it in Spanish."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from posbrowser import login_staff, new_tab
from posstack import cashier_at, core
from test_pos_offline import go_offline, ready_for_offline

from caja_core.sales import service as sales

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def define_size_group_as_admin(browser, site) -> None:
    admin = new_tab(browser, site.url)
    login_staff(admin, "admin")
    admin.goto("/admin/modificadores")
    for name, price, required in (("Simple", "", True), ("Doble", "2.000", False)):
        admin.select_option("#applies_to", label="Piscola")
        admin.fill("#modifier-name", name)
        if price:
            admin.fill("#modifier-price", price)
        else:
            admin.check("#modifier-free")
        admin.fill("#modifier-group", "Tamaño")
        if required:
            admin.check("#modifier-required")
        admin.click("#modifier-form button[type=submit]")
        expect(admin.locator(f"#modifiers tr[data-modifier='{name}'] td.group")).to_have_text(
            "Tamaño · obligatorio (elige 1)"
        )
    admin.context.close()


def test_a_required_group_is_asked_before_the_line_is_added(browser, site):
    define_size_group_as_admin(browser, site)
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    chooser = page.locator("#modifier-chooser")
    expect(chooser.locator("fieldset[data-group='Tamaño'] legend")).to_have_text("Tamaño — elige 1 (obligatorio)")
    c.tap("#modifier-add")  # nothing chosen: asked again, in words, nothing added
    expect(chooser.locator(".alert")).to_contain_text("Elija Tamaño para Piscola: Doble o Simple.")
    c.tap("label[data-modifier='Simple']")
    c.tap("label[data-modifier='Doble']")  # one of the group: Simple is unticked
    expect(chooser.locator("label[data-modifier='Simple'] input")).not_to_be_checked()
    expect(chooser.locator("label[data-modifier='Doble'] input")).to_be_checked()
    c.tap("#modifier-add")
    expect(page.locator("#cart .cart-lines li")).to_contain_text("Doble +$2.000")
    expect(page.locator("#cart-total")).to_have_text("$8.000")
    c.tap("#checkout")
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")

    async def sold(s):
        (sale,) = await sales.list_sales(s, site.setup.venue_id)
        return (await sales.get_sale(s, site.setup.venue_id, sale.id)).items

    assert [(i.name, [m.name for m in i.modifiers]) for i in core(site, sold)] == [("Piscola", ["Doble"])]

    # The offline screen asks the same.
    c.product("Agua")
    ready_for_offline(page)
    go_offline(page)
    expect(page).to_have_url(re.compile(r"/caja/sin-conexion"), timeout=10_000)
    page.click("#keys [data-product='Piscola']")
    expect(chooser.locator("fieldset[data-group='Tamaño'] legend")).to_have_text("Tamaño — elige 1 (obligatorio)")
    page.click("#modifier-add")
    expect(page.locator("#modifier-error")).to_have_text("Elija Tamaño para Piscola: Doble o Simple.")
    expect(page.locator("#cart-total")).to_have_count(0)
    page.keyboard.press("2")  # Simple (the group lists its options by name)
    page.keyboard.press("1")  # Doble: Simple unticked
    expect(chooser.locator("label[data-modifier='Simple'] input")).not_to_be_checked()
    page.keyboard.press("Enter")
    expect(page.locator("#cart .cart-lines")).to_contain_text("Doble")
    expect(page.locator("#cart-total")).to_have_text("$8.000")
