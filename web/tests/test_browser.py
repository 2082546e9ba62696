"""The cashier's and the admin's night in a real Chromium against a real server (uvicorn) with the GETNET
simulator and the KLAP backup: create a register with a policy, open the jornada, open a session, sell for
cash, sell by card, fall back to KLAP when GETNET fails, close blind with a difference, read the reports.
Screenshots of the main screens go to $CAJA_SCREENSHOTS (docs/screenshots/ when refreshing the docs)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import ProvidersPlugin
from livesite import LiveSite
from playwright.sync_api import Page, expect, sync_playwright

from caja_core.providers import OutcomeKind
from caja_core.testing.fake import FakeProvider, Step

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "clave-segura-123"
PIN = "482915"
SUPERVISOR_PIN = "730614"


@pytest.fixture
def shots(tmp_path):
    target = Path(os.environ.get("CAJA_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def site(sqlite_url):
    live = LiveSite(
        sqlite_url, ProvidersPlugin(FakeProvider("fake"), FakeProvider("fakebackup")), open_jornada=False
    ).start()
    yield live
    live.stop()


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield b
        b.close()


def new_page(browser, site) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-CL", base_url=site.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def watch_csp(page: Page) -> list[str]:
    """Every Content-Security-Policy violation the page reports (an inline script or eval would be one)."""
    found: list[str] = []
    page.on("console", lambda msg: found.append(msg.text) if "Content Security Policy" in msg.text else None)
    return found


def staff_login(page: Page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Ingresar')")


def logout(page: Page) -> None:
    page.click("button:has-text('Salir')")
    expect(page).to_have_url(re.compile(r"/login$"))


def next_sale(page: Page) -> None:
    page.click("#next-sale")
    expect(page.locator("#cart")).to_contain_text("Toque un producto")


def test_the_whole_night(browser, site, shots):
    page = new_page(browser, site)
    csp_violations = watch_csp(page)
    host, port = site.sim_address

    # --- admin: backup phones and a register with its policy ------------------------------------------------
    staff_login(page, "admin")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    page.goto("/admin/celulares")
    for n in (1, 2):
        page.fill("#phone-form input[name=name]", f"Celular KLAP {n}")
        page.fill("#phone-form input[name=identifier]", f"KLAP-0{n}")
        page.click("#phone-form button[type=submit]")
    expect(page.locator("#phones")).to_contain_text("KLAP-02")
    page.goto("/admin/cajas/crear")
    page.fill("input[name=code]", "TEST-01")
    page.fill("input[name=name]", "TEST GETNET+KLAP")
    page.select_option("select[name=register_type]", "HUMANA")
    page.select_option("select[name=primary_provider]", "getnet")
    page.select_option("select[name=backup_provider]", "klap")
    page.fill("input[name='policy.max_wait_s']", "30")
    page.fill("input[name='policy.backup_phones_required']", "2")
    page.fill("input[name='settings.getnet.host']", host)
    page.fill("input[name='settings.getnet.port']", str(port))
    page.fill("input[name='settings.getnet.receipt_timeout_s']", "1")
    page.screenshot(path=shots / "admin-crear-caja.png", full_page=True)
    page.click("#register-form button[type=submit]")
    expect(page.locator(".alert.ok")).to_contain_text("Cambios guardados")
    page.click("#test-terminal")
    expect(page.locator("#terminal-result")).to_contain_text("Terminal responde")
    page.goto("/admin/cajas/")
    expect(page.locator("#registers")).to_contain_text("TEST GETNET+KLAP")
    page.screenshot(path=shots / "admin-cajas.png", full_page=True)
    logout(page)

    # --- supervisor opens the jornada ---------------------------------------------------------------------
    staff_login(page, "super")
    expect(page.locator("#jornada-banner")).to_contain_text("No hay jornada abierta")
    page.click("button:has-text('Abrir jornada')")
    expect(page.locator("#jornada-banner")).to_contain_text("Jornada abierta")
    page.screenshot(path=shots / "jornada.png")
    logout(page)

    # --- cashier: PIN keypad, choose the register, open with initial cash ----------------------------------
    page.click("a:has-text('Cajera')")
    page.screenshot(path=shots / "login-pin.png")
    for key in PIN:
        page.click(f".keypad [data-key='{key}']")
    page.click(".keypad button[type=submit]")
    expect(page).to_have_url(re.compile(r"/caja/$"))
    page.screenshot(path=shots / "pos-elegir-caja.png")
    page.locator("[data-register='TEST-01'] a:has-text('Abrir caja')").click()
    page.fill("input[name=initial_cash]", "20000")
    page.click("#open-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/caja/venta$"))

    # --- cash sale: two beers, paid with 10 000, change 3 000 -----------------------------------------------
    page.click("[data-product='Cerveza']")
    page.click("[data-product='Cerveza']")
    expect(page.locator("#cart-total")).to_have_text("$7.000")
    page.screenshot(path=shots / "pos-venta.png")
    page.keyboard.press("F4")
    expect(page.locator("#sale-total")).to_have_text("$7.000")
    page.fill("#cash_received", "10000")
    page.keyboard.press("Enter")
    expect(page.locator("#change")).to_contain_text("$3.000")
    page.screenshot(path=shots / "pos-recibo-efectivo.png")
    next_sale(page)

    # --- card sale on GETNET: terminal messages, then approval -----------------------------------------------
    page.click("[data-product='Piscola']")
    page.click("#checkout")
    page.click("#pay-card")
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#terminal-message")).to_be_visible()
    page.screenshot(path=shots / "pos-pago-tarjeta.png")
    expect(page.locator("#receipt")).to_contain_text("GETNET", timeout=30_000)
    expect(page.locator("#receipt")).to_contain_text("Tarjeta")
    next_sale(page)

    # --- GETNET never sees the sale: reconciled as not charged, KLAP backup offered and confirmed -----------
    site.add_fault(kind="no_receipt")
    page.click("[data-product='Agua']")
    page.click("#checkout")
    page.click("#pay-card")
    expect(page.locator("#start-backup")).to_be_visible(timeout=45_000)
    assert "Aprobado" not in page.locator("#payment-state").inner_text()
    page.screenshot(path=shots / "pos-respaldo-ofrecido.png")
    page.click("#start-backup")
    expect(page.locator("#manual-reference")).to_be_visible()
    expect(page.locator("#manual-instructions")).to_contain_text("Celular KLAP")
    page.fill("input[name=authorization_code]", "12")
    page.fill("input[name=last4]", "4242")
    page.click("#confirm-manual")
    expect(page.locator("#manual-form")).to_contain_text("6 letras o números")
    page.fill("input[name=authorization_code]", "ABC123")
    page.fill("input[name=last4]", "4242")
    page.screenshot(path=shots / "pos-respaldo-klap.png")
    page.click("#confirm-manual")
    expect(page.locator("#receipt")).to_contain_text("(respaldo)")
    next_sale(page)

    # --- blind close with a difference: expected 27 000, counted 25 000 -> supervisor approves --------------
    page.keyboard.press("F10")
    expect(page.locator("#close-form")).to_be_visible()
    assert "27.000" not in page.content()
    page.fill("input[name=count_20000]", "1")
    page.fill("input[name=count_5000]", "1")
    expect(page.locator("[data-denom-total]")).to_have_text(re.compile(r"25\.000"))
    page.screenshot(path=shots / "pos-cierre-ciego.png")
    page.once("dialog", lambda d: d.dismiss())  # "¿Cerrar la caja con este conteo?" → No: nothing is sent
    page.click("#close-form button[type=submit]")
    expect(page.locator("#close-form")).to_be_visible()
    assert page.locator("#difference").count() == 0
    page.once("dialog", lambda d: d.accept())
    page.click("#close-form button[type=submit]")
    expect(page.locator("#difference")).to_contain_text("-$2.000")
    page.fill("#approve-form input[name=supervisor_code]", SUPERVISOR_PIN)
    page.fill("#approve-form textarea[name=note]", "Vuelto mal entregado en la barra")
    page.click("#approve-form button[type=submit]")
    expect(page.locator("#close-result")).to_contain_text("Caja cerrada")
    page.screenshot(path=shots / "pos-cierre-resultado.png")
    logout(page)

    # --- admin reads the night in the reports -------------------------------------------------------------
    staff_login(page, "admin")
    page.goto("/admin/cajas/reportes")
    sessions = page.locator("#sessions")
    expect(sessions).to_contain_text("TEST GETNET+KLAP")
    expect(sessions).to_contain_text("-$2.000")
    expect(page.locator("#jornada-total")).to_have_text("$15.000")
    expect(page.locator(".by-provider")).to_contain_text("KLAP")
    expect(page.locator(".by-provider")).to_contain_text("GETNET")
    expect(page.locator("#fallback-events")).to_contain_text("KLAP")
    expect(page.locator("#attempt-log")).to_contain_text("ABC123")
    page.screenshot(path=shots / "admin-reportes.png", full_page=True)
    page.select_option("select[name=estado]", "failed_not_sent")
    expect(page.locator("#attempt-log tbody tr")).to_have_count(1)
    assert csp_violations == []


def test_reload_mid_payment_resumes_from_the_server(browser, sqlite_url, shots):
    terminal = FakeProvider("fake")
    terminal.script("charge", Step(kind=OutcomeKind.APPROVED, delay_s=3.0, progress=["Inserte o acerque tarjeta"]))
    site = LiveSite(sqlite_url, ProvidersPlugin(terminal, FakeProvider("fakebackup"))).start()
    try:
        page = new_page(browser, site)
        page.goto("/login")
        page.click("a:has-text('Cajera')")
        page.fill("#pin", PIN)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/caja/$"))
        page.goto("/admin/")
        expect(page.locator("#error")).to_contain_text("Su rol no tiene acceso")
        page.goto("/caja/session/open?register_id=1")
        page.fill("input[name=initial_cash]", "0")
        page.click("#open-form button[type=submit]")
        page.click("[data-product='Cerveza']")
        page.click("#checkout")
        page.click("#pay-card")
        expect(page.locator("#terminal-message")).to_contain_text("Inserte o acerque tarjeta")
        page.reload()
        expect(page.locator("#terminal-message")).to_contain_text("Inserte o acerque tarjeta")
        assert "<html" in page.content()
        expect(page.locator("#receipt")).to_be_visible(timeout=20_000)
        expect(page.locator("#receipt")).to_contain_text("****4242")
    finally:
        site.stop()


def test_polling_never_wipes_what_the_supervisor_types(browser, sqlite_url):
    terminal = FakeProvider("fake")
    terminal.script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=False))
    terminal.script("status", *[Step(kind=OutcomeKind.UNKNOWN) for _ in range(20)])
    site = LiveSite(sqlite_url, ProvidersPlugin(terminal, FakeProvider("fakebackup"))).start()
    try:
        page = new_page(browser, site)
        page.goto("/login")
        page.click("a:has-text('Cajera')")
        page.fill("#pin", PIN)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/caja/$"))
        page.goto("/caja/session/open?register_id=1")
        page.fill("input[name=initial_cash]", "0")
        page.click("#open-form button[type=submit]")
        page.click("[data-product='Cerveza']")
        page.click("#checkout")
        page.click("#pay-card")
        expect(page.locator("#payment-state")).to_have_text("EN DUDA", timeout=20_000)
        page.click("details.override summary")
        page.fill("#panel input[name=supervisor_code]", SUPERVISOR_PIN)
        page.wait_for_timeout(2500)
        assert page.input_value("#panel input[name=supervisor_code]") == SUPERVISOR_PIN
        page.fill("#panel input[name=note]", "Terminal colgado, cliente esperando")
        page.click("#panel button:has-text('Forzar respaldo')")
        expect(page.locator("#receipt")).to_contain_text("(respaldo)", timeout=20_000)
    finally:
        site.stop()
