"""Session and jornada reports (Z report), the attempt log, and CSV export.

Totals come from the sessions' running totals (kept in each sale's transaction), so a report costs one
row per session, not one per sale.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from ..audit.service import IncidentOut, list_incidents
from ..errors import NotFound
from ..jornadas.service import JornadaOut, get_jornada
from ..money import format_clp
from ..offline.service import LateSale, late_sales
from ..payments import lifecycle, terminal_ops
from ..payments.models import PaymentAttempt
from ..registers.models import CashRegister
from ..sessions.models import CashSession, SessionTotal
from ..sessions.service import SessionOut, expected_cash, list_cash_movements, list_fallback_events, session_out
from ..users.models import User
from .controls import Controls, controls

SUMMED = (
    "ticket_count",
    "sales_total",
    "cash_sales_count",
    "cash_sales_total",
    "card_sales_total",
    "courtesy_count",
    "courtesy_total",
    "cancelled_count",
    "cancelled_total",
    "cash_in_total",
    "cash_out_total",
    "primary_count",
    "backup_count",
    "discount_count",
    "discount_total",
    "tip_count",
    "tip_total",
    "cash_tip_total",
)


class TotalLine(msgspec.Struct, kw_only=True):
    key: str
    count: int
    amount: int


class AttemptLine(msgspec.Struct, kw_only=True):
    id: int
    sale_id: int
    session_id: int
    register_code: str
    provider_id: str
    role: str
    amount: int
    ticket: str
    state: str
    classification: str | None
    response_code: str | None
    response_message: str
    card_brand: str | None
    card_type: str | None
    last4: str | None
    authorization_code: str | None
    created_at: datetime
    finished_at: datetime | None
    duration_s: float | None


class SessionSummary(msgspec.Struct, kw_only=True):
    session: SessionOut
    register_code: str
    register_name: str
    cashier_name: str  # who opened the session
    expected_cash_now: int
    holder_name: str = ""  # who holds (or held at the close) the drawer, after any handover


class SessionReport(msgspec.Struct, kw_only=True):
    summary: SessionSummary
    by_provider: list[TotalLine]
    by_method: list[TotalLine]
    cash_movements: list[dict[str, Any]]
    fallback_events: list[dict[str, Any]]
    incidents: list[IncidentOut]
    attempts_by_outcome: list[dict[str, Any]]
    controls: Controls = msgspec.field(default_factory=Controls)
    #: Offline sales that arrived after the session was closed (not in its totals).
    late_offline_sales: list[LateSale] = []

    @property
    def closed_without_offline(self) -> list[IncidentOut]:
        return [i for i in self.incidents if i.kind == "offline_unsynced_at_close"]


class ResolutionLine(msgspec.Struct, kw_only=True):
    """A payment in doubt that a supervisor resolved by hand, with the evidence given."""

    attempt_id: int
    sale_id: int
    register_code: str
    provider_id: str
    ticket: str
    amount: int
    charged: bool
    voucher: str
    terminal_totals: str
    note: str
    by: str
    at: datetime | None


class ReturnLine(msgspec.Struct, kw_only=True):
    """A duplicate charge: returned (how) or still to return."""

    attempt_id: int
    sale_id: int
    register_code: str
    provider_id: str
    ticket: str
    amount: int
    state: str
    how: str


class JornadaReport(msgspec.Struct, kw_only=True):
    jornada: JornadaOut
    sessions: list[SessionSummary]
    totals: dict[str, int]
    by_provider: list[TotalLine]
    by_method: list[TotalLine]
    differences_total: int
    fallback_events: list[dict[str, Any]]
    incidents: list[IncidentOut]
    attempts_by_outcome: list[dict[str, Any]]
    controls: Controls = msgspec.field(default_factory=Controls)
    manual_resolutions: list[ResolutionLine] = []
    duplicate_returns: list[ReturnLine] = []
    terminal_checks: list[Any] = []
    batch_closes: list[Any] = []
    #: Offline sales that arrived after their session was closed (not in any total).
    late_offline_sales: list[LateSale] = []

    @property
    def closed_without_offline(self) -> list[IncidentOut]:
        """Sessions closed without the unsynced sales of a device that did not come back."""
        return [i for i in self.incidents if i.kind == "offline_unsynced_at_close"]


async def _summaries(s: AsyncSession, q: Select[CashSession]) -> list[SessionSummary]:
    holder = aliased(User)
    rows = (
        await s.execute(
            q.add_columns(CashRegister.code, CashRegister.name, User.display_name, holder.display_name)
            .join(CashRegister, CashRegister.id == CashSession.register_id)
            .join(User, User.id == CashSession.opened_by)
            .join(holder, holder.id == CashSession.cashier_id)
            .order_by(CashRegister.code, CashSession.opened_at)
        )
    ).all()
    return [
        SessionSummary(
            session=session_out(r[0]),
            register_code=r[1],
            register_name=r[2],
            cashier_name=r[3],
            holder_name=r[4],
            expected_cash_now=expected_cash(r[0]),
        )
        for r in rows
    ]


async def _totals(s: AsyncSession, dimension: str, session_filter: Select[int]) -> list[TotalLine]:
    """Totals by provider or method: card sales from session_totals, cash from the sessions' columns."""
    rows = (
        await s.execute(
            select(SessionTotal.key, func.sum(SessionTotal.count), func.sum(SessionTotal.amount))
            .where(SessionTotal.dimension == dimension, SessionTotal.session_id.in_(session_filter))
            .group_by(SessionTotal.key)
            .order_by(SessionTotal.key)
        )
    ).all()
    lines = [TotalLine(key=k, count=int(c or 0), amount=int(a or 0)) for k, c, a in rows if c or a]
    cash = (
        await s.execute(
            select(func.sum(CashSession.cash_sales_count), func.sum(CashSession.cash_sales_total)).where(
                CashSession.id.in_(session_filter)
            )
        )
    ).first()
    if cash and (cash[0] or cash[1]):
        lines.append(TotalLine(key="cash", count=int(cash[0] or 0), amount=int(cash[1] or 0)))
    return sorted(lines, key=lambda line: line.key)


