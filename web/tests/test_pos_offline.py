"""The POS when the network fails, in a real Chromium against a real server: the cashier sees at once that the
register is offline (no tap that silently does nothing) and when the connection is back; the service worker serves
the offline sale screen, sales wait in the device and sync once, without loss or duplicates."""

from __future__ import annotations

import importlib.util
import re
import uuid
from pathlib import Path

import msgspec
import pytest
from conftest import ProvidersPlugin
from livesite import LiveSite
from playwright.sync_api import expect, sync_playwright
from posbrowser import Cashier, launch, login_cashier, new_tab, open_register, run, wait_for
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.audit import service as audit
from caja_core.catalog import service as catalog
from caja_core.db import Database, migrate
from caja_core.offline import service as offline
from caja_core.permissions import Action
from caja_core.permissions import service as permissions
from caja_core.registers import service as registers
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN, make_registry
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


def test_without_a_service_worker_the_screen_still_says_within_one_poll_that_the_server_is_gone(browser, site):
    """A browser that cannot keep the offline screen (no service worker) still tells the cashier at once."""
    context = browser.new_context(viewport={"width": 1024, "height": 768}, base_url=site.url, service_workers="block")
    page = context.new_page()
    page.set_default_timeout(20_000)
    login_cashier(page)
    open_register(page, site.setup.register_id)
    c = Cashier(page)
    page.context.set_offline(True)
    banner = page.locator("#connection-banner")
    expect(banner).to_contain_text("SIN CONEXIÓN", timeout=5_000)
    page.context.set_offline(False)
    expect(banner).to_contain_text("Conexión restablecida", timeout=5_000)
    c.product("Cerveza")
    expect(page.locator("#cart-total")).to_have_text("$3.500")


async def _with_db(url: str, work):
    db = Database(url)
    try:
        async with db.session() as s:
            return await work(s)
    finally:
        await db.dispose()


def core(site: LiveSite, work):
    return run(_with_db(site.database_url, work))


def paid_sales(site: LiveSite) -> list[sales.SaleOut]:
    async def work(s):
        return [x for x in await sales.list_sales(s, site.setup.venue_id) if x.status == "paid"]

    return core(site, work)


def current_session(site: LiveSite) -> sessions.SessionOut:
    async def work(s):
        return await sessions.current_session(s, site.setup.venue_id, site.setup.register_id)

    return core(site, work)


def ready_for_offline(page) -> None:
    """The service worker has kept the offline screen and the register's data."""
    page.wait_for_selector("body[data-offline-ready]", state="attached", timeout=20_000)


def go_offline(page) -> None:
    page.context.set_offline(True)


def go_online(page) -> None:
    page.context.set_offline(False)


def sell_offline_cash(page, product: str, received: str | None = None) -> None:
    page.click(f"#keys [data-product='{product}']")
    page.keyboard.press("F4")
    if received is None:
        page.click("#offline-cash-exact")
    else:
        page.fill("#offline-cash", received)
        page.keyboard.press("Enter")
    expect(page.locator("#outcome")).to_contain_text("PAGADO")


def sell_offline_phone(page, product: str, code: str = "K7Q2X9") -> None:
    page.click(f"#keys [data-product='{product}']")
    page.click("#checkout")
    expect(page.locator("#offline-card")).to_be_disabled()
    page.click("#offline-backup summary")
    page.fill("input[name=authorization_code]", code)
    page.fill("input[name=last4]", "4242")
    page.fill("input[name=brand]", "Visa")
    page.click("#offline-pay-backup")
    expect(page.locator("#outcome")).to_contain_text("celular de respaldo")


