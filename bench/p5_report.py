"""P5: the jornada report (Z) on PostgreSQL as the jornada grows from 10 000 to 1 000 000 sales.
Goal: < 1 s at 1 000 000 sales. The same run's 10 000-sale report is the baseline of the ratio.

The night is bulk-loaded with COPY (25 registers, one session each; 60 % cash, 39.8 % card on GETNET with
its approved attempt, 0.2 % through the KLAP backup with the failed GETNET attempt, the manual KLAP attempt
and the fallback event), and the sessions' running totals and per-provider totals are written exactly as
the sales service keeps them, so the report's figures are checked against SQL sums over the sales."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

import asyncpg
from sqlalchemy import text

from caja_core.clock import utcnow
from caja_core.registers import service as registers
from caja_core.reports.service import jornada_report
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_registry, make_setup

from .common import TempDatabase, run, table

REGISTERS = 25
PRICES = [2000, 2500, 3500, 4500, 6000, 7000, 8000, 15000]
SALE_COLUMNS = [
    "id",
    "venue_id",
    "session_id",
    "register_id",
    "jornada_id",
    "cashier_id",
    "idempotency_key",
    "total",
    "status",
    "payment_method",
    "provider_id",
    "paid_via",
    "no_revenue",
    "courtesy_reason",
    "cash_received",
    "change_given",
    "created_at",
    "paid_at",
    "cancel_reason",
]
ATTEMPT_COLUMNS = [
    "id",
    "venue_id",
    "sale_id",
    "session_id",
    "register_id",
    "provider_id",
    "device_key",
    "role",
    "amount",
    "ticket",
    "state",
    "active",
    "classification",
    "progress_message",
    "response_message",
    "reconcile_tries",
    "verification_note",
    "created_at",
    "finished_at",
    "authorization_code",
    "last4",
    "card_brand",
    "card_type",
]
EVENT_COLUMNS = [
    "id",
    "venue_id",
    "session_id",
    "sale_id",
    "attempt_id",
    "from_provider",
    "to_provider",
    "reason",
    "override",
    "created_at",
]
TOTAL_FIELDS = (
    "ticket_count",
    "sales_total",
    "cash_sales_count",
    "cash_sales_total",
    "card_sales_total",
    "primary_count",
    "backup_count",
)


class Night:
    """The jornada being loaded: its sessions and the running totals the sales service would keep."""

    def __init__(self, st, session_ids: list[tuple[int, int]]) -> None:
        self.st = st
        self.sessions = session_ids  # (session id, register id)
        self.totals = {sid: dict.fromkeys(TOTAL_FIELDS, 0) for sid, _ in session_ids}
        self.by_provider = {sid: {} for sid, _ in session_ids}  # provider → [count, amount]
        self.sales = 0
        self.attempts = 0
        self.events = 0
        self.rng = random.Random(5)

    def rows(self, n: int, start_id: int, attempt_id: int, event_id: int):
        sales, attempts, events = [], [], []
        now = utcnow()
        for i in range(n):
            sale_id = start_id + i
            sid, reg = self.sessions[sale_id % len(self.sessions)]
            total = self.rng.choice(PRICES) * self.rng.randint(1, 3)
            at = now - timedelta(seconds=(n - i) * 0.01)
            t = self.totals[sid]
            t["ticket_count"] += 1
            t["sales_total"] += total
            roll = sale_id % 1000
            if roll < 600:
                t["cash_sales_count"] += 1
                t["cash_sales_total"] += total
                sales.append(
                    (
                        sale_id,
                        self.st.venue_id,
                        sid,
                        reg,
                        self.st.jornada_id,
                        self.st.cashier_id,
                        f"p5-{sale_id}",
                        total,
                        "paid",
                        "cash",
                        "cash",
                        "cash",
                        False,
                        "",
                        total,
                        0,
                        at,
                        at,
                        "",
                    )
                )
                continue
            backup = roll >= 998
            provider = "klap" if backup else "getnet"
            t["card_sales_total"] += total
            t["backup_count" if backup else "primary_count"] += 1
            line = self.by_provider[sid].setdefault(provider, [0, 0])
            line[0] += 1
            line[1] += total
            sales.append(
                (
                    sale_id,
                    self.st.venue_id,
                    sid,
                    reg,
                    self.st.jornada_id,
                    self.st.cashier_id,
                    f"p5-{sale_id}",
                    total,
                    "paid",
                    "card",
                    provider,
                    "backup" if backup else "primary",
                    False,
                    "",
                    None,
                    None,
                    at,
                    at,
                    "",
                )
            )
            device = f"getnet:tcp:10.0.0.{reg % 250}:9100"
            if backup:
                attempts.append(
                    (
                        attempt_id,
                        self.st.venue_id,
                        sale_id,
                        sid,
                        reg,
                        "getnet",
                        device,
                        "primary",
                        total,
                        str(sale_id),
                        "failed_not_sent",
                        False,
                        "not_sent",
                        "",
                        "Terminal no disponible",
                        0,
                        "",
                        at,
                        at,
                        None,
                        None,
                        None,
                        None,
                    )
                )
                attempts.append(
                    (
                        attempt_id + 1,
                        self.st.venue_id,
                        sale_id,
                        sid,
                        reg,
                        "klap",
                        f"klap:manual:{reg}",
                        "backup",
                        total,
                        str(sale_id),
                        "approved_manual",
                        False,
                        "manual",
                        "",
                        "Aprobado en el celular de respaldo",
                        0,
                        "",
                        at,
                        at,
                        f"K{sale_id % 10**5:05d}",
                        "4242",
                        "Visa",
                        "debito",
                    )
                )
                events.append(
                    (
                        event_id,
                        self.st.venue_id,
                        sid,
                        sale_id,
                        attempt_id + 1,
                        "getnet",
                        "klap",
                        "El terminal no está disponible (no hubo cobro)",
                        False,
                        at,
                    )
                )
                attempt_id += 2
                event_id += 1
            else:
                attempts.append(
                    (
                        attempt_id,
                        self.st.venue_id,
                        sale_id,
                        sid,
                        reg,
                        "getnet",
                        device,
                        "primary",
                        total,
                        str(sale_id),
                        "approved",
                        False,
                        "approved",
                        "",
                        "Aprobado",
                        0,
                        "",
                        at,
                        at,
                        f"{sale_id % 10**6:06d}",
                        "4242",
                        "VI",
                        "DB",
                    )
                )
                attempt_id += 1
        return sales, attempts, events

    async def grow(self, dsn: str, n: int) -> None:
        """Add ``n`` sales (COPY), their attempts and fallback events, then the running totals and ANALYZE."""
        conn = await asyncpg.connect(dsn)
        try:
            base_sale = await conn.fetchval("SELECT coalesce(max(id), 0) FROM sales") + 1
            base_attempt = await conn.fetchval("SELECT coalesce(max(id), 0) FROM payment_attempts") + 1
            base_event = await conn.fetchval("SELECT coalesce(max(id), 0) FROM fallback_events") + 1
            chunk = 100_000
            for offset in range(0, n, chunk):
                size = min(chunk, n - offset)
                sales, attempts, events = self.rows(size, base_sale + offset, base_attempt, base_event)
                base_attempt += len(attempts)
                base_event += len(events)
                async with conn.transaction():
                    await conn.copy_records_to_table("sales", records=sales, columns=SALE_COLUMNS)
                    await conn.copy_records_to_table("payment_attempts", records=attempts, columns=ATTEMPT_COLUMNS)
                    if events:
                        await conn.copy_records_to_table("fallback_events", records=events, columns=EVENT_COLUMNS)
                self.sales += size
                self.attempts += len(attempts)
                self.events += len(events)
            async with conn.transaction():
                for sid, t in self.totals.items():
                    await conn.execute(
                        "UPDATE cash_sessions SET "
                        + ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(TOTAL_FIELDS))
                        + " WHERE id = $1",
                        sid,
                        *[t[name] for name in TOTAL_FIELDS],
                    )
                    await conn.execute("DELETE FROM session_totals WHERE session_id = $1", sid)
                    card = [0, 0]
                    for provider, (count, amount) in self.by_provider[sid].items():
                        await conn.execute(
                            "INSERT INTO session_totals (session_id, dimension, key, count, amount) "
                            "VALUES ($1, 'provider', $2, $3, $4)",
                            sid,
                            provider,
                            count,
                            amount,
                        )
                        card[0] += count
                        card[1] += amount
                    if card[0]:
                        await conn.execute(
                            "INSERT INTO session_totals (session_id, dimension, key, count, amount) "
                            "VALUES ($1, 'method', 'card', $2, $3)",
                            sid,
                            *card,
                        )
                for table_name in ("sales", "payment_attempts", "fallback_events"):
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table_name}', 'id'), "
                        f"(SELECT coalesce(max(id), 1) FROM {table_name}))"
                    )
            await conn.execute("ANALYZE")
        finally:
            await conn.close()


async def _check(db, night: Night, report) -> None:
    """The report's totals are the sums over the sales (the bulk load kept the running totals right)."""
    async with db.reader() as s:
        row = (
            await s.execute(
                text(
                    "SELECT count(*), sum(total), sum(total) FILTER (WHERE payment_method = 'cash') FROM sales "
                    "WHERE jornada_id = :j AND status = 'paid'"
                ),
                {"j": night.st.jornada_id},
            )
        ).one()
    t = report.totals
    if (t["ticket_count"], t["sales_total"], t["cash_sales_total"]) != (row[0], row[1], row[2]):
        raise AssertionError(f"report totals {t} differ from the sales {tuple(row)}")
    if len(report.fallback_events) != night.events:
        raise AssertionError(f"report lists {len(report.fallback_events)} fallbacks of {night.events}")