async def _attempts_by_outcome(s: AsyncSession, session_filter: Select[int]) -> list[dict[str, Any]]:
    rows = (
        await s.execute(
            select(PaymentAttempt.provider_id, PaymentAttempt.state, func.count(), func.sum(PaymentAttempt.amount))
            .where(PaymentAttempt.session_id.in_(session_filter))
            .group_by(PaymentAttempt.provider_id, PaymentAttempt.state)
            .order_by(PaymentAttempt.provider_id, PaymentAttempt.state)
        )
    ).all()
    return [{"provider_id": p, "state": st, "count": int(c), "amount": int(a or 0)} for p, st, c, a in rows]


async def session_report(s: AsyncSession, venue_id: int, session_id: int) -> SessionReport:
    summaries = await _summaries(
        s, select(CashSession).where(CashSession.id == session_id, CashSession.venue_id == venue_id)
    )
    if not summaries:
        raise NotFound("La sesión de caja no existe.", code="session.not_found")
    ids = select(CashSession.id).where(CashSession.id == session_id)
    return SessionReport(
        summary=summaries[0],
        by_provider=await _totals(s, "provider", ids),
        by_method=await _totals(s, "method", ids),
        cash_movements=await list_cash_movements(s, venue_id, session_id),
        fallback_events=await list_fallback_events(s, venue_id, session_id=session_id),
        incidents=await list_incidents(s, venue_id, session_id=session_id),
        attempts_by_outcome=await _attempts_by_outcome(s, ids),
        controls=await controls(s, venue_id, ids, jornada_id=summaries[0].session.jornada_id),
        late_offline_sales=await late_sales(s, venue_id, ids),
    )


