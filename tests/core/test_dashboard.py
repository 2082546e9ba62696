"""The jornada's figures (dashboard and charted reports) against hand-computed nights, on SQLite and
PostgreSQL: a night across midnight, and the two nights of the year when Chile changes its clocks at midnight."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from caja_core import clock
from caja_core.dashboard import charts, rollups
from caja_core.dashboard import service as dashboard
from caja_core.dashboard.models import ProductSales, SalesQuarter
from caja_core.dashboard.service import NightPoint
from caja_core.jornadas import service as jornadas
from caja_core.jornadas.models import Jornada
from caja_core.offline import service as offline
from caja_core.payments.models import PaymentAttempt
from caja_core.permissions import Action
from caja_core.permissions.service import authorize
from caja_core.sales import discounts, tips
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.sessions.models import CashSession
from caja_core.testing.factories import SUPERVISOR_PIN, cash_sale, make_setup


class Night:
    """A venue whose clock the test moves: every sale is paid at the instant the test says."""

    def __init__(self, db, setup, monkeypatch):
        self.db, self.st, self.monkeypatch = db, setup, monkeypatch

    def at(self, iso: str) -> datetime:
        instant = datetime.fromisoformat(iso).astimezone(UTC)
        self.monkeypatch.setattr(clock.SYSTEM_CLOCK, "now", lambda: instant)
        return instant

    async def open(self, iso: str) -> tuple[int, int]:
        self.at(iso)
        async with self.db.session() as s:
            jornada = await jornadas.open_jornada(s, venue_id=self.st.venue_id, user_id=self.st.supervisor_id)
            session = await sessions.open_session(
                s,
                venue_id=self.st.venue_id,
                register_id=self.st.register_id,
                user_id=self.st.cashier_id,
                initial_cash=10000,
                open_key=str(uuid.uuid4()),
            )
        return jornada.id, session.id

    async def cash(self, iso: str, session_id: int, **quantities: int) -> int:
        """A cash sale as the POS rings it."""
        self.at(iso)
        sale = await cash_sale(
            self.db,
            venue_id=self.st.venue_id,
            session_id=session_id,
            cashier_id=self.st.cashier_id,
            items=[sales.ItemInput(product_id=self.st.products[n], quantity=q) for n, q in quantities.items()],
            idempotency_key=str(uuid.uuid4()),
        )
        return sale.id

    async def card(self, iso: str, session_id: int, provider: str = "fake", **quantities: int) -> int:
        self.at(iso)
        async with self.db.session() as s:
            sale = await sales.create_sale(
                s,
                venue_id=self.st.venue_id,
                session_id=session_id,
                cashier_id=self.st.cashier_id,
                items=[sales.ItemInput(product_id=self.st.products[n], quantity=q) for n, q in quantities.items()],
                idempotency_key=str(uuid.uuid4()),
            )
            await sales.mark_paid(
                s, sale_id=sale.id, provider_id=provider, paid_via="primary" if provider == "fake" else "backup"
            )
        return sale.id

    async def rung(
        self,
        iso: str,
        session_id: int,
        lines: list[tuple[str, int]],
        *,
        tip: int = 0,
        line_discounts: dict[int, int] | None = None,
        sale_discount: int = 0,
    ) -> int:
        """A sale rung up at the POS (lines in order), its line discounts (percent), a discount on the whole sale
        (amount) and a tip, waiting for payment."""
        self.at(iso)
        async with self.db.session() as s:
            sale = await sales.create_sale(
                s,
                venue_id=self.st.venue_id,
                session_id=session_id,
                cashier_id=self.st.cashier_id,
                items=[sales.ItemInput(product_id=self.st.products[n], quantity=q) for n, q in lines],
                idempotency_key=str(uuid.uuid4()),
            )
            who = {"venue_id": self.st.venue_id, "sale_id": sale.id, "user_id": self.st.cashier_id}
            for line, percent in (line_discounts or {}).items():
                await discounts.apply_discount(s, **who, kind="percent", value=percent, reason="happy hour", line=line)
            if sale_discount:
                await discounts.apply_discount(s, **who, kind="amount", value=sale_discount, reason="cliente")
            if tip:
                await tips.set_tip(s, **who, amount=tip)
        return sale.id

    async def pay_cash(self, iso: str, sale_id: int) -> None:
        self.at(iso)
        async with self.db.session() as s:
            await sales.pay_cash(
                s, venue_id=self.st.venue_id, sale_id=sale_id, cash_received=None, user_id=self.st.cashier_id
            )

    async def pay_card(self, iso: str, sale_id: int, *, cash_part: int = 0) -> None:
        self.at(iso)
        async with self.db.session() as s:
            if cash_part:
                await sales.pay_cash_part(
                    s, venue_id=self.st.venue_id, sale_id=sale_id, amount=cash_part, user_id=self.st.cashier_id
                )
            await sales.mark_paid(s, sale_id=sale_id, provider_id="fake")

    async def offline_cash(self, iso: str, sold: str, session_id: int, product: str, quantity: int) -> None:
        """A cash sale the POS took without a connection at ``sold``, synced at ``iso``."""
        self.at(iso)
        (result,) = await offline.sync_sales(
            self.db,
            venue_id=self.st.venue_id,
            user_id=self.st.cashier_id,
            device_id="equipo-a",
            sales=[
                offline.OfflineSaleIn(
                    key=offline.new_key(),
                    register_id=self.st.register_id,
                    session_id=session_id,
                    cashier_id=self.st.cashier_id,
                    local_time=sold,
                    method="cash",
                    lines=[
                        offline.OfflineLine(
                            product_id=self.st.products[product],
                            quantity=quantity,
                            unit_price=self.st.prices[product],
                        )
                    ],
                    total=self.st.prices[product] * quantity,
                )
            ],
        )
        assert result.status == "accepted", result.reason

    async def void(self, iso: str, sale_id: int) -> None:
        """The cashier voids a paid sale with the supervisor's PIN."""
        self.at(iso)
        grant = await authorize(
            self.db,
            venue_id=self.st.venue_id,
            action=Action.VOID_PAID,
            actor_id=self.st.cashier_id,
            code=SUPERVISOR_PIN,
            sale_id=sale_id,
        )
        async with self.db.session() as s:
            await sales.cancel_sale(
                s,
                venue_id=self.st.venue_id,
                sale_id=sale_id,
                user_id=self.st.cashier_id,
                reason="error de caja",
                authorization_id=grant,
            )

    async def close(self, iso: str, jornada_id: int, session_id: int, cash_in_drawer: int) -> None:
        """The cashier counts the drawer as expected and closes; the supervisor closes the jornada."""
        self.at(iso)
        async with self.db.session() as s:
            result = await sessions.close_session(
                s,
                venue_id=self.st.venue_id,
                session_id=session_id,
                user_id=self.st.cashier_id,
                counted={"10": cash_in_drawer // 10},
            )
        assert (result.status, result.difference) == ("closed", 0)
        async with self.db.session() as s:
            await jornadas.close_jornada(s, venue_id=self.st.venue_id, jornada_id=jornada_id, user_id=None)

    async def figures(self, jornada_id: int, **kw) -> dashboard.JornadaFigures:
        async with self.db.session() as s:
            return await dashboard.jornada_figures(s, self.st.venue_id, jornada_id, **kw)


@pytest.fixture
async def night(any_db, monkeypatch):
    return Night(any_db, await make_setup(any_db, open_jornada=False), monkeypatch)


def slots(lines):
    return [(x.label, x.count, x.amount) for x in lines]


async def test_a_night_across_midnight_adds_up_by_quarter_hour_hour_method_product_and_cashier(night, any_db):
    # Friday 2026-11-27 in Santiago (UTC−3 in summer). Prices: Cerveza 3 500, Piscola 6 000, Agua 2 000.
    jornada_id, session_id = await night.open("2026-11-27T22:00:00-03:00")
    await night.cash("2026-11-27T23:50:00-03:00", session_id, Cerveza=2)  # 7 000
    await night.card("2026-11-27T23:59:59-03:00", session_id, Piscola=1)  # 6 000 card
    await night.cash("2026-11-28T00:00:00-03:00", session_id, Agua=1, Cerveza=1)  # 5 500
    voided = await night.cash("2026-11-28T00:10:00-03:00", session_id, Piscola=2)  # 12 000, voided later
    await night.card("2026-11-28T00:40:00-03:00", session_id, provider="fakebackup", Cerveza=1)  # 3 500 backup
    await night.void("2026-11-28T00:50:00-03:00", voided)
    await night.cash("2026-11-28T01:05:00-03:00", session_id, Agua=3)  # 6 000

    f = await night.figures(jornada_id)
    # 7 000 + 6 000 + 5 500 + 3 500 + 6 000 = 28 000 in 5 tickets (the void is out).
    assert (f.total, f.tickets, f.average_ticket) == (28000, 5, 5600)
    assert slots(f.quarters) == [
        ("23:45", 2, 13000),
        ("00:00", 1, 5500),  # the voided sale of 00:10 left its quarter
        ("00:15", 0, 0),
        ("00:30", 1, 3500),
        ("00:45", 0, 0),
        ("01:00", 1, 6000),
    ]
    assert slots(f.hours) == [("23:00", 2, 13000), ("00:00", 2, 9000), ("01:00", 1, 6000)]
    assert [(x.key, x.count, x.amount) for x in f.by_method] == [("card", 2, 9500), ("cash", 3, 18500)]
    assert [(x.key, x.count, x.amount) for x in f.by_provider] == [
        ("cash", 3, 18500),
        ("fake", 1, 6000),
        ("fakebackup", 1, 3500),
    ]
    assert [(x.key, x.count, x.amount) for x in f.by_register] == [("CAJA1", 5, 28000)]
    # Cerveza 2+1+1 = 4 units, 14 000; Agua 1+3 = 4 units, 8 000; Piscola 1 unit, 6 000 (2 voided).
    assert [(p.name, p.units, p.amount) for p in f.products] == [
        ("Cerveza", 4, 14000),
        ("Agua", 4, 8000),
        ("Piscola", 1, 6000),
    ]
    assert [(c.label, c.count, c.amount) for c in f.categories] == [("Bar", 9, 28000)]
    by_name = {c.name: c for c in f.cashiers}
    assert (by_name["Cajera"].sales_count, by_name["Cajera"].sales_total) == (5, 28000)
    assert (by_name["Cajera"].voids_count, by_name["Cajera"].voids_total) == (1, 12000)
    assert [(o.register_code, o.cashier_name, o.ticket_count) for o in f.open_sessions] == [("CAJA1", "Cajera", 5)]

    # The same figures as the session's own running totals (kept by other code in the same transactions).
    async with any_db.session() as s:
        session = await s.get(CashSession, session_id)
        quarters = (await s.execute(select(func.sum(SalesQuarter.count), func.sum(SalesQuarter.amount)))).one()
        products = await s.scalar(select(func.sum(ProductSales.amount)))
    assert (session.ticket_count, session.sales_total) == (int(quarters[0]), int(quarters[1])) == (5, 28000)
    assert products == 28000
    one = await _session_figures(any_db, night.st.venue_id, session_id)
    assert (one.total, slots(one.hours)) == (28000, slots(f.hours))


async def _session_figures(db, venue_id, session_id):
    async with db.session() as s:
        return await dashboard.session_figures(s, venue_id, session_id)


async def test_the_night_daylight_saving_time_ends_keeps_both_2300_hours_apart(night):
    # 2026-04-05 00:00 −03 becomes 2026-04-04 23:00 −04: the hour from 23:00 happens twice.
    jornada_id, session_id = await night.open("2026-04-04T21:00:00-03:00")
    await night.cash("2026-04-04T23:40:00-03:00", session_id, Cerveza=1)  # 02:40 UTC, 3 500
    await night.cash("2026-04-04T23:40:00-04:00", session_id, Agua=1)  # 03:40 UTC, 2 000
    await night.cash("2026-04-05T00:05:00-04:00", session_id, Piscola=1)  # 04:05 UTC, 6 000

    f = await night.figures(jornada_id)
    assert f.total == 11500
    assert slots(f.hours) == [("23:00", 1, 3500), ("23:00 (2ª)", 1, 2000), ("00:00", 1, 6000)]
    assert slots(f.quarters) == [
        ("23:30", 1, 3500),
        ("23:45", 0, 0),
        ("23:00 (2ª)", 0, 0),
        ("23:15 (2ª)", 0, 0),
        ("23:30 (2ª)", 1, 2000),
        ("23:45 (2ª)", 0, 0),
        ("00:00", 1, 6000),
    ]
    assert [x.start for x in f.quarters] == [
        datetime(2026, 4, 5, 2, 30, tzinfo=UTC) + timedelta(minutes=15 * n) for n in range(7)
    ]


async def test_the_night_daylight_saving_time_starts_has_no_midnight_hour_and_no_gap(night):
    # 2026-09-06 00:00 −04 becomes 01:00 −03: the hour from 00:00 never happens.
    jornada_id, session_id = await night.open("2026-09-05T21:00:00-04:00")
    await night.cash("2026-09-05T23:50:00-04:00", session_id, Cerveza=2)  # 03:50 UTC, 7 000
    await night.card("2026-09-06T01:05:00-03:00", session_id, Agua=1)  # 04:05 UTC, 2 000
    await night.cash("2026-09-06T01:20:00-03:00", session_id, Piscola=1)  # 04:20 UTC, 6 000

    f = await night.figures(jornada_id)
    assert slots(f.quarters) == [("23:45", 1, 7000), ("01:00", 1, 2000), ("01:15", 1, 6000)]
    assert slots(f.hours) == [("23:00", 1, 7000), ("01:00", 2, 8000)]
    assert f.jornada.label_date.isoformat() == "2026-09-05"


def clock_change(year: int, back: bool, tz: str = "America/Santiago") -> datetime:
    """The instant (UTC) ``tz`` puts its clocks back (or forward) in ``year``, as zoneinfo knows it."""
    z = ZoneInfo(tz)
    instant = datetime(year, 1, 1, tzinfo=UTC)
    while instant.year == year:
        before, after = (instant - timedelta(seconds=1)).astimezone(z), instant.astimezone(z)
        if before.utcoffset() != after.utcoffset() and (after.utcoffset() < before.utcoffset()) == back:
            return instant
        instant += timedelta(minutes=15)
    raise AssertionError(f"{tz} does not change its clocks in {year}")


def local(instant: datetime) -> str:
    return instant.astimezone(ZoneInfo("America/Santiago")).isoformat()


def night_hour(instant: datetime, label_date) -> int:
    """The hour of the night (from the midnight that starts ``label_date``) of a local time."""
    wall = instant.astimezone(ZoneInfo("America/Santiago")).replace(tzinfo=None)
    return int((wall - datetime.combine(label_date, datetime.min.time())).total_seconds() // 3600)


async def _same_night_last_week(night, change: datetime, sales: list[tuple[timedelta, str]]) -> int:
    """A week before the night of ``change``: a jornada with cash sales at those times from the change's
    instant a week earlier, counted and closed; its cash total."""
    week_ago = change - timedelta(days=7)
    jornada_id, session_id = await night.open(local(week_ago - timedelta(hours=3)))
    total = 0
    for after, product in sales:
        await night.cash(local(week_ago + after), session_id, **{product: 1})
        total += night.st.prices[product]
    await night.close(local(week_ago + timedelta(hours=3)), jornada_id, session_id, 10000 + total)
    return total


@pytest.mark.parametrize("year", [2026, 2027])
async def test_the_same_weekday_chart_shows_the_hour_the_clock_goes_back_over_twice(night, year):
    back = clock_change(year, back=True)
    repeated = back.astimezone(ZoneInfo("America/Santiago")).strftime("%H:00")
    # Last week: 23:30 and 00:30 (one pass of each hour). Tonight: 23:30, 23:30 again, and 00:05.
    minutes = timedelta(minutes=1)
    await _same_night_last_week(night, back, [(-30 * minutes, "Cerveza"), (30 * minutes, "Agua")])
    jornada_id, session_id = await night.open(local(back - timedelta(hours=3)))
    await night.cash(local(back - 30 * minutes), session_id, Cerveza=1)  # 3 500
    await night.cash(local(back + 30 * minutes), session_id, Agua=1)  # 2 000, the second 23:30
    await night.cash(local(back + 65 * minutes), session_id, Piscola=1)  # 6 000

    f = await night.figures(jornada_id)
    h = night_hour(back - 30 * minutes, f.jornada.label_date)
    assert slots(f.hours) == [(repeated, 1, 3500), (f"{repeated} (2ª)", 1, 2000), ("00:00", 1, 6000)]
    tonight, last_week = f.night_curves
    assert tonight.points == [NightPoint(h, 3500), NightPoint(h, 5500, again=True), NightPoint(h + 1, 11500)]
    assert last_week.points == [NightPoint(h, 3500), NightPoint(h + 1, 5500)]
    chart = charts.comparison_chart(f)
    assert chart.rows == [
        [f"hasta las {repeated} (2ª)", "$3.500", "—"],  # last week's clock never showed it
        ["hasta las 00:00", "$5.500", "$3.500"],
        ["hasta las 01:00", "$11.500", "$5.500"],
    ]
    assert f"{tonight.label}, hasta las {repeated} (2ª): $3.500" in chart.svg
    assert f"{last_week.label}, hasta las 00:00: $3.500" in chart.svg


@pytest.mark.parametrize("year", [2026, 2027])
async def test_the_same_weekday_chart_has_no_point_for_the_hour_the_clock_skips(night, year):
    forward = clock_change(year, back=False)
    minutes = timedelta(minutes=1)
    # Last week: 23:50, 00:30 and 01:10. Tonight: 23:50, then (00:00 is 01:00) 01:05 and 01:20.
    await _same_night_last_week(
        night, forward, [(-10 * minutes, "Cerveza"), (30 * minutes, "Agua"), (70 * minutes, "Piscola")]
    )
    jornada_id, session_id = await night.open(local(forward - timedelta(hours=3)))
    await night.cash(local(forward - 10 * minutes), session_id, Cerveza=1)  # 3 500
    await night.cash(local(forward + 5 * minutes), session_id, Agua=1)  # 2 000
    await night.cash(local(forward + 20 * minutes), session_id, Piscola=1)  # 6 000

    f = await night.figures(jornada_id)
    h = night_hour(forward - 10 * minutes, f.jornada.label_date)
    tonight, last_week = f.night_curves
    assert tonight.points == [NightPoint(h, 3500), NightPoint(h + 2, 11500)]
    assert last_week.points == [NightPoint(h, 3500), NightPoint(h + 1, 5500), NightPoint(h + 2, 11500)]
    chart = charts.comparison_chart(f)
    assert chart.rows == [
        ["hasta las 00:00", "$3.500", "$3.500"],
        ["hasta las 01:00", "$3.500", "$5.500"],
        ["hasta las 02:00", "$11.500", "$11.500"],
    ]
    # Tonight's line goes from the end of 23:00 straight to the end of 01:00, at the same places as last week's.
    root = ET.fromstring(chart.svg)
    ns = "{http://www.w3.org/2000/svg}"
    xs = [
        [c.get("cx") for c in g.iter(f"{ns}circle")]
        for g in root.iter(f"{ns}g")
        if (g.get("class") or "").startswith("night ")
    ]
    assert len(xs[0]) == 2 and xs[0] == [xs[1][0], xs[1][2]]


async def test_terminals_show_approval_rate_time_to_approval_and_breaker(night, any_db):
    jornada_id, session_id = await night.open("2026-11-27T22:00:00-03:00")
    sale_id = await night.card("2026-11-27T23:00:00-03:00", session_id, Agua=1)
    sent = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    async with any_db.session() as s:
        for n, (state, seconds) in enumerate((("approved", 4), ("approved", 8), ("declined", 3), ("in_doubt", None))):
            s.add(
                PaymentAttempt(
                    venue_id=night.st.venue_id,
                    sale_id=sale_id,
                    session_id=session_id,
                    register_id=night.st.register_id,
                    provider_id="fake",
                    device_key="fake:1",
                    role="primary",
                    amount=2000,
                    ticket=f"T{n}",
                    state=state,
                    active=False,
                    created_at=sent,
                    sent_at=sent,
                    finished_at=None if seconds is None else sent + timedelta(seconds=seconds),
                )
            )
    f = await night.figures(jornada_id)
    (t,) = f.terminals
    assert (t.register_code, t.attempts, t.approved, t.not_approved) == ("CAJA1", 4, 2, 1)
    assert t.approval_rate == pytest.approx(2 / 3)
    assert (t.average_approval_s, t.slowest_approval_s) == (6.0, 8.0)
    assert t.breaker_state == "closed"
    assert [(d.register_code, d.state, d.amount) for d in f.in_doubt] == [("CAJA1", "in_doubt", 2000)]

    # The live view counts its last stretch only (here one hour).
    live = await night.figures(jornada_id, now=sent + timedelta(hours=2), terminal_window=timedelta(hours=1))
    assert live.terminals[0].attempts == 0 and live.terminals[0].approval_rate is None


async def test_fallback_events_and_the_same_weekday_of_previous_weeks(night, any_db):
    # Two Fridays earlier, a night of 40 000 of which 15 000 before 23:30.
    async with any_db.session() as s:
        past = Jornada(
            venue_id=night.st.venue_id,
            label_date=datetime(2026, 11, 13).date(),
            status="closed",
            opened_at=datetime(2026, 11, 14, 1, 0, tzinfo=UTC),
        )
        thursday = Jornada(
            venue_id=night.st.venue_id,
            label_date=datetime(2026, 11, 19).date(),
            status="closed",
            opened_at=datetime(2026, 11, 20, 1, 0, tzinfo=UTC),
        )
        s.add_all([past, thursday])
        await s.flush()
        old = CashSession(
            venue_id=night.st.venue_id,
            register_id=night.st.register_id,
            jornada_id=past.id,
            opened_by=night.st.cashier_id,
            cashier_id=night.st.cashier_id,
            open_key="old",
            status="closed",
            ticket_count=8,
            sales_total=40000,
        )
        s.add(old)
        await s.flush()
        for local, amount in (("2026-11-13T23:00:00-03:00", 15000), ("2026-11-14T01:00:00-03:00", 25000)):
            s.add(
                SalesQuarter(
                    jornada_id=past.id,
                    quarter=int(datetime.fromisoformat(local).timestamp()) // 900,
                    session_id=old.id,
                    cashier_id=night.st.cashier_id,
                    provider_id="cash",
                    method="cash",
                    count=4,
                    amount=amount,
                )
            )
    jornada_id, session_id = await night.open("2026-11-27T22:00:00-03:00")
    await night.cash("2026-11-27T23:10:00-03:00", session_id, Cerveza=1)
    async with any_db.session() as s:
        await sessions.add_fallback_event(
            s,
            venue_id=night.st.venue_id,
            session_id=session_id,
            sale_id=None,
            attempt_id=None,
            from_provider="fake",
            to_provider="fakebackup",
            reason="Terminal sin conexión",
            user_id=night.st.cashier_id,
        )
    f = await night.figures(jornada_id, now=datetime.fromisoformat("2026-11-27T23:30:00-03:00"))
    assert [(m.register_code, m.from_provider, m.to_provider, m.reason) for m in f.fallbacks] == [
        ("CAJA1", "fake", "fakebackup", "Terminal sin conexión")
    ]
    assert [(p.label_date, p.total, p.tickets, p.total_so_far) for p in f.past_nights] == [
        ("13-11-2026", 40000, 8, 15000)
    ]
    # The comparison chart's lines: tonight and that Friday, added up hour by hour of the night.
    assert [(c.label, c.points) for c in f.night_curves] == [
        ("Esta (27-11-2026)", [NightPoint(23, 3500)]),
        ("13-11-2026", [NightPoint(23, 15000), NightPoint(24, 15000), NightPoint(25, 40000)]),
    ]


def test_a_sale_discount_is_split_across_the_lines_in_whole_pesos():
    # 1 000 off lines of 7 000 and 2 000: 777,7… and 222,2…; the peso left goes to the larger fraction.
    assert rollups.prorate(1000, [7000, 2000]) == [778, 222]
    # Equal fractions: the earlier line first.
    assert rollups.prorate(1, [100, 100]) == [1, 0]
    assert rollups.prorate(2, [1, 1, 1]) == [1, 1, 0]
    assert rollups.prorate(550, [3500, 2000]) == [350, 200]
    assert rollups.prorate(0, [3500]) == [0] and rollups.prorate(5, []) == []
    lines = rollups.net_lines([(1, 2, 7000), (2, 1, 2000)], 8000)
    assert lines == [(1, 2, 6222), (2, 1, 1778)] and sum(a for _, _, a in lines) == 8000


async def _totals(db, jornada_id):
    """The jornada's quarter-hour and product rows, without the ones a void left at zero."""
    async with db.session() as s:
        quarters = {
            (r.quarter, r.session_id, r.cashier_id, r.provider_id, r.method): (r.count, r.amount, r.tip_count, r.tip)
            for r in await s.scalars(select(SalesQuarter).where(SalesQuarter.jornada_id == jornada_id))
            if (r.count, r.amount, r.tip_count, r.tip) != (0, 0, 0, 0)
        }
        products = {
            (r.session_id, r.product_id): (r.units, r.amount)
            for r in await s.scalars(select(ProductSales).where(ProductSales.jornada_id == jornada_id))
            if (r.units, r.amount) != (0, 0)
        }
    return quarters, products


async def test_tips_discounts_split_and_offline_sales_add_up_and_rebuild_the_same(night, any_db):
    # Friday 2026-11-27 in Santiago (UTC−3). Prices: Cerveza 3 500, Piscola 6 000, Agua 2 000.
    jornada_id, session_id = await night.open("2026-11-27T22:00:00-03:00")
    # 2 Cerveza + 1 Agua = 9 000, $1 000 off the whole sale → 8 000 (Cerveza 7 000 − 778, Agua 2 000 − 222),
    # tip 800, cash.
    first = await night.rung(
        "2026-11-27T23:48:00-03:00", session_id, [("Cerveza", 2), ("Agua", 1)], sale_discount=1000, tip=800
    )
    await night.pay_cash("2026-11-27T23:50:00-03:00", first)
    # Piscola with 10 % off its line → 5 400, tip 500, card.
    second = await night.rung(
        "2026-11-27T23:59:00-03:00", session_id, [("Piscola", 1)], line_discounts={1: 10}, tip=500
    )
    await night.pay_card("2026-11-27T23:59:59-03:00", second)
    # Cerveza + Agua = 5 500, $550 off the whole sale → 4 950 (Cerveza 3 150, Agua 1 800), tip 500:
    # $2 000 in cash first, the rest (2 950 + the tip) by card.
    split = await night.rung(
        "2026-11-28T00:03:00-03:00", session_id, [("Cerveza", 1), ("Agua", 1)], sale_discount=550, tip=500
    )
    await night.pay_card("2026-11-28T00:05:00-03:00", split, cash_part=2000)
    # 2 Piscola, tip 1 200, cash: voided later (its tip goes with it).
    voided = await night.rung("2026-11-28T00:08:00-03:00", session_id, [("Piscola", 2)], tip=1200)
    await night.pay_cash("2026-11-28T00:10:00-03:00", voided)
    # 3 Agua sold without a connection at 00:20, synced at 00:40: counted when they were sold.
    await night.offline_cash("2026-11-28T00:40:00-03:00", "2026-11-28T00:20:00-03:00", session_id, "Agua", 3)
    await night.void("2026-11-28T00:50:00-03:00", voided)
    await night.cash("2026-11-28T01:05:00-03:00", session_id, Agua=1)  # 2 000, the POS's hot path

    f = await night.figures(jornada_id)
    # 8 000 + 5 400 + 4 950 + 6 000 + 2 000 = 26 350 in 5 tickets; tips 800 + 500 + 500 = 1 800 on 3 sales.
    assert (f.total, f.tickets, f.tip_total, f.tip_count) == (26350, 5, 1800, 3)
    assert [(x.key, x.count, x.amount, x.tips) for x in f.by_method] == [
        ("card", 2, 8350, 1000),  # 5 400 + the split's 2 950
        ("cash", 3, 18000, 800),  # 8 000 + the split's 2 000 + 6 000 + 2 000
    ]
    assert [(x.key, x.count, x.amount, x.tips) for x in f.by_provider] == [
        ("cash", 3, 18000, 800),
        ("fake", 2, 8350, 1000),
    ]
    assert [(x.key, x.count, x.amount, x.tips) for x in f.by_register] == [("CAJA1", 5, 26350, 1800)]
    assert slots(f.quarters) == [
        ("23:45", 2, 13400),
        ("00:00", 1, 4950),  # the voided sale of 00:10 left its quarter
        ("00:15", 1, 6000),  # the offline sale, at the time it was sold
        ("00:30", 0, 0),
        ("00:45", 0, 0),
        ("01:00", 1, 2000),
    ]
    # The products add up to the sales: Cerveza 6 222 + 3 150; Agua 1 778 + 1 800 + 6 000 + 2 000; Piscola 5 400.
    assert [(p.name, p.units, p.amount) for p in f.products] == [
        ("Agua", 6, 11578),
        ("Cerveza", 3, 9372),
        ("Piscola", 1, 5400),
    ]
    assert sum(p.amount for p in f.products) == f.total
    (cajera,) = [c for c in f.cashiers if c.sales_count]
    assert (cajera.name, cajera.sales_total, cajera.tip_count, cajera.tips) == ("Cajera", 26350, 3, 1800)
    assert (cajera.voids_count, cajera.voids_total) == (1, 12000)
    one = await _session_figures(any_db, night.st.venue_id, session_id)
    assert (one.total, one.tip_total, [c.tips for c in one.cashiers if c.sales_count]) == (26350, 1800, [1800])

    # Rebuilt from the sales, the totals are the ones the sales kept one by one.
    kept = await _totals(any_db, jornada_id)
    async with any_db.session() as s:
        await rollups.rebuild(s, jornada_id)
    assert await _totals(any_db, jornada_id) == kept
    again = await night.figures(jornada_id)
    assert (again.total, again.tip_total, again.products, again.quarters) == (f.total, 1800, f.products, f.quarters)

    # The live page reads the same figures statement by statement (on PostgreSQL without a transaction).
    async with any_db.statement_reader() as s:
        live = await dashboard.current_figures(s, night.st.venue_id, now=night.at("2026-11-28T01:10:00-03:00"))
    assert live is not None
    assert (live.total, live.tip_total, live.by_method, live.cashiers) == (f.total, 1800, f.by_method, f.cashiers)
