"""P1: cash sales per second through the POS's own HTTP endpoints, as a cashier rings them (tap a product,
«Cobrar», «Efectivo exacto»: three requests, each through the whole app — session cookie, role guard, CSRF,
cart, services, templates — and each one unit of work: «Cobrar» creates the sale and reads its pay screen in
one transaction, «Efectivo» pays it and reads its receipt in one), against a minimal Litestar handler doing one
INSERT + COMMIT on the same database through the same client, in the same run. Goal: ≥ 50 %.

    python -m bench.p1_cash_sale --db both --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from pathlib import Path

from litestar import Litestar, post
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text

from caja_core.db.engine import Database
from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_core.testing.factories import PIN, make_setup
from caja_web.app import create_app

from .common import TempDatabase, rate, run, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "web" / "tests"))
from webkit import cart_version


def baseline_app(url: str) -> Litestar:
    """One handler, one INSERT + COMMIT through caja's ``Database`` (its own, on the app's event loop)."""
    databases: list[Database] = []

    async def start() -> None:
        databases.append(Database(url))

    async def stop() -> None:
        await databases[0].dispose()

    @post("/insert", status_code=200)
    async def insert() -> dict[str, bool]:
        async with databases[0].session() as s:
            await s.execute(text("INSERT INTO bench_rows (payload) VALUES ('row')"))
        return {"ok": True}

    return Litestar(route_handlers=[insert], on_startup=[start], on_shutdown=[stop])


async def measure(kind: str, seconds: float) -> dict[str, float]:
    logging.disable(logging.INFO)  # the access log of every request would be measured too
    async with TempDatabase(kind) as db:
        st = await make_setup(db)
        async with db.engine.begin() as conn:
            pk = "INTEGER PRIMARY KEY" if kind == "sqlite" else "SERIAL PRIMARY KEY"
            await conn.execute(text(f"CREATE TABLE bench_rows (id {pk}, payload VARCHAR(80))"))
        settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": db.url})
        # Each app opens its own database pool on its own event loop (the test client runs the app in a thread).
        app = create_app(settings, pm=make_plugin_manager(load_entrypoints=False))
        async with AsyncTestClient(app=app) as pos, AsyncTestClient(app=baseline_app(db.url)) as bare:
            deadline = time.monotonic() + 30
            while (await pos.get("/health/ready")).status_code != 200:  # the app reaches its database first
                assert time.monotonic() < deadline, "the app never reached its database"
                await asyncio.sleep(0.05)
            await pos.get("/login")
            csrf = {"x-csrftoken": pos.cookies.get("caja_csrf") or ""}
            r = await pos.post(
                "/login/pin", data={"venue_id": st.venue_id, "user_id": st.cashier_id, "pin": PIN}, headers=csrf
            )
            assert r.status_code in (200, 303), r.text
            csrf = {"x-csrftoken": pos.cookies.get("caja_csrf") or ""}  # the login hands out its session's token
            r = await pos.post(
                "/caja/session/open",
                data={"register_id": st.register_id, "initial_cash": "0", "open_key": "bench"},
                headers=csrf,
            )
            assert r.status_code in (200, 303), r.text
            htmx = {**csrf, "HX-Request": "true"}
            product = st.products["Cerveza"]

            spent = {"tap": 0.0, "checkout": 0.0, "pay": 0.0}
            statements = {"tap": 0, "checkout": 0, "pay": 0, "now": 0}

            @event.listens_for(app.state.db.engine.sync_engine, "before_cursor_execute")
            def count(*_args) -> None:  # every statement the app runs (its guard, session store, handler, …)
                statements["now"] += 1

            def statements_of(step: str, since: int) -> int:
                statements[step] += statements["now"] - since
                return statements["now"]

            async def cash_sale(i: int) -> None:
                t0, n = time.perf_counter(), statements["now"]
                r = await pos.post("/caja/venta/item", data={"product_id": product}, headers=htmx)
                t1, n = time.perf_counter(), statements_of("tap", n)
                r = await pos.post("/caja/venta/cobrar", data={"v": cart_version(r.text)}, headers=htmx)
                t2, n = time.perf_counter(), statements_of("checkout", n)
                sale_id = re.search(r"/caja/venta/(\d+)/efectivo", r.text)
                assert sale_id, r.text[:500]
                r = await pos.post(f"/caja/venta/{sale_id.group(1)}/efectivo", data={"cash_received": ""}, headers=htmx)
                assert "PAGADO" in r.text, r.text[:500]
                t3, n = time.perf_counter(), statements_of("pay", n)
                spent["tap"] += t1 - t0
                spent["checkout"] += t2 - t1
                spent["pay"] += t3 - t2
                spent["sales"] = spent.get("sales", 0) + 1

            async def insert_one(i: int) -> None:
                r = await bare.post("/insert")
                assert r.status_code == 200, r.text[:300]

            await rate(insert_one, 0.3)  # warm-up
            await rate(cash_sale, 0.5)
            out = {"insert": await rate(insert_one, seconds), "sale": await rate(cash_sale, seconds)}
            out["insert_again"] = await rate(insert_one, seconds)  # baseline drift check
            # The floor: one authenticated HTMX request to the POS that does no service work (the cart partial,
            # with a product in the cart: the web session's read and the role guard's read, the CSRF cookie, the
            # template); three requests a sale cannot cost less than three of these.
            r = await pos.post("/caja/venta/item", data={"product_id": product}, headers=htmx)
            assert r.status_code == 200, r.text[:300]
            floor = {"n": 0, "spent": 0.0}

            async def cart_partial(i: int) -> None:
                t0, n = time.perf_counter(), statements["now"]
                r = await pos.get("/caja/venta", headers=htmx)
                assert "Cerveza" in r.text, r.text[:300]
                floor["spent"] += time.perf_counter() - t0
                floor["n"] += 1
                statements["floor"] = statements.get("floor", 0) + statements["now"] - n

            out["floor"] = await rate(cart_partial, min(seconds, 2.0))
            out["sql_floor"] = statements["floor"] / floor["n"]
            out["ms_floor"] = 1000 * floor["spent"] / floor["n"]
            n = spent.pop("sales")
            out |= {f"ms_{k}": 1000 * v / n for k, v in spent.items()}
            out |= {f"sql_{k}": statements[k] / n for k in spent}
        return out


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    rows = []
    for kind in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
        r = run(measure(kind, args.seconds))
        base = (r["insert"] + r["insert_again"]) / 2
        rows.append(
            (
                f"P1 POS cash sale over HTTP/s ({kind})",
                f"{r['sale']:.1f}/s (3 requests each)",
                f"{base:.0f}/s INSERT+COMMIT handler",
                f"{r['sale'] / base:.0%} (goal ≥ 50%)",
            )
        )
        rows.append(
            (
                f"  per request ({kind})",
                f"tap {r['ms_tap']:.0f} ms, checkout {r['ms_checkout']:.0f} ms, pay {r['ms_pay']:.0f} ms"
                f" (SQL statements: {r['sql_tap']:.0f}, {r['sql_checkout']:.0f}, {r['sql_pay']:.0f})",
                f"{1000 / base:.0f} ms",
                "(context)",
            )
        )
        rows.append(
            (
                f"  floor: one POS partial, no service work ({kind})",
                f"{r['ms_floor']:.1f} ms (SQL statements: {r['sql_floor']:.0f}); three a sale: at best"
                f" {r['floor'] / 3:.1f} sales/s",
                f"{1000 / base:.1f} ms",
                f"(context) {r['floor'] / 3 / base:.0%} at best",
            )
        )
    return rows


if __name__ == "__main__":
    print(table(main()))
