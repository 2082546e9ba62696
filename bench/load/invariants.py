"""What must hold after a night, checked from the database and from the terminals' own ledgers.

Each check returns (name, ok, detail). A failing check names the rows that break it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import httpx
from sqlalchemy import text

from caja_core.dashboard import service as dashboard
from caja_core.db import Database
from caja_core.money import format_clp
from caja_core.payments import lifecycle
from caja_core.permissions.service import get_controls
from caja_core.reports.service import jornada_report

from .cashier import Stats
from .stack import Terminal, Venue, control

#: In flight, in doubt, waiting for a manual confirmation, or a duplicate charge still to return.
UNRESOLVED = tuple(str(s) for s in lifecycle.UNRESOLVED)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


async def ledgers(terminals: list[Terminal]) -> dict[str, list[dict]]:
    """device key → the terminal's charges since its last Close (refunded ones excluded)."""
    out = {}
    async with httpx.AsyncClient() as client:
        for t in terminals:
            data = await control(client, t, "GET", "/ledger")
            out[t.device_key] = [e for e in data["ledger"] if not e["refunded"]]
    return out


async def rows(db: Database, sql: str, **params) -> list:
    async with db.reader() as s:
        return list((await s.execute(text(sql), params)).all())


async def check_all(db: Database, venue: Venue, terminals: list[Terminal], stats: Stats) -> list[Check]:
    checks: list[Check] = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

    # 1. No lost sale: every sale the cashiers saw (a 2xx page) is in the database, as they saw it.
    db_sales = {
        r.id: r
        for r in await rows(
            db,
            "SELECT id, total, status, payment_method, paid_via, provider_id FROM sales WHERE venue_id = :v",
            v=venue.venue_id,
        )
    }
    missing, differ = [], []
    for seen in stats.sales:
        row = db_sales.get(seen.sale_id)
        if row is None:
            missing.append(seen.sale_id)
            continue
        expected = {
            "cash": ("paid", "cash", "cash"),
            "card": ("paid", "card", "primary"),
            "backup": ("paid", "card", "backup"),
            "cancelled": ("cancelled", None, None),
        }.get(seen.outcome)
        if row.total != seen.total or (expected and (row.status, row.payment_method, row.paid_via) != expected):
            differ.append(
                f"#{seen.sale_id} seen {seen.outcome} {seen.total}, db {row.status} {row.payment_method} "
                f"{row.paid_via} {row.total}"
            )
    add(
        "no lost sale",
        not missing and not differ,
        f"{len(stats.sales)} sales seen on screen, all in the database with the status shown"
        if not missing and not differ
        else f"missing {missing[:10]}; different {differ[:5]}",
    )

    # 2. No double charge: terminal charges == approved GETNET attempts == card sales paid through GETNET.
    ledger = await ledgers(terminals)
    charged = Counter((key, e["ticket"], e["amount"]) for key, entries in ledger.items() for e in entries)
    approved_rows = await rows(
        db,
        "SELECT id, sale_id, device_key, ticket, amount, details FROM payment_attempts "
        "WHERE provider_id = 'getnet' AND state = 'approved'",
    )
    approved = Counter((r.device_key, r.ticket, r.amount) for r in approved_rows)
    paid_getnet = await rows(db, "SELECT id FROM sales WHERE status = 'paid' AND provider_id = 'getnet'")
    per_sale = Counter(r.sale_id for r in approved_rows)
    doubles = [sale for sale, n in per_sale.items() if n > 1]
    refund_offered = [r.id for r in approved_rows if (r.details or {}).get("refund_offered")]
    ok = charged == approved and len(approved_rows) == len(paid_getnet) and not doubles and not refund_offered
    add(
        "no double charge",
        ok,
        f"{sum(charged.values())} terminal charges = {len(approved_rows)} approved GETNET attempts = "
        f"{len(paid_getnet)} card sales paid through GETNET"
        if ok
        else f"terminal-only {list((charged - approved).items())[:5]}; db-only {list((approved - charged).items())[:5]}; "
        f"charges {sum(charged.values())}, approved {len(approved_rows)}, paid {len(paid_getnet)}; sales with two "
        f"approvals {doubles[:5]}; refunds offered {refund_offered[:5]}",
    )

    # 3. No duplicate open session: at most one session per register at any time, none left open.
    sessions = await rows(
        db,
        "SELECT id, register_id, status, opened_at, closed_at FROM cash_sessions "
        "WHERE venue_id = :v ORDER BY register_id, opened_at",
        v=venue.venue_id,
    )
    per_register = Counter(r.register_id for r in sessions)
    overlapping = [reg for reg, n in per_register.items() if n > 1]
    still_open = [r.id for r in sessions if r.status != "closed"]
    add(
        "no duplicate open session",
        not overlapping and not still_open and len(sessions) == len(venue.registers),
        f"{len(sessions)} sessions for {len(venue.registers)} registers, one each, all closed"
        if not overlapping and not still_open
        else f"registers with several sessions {overlapping}; open {still_open}",
    )

    # 4. Every in-doubt attempt resolved (and none left unresolved at all).
    unresolved = await rows(db, "SELECT id, state FROM payment_attempts WHERE state = ANY(:s)", s=list(UNRESOLVED))
    doubted = await rows(
        db, "SELECT state, count(*) AS n FROM payment_attempts WHERE reconcile_tries > 0 GROUP BY state ORDER BY state"
    )
    add(
        "every in-doubt attempt resolved",
        not unresolved,
        "attempts that went through reconciliation ended: "
        + (", ".join(f"{r.state} {r.n}" for r in doubted) or "none needed")
        if not unresolved
        else f"unresolved attempts {[(r.id, r.state) for r in unresolved][:10]}",
    )

    # 5. Session totals == the sum of their sales (and movements), by SQL over the rows.
    bad_sessions = await rows(
        db,
        """
        WITH s AS (
          SELECT session_id,
                 count(*) FILTER (WHERE status = 'paid' AND NOT no_revenue) AS tickets,
                 coalesce(sum(total) FILTER (WHERE status = 'paid' AND NOT no_revenue), 0) AS sales_total,
                 count(*) FILTER (WHERE status = 'paid' AND payment_method = 'cash') AS cash_n,
                 coalesce(sum(total) FILTER (WHERE status = 'paid' AND payment_method = 'cash'), 0) AS cash_t,
                 coalesce(sum(tip) FILTER (WHERE status = 'paid' AND payment_method = 'cash'), 0) AS cash_tip,
                 coalesce(sum(total) FILTER (WHERE status = 'paid' AND payment_method = 'card'), 0) AS card_t,
                 count(*) FILTER (WHERE status = 'paid' AND paid_via = 'primary') AS prim,
                 count(*) FILTER (WHERE status = 'paid' AND paid_via = 'backup') AS back,
                 count(*) FILTER (WHERE status = 'cancelled' AND paid_at IS NOT NULL) AS canc
          FROM sales GROUP BY session_id),
        m AS (
          SELECT session_id, coalesce(sum(amount) FILTER (WHERE kind = 'in'), 0) AS cin,
                 coalesce(sum(amount) FILTER (WHERE kind = 'out'), 0) AS cout
          FROM cash_movements GROUP BY session_id)
        SELECT c.id FROM cash_sessions c LEFT JOIN s ON s.session_id = c.id LEFT JOIN m ON m.session_id = c.id
        WHERE c.venue_id = :v AND (
          c.ticket_count != coalesce(s.tickets, 0) OR c.sales_total != coalesce(s.sales_total, 0)
          OR c.cash_sales_count != coalesce(s.cash_n, 0) OR c.cash_sales_total != coalesce(s.cash_t, 0)
          OR c.card_sales_total != coalesce(s.card_t, 0) OR c.primary_count != coalesce(s.prim, 0)
          OR c.backup_count != coalesce(s.back, 0) OR c.cancelled_count != coalesce(s.canc, 0)
          OR c.cash_in_total != coalesce(m.cin, 0) OR c.cash_out_total != coalesce(m.cout, 0)
          OR c.cash_tip_total != coalesce(s.cash_tip, 0)
          OR c.expected_cash != c.initial_cash + coalesce(s.cash_t, 0) + coalesce(s.cash_tip, 0) + coalesce(m.cin, 0)
                                - coalesce(m.cout, 0)
          OR c.difference != c.counted_cash - c.expected_cash)""",
        v=venue.venue_id,
    )
    bad_provider = await rows(
        db,
        """
        SELECT t.session_id, t.key FROM session_totals t
        LEFT JOIN (SELECT session_id, provider_id, count(*) AS n, sum(total) AS amount FROM sales
                   WHERE status = 'paid' AND payment_method = 'card' AND NOT no_revenue
                   GROUP BY session_id, provider_id) x ON x.session_id = t.session_id AND x.provider_id = t.key
        WHERE t.dimension = 'provider' AND (t.count != coalesce(x.n, 0) OR t.amount != coalesce(x.amount, 0))
        UNION ALL
        SELECT x.session_id, x.provider_id FROM (SELECT DISTINCT session_id, provider_id FROM sales
                   WHERE status = 'paid' AND payment_method = 'card' AND NOT no_revenue) x
        LEFT JOIN session_totals t ON t.session_id = x.session_id AND t.dimension = 'provider' AND t.key = x.provider_id
        WHERE t.session_id IS NULL""",
    )
    movements_db = await rows(db, "SELECT reason FROM cash_movements")
    lost_movements = sorted({m[3] for m in stats.movements} - {r.reason for r in movements_db})
    add(
        "session totals = sum of their sales",
        not bad_sessions and not bad_provider and not lost_movements,
        f"{len(sessions)} sessions: tickets, cash, card, primary/backup, movements, expected cash and difference "
        f"match the rows ({len(movements_db)} cash movements)"
        if not bad_sessions and not bad_provider and not lost_movements
        else f"sessions {[r.id for r in bad_sessions][:10]}; provider totals {bad_provider[:5]}; "
        f"movements not recorded {lost_movements[:5]}",
    )

    # 6. Jornada totals (the Z report) == the sum of its sales.
    async with db.reader() as s:
        report = await jornada_report(s, venue.venue_id, venue.jornada_id)
    sums = (
        await rows(
            db,
            """SELECT count(*) FILTER (WHERE status = 'paid') AS tickets,
                                   coalesce(sum(total) FILTER (WHERE status = 'paid'), 0) AS total,
                                   coalesce(sum(total) FILTER (WHERE status = 'paid' AND payment_method = 'cash'), 0) AS cash,
                                   coalesce(sum(total) FILTER (WHERE status = 'paid' AND payment_method = 'card'), 0) AS card
                            FROM sales WHERE jornada_id = :j""",
            j=venue.jornada_id,
        )
    )[0]
    by_provider_sql = {
        r.provider_id: (r.n, r.amount)
        for r in await rows(
            db,
            "SELECT provider_id, count(*) AS n, sum(total) AS amount FROM sales WHERE jornada_id = :j AND "
            "status = 'paid' GROUP BY provider_id",
            j=venue.jornada_id,
        )
    }
    by_provider_report = {t.key: (t.count, t.amount) for t in report.by_provider}
    jornada_status = (await rows(db, "SELECT status FROM jornadas WHERE id = :j", j=venue.jornada_id))[0].status
    t = report.totals
    ok = (
        t["ticket_count"] == sums.tickets
        and t["sales_total"] == sums.total
        and t["cash_sales_total"] == sums.cash
        and t["card_sales_total"] == sums.card
        and by_provider_report == by_provider_sql
        and jornada_status == "closed"
    )
    add(
        "jornada totals = sum of its sales",
        ok,
        f"Z report: {sums.tickets} tickets, {format_clp(sums.total)} (cash {format_clp(sums.cash)}, card "
        f"{format_clp(sums.card)}); sales by provider "
        f"{', '.join(f'{k} {v[0]}' for k, v in sorted(by_provider_sql.items()))}; jornada {jornada_status}"
        if ok
        else f"report {t} vs sql {tuple(sums)}; by provider {by_provider_report} vs {by_provider_sql}; "
        f"jornada {jornada_status}",
    )

    # 7. Every fallback recorded: each backup attempt has its fallback event (from, to, reason) and shows in
    #    the jornada report; every sale paid through the backup has one.
    backups = await rows(db, "SELECT a.id, a.sale_id FROM payment_attempts a WHERE a.role = 'backup'")
    events = await rows(db, "SELECT attempt_id, sale_id, from_provider, to_provider, reason FROM fallback_events")
    event_attempts = Counter(e.attempt_id for e in events)
    unrecorded = [a.id for a in backups if event_attempts[a.id] != 1]
    paid_backup = await rows(db, "SELECT id FROM sales WHERE status = 'paid' AND paid_via = 'backup'")
    event_sales = {e.sale_id for e in events}
    backup_sales_without = [r.id for r in paid_backup if r.id not in event_sales]
    incomplete = [e.attempt_id for e in events if not (e.from_provider and e.to_provider and e.reason)]
    ok = (
        not unrecorded
        and not backup_sales_without
        and not incomplete
        and len(events) == len(backups)
        and len(report.fallback_events) == len(events)
    )
    add(
        "every fallback recorded",
        ok,
        f"{len(backups)} backup attempts = {len(events)} fallback events (from, to, reason) = "
        f"{len(report.fallback_events)} in the jornada report; {len(paid_backup)} sales paid through the backup"
        if ok
        else f"attempts without event {unrecorded[:10]}; backup sales without event {backup_sales_without[:10]};"
        f" incomplete {incomplete[:5]}; report lists {len(report.fallback_events)} of {len(events)}",
    )

    # 8. Every sale is the drawer holder's: each sale is attributed to the cashier who rang it up; in a session
    #    with a handover no sale of the outgoing cashier comes after it and none of the relief before it; each
    #    handover a relief saw confirmed is recorded with their blind count, the cash the outgoing cashier kept
    #    as that cashier's difference, and the supervisor's authorization (one used grant naming both people).
    cashier_of = {
        r.id: r.cashier_id
        for r in await rows(db, "SELECT id, cashier_id FROM sales WHERE venue_id = :v", v=venue.venue_id)
    }
    misattributed = [s.sale_id for s in stats.sales if cashier_of.get(s.sale_id) != s.cashier_id]
    handovers = await rows(
        db,
        "SELECT h.id, h.session_id, h.from_user_id, h.to_user_id, h.authorized_by, h.counted_cash, h.expected_cash, "
        "h.difference, h.created_at, r.code FROM session_handovers h JOIN cash_sessions c ON c.id = h.session_id "
        "JOIN cash_registers r ON r.id = c.register_id WHERE h.venue_id = :v ORDER BY h.id",
        v=venue.venue_id,
    )
    out_of_turn = await rows(
        db,
        """SELECT s.id FROM sales s JOIN session_handovers h ON h.session_id = s.session_id
           WHERE (s.cashier_id = h.from_user_id AND s.created_at > h.created_at
                  AND NOT EXISTS (SELECT 1 FROM session_handovers e WHERE e.session_id = h.session_id
                                  AND e.to_user_id = h.from_user_id AND e.created_at > h.created_at))
              OR (s.cashier_id = h.to_user_id AND s.created_at < h.created_at)""",
    )
    recorded = Counter((h.code, h.from_user_id, h.to_user_id, h.counted_cash, -h.difference) for h in handovers)
    seen = Counter((h.register_code, h.from_id, h.to_id, h.counted, h.pocketed) for h in stats.handovers)
    grants = await rows(
        db,
        "SELECT session_id, requested_by, authorized_by FROM authorizations WHERE venue_id = :v "
        "AND action = 'take_over' AND used_at IS NOT NULL",
        v=venue.venue_id,
    )
    unauthorized = [
        h.id
        for h in handovers
        if h.authorized_by != venue.supervisor_id
        or (h.session_id, h.to_user_id, venue.supervisor_id) not in {tuple(g) for g in grants}
    ]
    events = await rows(
        db,
        "SELECT payload FROM audit_events WHERE venue_id = :v AND action = 'authorization.granted'",
        v=venue.venue_id,
    )
    ok = (
        not misattributed
        and not out_of_turn
        and recorded == seen
        and not unauthorized
        and len(grants) == len(handovers)
    )
    add(
        "every sale is the drawer holder's",
        ok,
        f"{len(stats.sales)} sales attributed to who rang them; {len(handovers)} handovers recorded as counted "
        f"({sum(1 for h in stats.handovers if h.pocketed)} with the outgoing cashier's shortage as their difference),"
        f" each with one used supervisor authorization; {len(events)} authorizations audited"
        if ok
        else f"sales of another cashier {misattributed[:10]}; sales out of turn {[r.id for r in out_of_turn][:10]}; "
        f"handovers db-only {list((recorded - seen).items())[:5]}, seen-only {list((seen - recorded).items())[:5]}; "
        f"without a supervisor's authorization {unauthorized[:5]} ({len(grants)} grants used)",
    )

    # 9. The owner's per-cashier summary (jornada report) = SQL over the sales by who rang them; each person's
    #     difference is what they caused (cash kept before a handover, a miscount at the close); cash-outs
    #     above the venue's limit carry the supervisor's authorization.
    per_cashier_sql = {
        r.cashier_id: (r.n, r.total, r.cash)
        for r in await rows(
            db,
            "SELECT cashier_id, count(*) AS n, sum(total) AS total, "
            "coalesce(sum(total) FILTER (WHERE payment_method = 'cash'), 0) AS cash FROM sales "
            "WHERE jornada_id = :j AND status = 'paid' AND NOT no_revenue GROUP BY cashier_id",
            j=venue.jornada_id,
        )
    }
    lines = {c.user_id: c for c in report.controls.cashiers}
    per_cashier_report = {u: (c.sales_count, c.sales_total, c.cash_total) for u, c in lines.items() if c.sales_count}
    caused: Counter = Counter()
    for h in stats.handovers:
        caused[h.from_id] -= h.pocketed
    for user_id, short in stats.close_short.items():
        caused[user_id] -= short
    differences = {u: c.difference for u, c in lines.items() if c.difference}
    async with db.reader() as s:
        limit = (await get_controls(s, venue.venue_id)).cash_out_limit
    big_outs = await rows(
        db,
        "SELECT m.id, m.authorized_by FROM cash_movements m JOIN users u ON u.id = m.user_id "
        "WHERE m.venue_id = :v AND m.kind = 'out' AND m.amount > :limit AND u.role = 'cashier'",
        v=venue.venue_id,
        limit=limit,
    )
    unauthorized_outs = [r.id for r in big_outs if r.authorized_by != venue.supervisor_id]
    ok = (
        per_cashier_report == per_cashier_sql
        and differences == {u: d for u, d in caused.items() if d}
        and not unauthorized_outs
        and sum(c.difference for c in lines.values()) == report.differences_total
    )
    add(
        "per-cashier summary = their sales and differences",
        ok,
        f"{len(per_cashier_sql)} cashiers: sales, totals and cash by who rang them match the rows; differences "
        f"{', '.join(format_clp(d) for d in sorted(differences.values())) or 'none'} each on the person who caused "
        f"it; {len(big_outs)} cash-outs over the limit, all authorized by the supervisor"
        if ok
        else f"report {sorted(per_cashier_report.items())[:5]} vs sql {sorted(per_cashier_sql.items())[:5]}; "
        f"differences {differences} vs caused {dict(caused)}; sum {sum(c.difference for c in lines.values())} vs "
        f"{report.differences_total}; unauthorized cash-outs {unauthorized_outs[:5]}",
    )

    # 10. The owner's dashboard figures (from the running totals each sale kept) == SQL over the sales: per
    #     register, per method and provider (with their tips), per cashier (sales and tips), the quarter hours,
    #     and the product mix, whose amounts take each sale discount's prorated part (computed here in SQL).
    async with db.reader() as s:
        figures = await dashboard.jornada_figures(s, venue.venue_id, venue.jornada_id)
    paid = "s.jornada_id = :j AND s.status = 'paid' AND NOT s.no_revenue"
    by_register_sql = {
        r.code: (r.n, r.total, r.tips)
        for r in await rows(
            db,
            f"SELECT g.code, count(*) AS n, sum(s.total) AS total, sum(s.tip) AS tips FROM sales s "
            f"JOIN cash_registers g ON g.id = s.register_id WHERE {paid} GROUP BY g.code",
            j=venue.jornada_id,
        )
    }
    by_method_sql = {
        r.method: (r.n, r.amount, r.tips)
        for r in await rows(
            db,
            f"""SELECT m.method, sum(m.n) AS n, sum(m.amount) AS amount, sum(m.tips) AS tips FROM (
                  SELECT s.payment_method AS method, count(*) AS n, sum(s.total - s.cash_part) AS amount,
                         sum(s.tip) AS tips FROM sales s WHERE {paid} GROUP BY s.payment_method
                  UNION ALL
                  SELECT 'cash', 0, sum(s.cash_part), 0 FROM sales s WHERE {paid} AND s.payment_method != 'cash'
                ) m GROUP BY m.method HAVING sum(m.n) > 0 OR sum(m.amount) > 0""",
            j=venue.jornada_id,
        )
    }
    by_cashier_sql = {
        r.cashier_id: (r.n, r.total, r.tip_n, r.tips)
        for r in await rows(
            db,
            f"SELECT s.cashier_id, count(*) AS n, sum(s.total) AS total, count(*) FILTER (WHERE s.tip > 0) AS tip_n, "
            f"sum(s.tip) AS tips FROM sales s WHERE {paid} GROUP BY s.cashier_id",
            j=venue.jornada_id,
        )
    }
    products_sql = {
        r.product_id: (r.units, r.amount)
        for r in await rows(
            db,
            f"""SELECT product_id, sum(quantity) AS units,
                       sum(net - share - CASE WHEN place <= left_over THEN 1 ELSE 0 END) AS amount
                FROM (SELECT l.*, whole - CAST(sum(share) OVER (PARTITION BY sale_id) AS BIGINT) AS left_over,
                             row_number() OVER (PARTITION BY sale_id ORDER BY fraction DESC, id) AS place
                      FROM (SELECT w.*, CASE WHEN whole > 0 THEN whole * net / base ELSE 0 END AS share,
                                   CASE WHEN whole > 0 THEN (whole * net) % base ELSE 0 END AS fraction
                            FROM (SELECT i.id, i.sale_id, coalesce(i.product_id, 0) AS product_id, i.quantity,
                                         i.line_total - i.discount AS net,
                                         CAST(sum(i.line_total - i.discount) OVER (PARTITION BY i.sale_id) AS BIGINT) AS base,
                                         CAST(sum(i.line_total - i.discount) OVER (PARTITION BY i.sale_id) AS BIGINT) - s.total
                                           AS whole
                                  FROM sale_items i JOIN sales s ON s.id = i.sale_id WHERE {paid}) w) l) p
                GROUP BY product_id""",
            j=venue.jornada_id,
        )
    }
    quarters_sql = {
        int(r.quarter): (r.n, r.amount)
        for r in await rows(
            db,
            f"SELECT CAST(floor(extract(epoch FROM s.paid_at) / 900) AS bigint) AS quarter, count(*) AS n, "
            f"sum(s.total) AS amount FROM sales s WHERE {paid} GROUP BY 1",
            j=venue.jornada_id,
        )
    }
    discounted = (
        await rows(db, f"SELECT count(*) AS n FROM sales s WHERE {paid} AND s.discount_total > 0", j=venue.jornada_id)
    )[0].n
    shown = {
        "register": {f.key: (f.count, f.amount, f.tips) for f in figures.by_register},
        "method": {f.key: (f.count, f.amount, f.tips) for f in figures.by_method},
        "cashier": {
            c.user_id: (c.sales_count, c.sales_total, c.tip_count, c.tips) for c in figures.cashiers if c.sales_count
        },
        "products": {p.product_id: (p.units, p.amount) for p in figures.products},
        "quarters": {
            int(q.start.timestamp()) // 900: (q.count, q.amount) for q in figures.quarters if q.count or q.amount
        },
    }
    expected = {
        "register": by_register_sql,
        "method": by_method_sql,
        "cashier": by_cashier_sql,
        "products": products_sql,
        "quarters": quarters_sql,
    }
    wrong = [k for k in shown if shown[k] != expected[k]]
    tips_sql = sum(t for *_, t in by_cashier_sql.values())
    ok = not wrong and figures.tip_total == tips_sql and sum(p.amount for p in figures.products) == figures.total
    add(
        "dashboard figures = sum of the sales",
        ok,
        f"{figures.tickets} tickets, {format_clp(figures.total)} and tips {format_clp(figures.tip_total)} on "
        f"{figures.tip_count} sales: per register ({len(by_register_sql)}), method, cashier, quarter hour "
        f"({len(quarters_sql)}) and product ({len(products_sql)}, {discounted} sales with a discount) as in SQL"
        if ok
        else "; ".join(f"{k}: shown {shown[k]} vs sql {expected[k]}" for k in wrong)
        + f"; tips {figures.tip_total} vs {tips_sql}; products sum {sum(p.amount for p in figures.products)} vs "
        f"{figures.total}",
    )

    # 11. No server error (no 5xx) on any page the cashiers used.
    add(
        "no server error",
        not stats.server_errors,
        f"{stats.requests} requests, none answered 5xx"
        if not stats.server_errors
        else f"{len(stats.server_errors)} answers 5xx: {stats.server_errors[:3]}",
    )
    return checks
