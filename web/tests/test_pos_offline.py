"""The POS when the network fails, in a real Chromium against a real server: the cashier sees at once that the
register is offline (no tap that silently does nothing) and when the connection is back."""

from __future__ import annotations

import pytest
from conftest import ProvidersPlugin
from livesite import LiveSite
from playwright.sync_api import expect, sync_playwright
from posbrowser import Cashier, launch, login_cashier, new_tab, open_register

from caja_core.testing.fake import FakeProvider, manual_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def site(sqlite_url):
    live = LiveSite(
        sqlite_url,
        ProvidersPlugin(FakeProvider("fake", "GETNET de prueba"), manual_provider("fakebackup", "KLAP de prueba")),
    ).start()
    yield live
    live.stop()


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def cashier_at(browser, site) -> Cashier:
    page = new_tab(browser, site.url)
    login_cashier(page)
    open_register(page, site.setup.register_id)
    return Cashier(page)


def test_the_screen_says_within_one_poll_that_the_server_is_gone_and_when_it_is_back(browser, site):
    c = cashier_at(browser, site)
    page = c.page
    page.context.set_offline(True)
    banner = page.locator("#connection-banner")
    expect(banner).to_contain_text("SIN CONEXIÓN", timeout=5_000)
    page.context.set_offline(False)
    expect(banner).to_contain_text("Conexión restablecida", timeout=5_000)
    c.product("Cerveza")
    expect(page.locator("#cart-total")).to_have_text("$3.500")