async def jornada_report(s: AsyncSession, venue_id: int, jornada_id: int) -> JornadaReport:
    jornada = await get_jornada(s, venue_id, jornada_id)
    summaries = await _summaries(
        s, select(CashSession).where(CashSession.jornada_id == jornada_id, CashSession.venue_id == venue_id)
    )
    totals = {name: sum(getattr(x.session, name) for x in summaries) for name in SUMMED}
    ids = select(CashSession.id).where(CashSession.jornada_id == jornada_id, CashSession.venue_id == venue_id)
    return JornadaReport(
        jornada=jornada,
        sessions=summaries,
        totals=totals,
        by_provider=await _totals(s, "provider", ids),
        by_method=await _totals(s, "method", ids),
        differences_total=sum(x.session.difference or 0 for x in summaries),
        fallback_events=await list_fallback_events(s, venue_id, jornada_id=jornada_id),
        incidents=await list_incidents(s, venue_id, jornada_id=jornada_id),
        attempts_by_outcome=await _attempts_by_outcome(s, ids),
        controls=await controls(s, venue_id, ids, jornada_id=jornada_id),
        manual_resolutions=await _resolutions(s, ids),
        duplicate_returns=await _returns(s, ids),
        terminal_checks=await terminal_ops.list_checks(s, venue_id, jornada_id=jornada_id),
        batch_closes=await terminal_ops.list_closes(s, venue_id, jornada_id=jornada_id),
        late_offline_sales=await late_sales(s, venue_id, ids),
    )


