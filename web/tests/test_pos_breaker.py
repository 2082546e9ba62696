"""The card terminal's breaker open (too many failures: card refused for a cool-down), in a real Chromium
against a real server: the register's screens say so within one status poll, the pay screen offers cash and the
backup phone instead of the card, and a sale is paid — never a dead end."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posbrowser import login_cashier, new_tab, open_register, wait_on
from posstack import cashier_at, core
from sqlalchemy import select

from caja_core.payments.models import BreakerState, PaymentAttempt
from caja_core.providers import OutcomeKind
from caja_core.testing.fake import Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ONE_POLL_MS = 2_000 + 3_000  # the status poll's period, and room for a loaded machine


def breaker_failures(site) -> int:
    async def work(s):
        return sum(await s.scalars(select(BreakerState.failure_count)))

    return core(site, work)


def not_charged(site) -> int:
    """How many of the site's card payments are settled as not charged."""

    async def work(s):
        return len(list(await s.scalars(select(PaymentAttempt.id).where(PaymentAttempt.state == "failed_not_sent"))))

    return core(site, work)


def breaker_states(site) -> list[str]:
    """The states of the site's terminal breakers (one terminal here)."""

    async def work(s):
        return list(await s.scalars(select(BreakerState.state)))

    return core(site, work)


def test_a_breaker_opened_by_card_failures_shows_within_one_poll_and_offers_cash_and_the_backup(
    browser, site, terminal
):
    terminal.set_default("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"))
    c = cashier_at(browser, site)
    page = c.page
    other = new_tab(browser, site.url, (1024, 768))  # another device of the register, on its sale screen
    login_cashier(other)
    open_register(other, site.setup.register_id)
    expect(other.locator("#contingency-banner")).to_have_count(0)

    c.product("Piscola")
    c.tap("#checkout")
    for n in range(1, 4):  # the policy's 3 failures open the breaker
        # The outcome on screen is the previous payment's until this tap's answer replaces the panel: it is
        # marked, and the test waits for an unmarked one (a tap on the old screen meanwhile is a double tap,
        # which the POS drops on purpose).
        page.evaluate("document.querySelectorAll('#outcome').forEach(e => e.setAttribute('data-seen', ''))")
        c.tap("#pay-card")
        wait_on(page, lambda n=n: terminal.count("charge") == n, f"charge {n} sent to the terminal")
        expect(page.locator("#outcome:not([data-seen])")).to_contain_text("NO SE COBRÓ")
        # The next tap once this payment is settled and its failure counted (the terminal's answer is shown
        # before either is written).
        wait_on(
            page,
            lambda n=n: breaker_failures(site) == n and not_charged(site) == n,
            f"payment {n} settled and its failure counted",
        )
    assert breaker_states(site) == ["open"] and terminal.count("charge") == 3
    # From the moment it opened, both screens say so within one poll (this one without a reload).
    expect(other.locator("#contingency-banner")).to_contain_text("Modo contingencia", timeout=ONE_POLL_MS)
    expect(page.locator("#contingency-banner")).to_contain_text("Modo contingencia", timeout=ONE_POLL_MS)
    charges = terminal.count("charge")
    page.reload()  # the pay screen drawn now: cash and the backup, not the card
    expect(page.locator("#contingency-mode")).to_contain_text("Modo contingencia")
    expect(page.locator("#pay-card")).to_have_count(0)
    expect(page.locator("#cash-exact")).to_be_visible()
    expect(page.locator("#start-backup, #pay-backup").first).to_be_visible()
    c.tap("#cash-exact")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")

    # The next sale, on the other device: the card is not offered; the backup phone pays it.
    other.click("#keys [data-product='Cerveza']")
    other.click("#checkout")
    expect(other.locator("#pay-card")).to_have_count(0)
    other.click("#pay-backup")
    other.click("#start-backup")
    other.fill("#manual-form input[name=authorization_code]", "ABC123")
    other.fill("#manual-form input[name=last4]", "4242")
    other.click("#confirm-manual")
    expect(other.locator("#outcome")).to_contain_text("APROBADO")
    assert terminal.count("charge") == charges  # nothing more sent to the cut-off terminal
