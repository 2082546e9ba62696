"""After a card payment that did not charge, every way forward works when the cashier taps it the instant
«NO SE COBRÓ» shows (a busy night: nobody waits to read), in a real Chromium against a real server: the card
again reaches the terminal, cash pays, the backup phone is offered, the void and «Editar pedido» answer.

The tap is made by the page itself the moment the headline appears (a MutationObserver on the panel), which is
the earliest a finger could land: before, the buttons the answer brought were not wired yet for a moment, and a
tap then did nothing at all, with no message."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect
from posbrowser import VIEWPORTS
from posstack import cashier_at, core

from caja_core.providers import OutcomeKind
from caja_core.sales import service as sales
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Taps ``selector`` once, as soon as the outcome's headline reads ``headline`` (set up before the tap that leads
#: there). ``window.cajaTapped`` tells the test the tap was made.
TAP_AS_SOON_AS_SHOWN = """([headline, selector]) => {
  window.cajaTapped = false;
  const shown = () => {
    const h = document.querySelector('#outcome .headline');
    return h && h.textContent.trim() === headline;
  };
  const watch = new MutationObserver(() => {
    const target = shown() && document.querySelector(selector);
    if (!target) return;
    watch.disconnect();
    target.click();
    window.cajaTapped = true;
  });
  watch.observe(document.getElementById('panel'), {childList: true, subtree: true, characterData: true});
}"""


def tap_as_soon_as(c, headline: str, selector: str, then: str) -> None:
    """Tap ``then`` (which leads to ``headline``), and ``selector`` the instant the headline shows."""
    page = c.page
    page.evaluate(TAP_AS_SOON_AS_SHOWN, [headline, selector])
    c.tap(then)
    deadline = time.monotonic() + 20
    while page.evaluate("window.cajaTapped") is not True:  # the page's events go on being handled meanwhile
        assert time.monotonic() < deadline, f"{headline} not shown in 20 s"
        page.wait_for_timeout(50)


def sale_statuses(site) -> list[str]:
    async def work(s):
        return [x.status for x in await sales.list_sales(s, site.setup.venue_id)]

    return core(site, work)


def test_the_card_tapped_again_the_instant_no_se_cobro_shows_reaches_the_terminal(browser, site, terminal):
    """Found: «Reintentar con tarjeta» tapped right as «NO SE COBRÓ» appeared sent nothing and said nothing."""
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page
    answers = [  # the terminal's "no" at once (in the tap's answer) or later (seen by the panel's poll)
        Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"),
        Step(kind=OutcomeKind.DECLINED, message="Fondos insuficientes"),
        Step(kind=OutcomeKind.DECLINED, message="Fondos insuficientes", delay_s=1.5),
        Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado", delay_s=1.5),
        Step(kind=OutcomeKind.DECLINED, message="Tarjeta vencida"),
    ]
    for n, no in enumerate(answers, start=1):
        terminal.script("charge", no, Step(kind=OutcomeKind.APPROVED))
        charges = terminal.count("charge")
        c.product("Cerveza")
        c.tap("#checkout")
        tap_as_soon_as(c, "NO SE COBRÓ", "#pay-card", then="#pay-card")
        expect(page.locator("#outcome .headline")).to_have_text("APROBADO", timeout=20_000)
        assert terminal.count("charge") == charges + 2, f"sale {n}: the second tap never reached the terminal"
    assert sale_statuses(site) == ["paid"] * len(answers)


def test_every_way_forward_works_when_tapped_the_instant_no_se_cobro_shows(browser, site, terminal):
    # Declined (the backup is not offered for a decline), but the terminal down for the sale charged on the backup.
    terminal.set_default("charge", Step(kind=OutcomeKind.DECLINED, message="Fondos insuficientes"))
    c = cashier_at(browser, site, VIEWPORTS["1024x768"])
    page = c.page

    c.product("Cerveza")  # cash
    c.tap("#checkout")
    tap_as_soon_as(c, "NO SE COBRÓ", "#cash-exact", then="#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("PAGADO")

    c.product("Piscola")  # the backup phone
    c.tap("#checkout")
    terminal.script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"))
    tap_as_soon_as(c, "NO SE COBRÓ", "#start-backup", then="#pay-card")
    expect(page.locator("#manual-reference")).to_be_visible()
    page.fill("#manual-form input[name=authorization_code]", "ABC123")
    page.fill("#manual-form input[name=last4]", "4242")
    c.tap("#confirm-manual")
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO")

    c.product("Agua")  # back to the order
    c.tap("#checkout")
    tap_as_soon_as(c, "NO SE COBRÓ", "#back-to-cart", then="#pay-card")
    expect(page.locator("#cart-total")).to_have_text("$2.000")
    c.tap("#checkout")

    tap_as_soon_as(c, "NO SE COBRÓ", "details.void summary", then="#pay-card")  # the void
    page.fill("details.void input[name=reason]", "El cliente se fue")
    c.tap("details.void button[type=submit]")
    expect(page.locator("#cart-total")).to_have_text("$0")
    assert sorted(sale_statuses(site)) == ["cancelled", "cancelled", "paid", "paid"]
    assert terminal.count("charge") == 4
