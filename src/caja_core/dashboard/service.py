"""The figures of a jornada (or of one session) for the owner's dashboard and the charted reports.

Everything is read from running totals kept in each sale's transaction — the sessions' own columns and the
quarter-hour and product totals of ``dashboard.models`` — and from indexed, bounded reads of the rest (open
sessions, breakers, attempts in doubt, the last 15 minutes of attempts per terminal, fallback events, incidents),
so a night of 200 000 sales costs what a night of 200 does. Instants are UTC; labels are in the venue's zone.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Date, DateTime, Integer, bindparam, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.models import Incident
from ..audit.service import IncidentOut
from ..catalog.models import Category, Product
from ..clock import to_local, utcnow, zone
from ..db.base import UTCDateTime
from ..errors import NotFound
from ..jornadas.models import Jornada
from ..jornadas.service import JornadaOut, get_jornada, jornada_out
from ..payments import breaker, lifecycle
from ..payments.models import BreakerState, PaymentAttempt
from ..registers.models import CashRegister
from ..sales.models import Sale
from ..sessions.models import CashSession, FallbackEvent, SessionHandover
from ..users.models import User
from ..venues.models import Venue
from .models import ProductSales, SalesQuarter
from .rollups import FREE_AMOUNT, quarter_of, quarter_start

#: Terminal figures on the live dashboard cover this last stretch of the night.
TERMINAL_WINDOW = timedelta(minutes=15)  # short enough to show at once a terminal that starts failing
#: Previous jornadas of the same weekday shown for comparison (the most recent, within the last half year).
COMPARE_WEEKS = 4
COMPARE_SPAN_WEEKS = 26
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


class NightPoint(msgspec.Struct, frozen=True):
    """An hour of a night and the sales added up to its end. ``hour`` is the local hour counted from the midnight
    that starts the jornada's date (22 is 22:00, 25 is 01:00 the next morning); ``again`` marks the second pass
    of an hour the clock went back over (the night daylight saving time ends)."""

    hour: int
    total: int
    again: bool = False

    @property
    def slot(self) -> tuple[int, bool]:
        return self.hour, self.again


class NightCurve(msgspec.Struct, kw_only=True):
    """A night's sales added up hour by hour, one point per hour its clock showed, in order."""

    label: str
    points: list[NightPoint]


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


