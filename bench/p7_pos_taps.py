"""P7: taps and wall time per sale at the POS, in a real Chromium (1024×768) against a real server.

    python -m bench.p7_pos_taps            # 5 rounds of each kind of sale
    python -m bench.p7_pos_taps --rounds 10

Kinds of sale, each one item, as a cashier rings it: exact cash, cash with change (a $10.000 bill for
$6.000), card on the GETNET simulator over TCP (approved), card declined by the terminal and then paid in
cash, and a split payment ($2.000 of $6.000 in cash, the rest by card on the simulator). A tap is a click
or a key (the same counter as the browser tests; a typed amount counts one tap per digit); the wall time
runs from the first tap to the outcome on screen (PAGADO / APROBADO). The baseline, measured in the same run, is one product tap
until the cart shows it (one HTMX round trip): a sale's time is reported as a multiple of it. Goal: at most
3 taps for an exact-cash single-item sale.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

WEB_TESTS = Path(__file__).resolve().parent.parent / "web" / "tests"
sys.path.insert(0, str(WEB_TESTS))

from livesite import LiveSite  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402
from posbrowser import Cashier, launch, login_cashier, new_tab, open_register, run  # noqa: E402

from caja_core import hookimpl  # noqa: E402
from caja_core.db import Database, migrate  # noqa: E402
from caja_core.plugins import make_plugin_manager  # noqa: E402
from caja_core.providers import ProviderRegistry  # noqa: E402
from caja_core.registers import service as registers  # noqa: E402
from caja_core.testing.fake import FakeProvider, manual_provider  # noqa: E402

GOAL_EXACT_CASH_TAPS = 3


class Providers:
    def __init__(self, *providers) -> None:
        self.providers = providers

    @hookimpl
    def register_providers(self, add_provider) -> None:
        for provider in self.providers:
            add_provider(provider)


def plugins() -> tuple:
    return (Providers(FakeProvider("fake"), manual_provider("fakebackup")),)


async def on_getnet_simulator(site: LiveSite) -> None:
    """The register charges cards on the GETNET simulator (TCP), with the manual backup."""
    host, port = site.sim_address
    registry = ProviderRegistry.from_plugin_manager(make_plugin_manager(*plugins()))
    db = Database(site.database_url)
    try:
        async with db.session() as s:
            current = await registers.get_register(s, site.setup.venue_id, site.setup.register_id)
            await registers.update_register(
                s,
                venue_id=site.setup.venue_id,
                register_id=current.id,
                data=registers.RegisterInput(
                    code=current.code,
                    name=current.name,
                    register_type=current.register_type,
                    primary_provider="getnet",
                    backup_provider="fakebackup",
                    provider_settings={"getnet": {"host": host, "port": port, "receipt_timeout_s": 1.0}},
                    policy=current.policy,
                ),
                registry=registry,
                actor_id=site.setup.admin_id,
            )
    finally:
        await db.dispose()


def sale(c: Cashier, kind: str, site: LiveSite) -> tuple[int, float]:
    """One sale of ``kind``: (taps, seconds from the first tap to the outcome on screen)."""
    page = c.page
    c.taps = 0
    start = time.perf_counter()
    if kind == "efectivo exacto":
        c.product("Cerveza")
        c.tap("#checkout")
        c.tap("#cash-exact")
        expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    elif kind == "efectivo con vuelto":
        c.product("Piscola")
        c.tap("#checkout")
        c.tap("[data-bill='10000']")
        expect(page.locator("#change-big")).to_contain_text("$4.000")
    elif kind == "tarjeta (GETNET)":
        c.product("Piscola")
        c.tap("#checkout")
        c.tap("#pay-card")
        expect(page.locator("#outcome .headline")).to_have_text("APROBADO", timeout=60_000)
    elif kind == "tarjeta rechazada → efectivo":
        site.add_fault(kind="decline", code=51)
        c.product("Cerveza")
        c.tap("#checkout")
        c.tap("#pay-card")
        expect(page.locator("#outcome .headline")).to_have_text("NO SE COBRÓ", timeout=60_000)
        c.tap("#cash-exact")
        expect(page.locator("#outcome .headline")).to_have_text("PAGADO")
    elif kind == "dividido: efectivo + tarjeta":
        c.product("Piscola")
        c.tap("#checkout")
        c.tap("#split summary")
        c.type("#split input[name=cash_part]", "2000")
        c.tap("#split-pay")
        expect(page.locator("#split-status")).to_be_visible()
        c.tap("#pay-card")
        expect(page.locator("#outcome .headline")).to_have_text("APROBADO", timeout=60_000)
    else:
        raise ValueError(kind)
    return c.taps, time.perf_counter() - start


def product_round_trip(c: Cashier) -> float:
    """The baseline: one product tap until the cart shows it (on a cart already shown)."""
    page = c.page
    if not page.locator("#cart-total").count():
        c.product("Agua")
        expect(page.locator("#cart-total")).to_be_visible()
    before = page.locator("#cart-total").inner_text()
    start = time.perf_counter()
    c.product("Agua")
    expect(page.locator("#cart-total")).not_to_have_text(before)
    return time.perf_counter() - start


KINDS = (
    "efectivo exacto",
    "efectivo con vuelto",
    "tarjeta (GETNET)",
    "tarjeta rechazada → efectivo",
    "dividido: efectivo + tarjeta",
)


def measure(rounds: int) -> list[tuple[str, str, str, str]]:
    folder = Path(tempfile.mkdtemp(prefix="caja-bench-taps-"))
    url = f"sqlite+aiosqlite:///{folder / 'taps.db'}"
    asyncio.run(migrate.upgrade_async(url))
    site = LiveSite(url, *plugins()).start()
    try:
        run(on_getnet_simulator(site))
        with sync_playwright() as p:
            browser = launch(p)
            page = new_tab(browser, site.url, (1024, 768))
            login_cashier(page)
            open_register(page, site.setup.register_id)
            c = Cashier(page)
            sale(c, "efectivo exacto", site)  # warm-up
            baseline = []
            for _ in range(rounds):
                baseline.append(product_round_trip(c))
                c.tap("#clear-cart")
                expect(page.locator("#cart-total")).to_have_text("$0")
            base = statistics.median(baseline)
            results = {kind: [sale(c, kind, site) for _ in range(rounds)] for kind in KINDS}
            browser.close()
    finally:
        site.stop()
    rows = [("P7 un toque de producto (línea base)", f"{base * 1000:.0f} ms", "—", "—")]
    for kind, runs in results.items():
        taps = max(t for t, _ in runs)
        wall = statistics.median(w for _, w in runs)
        goal = f" (meta ≤ {GOAL_EXACT_CASH_TAPS})" if kind == "efectivo exacto" else ""
        rows.append(
            (f"P7 {kind}", f"{taps} toques{goal}, {wall:.2f} s", f"{base * 1000:.0f} ms", f"×{wall / base:.1f}")
        )
    return rows


def main(argv: list[str]) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(prog="bench.p7_pos_taps")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    return measure(args.rounds)


if __name__ == "__main__":
    from bench.common import table

    print(table(main(sys.argv[1:])))
