"""P1: durable cash sales per second (sale + items + audit + running totals, committed) against raw
single-row INSERT + COMMIT on the same database, in the same run. Goal: ≥ 50 %.

Two baselines are printed: the same driver stack (async SQLAlchemy, one INSERT + COMMIT per
transaction) — the goal's ratio — and the bare DB-API driver, for context."""

from __future__ import annotations

import argparse
import sqlite3
import uuid

from sqlalchemy import text

from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup

from .common import TempDatabase, rate, run, table


async def measure(kind: str, seconds: float) -> dict[str, float]:
    async with TempDatabase(kind) as db:
        st = await make_setup(db)
        async with db.session() as s:
            sess = await sessions.open_session(
                s,
                venue_id=st.venue_id,
                register_id=st.register_id,
                user_id=st.cashier_id,
                initial_cash=0,
                open_key="bench",
            )
        async with db.engine.begin() as conn:
            pk = "INTEGER PRIMARY KEY" if kind == "sqlite" else "SERIAL PRIMARY KEY"
            await conn.execute(text(f"CREATE TABLE bench_rows (id {pk}, payload VARCHAR(80))"))
        items = [
            sales.ItemInput(product_id=st.products["Cerveza"], quantity=2),
            sales.ItemInput(product_id=st.products["Agua"], quantity=1),
        ]

        async def insert_one(i: int) -> None:
            async with db.session() as s:
                await s.execute(text("INSERT INTO bench_rows (payload) VALUES (:p)"), {"p": f"row-{i}"})

        async def cash_sale(i: int) -> None:
            await sales.sell_cash(
                db,
                venue_id=st.venue_id,
                session_id=sess.id,
                cashier_id=st.cashier_id,
                items=items,
                idempotency_key=uuid.uuid4().hex,
            )

        await rate(insert_one, 0.3)  # warm-up
        await rate(cash_sale, 0.3)
        out = {"insert": await rate(insert_one, seconds), "sale": await rate(cash_sale, seconds)}
        out["insert_again"] = await rate(insert_one, seconds)  # baseline drift check
        if kind == "sqlite":
            path = db.url.split("///", 1)[1]
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            import time

            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO bench_rows (payload) VALUES (?)", (f"raw-{n}",))
                conn.execute("COMMIT")
                n += 1
            out["raw_driver"] = n / (time.perf_counter() - start)
            conn.close()
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
                f"P1 cash sale/s ({kind})",
                f"{r['sale']:.0f}/s",
                f"{base:.0f}/s INSERT+COMMIT",
                f"{r['sale'] / base:.0%} (goal ≥ 50%)",
            )
        )
        if "raw_driver" in r:
            rows.append(
                (
                    f"P1 vs bare sqlite3 ({kind})",
                    f"{r['sale']:.0f}/s",
                    f"{r['raw_driver']:.0f}/s raw",
                    f"{r['sale'] / r['raw_driver']:.1%} (context)",
                )
            )
    return rows


if __name__ == "__main__":
    print(table(main()))
