"""P8: the owner's live dashboard partial (``GET /jornada/tablero``, HTMX, as the page polls it) with 200 000
sales in the open jornada, on PostgreSQL, through a real ``caja serve``. Baseline in the same run: the minimal
Litestar template handler of P2 under the same uvicorn. Goal: < 100 ms.

The night is P5's bulk load (25 registers, 60 % cash, 40 % card with their attempts, 0.2 % through the backup
with their fallback events) spread over seven hours, with one item per sale; the dashboard's quarter-hour and
product totals are then written from the sales by ``rollups.rebuild`` (the same rows each sale adds when it is
paid, tested to give the totals the sales kept one by one), and the page's figures are checked against SQL
sums over the sales before anything is timed."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import httpx
from sqlalchemy import text

from caja_core.dashboard import rollups
from caja_core.dashboard import service as dashboard
from caja_core.testing.factories import PASSWORD

from .common import run, table
from .load.stack import REDIS_URL, Instance, ScratchDatabase, free_port, instance_env, run_dir
from .p5_report import open_night
from .p6_cold_start import ROOT, _first_ok

NIGHT_S = 7 * 3600
UVICORN = [sys.executable, "-m", "uvicorn", "bench.load.baseline_app:app", "--host", "127.0.0.1"]

SPREAD = """
WITH n AS (SELECT max(id) AS top FROM sales)
UPDATE sales SET created_at = now() - make_interval(secs => (n.top - sales.id) * CAST(:step AS double precision)),
                 paid_at = now() - make_interval(secs => (n.top - sales.id) * CAST(:step AS double precision))
FROM n
"""
SPREAD_ATTEMPTS = """
UPDATE payment_attempts a SET created_at = s.created_at, sent_at = s.created_at,
       finished_at = s.created_at + make_interval(secs => 2 + (a.id % 7))
FROM sales s WHERE s.id = a.sale_id
"""
ITEMS = """
INSERT INTO sale_items (sale_id, product_id, name, quantity, unit_price, line_total, free_reason)
SELECT s.id, p.id, p.name, 1, s.total, s.total, ''
FROM sales s JOIN LATERAL (
  SELECT id, name FROM products WHERE venue_id = s.venue_id ORDER BY id OFFSET (s.id % 3) LIMIT 1
) p ON true
"""


async def load(db, sales: int):
    night = await open_night(db, "p8")
    st = night.st
    await night.grow(db.url.replace("postgresql+asyncpg://", "postgresql://"), sales)
    async with db.session() as s:
        await s.execute(text(SPREAD), {"step": NIGHT_S / sales})
        for sql in (SPREAD_ATTEMPTS, ITEMS):
            await s.execute(text(sql))
    async with db.session() as s:  # the totals each sale would have kept, by the product's own rebuild
        await rollups.rebuild(s, st.jornada_id)
    async with db.engine.connect() as conn:  # what autovacuum does on a live server after a bulk load
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("VACUUM ANALYZE"))
    return st, night


async def check(db, st) -> dashboard.JornadaFigures:
    """The dashboard's figures are the sums over the sales."""
    async with db.reader() as s:
        figures = await dashboard.current_figures(s, st.venue_id)
        row = (
            await s.execute(
                text("SELECT count(*), sum(total) FROM sales WHERE jornada_id = :j AND status = 'paid'"),
                {"j": st.jornada_id},
            )
        ).one()
    assert figures is not None
    if len(figures.quarters) < NIGHT_S // 900:
        raise AssertionError(f"the night spans {len(figures.quarters)} quarters, not {NIGHT_S // 900}")
    quarters = sum(q.amount for q in figures.quarters)
    products = sum(p.amount for p in figures.products)
    if (figures.tickets, figures.total) != (row[0], row[1]) or quarters != row[1] or products != row[1]:
        raise AssertionError(f"dashboard {figures.tickets}/{figures.total}/{quarters}/{products} ≠ sales {tuple(row)}")
    return figures


async def timed(client: httpx.AsyncClient, url: str, repeats: int, **kw) -> list[float]:
    out = []
    for n in range(repeats + 3):  # three warm-ups
        start = time.perf_counter()
        r = await client.get(url, **kw)
        elapsed = (time.perf_counter() - start) * 1000
        assert r.status_code == 200, r.text[:300]
        if n >= 3:
            out.append(elapsed)
    return out


async def measure(sales: int, repeats: int, db_prefix: str | None = None) -> dict[str, float]:
    logs = run_dir()
    scratch = ScratchDatabase(prefix=db_prefix)
    inst: Instance | None = None
    base: subprocess.Popen | None = None
    try:
        db = await scratch.create()
        st, night = await load(db, sales)
        figures = await check(db, st)
        service_ms = []
        for _ in range(repeats):
            start = time.perf_counter()
            async with db.statement_reader() as s:  # as the page reads them
                await dashboard.current_figures(s, st.venue_id)
            service_ms.append((time.perf_counter() - start) * 1000)

        inst = Instance("p7", free_port(), instance_env(scratch.plain_url, REDIS_URL, "p7", logs), logs)
        inst.start()
        await inst.wait_ready()
        port = free_port()
        base = subprocess.Popen(
            [*UVICORN, "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await _first_ok(f"http://127.0.0.1:{port}/live", base)
        async with httpx.AsyncClient(base_url=inst.url, timeout=30) as owner, httpx.AsyncClient(timeout=30) as plain:
            await owner.get("/login")
            r = await owner.post(
                "/login",
                data={"venue_id": st.venue_id, "username": "super", "password": PASSWORD},
                headers={"x-csrftoken": owner.cookies.get("caja_csrf") or ""},
            )
            assert r.status_code in (200, 303), r.text[:300]
            page = await owner.get("/jornada/tablero", headers={"HX-Request": "true"})
            assert 'id="tablero"' in page.text and "<html" not in page.text, page.text[:300]
            baseline = await timed(plain, f"http://127.0.0.1:{port}/partial/1", repeats)
            partial = await timed(owner, "/jornada/tablero", repeats, headers={"HX-Request": "true"})
            baseline += await timed(plain, f"http://127.0.0.1:{port}/partial/1", repeats)
        return {
            "partial": statistics.median(partial),
            "partial_p95": sorted(partial)[int(0.95 * (len(partial) - 1))],
            "baseline": statistics.median(baseline),
            "service": statistics.median(service_ms),
            "sales": night.sales,
            "attempts": night.attempts,
            "quarters": len(figures.quarters),
        }
    finally:
        if base is not None:
            base.terminate()
            base.wait(10)
        if inst is not None:
            inst.stop()
        await scratch.drop()


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sales", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--db-prefix", help="name of the scratch database, before its suffix (caja_load)")
    args = parser.parse_args(argv)
    r = run(measure(args.sales, args.repeats, args.db_prefix))
    n = f"{int(r['sales']):,}".replace(",", " ")
    return [
        (
            f"P8 dashboard partial, {n} sales in the jornada (postgres, HTTP)",
            f"{r['partial']:.0f} ms (p95 {r['partial_p95']:.0f})",
            f"{r['baseline']:.1f} ms minimal template",
            f"×{r['partial'] / r['baseline']:.0f} (goal < 100 ms)",
        ),
        (
            "P8 dashboard figures alone (service, no HTTP)",
            f"{r['service']:.0f} ms",
            f"{int(r['attempts'])} attempts, {int(r['quarters'])} quarters",
            "",
        ),
    ]


if __name__ == "__main__":
    print(table(main(sys.argv[1:])))
