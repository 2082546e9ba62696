"""P3: closing a session with 100 000 sales vs 10 sales. Goal: ≤ 5 ms difference (close is O(1): the
running totals are kept in each sale's transaction, nothing scans the sales)."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

from sqlalchemy import insert, update

from caja_core.clock import utcnow
from caja_core.sales.models import Sale
from caja_core.sessions import service as sessions
from caja_core.sessions.models import CashSession
from caja_core.testing.factories import make_setup

from .common import TempDatabase, run, table


async def _session_with_sales(db, st, n: int, register_id: int) -> int:
    async with db.session() as s:
        sess = await sessions.open_session(
            s, venue_id=st.venue_id, register_id=register_id, user_id=st.cashier_id, initial_cash=0, open_key=f"p3-{n}"
        )
    now = utcnow()
    batch = []
    for i in range(n):
        batch.append(
            {
                "venue_id": st.venue_id,
                "session_id": sess.id,
                "register_id": register_id,
                "jornada_id": st.jornada_id,
                "cashier_id": st.cashier_id,
                "idempotency_key": f"p3-{n}-{i}",
                "total": 3500,
                "status": "paid",
                "payment_method": "cash",
                "provider_id": "cash",
                "paid_via": "cash",
                "no_revenue": False,
                "courtesy_reason": "",
                "cancel_reason": "",
                "created_at": now - timedelta(seconds=n - i),
                "paid_at": now,
            }
        )
        if len(batch) == 5000 or i == n - 1:
            async with db.session() as s:
                await s.execute(insert(Sale), batch)
            batch = []
    async with db.session() as s:
        await s.execute(
            update(CashSession)
            .where(CashSession.id == sess.id)
            .values(ticket_count=n, sales_total=3500 * n, cash_sales_count=n, cash_sales_total=3500 * n)
        )
    return sess.id


async def _time_close(db, st, session_id: int, n: int, repeats: int) -> float:
    """Median ms of a full close, each rolled back so the same session can be closed again."""
    times = []
    for _ in range(repeats):
        async with db.sessionmaker() as s:
            await s.begin()
            start = time.perf_counter()
            await sessions.close_session(
                s,
                venue_id=st.venue_id,
                session_id=session_id,
                user_id=st.cashier_id,
                counted={"20000": n * 3500 // 20000},
            )
            await s.flush()
            times.append((time.perf_counter() - start) * 1000)
            await s.rollback()
    return statistics.median(times)


async def measure(kind: str, big: int, repeats: int) -> tuple[float, float]:
    async with TempDatabase(kind) as db:
        st = await make_setup(db)
        from caja_core.registers import service as registers
        from caja_core.testing.factories import make_registry

        async with db.session() as s:
            other = await registers.create_register(
                s,
                venue_id=st.venue_id,
                registry=make_registry(),
                actor_id=st.admin_id,
                data=registers.RegisterInput(
                    code="CAJA2", name="Caja 2", primary_provider=None, backup_provider=None, payment_methods=["cash"]
                ),
            )
        small_id = await _session_with_sales(db, st, 10, st.register_id)
        big_id = await _session_with_sales(db, st, big, other.id)
        await _time_close(db, st, small_id, 10, 3)  # warm-up
        small = await _time_close(db, st, small_id, 10, repeats)
        large = await _time_close(db, st, big_id, big, repeats)
        return small, large


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sales", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    rows = []
    for kind in ["sqlite", "postgres"] if args.db == "both" else [args.db]:
        small, large = run(measure(kind, args.sales, args.repeats))
        rows.append(
            (
                f"P3 close, {args.sales} sales ({kind})",
                f"{large:.1f} ms",
                f"{small:.1f} ms (10 sales)",
                f"+{large - small:.1f} ms (goal ≤ 5 ms)",
            )
        )
    return rows


if __name__ == "__main__":
    print(table(main()))