def test_offline_five_cash_and_one_phone_sale_survive_a_reload_and_sync_once(browser, site):
    c = cashier_at(browser, site)
    page = c.page
    ready_for_offline(page)
    go_offline(page)
    expect(page).to_have_url(re.compile(r"/caja/sin-conexion"), timeout=10_000)
    banner = page.locator("#offline-banner")
    expect(banner).to_contain_text("SIN CONEXIÓN — 0 ventas por sincronizar")
    for n in range(5):
        sell_offline_cash(page, "Cerveza", received="5000" if n == 0 else None)
    expect(page.locator("#offline-change")).to_have_count(0)  # the last one was exact
    sell_offline_phone(page, "Piscola")
    expect(banner).to_contain_text("SIN CONEXIÓN — 6 ventas por sincronizar")
    page.reload()  # still offline: the service worker serves the offline screen and the queue is still there
    expect(banner).to_contain_text("SIN CONEXIÓN — 6 ventas por sincronizar")
    page.keyboard.press("1")  # the same keys as the sale screen: 1 is the first product (Agua)
    expect(page.locator("#cart-total")).to_have_text("$2.000")
    page.keyboard.press("F8")
    assert paid_sales(site) == []
    go_online(page)
    expect(banner).to_contain_text("Conexión restablecida", timeout=15_000)
    expect(banner).to_contain_text("6 ventas sincronizadas", timeout=15_000)
    paid = paid_sales(site)
    assert len(paid) == 6
    assert sorted(x.total for x in paid) == [3500] * 5 + [6000]

    def offline_incidents():
        async def work(s):
            found = await audit.list_incidents(s, site.setup.venue_id, session_id=session.id)
            return [i.description for i in found if i.kind == "offline"]

        return core(site, work)

    session = current_session(site)
    wait_for(lambda: offline_incidents() != [], what="el periodo sin conexión como incidencia")
    assert "6 ventas" in offline_incidents()[0]
    assert session.cash_sales_total == 17500 and session.card_sales_total == 6000 and session.ticket_count == 6
    page.click("#back-online")
    expect(page).to_have_url(re.compile(r"/caja/venta"))
    page.reload()
    assert len(paid_sales(site)) == 6  # nothing is sent twice


def sell_offline(c: Cashier, count: int, product: str = "Cerveza") -> None:
    for _ in range(count):
        sell_offline_cash(c.page, product)


def offline_cashier(browser, site) -> Cashier:
    """A cashier at the register whose device has lost the server and shows the offline sale screen."""
    c = cashier_at(browser, site)
    ready_for_offline(c.page)
    go_offline(c.page)
    expect(c.page).to_have_url(re.compile(r"/caja/sin-conexion"), timeout=10_000)
    return c


def test_a_sync_interrupted_halfway_and_retried_makes_no_duplicates(browser, site):
    c = offline_cashier(browser, site)
    page = c.page
    sell_offline(c, 5)
    page.evaluate("window.cajaQueue.batch = 2")
    batches = []

    def lose_the_second_answer(route):
        batches.append(route.request.post_data_json)
        if len(batches) == 2:  # the server receives the batch; its answer never reaches the device
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/caja/sin-conexion/sincronizar", lose_the_second_answer)
    go_online(page)
    expect(page.locator("#offline-banner")).to_contain_text("Todas las ventas", timeout=20_000)
    assert len(batches) >= 4, batches  # 2 + 2 (answer lost) + the retry of those 2 + 1
    resent = {s["key"] for s in batches[1]["sales"]} & {s["key"] for b in batches[2:] for s in b["sales"]}
    assert len(resent) == 2  # the two sales of the lost answer were sent again
    paid = paid_sales(site)
    assert len(paid) == 5 and current_session(site).cash_sales_total == 5 * 3500


def add_modifiers(site: LiveSite) -> None:
    """ "Doble" (+$2.000) on the Piscola and "Sin hielo" (sin costo) on the Agua."""

    async def work(s):
        for name, price, product in (("Doble", 2000, "Piscola"), ("Sin hielo", 0, "Agua")):
            await catalog.create_modifier(
                s, venue_id=site.setup.venue_id, name=name, price_delta=price, product_id=site.setup.products[product]
            )

    core(site, work)


