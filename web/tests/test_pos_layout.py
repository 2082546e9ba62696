"""The POS's forms and tab bar at the three screens the venue uses (1024×768, 390×844, 1440×900), in a real
Chromium against a real server: opening the discount, tip, split or void form shows its primary action
(Aplicar, Recibir efectivo, Anular) with no scroll, every target is at least 44 px, and on a phone the tab bar
fits the screen on every POS page instead of scrolling sideways."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from posbrowser import VIEWPORTS, horizontal_overflow, small_targets
from posstack import cashier_at
from test_pos_cashier import shots  # noqa: F401 - shared fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def hidden_without_scroll(page: Page, selector: str) -> str | None:
    """Why the element is not wholly in sight where the screen is now (off the window, or clipped or covered by
    what is on top of it), or None when the cashier sees and can tap it as it is."""
    return page.eval_on_selector(
        selector,
        """e => { const r = e.getBoundingClientRect();
          if (!r.width || !r.height) return 'not rendered';
          if (r.top < 0 || r.left < 0 || r.bottom > innerHeight + 0.5 || r.right > innerWidth + 0.5)
            return `outside the window: ${Math.round(r.top)}..${Math.round(r.bottom)} of ${innerHeight}`;
          for (const [fx, fy] of [[.2, .25], [.8, .75], [.5, .5]]) { const x = r.left + fx * r.width, y = r.top + fy * r.height;
            const hit = document.elementFromPoint(x, y);
            if (!hit || !(hit === e || e.contains(hit))) return `covered or clipped at ${Math.round(x)},${Math.round(y)}`;
          }
          return null; }""",
    )


FORMS = [
    # (what the cashier taps to open it, its primary action)
    ("#discount summary", "#apply-discount"),
    ("#tip-other summary", "#apply-tip"),
    ("#split summary", "#split-pay"),
    ("details.void summary", "details.void button[type=submit]"),
]


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_each_pay_screen_form_shows_its_primary_action_without_a_scroll(browser, site, viewport, shots):  # noqa: F811
    c = cashier_at(browser, site, VIEWPORTS[viewport])
    page = c.page
    for name in ("Cerveza", "Piscola", "Agua", "Cerveza", "Piscola"):
        c.product(name)
    c.tap("#checkout")
    expect(page.locator("#sale-total")).to_be_visible()
    for opener, action in FORMS:
        c.tap(opener)
        expect(page.locator(action)).to_be_visible()
        page.screenshot(path=shots / f"pos-formulario-{opener.split()[0].strip('#.')}-{viewport}.png")
        why = hidden_without_scroll(page, action)
        assert why is None, f"{viewport}: {action} after opening {opener}: {why}"
        assert horizontal_overflow(page) == 0, f"{viewport}: {opener} open: the page is wider than the screen"
        small = small_targets(page, "#panel")
        assert not small, f"{viewport}: {opener} open: touch targets under 44 px: {small}"
        c.tap(opener)  # closed again before the next one


POS_SCREENS = ["/caja/venta", "/caja/movimientos", "/caja/incidentes", "/caja/ventas", "/caja/session/close"]


def test_the_tab_bar_fits_a_phone_on_every_pos_screen(browser, site, shots):  # noqa: F811
    c = cashier_at(browser, site, VIEWPORTS["390x844"])
    page = c.page
    for url in POS_SCREENS:
        page.goto(url)
        page.screenshot(path=shots / f"pos-pestanas-{url.strip('/').replace('/', '-')}-390x844.png")
        nav = page.locator(".pos-nav")
        expect(nav).to_be_visible()
        widths = page.evaluate(
            """() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
                      nav: document.querySelector('.pos-nav').scrollWidth, view: innerWidth})"""
        )
        assert max(widths["doc"], widths["body"], widths["nav"]) <= widths["view"], f"{url}: {widths}"
        small = small_targets(page, ".pos-nav")
        assert not small, f"{url}: tab bar targets under 44 px: {small}"
        for link in page.locator(".pos-nav a").all():
            if link.is_visible():
                assert hidden_without_scroll(page, f".pos-nav a[href='{link.get_attribute('href')}']") is None
