"""A key does what a tap could do, no more, in a real Chromium against a real server: the product keys the screen
greys out (a sale on its pay screen, «Devuelva al cliente…» waiting for «Siguiente venta») are not pressed by
their keyboard shortcuts or the search's Enter either; and after a night of such screens the drawer the session
expects is what the screens told the cashier to put in it."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS
from posstack import cashier_at, core

from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def the_sales(site) -> list:
    async def work(s):
        return await sales.list_sales(s, site.setup.venue_id)

    return core(site, work)


def void_with_a_cash_part(c, cash_part: str) -> None:
    page = c.page
    c.tap("details#split summary")
    page.fill("details#split input[name=cash_part]", cash_part)
    c.tap("#split-pay")
    expect(page.locator("#split-status")).to_contain_text("falta")
    c.tap("details.void summary")
    page.fill("details.void input[name=reason]", "Cliente se fue")
    c.tap("details.void button[type=submit]")


def shortcut_of(page, product: str) -> str:
    return page.locator(f"#keys [data-product='{product}']").get_attribute("data-shortcut")


@pytest.mark.parametrize("viewport", ["1024x768", "390x844"])
def test_a_product_key_does_not_skip_the_cash_to_hand_back(browser, site, viewport):
    """Found: on «VENTA ANULADA · Devuelva al cliente $1.000» the product keys are greyed out and ignore taps,
    but a product's shortcut key (or Enter in the search) started the next sale and took that screen away: the
    cashier never saw how much cash to hand back."""
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    key = shortcut_of(page, "Cerveza")
    c.product("Piscola")
    c.tap("#checkout")
    void_with_a_cash_part(c, "1000")
    expect(page.locator("#return-cash")).to_contain_text("Devuelva al cliente $1.000")

    page.locator("#next-sale").blur()
    c.key(key)  # the product's key, as on the sale screen
    c.key("/")  # the search, then Enter: the first product shown
    c.key("Enter")
    c.key(key)
    c.tap("#next-sale")  # the screen was still there: the cashier hands the cash back and goes on
    expect(page.locator("#cart-total")).to_have_text("$0")
    assert [(s.status, s.total) for s in the_sales(site)] == [("cancelled", 6_000)]

    c.key(key)  # on the sale screen the key adds the product, as before
    expect(page.locator("#cart-total")).to_have_text("$3.500")


def test_a_product_key_on_the_pay_screen_changes_nothing(browser, site):
    c = cashier_at(browser, site)
    page = c.page
    c.product("Agua")
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_have_text("$2.000")
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.locator("#cash_received").blur()
    c.key(shortcut_of(page, "Cerveza"))
    c.tap("#cash-exact")  # the sale as the screen shows it
    expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    assert not [u for u in sent if u.endswith("/caja/venta/item")]
    assert [(s.status, s.total) for s in the_sales(site)] == [("paid", 2_000)]


def test_a_night_of_cash_card_splits_and_voids_leaves_the_drawer_the_screens_said(browser, site, terminal):
    c = cashier_at(browser, site)
    page = c.page
    head = page.locator("#outcome .headline")
    drawer = 20_000  # opened with

    c.product("Cerveza")  # Exacto tapped twice
    c.tap("#checkout")
    page.locator("#cash-exact").dblclick()
    expect(head).to_have_text("PAGADO")
    drawer += 3_500

    c.product("Piscola")  # with the suggested tip, in cash
    c.tap("#checkout")
    c.tap("#tip-suggested")
    expect(page.locator("#cash-exact")).to_contain_text("$6.600")
    c.tap("#cash-exact")
    expect(head).to_have_text("PAGADO")
    drawer += 6_600

    terminal.script("charge", Step(kind=OutcomeKind.DECLINED, message="Fondos insuficientes"))
    c.product("Agua")  # card declined, then cash
    c.tap("#checkout")
    c.tap("#pay-card")
    expect(head).to_have_text("NO SE COBRÓ")
    c.tap("#cash-exact")
    expect(head).to_have_text("PAGADO")
    drawer += 2_000

    c.product("Cerveza")  # $2.000 in cash, the rest by card
    c.product("Agua")
    c.tap("#checkout")
    c.tap("details#split summary")
    page.fill("details#split input[name=cash_part]", "2000")
    c.tap("#split-pay")
    expect(page.locator("#split-status")).to_contain_text("falta")
    c.tap("#pay-card")
    expect(head).to_have_text("APROBADO")
    drawer += 2_000

    c.product("Piscola")  # $1.000 in cash, then voided: the $1.000 goes back
    c.tap("#checkout")
    void_with_a_cash_part(c, "1000")
    expect(page.locator("#return-cash")).to_contain_text("$1.000")
    c.tap("#next-sale")

    c.product("Cerveza")  # a $5.000 bill, $1.500 change
    c.tap("#checkout")
    c.tap("[data-bill='5000']")
    expect(page.locator("#panel")).to_contain_text("$1.500")
    drawer += 3_500

    async def close(s):
        now = await sessions.current_session(s, site.setup.venue_id, site.setup.register_id)
        return await sessions.close_session(
            s,
            venue_id=site.setup.venue_id,
            session_id=now.id,
            user_id=site.setup.cashier_id,
            counted={"20000": 1, "10000": 1, "5000": 1, "2000": 1, "500": 1, "100": 1},
        )

    assert drawer == 37_600
    result = core(site, close)
    assert (result.expected_cash, result.difference, result.status) == (drawer, 0, "closed")
    assert sorted(s.status for s in the_sales(site)) == ["cancelled"] + ["paid"] * 5
    assert terminal.count("charge") == 2
