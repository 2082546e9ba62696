"""The payment screen under a slow network, in a real Chromium against a real server: what the screen says
follows what the database says, whatever order the taps and the refreshes reach the server in (requests held
back by the test)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Route, expect
from posbrowser import wait_on
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