async def _time_report(db, night: Night, repeats: int) -> float:
    times = []
    report = None
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        async with db.reader() as s:
            report = await jornada_report(s, night.st.venue_id, night.st.jornada_id)
        times.append((time.perf_counter() - start) * 1000)
    await _check(db, night, report)
    return statistics.median(times[1:])


async def open_night(db, tag: str) -> Night:
    """A venue with ``REGISTERS`` cash registers, a session open on each: the night the sales are grown into."""
    st = await make_setup(db)
    ids = [st.register_id]
    async with db.session() as s:
        for n in range(2, REGISTERS + 1):
            reg = await registers.create_register(
                s,
                venue_id=st.venue_id,
                registry=make_registry(),
                actor_id=st.admin_id,
                data=registers.RegisterInput(
                    code=f"CAJA{n}",
                    name=f"Caja {n}",
                    primary_provider=None,
                    backup_provider=None,
                    payment_methods=["cash"],
                ),
            )
            ids.append(reg.id)
    opened = []
    for reg_id in ids:
        async with db.session() as s:
            sess = await sessions.open_session(
                s,
                venue_id=st.venue_id,
                register_id=reg_id,
                user_id=st.cashier_id,
                initial_cash=20000,
                open_key=f"{tag}-{reg_id}",
            )
            opened.append((sess.id, reg_id))
    return Night(st, opened)


