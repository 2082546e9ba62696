"""The payment screen under a slow network, in a real Chromium against a real server: what the screen says
follows what the database says, whatever order the taps and the refreshes reach the server in (requests held
back by the test)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Route, expect
from posbrowser import new_tab, wait_on
from posstack import cashier_at, core
from sqlalchemy import select

from caja_core.payments.models import PaymentAttempt
from caja_core.providers import OutcomeKind
from caja_core.sales.models import Sale
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def states(site, model) -> list[str]:
    async def work(s):
        return list((await s.execute(select(model.status if model is Sale else model.state))).scalars())

    return core(site, work)


def test_a_refused_cancel_does_not_freeze_the_payment_screen(browser, site, terminal):
    """Found: «Cancelar cobro» that reached the server just as the charge fell in doubt is refused with a message;
    the panel then never refreshed again (the message holds its refresh for 15 s, and the status bar's refresh
    every 2 s renewed that hold): the screen kept saying EN DUDA («no entregue el pedido») long after the
    terminal's answer made the sale paid."""
    terminal.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True, delay_s=1.0, message="Sin respuesta"))
    terminal.script("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado", delay_s=1.0))
    c = cashier_at(browser, site)
    page = c.page
    c.product("Cerveza")
    c.tap("#checkout")
    c.tap("#pay-card")
    expect(page.locator("#cancel-payment")).to_be_visible()
    cancel: list[Route] = []
    page.route("**/cancelar-pago", lambda route: cancel.append(route))
    c.tap("#cancel-payment")  # on its way (a slow network) while the terminal's answer leaves it in doubt
    wait_on(page, lambda: bool(cancel), "the cancel on its way")
    wait_on(page, lambda: states(site, PaymentAttempt) == ["in_doubt"], "the charge in doubt")
    page.unroute("**/cancelar-pago")
    expect(page.locator("#panel")).to_contain_text("no se puede cancelar")
    wait_on(page, lambda: states(site, Sale) == ["paid"], "the status check settles it: paid", 30)
    expect(page.locator("#outcome .headline")).to_have_text("APROBADO", timeout=20_000)


def test_a_double_tap_stays_one_request_after_a_waiting_sale_was_opened_during_a_refresh(browser, site, terminal):
    """Found: a waiting sale's chip tapped (twice, impatient) while the panel's refresh was on its way left the
    POS believing that refresh was still on its way; from then on a second tap no longer waited behind the first:
    it cancelled the first one's answer and was sent as well (Exacto tapped twice reached the server twice)."""
    terminal.script("charge", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta final"))
    terminal.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Terminal desconectado"))
    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    c.tap("#checkout")
    c.tap("#pay-card")
    expect(page.locator("#outcome .headline")).to_have_text("EN DUDA", timeout=20_000)
    c.tap("#park-sale")
    chip = page.locator("#parked-sales [data-parked]")
    expect(chip).to_contain_text("EN DUDA")
    c.tap(chip)
    expect(page.locator("#progress")).to_be_visible()
    refreshes: list[Route] = []
    page.route("**/pago", lambda route: refreshes.append(route))  # a slow network: the refresh takes its time
    wait_on(page, lambda: bool(refreshes), "the panel's refresh on its way")
    c.tap(chip)  # the chip again, while that refresh is on its way
    terminal.set_default("status", Step(kind=OutcomeKind.DECLINED, message="No existe"))
    wait_on(page, lambda: states(site, PaymentAttempt) == ["declined"], "the terminal says: not charged", 30)
    page.unroute("**/pago")
    expect(page.locator("#cash-exact")).to_be_visible()

    sent: list[Route] = []
    page.route("**/efectivo", lambda route: sent.append(route))
    c.tap("#cash-exact")
    wait_on(page, lambda: bool(sent), "Exacto on its way")
    page.locator("#cash-exact").click(force=True)  # a double tap: it waits behind the first one
    waited = time.monotonic() + 1.5
    wait_on(page, lambda: len(sent) > 1 or time.monotonic() > waited, "a second request")
    assert len(sent) == 1, "the double tap was sent twice"
    page.unroute("**/efectivo")
    expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    assert states(site, Sale) == ["paid"]


def test_a_tab_whose_card_tap_arrives_after_the_cash_shows_the_sale_paid(browser, site, terminal):
    """Found: two tabs of one register on the same sale; one took the cash while the other's «Pagar con tarjeta»
    was on its way. That tap was refused («La venta ya está pagada») and its tab went on showing Exacto, the
    bills and «Pagar con tarjeta» of the paid sale for as long as the other tab stayed on its receipt (its
    refresh saw the same sale and followed nothing): a state the server no longer had."""
    a = cashier_at(browser, site)
    b = new_tab(browser, site.url, context=a.page.context)
    a.product("Piscola")
    a.tap("#checkout")
    b.goto("/caja/venta")
    expect(b.locator("#pay-card")).to_be_visible()
    card: list[Route] = []
    b.route("**/tarjeta", lambda route: card.append(route))
    b.click("#pay-card")
    wait_on(b, lambda: bool(card), "the card tap on its way")
    a.tap("#cash-exact")
    expect(a.page.locator("#outcome .headline")).to_have_text("PAGADO")
    b.unroute("**/tarjeta")
    expect(b.locator("#outcome .headline")).to_have_text("PAGADO", timeout=10_000)
    assert states(site, Sale) == ["paid"] and terminal.count("charge") == 0
