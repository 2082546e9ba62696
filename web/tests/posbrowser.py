"""The POS in a real Chromium: launching it, a cashier at a register, and a counter of what the cashier does
(taps and keys), shared by the browser tests and the benchmark of taps per sale."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import shutil
import time
from collections.abc import Callable, Coroutine
from typing import Any

from playwright.sync_api import Browser, Locator, Page, expect

from caja_core.testing.factories import PASSWORD, PIN

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"]
VIEWPORTS = {"1024x768": (1024, 768), "390x844": (390, 844), "1440x900": (1440, 900)}


def launch(playwright: Any) -> Browser:
    return playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine from Playwright's thread: in a thread of its own with its own event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


class Cashier:
    """A cashier's browser tab at the POS; every tap and key goes through it and is counted."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.taps = 0

    def tap(self, selector: str | Locator) -> None:
        self.taps += 1
        target = self.page.locator(selector) if isinstance(selector, str) else selector
        target.click()

    def key(self, name: str) -> None:
        self.taps += 1
        self.page.keyboard.press(name)

    def type(self, selector: str, text: str) -> None:
        """Typing a number counts one tap per character (an on-screen keypad's keys)."""
        self.taps += len(text)
        self.page.fill(selector, text)

    def product(self, name: str) -> None:
        self.tap(f"#keys [data-product='{name}']")

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()


def new_tab(browser: Browser, url: str, size: tuple[int, int] = (1024, 768), context: Any = None) -> Page:
    context = context or browser.new_context(
        viewport={"width": size[0], "height": size[1]}, locale="es-CL", base_url=url, has_touch=size[0] < 600
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def login_cashier(page: Page, name: str = "Cajera", pin: str = PIN) -> None:
    page.goto("/login")
    page.click(f"a:has-text('{name}')")
    page.fill("#pin", pin)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/caja/$"))


def login_staff(page: Page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Ingresar')")


def open_register(page: Page, register_id: int, cash: str = "20000") -> None:
    """Open the register's session, or carry on in it when this cashier already has it open."""
    page.goto("/caja/")
    resume = page.locator("button:has-text('Continuar en esta caja')")
    if resume.count():
        resume.first.click()
    else:
        page.goto(f"/caja/session/open?register_id={register_id}")
        page.fill("input[name=initial_cash]", cash)
        page.click("#open-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/caja/venta"))


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s} s")
        time.sleep(0.05)


def wait_on(page: Page, predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Like ``wait_for``, but the browser's events keep being handled meanwhile (Playwright's own wait): for
    conditions a route handler or a page event makes true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s} s")
        page.wait_for_timeout(50)


def out_of_view(page: Page, selector: str) -> list[str]:
    """The elements matching ``selector`` that are visible but not entirely inside the viewport."""
    return page.eval_on_selector_all(
        selector,
        """els => els.filter(e => e.offsetParent !== null || getComputedStyle(e).position === 'fixed')
          .filter(e => { const r = e.getBoundingClientRect();
            return r.width > 0 && (r.top < 0 || r.left < 0 || r.bottom > innerHeight + 0.5 || r.right > innerWidth + 0.5); })
          .map(e => (e.id || e.textContent.trim().slice(0, 40)))""",
    )


def small_targets(page: Page, scope: str) -> list[str]:
    """Visible buttons, links, inputs, selects and summaries in ``scope`` smaller than 44 × 44 px."""
    return page.eval_on_selector_all(
        f"{scope} button, {scope} a.btn, {scope} input:not([type=hidden]), {scope} select, {scope} summary",
        """els => els.filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; })
          .filter(e => { const r = e.getBoundingClientRect(); return r.height < 43.5 || r.width < 43.5; })
          .map(e => `${e.tagName} ${(e.id || e.textContent.trim()).slice(0, 30)} ${Math.round(e.getBoundingClientRect().width)}x${Math.round(e.getBoundingClientRect().height)}`)""",
    )


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0 when nothing overflows sideways)."""
    return page.evaluate("() => Math.max(0, document.documentElement.scrollWidth - innerWidth)")