async def measure(sizes: list[int], repeats: int) -> list[tuple[int, float, float, int, int]]:
    """(sales, report ms, load s, attempts, fallback events) at each size."""
    async with TempDatabase("postgres") as db:
        night = await open_night(db, "p5")
        dsn = db.url.replace("postgresql+asyncpg://", "postgresql://")
        out = []
        for size in sorted(sizes):
            start = time.perf_counter()
            await night.grow(dsn, size - night.sales)
            load_s = time.perf_counter() - start
            out.append((size, await _time_report(db, night, repeats), load_s, night.attempts, night.events))
        return out


def _n(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        default="10000,100000,300000,1000000",
        help="comma-separated jornada sizes in sales (ascending; the first is the baseline)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    results = run(measure(sizes, args.repeats))
    base_n, base_ms = results[0][0], results[0][1]
    rows = []
    for n, ms, *_ in results:
        goal = " (goal < 1 s)" if n == max(sizes) else ""
        rows.append(
            (
                f"P5 jornada report, {_n(n)} sales (postgres)",
                f"{ms:.0f} ms",
                f"{base_ms:.0f} ms ({_n(base_n)} sales)",
                f"×{ms / base_ms:.1f} for ×{n / base_n:.0f} sales{goal}",
            )
        )
    return rows


if __name__ == "__main__":
    print(table(main()))
