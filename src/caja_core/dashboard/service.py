"""The figures of a jornada (or of one session) for the owner's dashboard and the charted reports.

Everything is read from running totals kept in each sale's transaction — the sessions' own columns and the
quarter-hour and product totals of ``dashboard.models`` — and from indexed, bounded reads of the rest (open
sessions, breakers, attempts in doubt, the last 15 minutes of attempts per terminal, fallback events, incidents),
so a night of 200 000 sales costs what a night of 200 does. Instants are UTC; labels are in the venue's zone.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import IncidentOut, list_incidents
from ..catalog.models import Category, Product
from ..clock import to_local, utcnow, zone
from ..errors import NotFound
from ..jornadas.models import Jornada
from ..jornadas.service import JornadaOut, get_jornada, jornada_out
from ..payments import breaker, lifecycle
from ..payments.models import BreakerState, PaymentAttempt
from ..registers.models import CashRegister
from ..sales.models import Sale
from ..sessions.models import CashSession, FallbackEvent, SessionHandover
from ..users.service import user_names
from ..venues.models import Venue
from .models import ProductSales, SalesQuarter
from .rollups import FREE_AMOUNT, quarter_of, quarter_start

#: Terminal figures on the live dashboard cover this last stretch of the night.
TERMINAL_WINDOW = timedelta(minutes=15)  # short enough to show at once a terminal that starts failing
#: Previous jornadas of the same weekday shown for comparison.
COMPARE_WEEKS = 4
METHOD_LABELS = {"cash": "Efectivo", "card": "Tarjeta"}
NOT_APPROVED = (lifecycle.DECLINED, lifecycle.FAILED_NOT_SENT)


class Figure(msgspec.Struct, kw_only=True):
    """One line of a breakdown: a register, a method, a provider, a category."""

    key: str
    label: str
    count: int
    amount: int
    #: Tips paid with those sales (not part of ``amount``).
    tips: int = 0


class TimeSlot(msgspec.Struct, kw_only=True):
    """A quarter hour or an hour of the night: its UTC start and its local label."""

    start: datetime
    label: str
    count: int
    amount: int


class ProductLine(msgspec.Struct, kw_only=True):
    product_id: int
    name: str
    category: str
    units: int
    amount: int


class CashierFigures(msgspec.Struct, kw_only=True):
    user_id: int
    name: str
    sales_count: int = 0
    sales_total: int = 0
    voids_count: int = 0
    voids_total: int = 0
    #: Tips on the cashier's sales (how many sales carried one, and how much).
    tip_count: int = 0
    tips: int = 0
    #: The cashier's part of the cash differences (at close and at handovers).
    difference: int = 0


class TerminalFigures(msgspec.Struct, kw_only=True):
    """A register's card terminal: its breaker, the agent's last heartbeat, and how its attempts went."""

    register_id: int
    register_code: str
    provider_id: str
    breaker_state: str
    breaker_label: str
    last_heartbeat: datetime | None
    attempts: int = 0
    approved: int = 0
    not_approved: int = 0
    #: Seconds from sending to the approval, on average (None: no approval).
    average_approval_s: float | None = None
    slowest_approval_s: float | None = None

    @property
    def approval_rate(self) -> float | None:
        decided = self.approved + self.not_approved
        return None if decided == 0 else self.approved / decided


class OpenSessionLine(msgspec.Struct, kw_only=True):
    session_id: int
    register_code: str
    cashier_name: str
    status: str
    opened_at: datetime
    ticket_count: int
    sales_total: int


class DoubtLine(msgspec.Struct, kw_only=True):
    attempt_id: int
    sale_id: int
    register_code: str
    provider_id: str
    amount: int
    ticket: str
    state: str
    created_at: datetime


class FallbackMark(msgspec.Struct, kw_only=True):
    at: datetime
    register_code: str
    from_provider: str
    to_provider: str
    reason: str
    override: bool


class PastNight(msgspec.Struct, kw_only=True):
    """A previous jornada of the same weekday: its whole night, and up to the same time of the night."""

    jornada_id: int
    label_date: str
    total: int
    tickets: int
    total_so_far: int


class NightCurve(msgspec.Struct, kw_only=True):
    """A night's sales added up hour by hour: (hour of the night, total up to the end of that hour)."""

    label: str
    points: list[tuple[int, int]]


