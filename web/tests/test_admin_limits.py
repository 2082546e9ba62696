"""The venue's discount limit and suggested tip, edited by the admin: bad input is a Spanish error that saves
nothing, a good change is audited with what it was before, and the POS uses the new values at once."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from posbrowser import login_staff, new_tab
from test_pos_cashier import browser, cashier_at, discount, site, terminal  # noqa: F401 - shared fixtures
from webkit import text_of

from caja_core.audit.service import list_audit
from caja_core.permissions.service import get_controls
from caja_core.testing.factories import SUPERVISOR_PIN


@pytest.mark.parametrize(
    "form,message",
    [
        ({"discount_limit": "-5", "suggested_tip_percent": "10"}, "descuento máximo"),
        ({"discount_limit": "12,5", "suggested_tip_percent": "10"}, "sin decimales"),
        ({"discount_limit": "999999999999", "suggested_tip_percent": "10"}, "máximo permitido"),
        ({"discount_limit": "5000", "suggested_tip_percent": "101"}, "de 0 a 100"),
        ({"discount_limit": "5000", "suggested_tip_percent": "diez"}, "de 0 a 100"),
        ({"discount_limit": "5000", "suggested_tip_percent": ""}, "de 0 a 100"),
    ],
)
async def test_bad_limits_are_refused_in_spanish_and_nothing_is_saved(admin, setup, sqlite_db, form, message):
    r = await admin.post("/admin/limites", form)
    assert r.status_code == 422, r.status_code
    assert message in text_of(r.text)
    async with sqlite_db.session() as s:
        controls = await get_controls(s, setup.venue_id)
    assert (controls.discount_limit, controls.suggested_tip_percent) == (5000, 10)


async def test_the_change_is_saved_and_audited_with_what_it_was(admin, setup, sqlite_db):
    r = await admin.post("/admin/limites", {"discount_limit": "$8.000", "suggested_tip_percent": "15 %"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/limites?guardado=1"
    page = await admin.get("/admin/limites?guardado=1")
    assert "Cambios guardados" in text_of(page.text)
    assert 'value="8000"' in page.text and 'value="15"' in page.text
    async with sqlite_db.session() as s:
        controls = await get_controls(s, setup.venue_id)
        events = await list_audit(s, setup.venue_id, action_prefix="controls.updated")
    assert (controls.discount_limit, controls.suggested_tip_percent) == (8000, 15)
    assert controls.cash_out_limit == 20_000  # the other thresholds are untouched
    assert events[0].user_id == setup.admin_id
    assert events[0].payload["changed"] == {"discount_limit": [5000, 8000], "suggested_tip_percent": [10, 15]}


async def test_only_the_admin_edits_the_limits(supervisor, cashier):
    r = await supervisor.post("/admin/limites", {"discount_limit": "0", "suggested_tip_percent": "0"})
    assert r.status_code == 403


# ---- in a real browser ------------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_the_admin_changes_the_limits_and_the_pos_follows(browser, site):  # noqa: F811 - fixtures

    admin = new_tab(browser, site.url)
    login_staff(admin, "admin")
    admin.goto("/admin/")
    admin.click("a:has-text('Descuentos y propina')")
    expect(admin.locator("#discount_limit")).to_have_value("5000")
    expect(admin.locator("#suggested_tip_percent")).to_have_value("10")
    admin.fill("#discount_limit", "2.000")
    admin.fill("#suggested_tip_percent", "150")
    admin.click("#limits-form button[type=submit]")
    expect(admin.locator("#limits-form .field-error")).to_contain_text("de 0 a 100")
    expect(admin.locator("#discount_limit")).to_have_value("2.000")  # what was typed stays
    admin.fill("#suggested_tip_percent", "15")
    admin.click("#limits-form button[type=submit]")
    expect(admin.locator("#limits-saved")).to_contain_text("Cambios guardados")
    expect(admin.locator("#discount_limit")).to_have_value("2000")

    c = cashier_at(browser, site)
    page = c.page
    c.product("Piscola")
    expect(page.locator("#cart-count")).to_contain_text("1 artículo")
    c.tap("#checkout")
    expect(page.locator("#tip-suggested")).to_contain_text("15 % ($900)")
    discount(c, "Toda la venta", "amount", "2500", "Cliente frecuente")  # over the new $2.000 limit
    expect(page.locator("#panel .field-error")).to_contain_text("autorización de un supervisor")
    expect(page.locator("#discount-form")).to_contain_text("Hasta $2.000")
    page.fill("#discount-form input[name=supervisor_code]", SUPERVISOR_PIN)
    c.tap("#apply-discount")
    expect(page.locator("#sale-total")).to_have_text("$3.500")