def test_offline_a_product_with_modifiers_opens_its_chooser_and_sells_at_the_online_price(browser, site):
    """Found: offline a Piscola sold with no chooser at $6.000, whatever the customer asked for. The offline
    screen offers the modifiers the device was given, as the sale screen does (keys 1–9, Enter, Escape), prices
    the line with them, and the server records them when the sale syncs; a product whose modifiers the device
    does not know is refused there, in words, instead of sold without them."""
    add_modifiers(site)
    c = offline_cashier(browser, site)
    page = c.page
    cart_total = page.locator("#cart-total")
    page.click("#keys [data-product='Piscola']")
    chooser = page.locator("#modifier-chooser")
    expect(chooser.locator("label[data-modifier='Doble']")).to_contain_text("+$2.000")
    expect(cart_total).to_have_count(0)  # nothing in the cart until the choice is made
    page.keyboard.press("1")
    expect(chooser.locator("input[name=modifier_id]").first).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.locator("#cart .cart-lines")).to_contain_text("Doble")
    expect(cart_total).to_have_text("$8.000")
    page.click("#keys [data-product='Piscola']")  # tal cual: nothing ticked
    page.click("#modifier-add")
    expect(cart_total).to_have_text("$14.000")
    page.click("#keys [data-product='Agua']")
    expect(chooser.locator("label[data-modifier='Sin hielo']")).to_contain_text("sin costo")
    page.keyboard.press("Escape")  # back to the order, nothing added
    expect(cart_total).to_have_text("$14.000")
    page.click("#keys [data-product='Cerveza']")  # no modifiers: still one tap
    expect(cart_total).to_have_text("$17.500")
    expect(page.locator("#cart .cart-lines li")).to_have_count(3)
    page.keyboard.press("F4")
    expect(page.locator("#pay-items")).to_contain_text("Doble")
    page.click("#offline-cash-exact")
    expect(page.locator("#outcome")).to_contain_text("$17.500")

    # A device that kept the register's data without the Piscola's modifiers cannot sell it right: refused.
    page.evaluate(
        """async () => {
          const cache = await caches.open("caja-offline-v1");
          const kept = await (await cache.match("/caja/sin-conexion/datos")).json();
          kept.products.forEach((p) => { if (p.name === "Piscola") delete p.modifiers; });
          await cache.put("/caja/sin-conexion/datos", new Response(JSON.stringify(kept),
            { headers: { "Content-Type": "application/json" } }));
        }"""
    )
    page.reload()
    expect(page.locator("#offline-banner")).to_contain_text("1 venta por sincronizar")
    page.click("#keys [data-product='Piscola']")
    expect(page.locator("#offline-error")).to_contain_text("Piscola no se puede vender sin conexión")
    expect(page.locator("#cart .cart-lines")).not_to_contain_text("Piscola")
    expect(chooser).to_have_count(0)

    go_online(page)
    expect(page.locator("#offline-banner")).to_contain_text("1 venta sincronizada", timeout=15_000)
    [paid] = paid_sales(site)
    assert paid.total == 17500

    async def lines(s):
        return (await sales.get_sale(s, site.setup.venue_id, paid.id)).items

    sold = [(x.name, x.unit_price, [(m.name, m.price) for m in x.modifiers]) for x in core(site, lines)]
    assert sold == [("Piscola", 8000, [("Doble", 2000)]), ("Piscola", 6000, []), ("Cerveza", 3500, [])]


def test_a_tampered_price_in_the_queue_is_rejected_and_reported(browser, site):
    c = offline_cashier(browser, site)
    page = c.page
    sell_offline(c, 1, "Agua")
    sell_offline(c, 1, "Cerveza")
    page.evaluate(
        """() => new Promise((resolve, reject) => {
          const open = indexedDB.open("caja-offline");
          open.onsuccess = () => {
            const tx = open.result.transaction("queue", "readwrite");
            const store = tx.objectStore("queue");
            store.getAll().onsuccess = (ev) => {
              const sale = ev.target.result.find(s => s.lines[0].unit_price === 3500);
              sale.lines[0].unit_price = 100; sale.total = 100;
              store.put(sale);
            };
            tx.oncomplete = () => { open.result.close(); resolve(); };
            tx.onerror = () => reject(tx.error);
          };
        })"""
    )
    go_online(page)
    rejected = page.locator("#offline-rejected")
    expect(rejected).to_contain_text("Ventas rechazadas al sincronizar", timeout=15_000)
    expect(rejected).to_contain_text("el precio de Cerveza en el equipo ($100) no es el del catálogo")
    expect(page.locator("#offline-banner")).to_contain_text("Todas las ventas")
    assert [x.total for x in paid_sales(site)] == [2000]  # the honest sale counts, the tampered one does not

    def kept_for_a_supervisor():
        async def work(s):
            return [i for i in await audit.list_incidents(s, site.setup.venue_id) if i.kind == "offline_sale_rejected"]

        return core(site, work)

    [incident] = kept_for_a_supervisor()
    assert "precio de Cerveza" in incident.description and not incident.resolved
    page.click("#back-online")  # back on the sale screen the rejection stays in sight until it is resolved
    expect(page.locator("#connection-banner")).to_contain_text("1 venta sin conexión rechazada", timeout=10_000)