@functools.cache
def _reads(dialect: str, one_session: bool, windowed: bool) -> Reads:
    """The dashboard's reads, built once per kind (a jornada or one session; the terminals of the last stretch
    or of the whole night) with the values as parameters: building the statements costs more than running them.
    Parameters: ``venue_id``, ``jornada_id``, ``session_id``, ``since`` (the terminal window's start) and
    ``weeks`` (the dates of the same weekday in previous weeks)."""
    venue_id = bindparam("venue_id", type_=Integer)
    jornada_id = bindparam("jornada_id", type_=Integer)
    session_id = bindparam("session_id", type_=Integer)
    in_jornada = (CashSession.venue_id == venue_id) & (CashSession.jornada_id == jornada_id)
    if one_session:
        in_jornada &= CashSession.id == session_id
    session_ids = select(CashSession.id).where(in_jornada).scalar_subquery()
    past = (
        select(Jornada.id)
        .where(
            Jornada.venue_id == venue_id,
            Jornada.id != jornada_id,
            Jornada.label_date.in_(bindparam("weeks", expanding=True)),
        )
        .order_by(Jornada.label_date.desc(), Jornada.id.desc())
        .limit(COMPARE_WEEKS)
        .scalar_subquery()
    )
    a = PaymentAttempt
    waited = _seconds_between(func.coalesce(a.sent_at, a.created_at), a.finished_at, dialect)
    approved = a.state.in_(lifecycle.PAID) & a.finished_at.is_not(None)
    terminals = select(
        a.register_id,
        func.count(),
        func.count(case((a.state.in_(lifecycle.PAID), 1))),
        func.count(case((a.state.in_(NOT_APPROVED), 1))),
        func.avg(case((approved, waited))),
        func.max(case((approved, waited))),
    ).where(a.venue_id == venue_id, a.role == "primary")
    if windowed:
        terminals = terminals.where(a.created_at >= bindparam("since", type_=UTCDateTime()))
    if one_session:
        terminals = terminals.where(a.session_id == session_id)
    elif not windowed:
        terminals = terminals.where(a.session_id.in_(session_ids))
    # The quarter-hour totals summed in the database three ways (a few dozen rows, however many sessions).
    q = SalesQuarter
    in_quarters = q.jornada_id == jornada_id
    if one_session:
        in_quarters &= q.session_id == session_id
    sums = (func.sum(q.count), func.sum(q.amount), func.sum(q.tip_count), func.sum(q.tip))
    by_quarter = select(q.quarter, *sums).where(in_quarters).group_by(q.quarter)
    by_payment = select(q.provider_id, q.method, *sums).where(in_quarters).group_by(q.provider_id, q.method)
    by_cashier = select(q.cashier_id, *sums).where(in_quarters).group_by(q.cashier_id)
    products_q = (
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
    if one_session:
        products_q = products_q.where(ProductSales.session_id == session_id)
    incidents_q = select(
        Incident.id,
        Incident.kind,
        Incident.description,
        Incident.created_at,
        Incident.resolved,
        Incident.jornada_id,
        Incident.session_id,
        Incident.register_id,
        Incident.attempt_id,
        Incident.resolution,
    ).where(Incident.venue_id == venue_id)
    incidents_q = (
        incidents_q.where(Incident.session_id == session_id)
        if one_session
        else incidents_q.where(Incident.jornada_id == jornada_id)
    )
    e = FallbackEvent
    queries: dict[str, Any] = dict(  # noqa: C408 - the reads' names, as keywords
        timezone=select(Venue.timezone).where(Venue.id == venue_id),
        users=select(User.id, User.display_name).where(User.venue_id == venue_id),
        registers=select(
            CashRegister.id,
            CashRegister.code,
            CashRegister.active,
            CashRegister.primary_provider,
            CashRegister.agent_last_seen_at,
        ).where(CashRegister.venue_id == venue_id),
        sessions=select(
            CashSession.id,
            CashSession.register_id,
            CashSession.cashier_id,
            CashSession.status,
            CashSession.opened_at,
            CashSession.ticket_count,
            CashSession.sales_total,
            CashSession.courtesy_total,
            CashSession.tip_total,
            CashSession.difference,
            CashSession.handover_difference,
        ).where(in_jornada),
        by_quarter=by_quarter,
        by_payment=by_payment,
        by_cashier=by_cashier,
        products=products_q,
        voids=select(Sale.cancelled_by, func.count(), func.coalesce(func.sum(Sale.total), 0))
        .where(Sale.session_id.in_(session_ids), Sale.status == "cancelled", Sale.cancelled_by.is_not(None))
        .group_by(Sale.cancelled_by),
        handovers=select(SessionHandover.from_user_id, SessionHandover.difference).where(
            SessionHandover.session_id.in_(session_ids)
        ),
        breakers=select(BreakerState.register_id, BreakerState.state).where(
            BreakerState.venue_id == venue_id, BreakerState.register_id.is_not(None)
        ),
        terminals=terminals.group_by(a.register_id),
        in_doubt=select(a.id, a.sale_id, a.register_id, a.provider_id, a.amount, a.ticket, a.state, a.created_at).where(
            a.venue_id == venue_id, a.state.in_(lifecycle.DOUBTFUL), a.session_id.in_(session_ids)
        ),
        fallbacks=select(e.id, e.created_at, e.session_id, e.from_provider, e.to_provider, e.reason, e.override).where(
            e.venue_id == venue_id, e.session_id.in_(session_ids)
        ),
        incidents=incidents_q,
    )
    if not one_session:
        queries.update(
            past=select(Jornada.id, Jornada.label_date).where(Jornada.id.in_(past)),
            past_totals=select(
                CashSession.jornada_id, func.sum(CashSession.sales_total), func.sum(CashSession.ticket_count)
            )
            .where(CashSession.jornada_id.in_(past))
            .group_by(CashSession.jornada_id),
            past_quarters=select(SalesQuarter.jornada_id, SalesQuarter.quarter, func.sum(SalesQuarter.amount))
            .where(SalesQuarter.jornada_id.in_(past))
            .group_by(SalesQuarter.jornada_id, SalesQuarter.quarter),
        )
    return Reads.build(dialect, queries)


async def _figures(
    s: AsyncSession,
    venue_id: int,
    jornada: JornadaOut,
    session_id: int | None,
    *,
    now: datetime,
    terminal_window: timedelta | None,
) -> JornadaFigures:
    reads = _reads(s.get_bind().dialect.name, session_id is not None, terminal_window is not None)
    read = await reads.run(
        s,
        venue_id=venue_id,
        jornada_id=jornada.id,
        session_id=session_id,
        since=now - terminal_window if terminal_window is not None else None,
        weeks=[jornada.label_date - timedelta(weeks=n) for n in range(1, COMPARE_SPAN_WEEKS + 1)],
    )
    tz = next((str(t) for (t,) in read["timezone"] if t), "America/Santiago")
    names = {int(u): str(n) for u, n in read["users"]}
    codes = {r[0]: r[1] for r in read["registers"]}
    sessions = sorted(read["sessions"], key=lambda x: (x[4], x[0]))
    out = JornadaFigures(jornada=jornada, timezone=tz, generated_at=now, session_id=session_id)

    # Totals and the per-register breakdown: the sessions' running totals.
    per_register: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for _, register_id, _, _, _, tickets, sales_total, courtesy, tips, _, _ in sessions:
        out.total += sales_total
        out.tickets += tickets
        out.courtesy_total += courtesy
        per_register[register_id][0] += tickets
        per_register[register_id][1] += sales_total
        per_register[register_id][2] += tips
    out.by_register = sorted(
        (
            Figure(key=str(codes.get(r, r)), label=str(codes.get(r, r)), count=c, amount=a, tips=t)
            for r, (c, a, t) in per_register.items()
        ),
        key=lambda f: f.key,
    )

    # Methods, providers, cashiers and the time line: the quarter-hour totals (a few rows per session).
    methods: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    providers: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    quarters: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    cashiers: dict[int, CashierFigures] = {}

    def cashier(user_id: int) -> CashierFigures:
        if user_id not in cashiers:
            cashiers[user_id] = CashierFigures(user_id=user_id, name=names.get(user_id, f"usuario #{user_id}"))
        return cashiers[user_id]

    for quarter, count, amount, _, _ in read["by_quarter"]:
        quarters[int(quarter)] = [int(count), int(amount)]
    for provider_id, method, count, amount, _, tip in read["by_payment"]:
        for entry in (methods[method], providers[provider_id]):
            entry[0] += int(count)
            entry[1] += int(amount)
            entry[2] += int(tip)
    for cashier_id, count, amount, tip_count, tip in read["by_cashier"]:
        line = cashier(cashier_id)
        line.sales_count, line.sales_total = int(count), int(amount)
        line.tip_count, line.tips = int(tip_count), int(tip)
        out.tip_count += int(tip_count)
        out.tip_total += int(tip)
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
    out.products, out.categories = _products(read["products"])

    # Voids (by who voided, as in the controls report) and differences (each part on who caused it).
    for voider, count, total in read["voids"]:
        line = cashier(voider)
        line.voids_count, line.voids_total = int(count), int(total)
    for _, _, cashier_id, _, _, _, _, _, _, difference, handover_difference in sessions:
        if difference is not None:
            cashier(cashier_id).difference += difference - (handover_difference or 0)
    for from_user, difference in read["handovers"]:
        cashier(from_user).difference += difference
    out.cashiers = sorted(cashiers.values(), key=lambda c: c.name)

    breakers = dict(read["breakers"])
    out.terminals = _terminals(read["terminals"], read["registers"], breakers, codes)
    out.terminal_window = terminal_window
    out.open_sessions = [
        OpenSessionLine(
            session_id=x[0],
            register_code=str(codes.get(x[1], "?")),
            cashier_name=names.get(x[2], ""),
            status=x[3],
            opened_at=x[4],
            ticket_count=x[5],
            sales_total=x[6],
        )
        for x in sessions
        if x[3] != "closed"
    ]
    out.in_doubt = [
        DoubtLine(
            attempt_id=attempt_id,
            sale_id=sale_id,
            register_code=str(codes.get(register_id, "?")),
            provider_id=provider_id,
            amount=amount,
            ticket=ticket,
            state=state,
            created_at=created_at,
        )
        for attempt_id, sale_id, register_id, provider_id, amount, ticket, state, created_at in sorted(read["in_doubt"])
    ]
    register_of = {x[0]: x[1] for x in sessions}
    out.fallbacks = [
        FallbackMark(
            at=at,
            register_code=str(codes.get(register_of.get(event_session, 0), "?")),
            from_provider=from_provider,
            to_provider=to_provider,
            reason=reason,
            override=bool(override),
        )
        for _, at, event_session, from_provider, to_provider, reason, override in sorted(
            read["fallbacks"], key=lambda x: (x[1], x[0])
        )
    ]
    out.incidents = [
        IncidentOut(
            id=i[0],
            kind=i[1],
            description=i[2],
            created_at=i[3],
            resolved=bool(i[4]),
            jornada_id=i[5],
            session_id=i[6],
            register_id=i[7],
            attempt_id=i[8],
            resolution=i[9],
        )
        for i in sorted(read["incidents"])
    ]
    if session_id is None:
        out.past_nights, out.night_curves = _past_nights(
            jornada, tz, now, out.quarters, read["past"], read["past_totals"], read["past_quarters"]
        )
    return out


def time_line(quarters: dict[int, list[int]], tz: str) -> tuple[list[TimeSlot], list[TimeSlot]]:
    """Quarter hours from the first sale to the last (empty ones included) and the hours they make, in the
    order they happened. A local time that happens twice in a night (the hour repeated when daylight saving
    time ends) is labelled "(2ª)" the second time, so both stay apart."""
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
    return [
        TimeSlot(start=start, label=local_label(to_local(start, tz)), count=count, amount=amount)
        for start, count, amount in slots
    ]


def local_label(local: datetime) -> str:
    """``23:15``, or ``23:15 (2ª)`` the second time the clock shows it (when daylight saving time ends)."""
    return f"{local:%H:%M} (2ª)" if local.fold else f"{local:%H:%M}"


class Reads:
    """Independent reads run together: on PostgreSQL in one round trip (each read's rows come back as one JSON
    array in a single row, and each value is decoded to its column's type: instants, dates), on SQLite one after
    the other in the process. A page polled every few seconds pays for its round trips more than for its
    reading: on a busy server each one waits for the processor twice."""

    def __init__(self, queries: dict[str, Any], combined: Any, decoders: dict[str, list[tuple[int, Any]]]) -> None:
        self.queries, self.combined, self.decoders = queries, combined, decoders

    @classmethod
    def build(cls, dialect: str, queries: dict[str, Any]) -> Reads:
        decoders = {
            name: [(n, d) for n, d in enumerate(_decoder(c.type) for c in q.selected_columns) if d is not None]
            for name, q in queries.items()
        }
        if dialect != "postgresql":
            return cls(queries, None, decoders)
        parts = []
        for name, q in queries.items():
            sub = q.subquery(name)
            rows = func.json_agg(func.json_build_array(*sub.c))
            parts.append(select(func.coalesce(rows, literal_column("'[]'::json"))).scalar_subquery().label(name))
        return cls(queries, select(*parts), decoders)

    async def run(self, s: AsyncSession, **params: Any) -> dict[str, list[tuple[Any, ...]]]:
        if self.combined is None:
            return {name: [tuple(r) for r in (await s.execute(q, params)).all()] for name, q in self.queries.items()}
        row = (await s.execute(self.combined, params)).one()
        out = {}
        for name, value in zip(self.queries, row, strict=True):
            data = json.loads(value) if isinstance(value, str) else value
            decoders = self.decoders[name]
            if decoders:
                for r in data:
                    for n, decode in decoders:
                        r[n] = decode(r[n])
            out[name] = [tuple(r) for r in data]
        return out


def _decoder(column_type: Any) -> Any:
    """How a column's JSON value becomes its Python value (None: as it comes)."""
    if isinstance(column_type, UTCDateTime | DateTime):
        return _instant
    if isinstance(column_type, Date):
        return lambda v: None if v is None else date.fromisoformat(v)
    return None


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    instant = datetime.fromisoformat(value)
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _products(rows: list[tuple[Any, ...]]) -> tuple[list[ProductLine], list[Figure]]:
    lines = [
        ProductLine(
            product_id=p,
            name=name or ("Monto libre" if p == FREE_AMOUNT else f"producto #{p}"),
            category=category or "Sin categoría",
            units=int(units or 0),
            amount=int(amount or 0),
        )
        for p, name, category, units, amount in rows
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


def _terminals(
    rows: list[tuple[Any, ...]],
    registers: list[tuple[Any, ...]],
    breakers: dict[int, str],
    codes: dict[int, str],
) -> list[TerminalFigures]:
    """The active registers that take cards: their breaker, the agent's last heartbeat, and ``rows`` (per
    register: attempts, approved, not approved, average and slowest seconds to an approval)."""
    out = {
        register_id: TerminalFigures(
            register_id=register_id,
            register_code=str(codes.get(register_id, "?")),
            provider_id=str(provider),
            breaker_state=breakers.get(register_id, breaker.CLOSED),
            breaker_label=breaker.LABELS.get(breakers.get(register_id, breaker.CLOSED), ""),
            last_heartbeat=seen,
        )
        for register_id, _, active, provider, seen in registers
        if active and provider
    }
    for register_id, attempts, paid, not_paid, average, slowest in rows:
        if register_id in out:
            line = out[register_id]
            line.attempts, line.approved, line.not_approved = int(attempts), int(paid), int(not_paid)
            line.average_approval_s = None if average is None else max(0.0, round(float(average), 3))
            line.slowest_approval_s = None if slowest is None else max(0.0, round(float(slowest), 3))
    return sorted(out.values(), key=lambda t: t.register_code)


def _past_nights(
    jornada: JornadaOut,
    tz: str,
    now: datetime,
    quarters: list[TimeSlot],
    past: list[tuple[Any, ...]],
    past_totals: list[tuple[Any, ...]],
    past_quarters: list[tuple[Any, ...]],
) -> tuple[list[PastNight], list[NightCurve]]:
    """The previous jornadas of the same weekday (``past``: id, date): whole-night totals, totals up to the same
    time of the night as now (for an open jornada) or as its close, and each night's sales added up hour by
    hour of the night (tonight's from its own quarters) for the comparison chart."""
    same_day = sorted(past, key=lambda j: (j[1], j[0]), reverse=True)
    if not same_day:
        return [], []
    totals = {j: (int(t or 0), int(c or 0)) for j, t, c in past_totals}
    # "So far": this night's elapsed local time of night, laid on each earlier night's date.
    until = jornada.closed_at or now
    local_until = to_local(until, tz)
    into_night = local_until.replace(tzinfo=None) - datetime.combine(jornada.label_date, datetime.min.time())
    cuts = {}
    for jornada_id, label_date in same_day:
        cut = datetime.combine(label_date, datetime.min.time()) + into_night
        cuts[jornada_id] = quarter_of(cut.replace(tzinfo=zone(tz)).astimezone(UTC))  # that night's own offset
    per_quarter: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for jornada_id, quarter, amount in past_quarters:
        per_quarter[jornada_id].append((int(quarter), int(amount or 0)))
    nights = [
        PastNight(
            jornada_id=jornada_id,
            label_date=label_date.strftime("%d-%m-%Y"),
            total=totals.get(jornada_id, (0, 0))[0],
            tickets=totals.get(jornada_id, (0, 0))[1],
            total_so_far=sum(a for q, a in per_quarter[jornada_id] if q < cuts[jornada_id]),
        )
        for jornada_id, label_date in same_day
    ]
    tonight = [(quarter_of(x.start), x.amount) for x in quarters]
    curves = [NightCurve(label=f"Esta ({jornada.label})", points=night_curve(tonight, jornada.label_date, tz))]
    curves += [
        NightCurve(label=label_date.strftime("%d-%m-%Y"), points=night_curve(per_quarter[j], label_date, tz))
        for j, label_date in same_day
    ]
    return nights, curves


def night_curve(quarters: list[tuple[int, int]], label_date: date, tz: str) -> list[NightPoint]:
    """(quarter, amount) of a night → its hours from the first quarter to the last, each with the sales added up
    to its end. Hours are hours of the night (``NightPoint``), so nights of different dates line up by the clock
    their customers saw; an hour the clock skipped (daylight saving time starts) is not there, and one it went
    back over (it ends) is there twice, the second pass ``again``."""
    if not quarters:
        return []
    midnight = datetime.combine(label_date, datetime.min.time())

    def slot(quarter: int) -> tuple[int, bool]:
        local = to_local(quarter_start(quarter), tz)
        return int((local.replace(tzinfo=None) - midnight).total_seconds() // 3600), bool(local.fold)

    per_slot: dict[tuple[int, bool], int] = defaultdict(int)
    for quarter, amount in quarters:
        per_slot[slot(quarter)] += amount
    first, last = min(q for q, _ in quarters), max(q for q, _ in quarters)
    points: list[NightPoint] = []
    running = 0
    for quarter in range(first, last + 1):  # in UTC: every hour the clock showed, in the order it showed them
        hour, again = slot(quarter)
        if points and points[-1].slot == (hour, again):
            continue
        running += per_slot.get((hour, again), 0)
        points.append(NightPoint(hour, running, again))
    return points


def _seconds_between(start: Any, end: Any, dialect: str) -> Any:
    """Seconds from ``start`` to ``end`` in SQL (SQLite keeps instants as text: through julianday)."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0