async def _names(s: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict((await s.execute(select(User.id, User.display_name).where(User.id.in_(ids)))).all())


async def _resolutions(s: AsyncSession, session_filter: Select[int]) -> list[ResolutionLine]:
    rows = (
        await s.execute(
            select(PaymentAttempt, CashRegister.code)
            .join(CashRegister, CashRegister.id == PaymentAttempt.register_id)
            .where(PaymentAttempt.session_id.in_(session_filter), PaymentAttempt.resolved_by.is_not(None))
            .order_by(PaymentAttempt.id)
        )
    ).all()
    names = await _names(s, {a.resolved_by for a, _ in rows if a.resolved_by})
    out = []
    for a, code in rows:
        r = (a.details or {}).get("resolution") or {}
        at = r.get("at")
        out.append(
            ResolutionLine(
                attempt_id=a.id,
                sale_id=a.sale_id,
                register_code=code,
                provider_id=a.provider_id,
                ticket=a.ticket,
                amount=a.amount,
                charged=bool(r.get("charged")),
                voucher=str(r.get("voucher") or ""),
                terminal_totals=str(r.get("terminal_totals") or ""),
                note=str(r.get("note") or ""),
                by=names.get(a.resolved_by or 0, ""),
                at=a.resolved_at or (datetime.fromisoformat(at) if at else None),
            )
        )
    return out


async def _returns(s: AsyncSession, session_filter: Select[int]) -> list[ReturnLine]:
    rows = (
        await s.execute(
            select(PaymentAttempt, CashRegister.code)
            .join(CashRegister, CashRegister.id == PaymentAttempt.register_id)
            .where(
                PaymentAttempt.session_id.in_(session_filter),
                (PaymentAttempt.state == lifecycle.REFUND_DUE) | (PaymentAttempt.classification == "duplicate"),
            )
            .order_by(PaymentAttempt.id)
        )
    ).all()
    out = []
    for a, code in rows:
        d = a.details or {}
        if a.state == lifecycle.REFUND_DUE:
            how = "Por devolver" + (f" ({d['refund_error']})" if d.get("refund_error") else "")
        elif d.get("refunded_automatically"):
            how = "Devuelto por el proveedor automáticamente"
        elif d.get("refund_manual"):
            how = "Devuelto a mano: " + str(d.get("refund_note") or "")
        else:
            how = "Devuelto por el proveedor"
        out.append(
            ReturnLine(
                attempt_id=a.id,
                sale_id=a.sale_id,
                register_code=code,
                provider_id=a.provider_id,
                ticket=a.ticket,
                amount=a.amount,
                state=a.state,
                how=how,
            )
        )
    return out


async def attempt_log(
    s: AsyncSession,
    venue_id: int,
    *,
    jornada_id: int | None = None,
    session_id: int | None = None,
    provider_id: str | None = None,
    state: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[AttemptLine]:
    q = (
        select(PaymentAttempt, CashRegister.code)
        .join(CashRegister, CashRegister.id == PaymentAttempt.register_id)
        .where(PaymentAttempt.venue_id == venue_id)
    )
    if session_id is not None:
        q = q.where(PaymentAttempt.session_id == session_id)
    if jornada_id is not None:
        q = q.where(PaymentAttempt.session_id.in_(select(CashSession.id).where(CashSession.jornada_id == jornada_id)))
    if provider_id:
        q = q.where(PaymentAttempt.provider_id == provider_id)
    if state:
        q = q.where(PaymentAttempt.state == state)
    rows = (await s.execute(q.order_by(PaymentAttempt.id.desc()).limit(min(limit, 1000)).offset(offset))).all()
    out = []
    for a, code in rows:
        duration = (a.finished_at - a.created_at).total_seconds() if a.finished_at else None
        out.append(
            AttemptLine(
                id=a.id,
                sale_id=a.sale_id,
                session_id=a.session_id,
                register_code=code,
                provider_id=a.provider_id,
                role=a.role,
                amount=a.amount,
                ticket=a.ticket,
                state=a.state,
                classification=a.classification,
                response_code=a.response_code,
                response_message=a.response_message,
                card_brand=a.card_brand,
                card_type=a.card_type,
                last4=a.last4,
                authorization_code=a.authorization_code,
                created_at=a.created_at,
                finished_at=a.finished_at,
                duration_s=duration,
            )
        )
    return out


def _safe_cell(value: object) -> str:
    """CSV cells that a spreadsheet would run as a formula get a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not text.lstrip("-").isdigit() else text


def jornada_csv(report: JornadaReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";")
    w.writerow(
        [
            "jornada",
            "caja",
            "nombre_caja",
            "cajero",
            "estado",
            "apertura_utc",
            "cierre_utc",
            "fondo_inicial",
            "tickets",
            "ventas_total",
            "ventas_efectivo",
            "efectivo",
            "tarjeta",
            "cortesias",
            "anuladas",
            "ingresos",
            "retiros",
            "principal",
            "respaldo",
            "efectivo_esperado",
            "efectivo_contado",
            "diferencia",
        ]
    )
    for x in report.sessions:
        c = x.session
        w.writerow(
            [
                _safe_cell(v)
                for v in (
                    report.jornada.label_date.isoformat(),
                    x.register_code,
                    x.register_name,
                    x.cashier_name,
                    c.status,
                    c.opened_at.isoformat(),
                    c.closed_at.isoformat() if c.closed_at else "",
                    c.initial_cash,
                    c.ticket_count,
                    c.sales_total,
                    c.cash_sales_count,
                    c.cash_sales_total,
                    c.card_sales_total,
                    c.courtesy_total,
                    c.cancelled_total,
                    c.cash_in_total,
                    c.cash_out_total,
                    c.primary_count,
                    c.backup_count,
                    c.expected_cash if c.expected_cash is not None else x.expected_cash_now,
                    "" if c.counted_cash is None else c.counted_cash,
                    "" if c.difference is None else c.difference,
                )
            ]
        )
    w.writerow([])
    w.writerow(["proveedor", "ventas", "monto"])
    for t in report.by_provider:
        w.writerow([_safe_cell(t.key), t.count, t.amount])
    k = report.controls
    w.writerow([])
    w.writerow(["cajero", "ventas", "monto", "efectivo", "tarjeta", "anulaciones", "anulado", "retiros", "diferencia"])
    for person in k.cashiers:
        w.writerow(
            [
                _safe_cell(person.name),
                person.sales_count,
                person.sales_total,
                person.cash_total,
                person.card_total,
                person.voids_count,
                person.voids_total,
                person.cash_out_total,
                person.difference,
            ]
        )
    w.writerow([])
    w.writerow(["anulada_utc", "caja", "venta", "monto", "pagada", "motivo", "vendio", "anulo", "autorizo"])
    for v in k.voids:
        w.writerow(
            [
                _safe_cell(x)
                for x in (
                    v.voided_at.isoformat() if v.voided_at else "",
                    v.register_code,
                    v.sale_id,
                    v.total,
                    "si" if v.was_paid else "no",
                    v.reason,
                    v.rung_by,
                    v.voided_by,
                    v.authorized_by or "",
                )
            ]
        )
    return buf.getvalue()


def describe_total(line: TotalLine) -> str:
    return f"{line.key}: {line.count} ventas, {format_clp(line.amount)}"