def test_two_devices_on_one_register_offline_at_once_both_sync(browser, site):
    a = offline_cashier(browser, site)
    b_page = new_tab(browser, site.url)  # another tablet: its own storage, its own device id
    login_cashier(b_page)
    open_register(b_page, site.setup.register_id)
    b = Cashier(b_page)
    ready_for_offline(b_page)
    go_offline(b_page)
    expect(b_page).to_have_url(re.compile(r"/caja/sin-conexion"), timeout=10_000)
    sell_offline(a, 3, "Cerveza")
    sell_offline(b, 2, "Agua")
    go_online(a.page)
    go_online(b_page)
    for c in (a, b):
        expect(c.page.locator("#offline-banner")).to_contain_text("Todas las ventas", timeout=15_000)
    paid = paid_sales(site)
    assert sorted(x.total for x in paid) == [2000, 2000, 3500, 3500, 3500]
    session = current_session(site)
    assert session.ticket_count == 5 and session.cash_sales_total == 2 * 2000 + 3 * 3500


# ---- the database unreachable while the server runs -----------------------------------------------------------------


def _netkit():
    """The TCP proxy of the operations tests (cuts PostgreSQL away from a running server and restores it)."""
    path = Path(__file__).resolve().parents[2] / "tests" / "ops" / "netkit.py"
    spec = importlib.util.spec_from_file_location("caja_ops_netkit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pg_site(pg_test_database):
    """A live site on a fresh PostgreSQL database reached through a proxy the test can cut."""
    name = f"caja_offline_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        engine = create_async_engine(pg_test_database.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    run(admin(f'CREATE DATABASE "{name}"'))
    direct = make_url(pg_test_database.admin_url).set(database=name, drivername="postgresql")
    migrate.upgrade(direct.render_as_string(hide_password=False))
    proxy = _netkit().TcpProxy((direct.host or "127.0.0.1", direct.port or 5432))
    url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    live = LiveSite(
        url, ProvidersPlugin(FakeProvider("fake", "GETNET de prueba"), manual_provider("fakebackup", "KLAP de prueba"))
    ).start()
    yield live, proxy
    live.stop()
    proxy.cut()
    run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_database_unreachable_while_the_server_runs_is_offline_for_the_pos(browser, pg_site):
    site, proxy = pg_site
    c = cashier_at(browser, site)
    page = c.page
    ready_for_offline(page)
    c.product("Cerveza")
    proxy.cut()
    expect(page).to_have_url(re.compile(r"/caja/sin-conexion"), timeout=10_000)  # within one poll or two
    banner = page.locator("#offline-banner")
    expect(banner).to_contain_text("SIN CONEXIÓN — 0 ventas por sincronizar")
    login = page.request.get("/login")
    assert login.status == 503 and "La base de datos no responde" in login.text()
    sell_offline(c, 2, "Piscola")
    sell_offline_phone(page, "Agua")
    expect(banner).to_contain_text("SIN CONEXIÓN — 3 ventas por sincronizar")
    proxy.restore()
    expect(banner).to_contain_text("3 ventas sincronizadas", timeout=30_000)
    paid = paid_sales(site)
    assert sorted((x.total, x.payment_method) for x in paid) == [(2000, "card"), (6000, "cash"), (6000, "cash")]
    session = current_session(site)
    assert session.cash_sales_total == 12000 and session.backup_count == 1
    page.click("#back-online")
    expect(page.locator("#keys")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/caja/venta"))


# ---- the rule in force when the device went offline ---------------------------------------------------------------


def set_offline_methods(site: LiveSite, methods: list[str]) -> None:
    """The admin edits the register's fallback policy: what may be charged without the server."""

    async def work(s):
        register = await registers.get_register(s, site.setup.venue_id, site.setup.register_id)
        data = msgspec.convert(
            {
                **msgspec.to_builtins(register),
                "policy": msgspec.to_builtins(msgspec.structs.replace(register.policy, offline_methods=methods)),
            },
            registers.RegisterInput,
            strict=False,
        )
        await registers.update_register(
            s,
            venue_id=site.setup.venue_id,
            register_id=site.setup.register_id,
            data=data,
            registry=make_registry(),
            actor_id=site.setup.admin_id,
        )

    core(site, work)


def kept_methods(page) -> list[str]:
    """The methods of the offline rule the device keeps (what its offline screen would offer)."""
    return page.evaluate(
        """() => caches.open("caja-offline-v1")
            .then(c => c.match("/caja/sin-conexion/datos"))
            .then(r => r ? r.json().then(d => d.rule.methods) : [])"""
    )


def test_the_rule_the_device_had_when_it_went_offline_decides_and_a_change_reaches_it_online(browser, site):
    c = offline_cashier(browser, site)
    page = c.page
    sell_offline_phone(page, "Piscola")  # the rule the device kept allows the backup phone
    set_offline_methods(site, ["cash"])  # the admin tightens the rule while the device is offline
    go_online(page)
    expect(page.locator("#offline-banner")).to_contain_text("1 venta sincronizada", timeout=15_000)
    expect(page.locator("#offline-rejected")).to_be_hidden()
    [paid] = paid_sales(site)
    assert (paid.total, paid.paid_via) == (6000, "backup")  # honest under the rule it had: not rejected
    page.click("#back-online")
    expect(page.locator("#keys")).to_be_visible()
    ready_for_offline(page)
    assert kept_methods(page) == ["cash"]  # the sale screen keeps the rule in force now
    set_offline_methods(site, ["cash", "backup"])  # changed while the sale screen stays open
    wait_for(lambda: kept_methods(page) == ["cash", "backup"], what="la regla nueva guardada en el equipo")
    go_offline(page)
    expect(page).to_have_url(re.compile(r"/caja/sin-conexion"), timeout=10_000)
    page.click("#keys [data-product='Agua']")
    page.click("#checkout")
    expect(page.locator("#offline-backup summary")).to_be_visible()


def test_a_register_whose_offline_rule_takes_no_cash_offers_no_cash_offline(browser, site):
    """A rule without cash (a self-service register's): the offline screen never takes a payment the server would
    reject at the sync; it offers the backup phone, and what it sells is received."""
    set_offline_methods(site, ["backup"])
    c = offline_cashier(browser, site)
    page = c.page
    banner = page.locator("#offline-banner")
    expect(banner).to_contain_text("solo con el celular de respaldo")
    expect(banner).not_to_contain_text("en efectivo")
    page.click("#keys [data-product='Cerveza']")
    page.keyboard.press("F4")
    expect(page.locator("#offline-no-cash")).to_contain_text("no permite efectivo")
    expect(page.locator("#offline-cash-form")).to_have_count(0)
    expect(page.locator("#offline-cash-exact")).to_have_count(0)
    page.keyboard.press("Enter")
    expect(banner).to_contain_text("0 ventas por sincronizar")
    page.keyboard.press("Escape")
    page.keyboard.press("F8")
    sell_offline_phone(page, "Piscola")
    expect(banner).to_contain_text("1 venta por sincronizar")
    go_online(page)
    expect(banner).to_contain_text("1 venta sincronizada", timeout=15_000)
    expect(page.locator("#offline-rejected")).to_be_hidden()
    [paid] = paid_sales(site)
    assert (paid.total, paid.paid_via) == (6000, "backup")


# ---- a device that never returns before the close --------------------------------------------------------------------


def test_a_device_back_after_its_register_closed_without_its_sales_leaves_the_session_unchanged(browser, site):
    c = offline_cashier(browser, site)
    page = c.page
    sell_offline(c, 2, "Cerveza")
    device = page.evaluate("localStorage.getItem('caja-device')")
    session = current_session(site)

    async def close_without_the_device(s):
        # its last report said 2 sales; the supervisor authorizes closing without them
        await offline.report_queue(
            s,
            venue_id=site.setup.venue_id,
            register_id=site.setup.register_id,
            device_id=device,
            unsynced=2,
            user_id=site.setup.cashier_id,
        )

    core(site, close_without_the_device)

    async def authorize_and_close():
        db = Database(site.database_url)
        try:
            grant = await permissions.authorize(
                db,
                venue_id=site.setup.venue_id,
                action=Action.CLOSE_WITHOUT_OFFLINE,
                actor_id=site.setup.cashier_id,
                code=SUPERVISOR_PIN,
                session_id=session.id,
            )
            async with db.session() as s:
                return await sessions.close_session(
                    s,
                    venue_id=site.setup.venue_id,
                    session_id=session.id,
                    user_id=site.setup.cashier_id,
                    counted={"10000": 2},  # the opening's $20.000: nothing sold online
                    without_offline_reason="La tablet no vuelve a la red",
                    authorization_id=grant,
                )
        finally:
            await db.dispose()

    assert run(authorize_and_close()).status == "closed"
    go_online(page)  # the tablet comes back after all
    kept = page.locator("#offline-rejected")
    expect(kept).to_contain_text("Recibida después del cierre", timeout=15_000)
    expect(kept.locator("li")).to_have_count(2)
    # Received, not refused: the tablet says so instead of listing them as rejected.
    expect(kept.locator("h2")).to_have_text(["Ventas recibidas después del cierre"])
    assert paid_sales(site) == []  # the closed session does not change

    def late():
        async def work(s):
            return await offline.list_offline_sales(s, site.setup.venue_id, status="late")

        return core(site, work)

    assert [(x.claimed_total, x.device_id) for x in late()] == [(3500, device), (3500, device)]