class JornadaFigures(msgspec.Struct, kw_only=True):
    jornada: JornadaOut
    timezone: str
    generated_at: datetime
    session_id: int | None = None  # figures of one session only
    total: int = 0
    tickets: int = 0
    courtesy_total: int = 0
    #: Tips (not revenue, apart from ``total``): how many sales carried one, and how much.
    tip_count: int = 0
    tip_total: int = 0
    by_register: list[Figure] = []
    by_method: list[Figure] = []
    by_provider: list[Figure] = []
    quarters: list[TimeSlot] = []
    hours: list[TimeSlot] = []
    products: list[ProductLine] = []
    categories: list[Figure] = []
    cashiers: list[CashierFigures] = []
    terminals: list[TerminalFigures] = []
    terminal_window: timedelta | None = None
    open_sessions: list[OpenSessionLine] = []
    in_doubt: list[DoubtLine] = []
    fallbacks: list[FallbackMark] = []
    incidents: list[IncidentOut] = []
    past_nights: list[PastNight] = []
    #: Tonight and the previous nights of the same weekday, added up hour by hour (the comparison chart).
    night_curves: list[NightCurve] = []

    @property
    def average_ticket(self) -> int:
        return 0 if self.tickets == 0 else (self.total + self.tickets // 2) // self.tickets

    @property
    def open_incidents(self) -> list[IncidentOut]:
        return [i for i in self.incidents if not i.resolved]


async def current_figures(s: AsyncSession, venue_id: int, *, now: datetime | None = None) -> JornadaFigures | None:
    """The live dashboard: the venue's open jornada (None when there is none)."""
    jornada = await s.scalar(select(Jornada).where(Jornada.venue_id == venue_id, Jornada.status == "open"))
    if jornada is None:
        return None
    return await _figures(s, venue_id, jornada_out(jornada), None, now=now or utcnow(), terminal_window=TERMINAL_WINDOW)


async def jornada_figures(
    s: AsyncSession,
    venue_id: int,
    jornada_id: int,
    *,
    now: datetime | None = None,
    terminal_window: timedelta | None = None,
) -> JornadaFigures:
    """A jornada's figures. ``terminal_window``: terminal figures of that last stretch only (the live view);
    None: of the whole jornada (the report)."""
    jornada = await get_jornada(s, venue_id, jornada_id)
    return await _figures(s, venue_id, jornada, None, now=now or utcnow(), terminal_window=terminal_window)


async def session_figures(s: AsyncSession, venue_id: int, session_id: int) -> JornadaFigures:
    """The figures of one register session (its report)."""
    jornada_id = await s.scalar(
        select(CashSession.jornada_id).where(CashSession.id == session_id, CashSession.venue_id == venue_id)
    )
    if jornada_id is None:
        raise NotFound("La sesión de caja no existe.", code="session.not_found")
    jornada = await get_jornada(s, venue_id, jornada_id)
    return await _figures(s, venue_id, jornada, session_id, now=utcnow(), terminal_window=None)


async def _figures(
    s: AsyncSession,
    venue_id: int,
    jornada: JornadaOut,
    session_id: int | None,
    *,
    now: datetime,
    terminal_window: timedelta | None,
) -> JornadaFigures:
    tz = await s.scalar(select(Venue.timezone).where(Venue.id == venue_id)) or "America/Santiago"
    names = await user_names(s, venue_id)
    registers = (
        await s.execute(
            select(
                CashRegister.id,
                CashRegister.code,
                CashRegister.active,
                CashRegister.primary_provider,
                CashRegister.agent_last_seen_at,
            ).where(CashRegister.venue_id == venue_id)
        )
    ).all()
    codes = {r.id: r.code for r in registers}
    sessions_q = select(CashSession).where(CashSession.venue_id == venue_id, CashSession.jornada_id == jornada.id)
    if session_id is not None:
        sessions_q = sessions_q.where(CashSession.id == session_id)
    sessions = list(await s.scalars(sessions_q.order_by(CashSession.opened_at)))
    session_ids = [x.id for x in sessions]
    out = JornadaFigures(jornada=jornada, timezone=tz, generated_at=now, session_id=session_id)

    # Totals and the per-register breakdown: the sessions' running totals.
    out.total = sum(x.sales_total for x in sessions)
    out.tickets = sum(x.ticket_count for x in sessions)
    out.courtesy_total = sum(x.courtesy_total for x in sessions)
    per_register: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for x in sessions:
        per_register[x.register_id][0] += x.ticket_count
        per_register[x.register_id][1] += x.sales_total
        per_register[x.register_id][2] += x.tip_total
    out.by_register = sorted(
        (
            Figure(key=str(codes.get(r, r)), label=str(codes.get(r, r)), count=c, amount=a, tips=t)
            for r, (c, a, t) in per_register.items()
        ),
        key=lambda f: f.key,
    )

    # Methods, providers, cashiers and the time line: the quarter-hour totals (a few rows per session).
    q = select(
        SalesQuarter.quarter,
        SalesQuarter.cashier_id,
        SalesQuarter.provider_id,
        SalesQuarter.method,
        SalesQuarter.count,
        SalesQuarter.amount,
        SalesQuarter.tip_count,
        SalesQuarter.tip,
    ).where(SalesQuarter.jornada_id == jornada.id)
    if session_id is not None:
        q = q.where(SalesQuarter.session_id == session_id)
    rows = (await s.execute(q)).all()
    methods: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    providers: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    quarters: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    cashiers: dict[int, CashierFigures] = {}

    def cashier(user_id: int) -> CashierFigures:
        if user_id not in cashiers:
            cashiers[user_id] = CashierFigures(user_id=user_id, name=names.get(user_id, f"usuario #{user_id}"))
        return cashiers[user_id]

    for quarter, cashier_id, provider_id, method, count, amount, tip_count, tip in rows:
        for entry in (methods[method], providers[provider_id]):
            entry[0] += count
            entry[1] += amount
            entry[2] += tip
        entry = quarters[quarter]
        entry[0] += count
        entry[1] += amount
        line = cashier(cashier_id)
        line.sales_count += count
        line.sales_total += amount
        line.tip_count += tip_count
        line.tips += tip
        out.tip_count += tip_count
        out.tip_total += tip
    out.by_method = [
        Figure(key=k, label=METHOD_LABELS.get(k, k), count=c, amount=a, tips=t)
        for k, (c, a, t) in sorted(methods.items())
        if c or a or t
    ]
    out.by_provider = [
        Figure(key=k, label=METHOD_LABELS.get(k, k), count=c, amount=a, tips=t)
        for k, (c, a, t) in sorted(providers.items())
        if c or a or t
    ]
    out.quarters, out.hours = time_line(quarters, tz)

    out.products, out.categories = await _products(s, jornada.id, session_id)
    await _cashier_controls(s, session_ids, sessions, cashier)
    out.cashiers = sorted(cashiers.values(), key=lambda c: c.name)

    card_registers = [
        (r.id, r.primary_provider, r.agent_last_seen_at) for r in registers if r.active and r.primary_provider
    ]
    out.terminals = await _terminals(
        s, venue_id, jornada.id, session_id, codes, card_registers, now=now, window=terminal_window
    )
    out.terminal_window = terminal_window
    out.open_sessions = [
        OpenSessionLine(
            session_id=x.id,
            register_code=str(codes.get(x.register_id, "?")),
            cashier_name=names.get(x.cashier_id, ""),
            status=x.status,
            opened_at=x.opened_at,
            ticket_count=x.ticket_count,
            sales_total=x.sales_total,
        )
        for x in sessions
        if x.status != "closed"
    ]
    out.in_doubt = await _in_doubt(s, venue_id, session_ids, codes)
    out.fallbacks = await _fallbacks(s, venue_id, session_ids, sessions, codes)
    if session_id is None:
        out.incidents = await list_incidents(s, venue_id, jornada_id=jornada.id)
        out.past_nights, out.night_curves = await _past_nights(s, venue_id, jornada, tz, now, out.quarters)
    else:
        out.incidents = await list_incidents(s, venue_id, session_id=session_id)
    return out


def time_line(quarters: dict[int, list[int]], tz: str) -> tuple[list[TimeSlot], list[TimeSlot]]:
    """Quarter hours from the first sale to the last (empty ones included) and the hours they make, in the
    order they happened. A local label that happens twice in a night (the hour repeated when daylight saving
    time ends) carries its UTC offset, so both stay apart."""
    used = [q for q, (c, a) in quarters.items() if c or a]
    if not used:
        return [], []
    first, last = min(used), max(used)
    slots = [(quarter_start(q), quarters.get(q, [0, 0])) for q in range(first, last + 1)]
    quarter_lines = _labelled([(start, c, a) for start, (c, a) in slots], tz)
    hours: dict[datetime, list[int]] = {}
    for start, (c, a) in slots:
        local = to_local(start, tz)
        hour = start - timedelta(minutes=local.minute)
        entry = hours.setdefault(hour, [0, 0])
        entry[0] += c
        entry[1] += a
    hour_lines = _labelled([(start, c, a) for start, (c, a) in hours.items()], tz)
    return quarter_lines, hour_lines


def _labelled(slots: list[tuple[datetime, int, int]], tz: str) -> list[TimeSlot]:
    labels = [to_local(start, tz).strftime("%H:%M") for start, _, _ in slots]
    repeated = {label for label in labels if labels.count(label) > 1}
    out = []
    for (start, count, amount), label in zip(slots, labels, strict=True):
        if label in repeated:
            offset = to_local(start, tz).strftime("%z")
            label = f"{label} ({offset[:3]})"
        out.append(TimeSlot(start=start, label=label, count=count, amount=amount))
    return out


async def _products(s: AsyncSession, jornada_id: int, session_id: int | None) -> tuple[list[ProductLine], list[Figure]]:
    q = (
        select(
            ProductSales.product_id,
            Product.name,
            Category.name,
            func.sum(ProductSales.units),
            func.sum(ProductSales.amount),
        )
        .outerjoin(Product, Product.id == ProductSales.product_id)
        .outerjoin(Category, Category.id == Product.category_id)
        .where(ProductSales.jornada_id == jornada_id)
        .group_by(ProductSales.product_id, Product.name, Category.name)
    )
    if session_id is not None:
        q = q.where(ProductSales.session_id == session_id)
    lines = [
        ProductLine(
            product_id=p,
            name=name or ("Monto libre" if p == FREE_AMOUNT else f"producto #{p}"),
            category=category or "Sin categoría",
            units=int(units or 0),
            amount=int(amount or 0),
        )
        for p, name, category, units, amount in (await s.execute(q)).all()
        if units or amount
    ]
    lines.sort(key=lambda line: (-line.amount, line.name))
    categories: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        categories[line.category][0] += line.units
        categories[line.category][1] += line.amount
    return lines, [
        Figure(key=k, label=k, count=u, amount=a)
        for k, (u, a) in sorted(categories.items(), key=lambda kv: (-kv[1][1], kv[0]))
    ]


async def _cashier_controls(s: AsyncSession, session_ids: list[int], sessions: list[CashSession], cashier: Any) -> None:
    """Voids (by who voided, as in the controls report) and differences (each part on who caused it)."""
    if not session_ids:
        return
    voided = await s.execute(
        select(Sale.cancelled_by, func.count(), func.coalesce(func.sum(Sale.total), 0))
        .where(Sale.session_id.in_(session_ids), Sale.status == "cancelled", Sale.cancelled_by.is_not(None))
        .group_by(Sale.cancelled_by)
    )
    for voider, count, total in voided:
        line = cashier(voider)
        line.voids_count, line.voids_total = int(count), int(total)
    for x in sessions:
        if x.difference is not None:
            cashier(x.cashier_id).difference += x.difference - (x.handover_difference or 0)
    handovers = await s.execute(
        select(SessionHandover.from_user_id, SessionHandover.difference).where(
            SessionHandover.session_id.in_(session_ids)
        )
    )
    for from_user, difference in handovers:
        cashier(from_user).difference += difference


async def _terminals(
    s: AsyncSession,
    venue_id: int,
    jornada_id: int,
    session_id: int | None,
    codes: dict[int, str],
    registers: list[tuple[int, str, datetime | None]],
    *,
    now: datetime,
    window: timedelta | None,
) -> list[TerminalFigures]:
    """``registers``: (id, primary provider, agent's last heartbeat) of the active registers that take cards."""
    breakers = {
        r.register_id: r.state
        for r in await s.scalars(select(BreakerState).where(BreakerState.venue_id == venue_id))
        if r.register_id is not None
    }
    out = {
        register_id: TerminalFigures(
            register_id=register_id,
            register_code=str(codes.get(register_id, "?")),
            provider_id=str(provider),
            breaker_state=breakers.get(register_id, breaker.CLOSED),
            breaker_label=breaker.LABELS.get(breakers.get(register_id, breaker.CLOSED), ""),
            last_heartbeat=seen,
        )
        for register_id, provider, seen in registers
    }
    a = PaymentAttempt
    waited = _seconds_between(func.coalesce(a.sent_at, a.created_at), a.finished_at, s.get_bind().dialect.name)
    approved = a.state.in_(lifecycle.PAID) & a.finished_at.is_not(None)
    q = select(
        a.register_id,
        func.count(),
        func.count(case((a.state.in_(lifecycle.PAID), 1))),
        func.count(case((a.state.in_(NOT_APPROVED), 1))),
        func.avg(case((approved, waited))),
        func.max(case((approved, waited))),
    ).where(a.venue_id == venue_id, a.role == "primary")
    if window is not None:
        q = q.where(a.created_at >= now - window)
    if session_id is not None:
        q = q.where(a.session_id == session_id)
    elif window is None:
        q = q.where(a.session_id.in_(select(CashSession.id).where(CashSession.jornada_id == jornada_id)))
    for register_id, attempts, paid, not_paid, average, slowest in (await s.execute(q.group_by(a.register_id))).all():
        if register_id in out:
            line = out[register_id]
            line.attempts, line.approved, line.not_approved = int(attempts), int(paid), int(not_paid)
            line.average_approval_s = None if average is None else max(0.0, round(float(average), 3))
            line.slowest_approval_s = None if slowest is None else max(0.0, round(float(slowest), 3))
    return sorted(out.values(), key=lambda t: t.register_code)


async def _in_doubt(s: AsyncSession, venue_id: int, session_ids: list[int], codes: dict[int, str]) -> list[DoubtLine]:
    a = PaymentAttempt
    rows = await s.scalars(
        select(a)
        .where(a.venue_id == venue_id, a.state.in_(lifecycle.DOUBTFUL), a.session_id.in_(session_ids))
        .order_by(a.id)
    )
    return [
        DoubtLine(
            attempt_id=x.id,
            sale_id=x.sale_id,
            register_code=str(codes.get(x.register_id, "?")),
            provider_id=x.provider_id,
            amount=x.amount,
            ticket=x.ticket,
            state=x.state,
            created_at=x.created_at,
        )
        for x in rows
    ]


async def _fallbacks(
    s: AsyncSession, venue_id: int, session_ids: list[int], sessions: list[CashSession], codes: dict[int, str]
) -> list[FallbackMark]:
    register_of = {x.id: x.register_id for x in sessions}
    e = FallbackEvent
    rows = await s.execute(  # columns, not entities: a bad night has hundreds
        select(e.created_at, e.session_id, e.from_provider, e.to_provider, e.reason, e.override)
        .where(e.venue_id == venue_id, e.session_id.in_(session_ids))
        .order_by(e.created_at, e.id)
    )
    return [
        FallbackMark(
            at=at,
            register_code=str(codes.get(register_of.get(session_id, 0), "?")),
            from_provider=from_provider,
            to_provider=to_provider,
            reason=reason,
            override=override,
        )
        for at, session_id, from_provider, to_provider, reason, override in rows
    ]


async def _past_nights(
    s: AsyncSession, venue_id: int, jornada: JornadaOut, tz: str, now: datetime, quarters: list[TimeSlot]
) -> tuple[list[PastNight], list[NightCurve]]:
    """The previous jornadas of the same weekday: whole-night totals, totals up to the same time of the night
    as now (for an open jornada) or as its close, and each night's sales added up hour by hour of the night
    (tonight's from its own quarters) for the comparison chart."""
    candidates = list(
        await s.scalars(
            select(Jornada)
            .where(Jornada.venue_id == venue_id, Jornada.id != jornada.id, Jornada.label_date < jornada.label_date)
            .order_by(Jornada.label_date.desc())
            .limit(COMPARE_WEEKS * 7)
        )
    )
    same_day = [j for j in candidates if j.label_date.weekday() == jornada.label_date.weekday()][:COMPARE_WEEKS]
    if not same_day:
        return [], []
    ids = [j.id for j in same_day]
    totals = {
        j: (int(t or 0), int(c or 0))
        for j, t, c in (
            await s.execute(
                select(CashSession.jornada_id, func.sum(CashSession.sales_total), func.sum(CashSession.ticket_count))
                .where(CashSession.jornada_id.in_(ids))
                .group_by(CashSession.jornada_id)
            )
        ).all()
    }
    # "So far": this night's elapsed local time of night, laid on each earlier night's date.
    until = jornada.closed_at or now
    local_until = to_local(until, tz)
    into_night = local_until.replace(tzinfo=None) - datetime.combine(jornada.label_date, datetime.min.time())
    cuts = {}
    for j in same_day:
        cut = datetime.combine(j.label_date, datetime.min.time()) + into_night
        cuts[j.id] = quarter_of(cut.replace(tzinfo=zone(tz)).astimezone(UTC))  # that night's offset, not tonight's
    per_quarter: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for jornada_id, quarter, amount in (
        await s.execute(
            select(SalesQuarter.jornada_id, SalesQuarter.quarter, func.sum(SalesQuarter.amount))
            .where(SalesQuarter.jornada_id.in_(ids))
            .group_by(SalesQuarter.jornada_id, SalesQuarter.quarter)
        )
    ).all():
        per_quarter[jornada_id].append((int(quarter), int(amount or 0)))
    nights = [
        PastNight(
            jornada_id=j.id,
            label_date=jornada_out(j).label,
            total=totals.get(j.id, (0, 0))[0],
            tickets=totals.get(j.id, (0, 0))[1],
            total_so_far=sum(a for q, a in per_quarter[j.id] if q < cuts[j.id]),
        )
        for j in same_day
    ]
    tonight = [(quarter_of(x.start), x.amount) for x in quarters]
    curves = [NightCurve(label=f"Esta ({jornada.label})", points=night_curve(tonight, jornada.label_date, tz))]
    curves += [
        NightCurve(label=jornada_out(j).label, points=night_curve(per_quarter[j.id], j.label_date, tz))
        for j in same_day
    ]
    return nights, curves


def night_curve(quarters: list[tuple[int, int]], label_date: date, tz: str) -> list[tuple[int, int]]:
    """(quarter, amount) of a night → (hour of the night, sales added up to the end of that hour): the hour of
    the night is the local hour counted from the midnight that starts the jornada's date (22 is 22:00, 25 is
    01:00 the next morning), so nights of different dates line up by the clock their customers saw."""
    midnight = datetime.combine(label_date, datetime.min.time())
    per_hour: dict[int, int] = defaultdict(int)
    for quarter, amount in quarters:
        local = to_local(quarter_start(quarter), tz).replace(tzinfo=None)
        per_hour[int((local - midnight).total_seconds() // 3600)] += amount
    if not per_hour:
        return []
    points, running = [], 0
    for hour in range(min(per_hour), max(per_hour) + 1):
        running += per_hour.get(hour, 0)
        points.append((hour, running))
    return points


def _seconds_between(start: Any, end: Any, dialect: str) -> Any:
    """Seconds from ``start`` to ``end`` in SQL (SQLite keeps instants as text: through julianday)."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0
