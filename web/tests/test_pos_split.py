"""Split payments at the POS, in a real Chromium against a real server (1024×768): part in cash, the rest by
card, the backup or cash; each part its own payment and the session counting each by its method."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS, out_of_view
from posstack import cashier_at, core

from caja_core.payments.models import PaymentAttempt
from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def night(live) -> dict:
    async def work(s):
        from sqlalchemy import select

        session = await sessions.current_session(s, live.setup.venue_id, live.setup.register_id)
        attempts = (await s.execute(select(PaymentAttempt).order_by(PaymentAttempt.id))).scalars().all()
        return {
            "session": session,
            "sales": await sales.list_sales(s, live.setup.venue_id),
            "attempts": [(a.amount, a.state) for a in attempts],
        }

    return core(live, work)


def split(c, amount: str) -> None:
    c.page.click("#split summary")
    c.type("#split input[name=cash_part]", amount)
    c.tap("#split-pay")
    expect(c.page.locator("#split-status")).to_contain_text(f"pagado en efectivo ${int(amount):,}".replace(",", "."))


def test_part_in_cash_and_the_rest_by_card_or_in_cash(browser, site, terminal):
    terminal.script("charge", Step(kind=OutcomeKind.APPROVED), Step(kind=OutcomeKind.DECLINED, message="Rechazada"))
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    c.product("Piscola")  # $6.000: $2.000 in cash, the rest by card
    c.tap("#checkout")
    expect(page.locator("#split summary")).to_be_visible()
    assert not out_of_view(page, "#split summary")
    split(c, "2000")
    expect(page.locator("#sale-total")).to_have_text("$4.000")
    assert page.locator("#back-to-cart").count() == 0  # cash was taken: the order is no longer editable
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO")
    expect(page.locator("#split-cash")).to_contain_text("$2.000")
    expect(page.locator("#split-card")).to_contain_text("$4.000")

    c.product("Cerveza")  # $3.500: $1.000 in cash, the card declines, the rest in cash with a $5.000 bill
    c.tap("#checkout")
    split(c, "1000")
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("NO SE COBRÓ")
    expect(page.locator("#cash-exact")).to_contain_text("$2.500")
    c.tap("[data-bill='5000']")
    expect(page.locator("#change-big")).to_contain_text("$2.500")

    seen = night(site)
    assert [(x.total, x.status, x.cash_part) for x in seen["sales"]] == [(3500, "paid", 1000), (6000, "paid", 2000)]
    assert seen["attempts"] == [(4000, "approved"), (2500, "declined")]  # each card part charges only the rest
    assert terminal.count("charge") == 2
    assert seen["session"].cash_sales_total == 2000 + 3500 and seen["session"].card_sales_total == 4000


def test_a_split_sale_voided_says_how_much_cash_goes_back(browser, site):
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    c.product("Piscola")
    c.tap("#checkout")
    split(c, "2500")
    page.click("details.void summary")
    page.fill("details.void input[name=reason]", "El cliente se arrepintió")
    c.tap("details.void button[type=submit]")
    expect(page.locator("#return-cash")).to_contain_text("Devuelva al cliente $2.500 en efectivo")
    seen = night(site)
    assert seen["session"].cash_sales_total == 0 and seen["sales"][0].status == "cancelled"


def test_cash_a_declined_card_more_cash_and_the_backup_for_the_rest(browser, site, terminal):
    """The customer pays $10.000 in cash, the card declines, they pay $5.000 more in cash, and the rest goes on
    the backup phone (the terminal is now unreachable): each part its own payment, the session counting each."""
    import os
    from pathlib import Path

    terminal.script(
        "charge",
        Step(kind=OutcomeKind.DECLINED, message="Fondos insuficientes"),
        Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"),
    )
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    for name in ("Piscola", "Piscola", "Cerveza"):  # $15.500
        c.product(name)
    c.tap("#checkout")
    split(c, "10000")
    expect(page.locator("#sale-total")).to_have_text("$5.500")
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("NO SE COBRÓ")
    expect(page.locator("#split summary")).to_have_text("Otra parte en efectivo")
    assert not out_of_view(page, "#split summary")
    c.page.click("#split summary")
    c.type("#split input[name=cash_part]", "5000")
    if os.environ.get("CAJA_SCREENSHOTS"):
        page.screenshot(path=Path(os.environ["CAJA_SCREENSHOTS"]) / "pos-pago-dividido.png")
    c.tap("#split-pay")
    expect(page.locator("#split-status")).to_contain_text("pagado en efectivo $15.000")
    expect(page.locator("#sale-total")).to_have_text("$500")
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("NO SE COBRÓ")
    c.tap("#start-backup")
    expect(page.locator("#manual-instructions")).to_contain_text("$500")
    page.fill("#manual-form input[name=authorization_code]", "QW12ER")
    page.fill("#manual-form input[name=last4]", "4242")
    c.tap("#confirm-manual")
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO")
    expect(page.locator("#split-cash")).to_contain_text("$15.000")
    expect(page.locator("#split-card")).to_contain_text("$500")

    seen = night(site)
    assert [(x.total, x.status, x.cash_part) for x in seen["sales"]] == [(15500, "paid", 15000)]
    assert seen["attempts"] == [(5500, "declined"), (500, "failed_not_sent"), (500, "approved_manual")]
    assert seen["session"].cash_sales_total == 15000 and seen["session"].card_sales_total == 500


def test_a_cash_part_sent_again_from_a_second_tab_is_not_counted_twice(browser, site, terminal):
    """Two tabs (or two devices) on the pay screen of one split sale: the cash part taken on one is not taken
    again from the other, whose screen still shows nothing paid; it is refused in Spanish with what is paid, the
    drawer counts the part once and the card charges what is really left."""
    terminal.script("charge", Step(kind=OutcomeKind.APPROVED))
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    for name in ("Piscola", "Piscola"):  # $12.000: $4.000 in cash, the rest by card
        c.product(name)
    c.tap("#checkout")
    other = page.context.new_page()
    other.goto(page.url)
    for tab in (page, other):
        tab.click("#split summary")
        tab.fill("#split input[name=cash_part]", "4000")
    page.click("#split-pay")
    other.click("#split-pay")  # at once, before the other tab's screen could follow the first one's part
    for tab in (page, other):
        expect(tab.locator("#split-status")).to_contain_text("pagado en efectivo $4.000")
        expect(tab.locator("#sale-total")).to_have_text("$8.000")
    refused = [tab for tab in (page, other) if "ya se había recibido" in tab.locator("#panel").inner_text()]
    assert len(refused) == 1  # whichever tab's part came second
    page.reload()
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO")
    seen = night(site)
    assert [(x.total, x.status, x.cash_part) for x in seen["sales"]] == [(12000, "paid", 4000)]
    assert seen["attempts"] == [(8000, "approved")]
    assert seen["session"].cash_sales_total == 4000 and seen["session"].card_sales_total == 8000


def test_a_split_receipt_with_a_tip_shows_what_the_card_charged(browser, site, terminal):
    """The tip goes on the card part: the receipt's card line is what the terminal charged (rest plus tip), and
    the cash and card lines add up to the total paid."""
    terminal.script("charge", Step(kind=OutcomeKind.APPROVED))
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    c.product("Piscola")  # $6.000, tip 10 % $600: $2.000 in cash, $4.600 by card
    c.tap("#checkout")
    c.tap("#tip-suggested")
    expect(page.locator("#tip-amount")).to_have_text("$600")
    split(c, "2000")
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO")
    expect(page.locator("#split-cash")).to_contain_text("$2.000")
    expect(page.locator("#split-card")).to_contain_text("$4.600")
    assert night(site)["attempts"] == [(4600, "approved")]


def test_the_card_screen_shows_what_the_terminal_charges_not_the_sale_total(browser, site, terminal):
    """Found: with a tip and a part already paid in cash, the screen of the card payment in progress headed
    «Venta #N · $total» (the sale's total without tip, cash part included) while the terminal asked the customer
    for the rest plus the tip. It now heads with what the terminal is charging."""
    terminal.script("charge", Step(kind=OutcomeKind.APPROVED, receipt=True, delay_s=3))
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    c.product("Piscola")  # $6.000, tip 10 % $600: $2.000 in cash, $4.600 by card
    c.tap("#checkout")
    c.tap("#tip-suggested")
    expect(page.locator("#tip-amount")).to_have_text("$600")  # the tip's answer came before the split
    split(c, "2000")
    c.tap("#pay-card")
    expect(page.locator("#progress .panel-head h2")).to_contain_text("$4.600")
    expect(page.locator("#progress .panel-head h2")).not_to_contain_text("$6.000")
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO", timeout=15_000)
    assert night(site)["attempts"] == [(4600, "approved")]


def test_a_second_tab_follows_the_sale_to_its_pay_screen_and_keeps_working_there(browser, site, terminal):
    """Found: a tab left on the order while another tab of the register started charging it followed the sale
    by replacing its whole panel with the pay screen, so nothing afterwards reached it (the cash part taken on
    the first tab, its own taps): a blank-looking screen. It now shows the sale's current payment with a
    message that it moved on in another tab, and keeps following and acting on it."""
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    other = page.context.new_page()
    other.goto(page.url)
    expect(other.locator("#panel #cart")).to_be_visible()
    for name in ("Piscola", "Piscola"):  # $12.000: $4.000 in cash, the rest in cash too
        c.product(name)
    c.tap("#checkout")
    # Within one poll the second tab shows the payment, in its panel, and says why it changed.
    expect(other.locator("#panel #stale-sale")).to_contain_text("otra pestaña", timeout=10_000)
    expect(other.locator("#panel #sale-total")).to_have_text("$12.000")
    # A tab that follows the cart's change after the charge started (its poll saw the cart change first) still
    # says why its screen changed.
    other.goto(f"{site.url}/caja/venta?otra=1")
    expect(other.locator("#panel #stale-sale")).to_contain_text("otra pestaña")
    split(c, "4000")
    other.click("#split summary")  # it still shows nothing paid: its part is refused with what is paid
    other.fill("#split input[name=cash_part]", "4000")
    other.click("#split-pay")
    expect(other.locator("#panel #split-status")).to_contain_text("pagado en efectivo $4.000")
    expect(other.locator("#panel")).to_contain_text("ya se había recibido")
    expect(other.locator("#panel #sale-total")).to_have_text("$8.000")
    other.click("#cash-exact")
    expect(other.locator("#panel #outcome .headline")).to_have_text("PAGADO")
    seen = night(site)
    assert [(x.total, x.status, x.cash_part) for x in seen["sales"]] == [(12000, "paid", 4000)]
    assert seen["session"].cash_sales_total == 12000
