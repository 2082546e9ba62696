"""Modifiers on the POS ("Doble", "Sin hielo"), in a real Chromium against a real server: the admin defines them,
the cashier picks them when tapping the product (touch and keyboard; a product without modifiers is still one
tap), the cart, the pay screen and the receipt show them, and the sale is priced by the server."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS, login_staff, new_tab, out_of_view
from test_pos_cashier import browser, cashier_at, core, shots, site, terminal  # noqa: F401 - shared fixtures
from webkit import text_of

from caja_core.catalog import service as catalog
from caja_core.sales import service as sales


def define_modifiers_as_admin(browser, site) -> None:  # noqa: F811
    admin = new_tab(browser, site.url)
    login_staff(admin, "admin")
    admin.goto("/admin/")
    admin.click("nav a:has-text('Modificadores')")
    admin.fill("#modifier-name", "Doble")
    admin.fill("#modifier-price", "2.000")
    admin.click("#modifier-form button[type=submit]")  # no product or category chosen: refused in Spanish
    expect(admin.locator("#modifier-form .field-error")).to_contain_text("Elija un producto o una categoría")
    expect(admin.locator("#modifier-name")).to_have_value("Doble")
    admin.select_option("#applies_to", label="Piscola")
    admin.fill("#modifier-price", "2,5")
    admin.click("#modifier-form button[type=submit]")
    expect(admin.locator("#modifier-form .field-error")).to_contain_text("sin decimales")
    admin.fill("#modifier-price", "2.000")
    admin.click("#modifier-form button[type=submit]")
    expect(admin.locator("#modifiers tr[data-modifier='Doble']")).to_contain_text("+$2.000")
    admin.select_option("#applies_to", label="Piscola")
    admin.fill("#modifier-name", "Sin hielo")
    admin.check("#modifier-free")
    admin.click("#modifier-form button[type=submit]")
    expect(admin.locator("#modifiers tr[data-modifier='Sin hielo']")).to_contain_text("Sin costo")
    admin.context.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("viewport", ["1024x768", "390x844"])
def test_modifiers_picked_by_touch_and_keyboard_are_charged_and_shown(browser, site, viewport, shots):  # noqa: F811
    define_modifiers_as_admin(browser, site)
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page

    c.product("Cerveza")  # no modifiers: one tap, straight into the cart
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")

    c.product("Piscola")  # has modifiers: its chooser
    chooser = page.locator("#modifier-chooser")
    expect(chooser).to_contain_text("Doble")
    expect(chooser.locator("[data-modifier='Doble']")).to_contain_text("+$2.000")
    expect(chooser.locator("[data-modifier='Sin hielo']")).to_contain_text("sin costo")
    assert out_of_view(page, "#modifier-add, #modifier-cancel") == []
    c.tap("[data-modifier='Doble']")
    c.tap("[data-modifier='Sin hielo']")
    page.screenshot(path=shots / f"pos-modificadores-{viewport}.png")
    c.tap("#modifier-add")
    line = page.locator("#cart .cart-lines li").nth(1)
    expect(line).to_contain_text("Doble +$2.000 · Sin hielo")
    expect(line).to_contain_text("$8.000")
    expect(page.locator("#cart-total")).to_have_text("$11.500")

    # From the keyboard: search, Enter opens the chooser, 1 ticks the first modifier, Enter adds.
    page.focus("#product-search")
    page.keyboard.type("pisco")
    page.keyboard.press("Enter")
    expect(chooser.locator("input[type=checkbox]").first).to_be_focused()
    page.keyboard.press("1")
    expect(chooser.locator("input[type=checkbox]").first).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.locator("#cart .cart-lines li")).to_have_count(3)  # a Piscola doble is its own line
    expect(page.locator("#cart-total")).to_have_text("$19.500")

    # Escape leaves the chooser without adding anything; Piscola with nothing ticked is a plain Piscola.
    c.product("Piscola")
    expect(chooser).to_be_visible()
    expect(chooser.locator("input[type=checkbox]").first).to_be_focused()
    page.keyboard.press("Escape")
    expect(chooser).to_have_count(0)
    expect(page.locator("#cart-total")).to_have_text("$19.500")
    c.product("Piscola")
    c.tap("#modifier-add")
    expect(page.locator("#cart-total")).to_have_text("$25.500")

    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$25.500")
    expect(page.locator("#pay-items")).to_contain_text("Doble +$2.000 · Sin hielo")
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")
    expect(page.locator("#receipt")).to_contain_text("Doble +$2.000 · Sin hielo")

    async def work(s):
        return await sales.list_sales(s, site.setup.venue_id)

    (sale,) = core(site, work)

    async def items(s):
        return (await sales.get_sale(s, site.setup.venue_id, sale.id)).items

    lines = [(i.name, i.unit_price, [m.name for m in i.modifiers]) for i in core(site, items)]
    assert lines == [
        ("Cerveza", 3500, []),
        ("Piscola", 8000, ["Doble", "Sin hielo"]),
        ("Piscola", 8000, ["Doble"]),
        ("Piscola", 6000, []),
    ]


# ---- through the test client: what the browser sends is checked -------------------------------------------------------


async def test_a_modifier_the_product_does_not_offer_is_refused_in_the_cart(cashier, setup, sqlite_db):
    async with sqlite_db.session() as s:
        doble = await catalog.create_modifier(
            s, venue_id=setup.venue_id, name="Doble", price_delta=2000, product_id=setup.products["Piscola"]
        )
    await cashier.post("/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "m"})
    r = await cashier.post(
        "/caja/venta/item", {"product_id": setup.products["Agua"], "modifier_id": str(doble.id)}, htmx=True
    )
    assert r.status_code == 422 and "no se ofrece para Agua" in text_of(r.text)
    r = await cashier.get(f"/caja/venta/item/{setup.products['Piscola']}/modificadores", htmx=True)
    assert r.status_code == 200 and "Doble" in text_of(r.text) and "+$2.000" in text_of(r.text)
    r = await cashier.post(
        "/caja/venta/item", {"product_id": setup.products["Piscola"], "modifier_id": str(doble.id)}, htmx=True
    )
    assert r.status_code == 200 and "Doble +$2.000" in text_of(r.text) and "$8.000" in text_of(r.text)
    r = await cashier.post("/caja/venta/cobrar", {}, htmx=True)
    assert r.status_code == 200 and "$8.000" in text_of(r.text)
    async with sqlite_db.session() as s:
        (sale,) = await sales.list_sales(s, setup.venue_id)
    r = await cashier.post(f"/caja/venta/{sale.id}/efectivo", {"cash_received": ""}, htmx=True)
    assert r.status_code == 200 and "PAGADO" in text_of(r.text)
    # The session report lists the modifiers sold beside the product mix.
    await cashier.post("/logout")
    await cashier.login("super", venue_id=setup.venue_id)
    report = await cashier.get(f"/admin/cajas/reportes/sesion/{sale.session_id}")
    assert report.status_code == 200 and 'id="modifier-mix"' in report.text
    assert "Doble 1 $2.000" in text_of(report.text)


async def test_the_admin_page_refuses_bad_input_in_spanish(admin, setup, sqlite_db):
    r = await admin.post("/admin/modificadores", {"applies_to": "x:1", "name": "Doble", "price_delta": "100"})
    assert r.status_code == 422 and "Elija un producto o una categoría" in text_of(r.text)
    r = await admin.post(
        "/admin/modificadores", {"applies_to": f"c:{setup.category_id}", "name": "Doble", "price_delta": "-1"}
    )
    assert r.status_code == 422 and "precio del modificador" in text_of(r.text)
    r = await admin.post(
        "/admin/modificadores", {"applies_to": f"c:{setup.category_id}", "name": "Sin hielo", "free": "1"}
    )
    assert r.status_code == 303
    page = text_of((await admin.get("/admin/modificadores")).text)
    assert "Sin hielo" in page and "Categoría Bar" in page and "Sin costo" in page
