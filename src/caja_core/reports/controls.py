"""The controls section of the session, jornada and Z reports: what the owner checks to see where money
could have gone — every void (paid or not, who, when, why and who authorized it), every discount on a paid
sale (who, how much, why, who authorized it), refunds, cash movements, drawer handovers, supervisor
authorizations, manual backup payments, and a per-cashier summary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.models import AuditEvent
from ..payments.models import PaymentAttempt
from ..permissions.models import Authorization
from ..permissions.service import list_authorizations
from ..registers.models import CashRegister
from ..sales.models import Sale, SaleDiscount, SaleItem
from ..sessions.models import CashMovement, CashSession, SessionHandover
from ..users.service import user_names

MANUAL_STATES = ("approved_manual", "verified", "disputed")


class VoidLine(msgspec.Struct, kw_only=True):
    sale_id: int
    session_id: int
    register_code: str
    total: int
    was_paid: bool
    method: str | None
    reason: str
    rung_by: str  # who rang the sale
    voided_by: str
    authorized_by: str | None
    voided_at: datetime | None


class DiscountLine(msgspec.Struct, kw_only=True):
    sale_id: int
    session_id: int
    register_code: str
    item_name: str | None  # the discounted line, None for the whole sale
    kind: str  # percent / amount
    value: int
    amount: int
    reason: str
    by: str
    authorized_by: str | None
    created_at: datetime


class MovementLine(msgspec.Struct, kw_only=True):
    session_id: int
    register_code: str
    kind: str
    amount: int
    reason: str
    by: str
    authorized_by: str | None
    created_at: datetime


class HandoverLine(msgspec.Struct, kw_only=True):
    session_id: int
    register_code: str
    from_name: str
    to_name: str
    authorized_by: str | None
    counted_cash: int
    expected_cash: int
    difference: int
    created_at: datetime


class AuthorizationLine(msgspec.Struct, kw_only=True):
    action: str
    action_label: str
    requested_by: str
    authorized_by: str
    method: str
    session_id: int | None
    sale_id: int | None
    amount: int | None
    created_at: datetime
    used: bool


class PaymentLine(msgspec.Struct, kw_only=True):
    """A refunded card payment, or a manual backup payment typed by the cashier."""

    attempt_id: int
    sale_id: int
    session_id: int
    provider_id: str
    amount: int
    state: str
    authorization_code: str | None
    last4: str | None
    by: str | None
    at: datetime | None


class CashierLine(msgspec.Struct, kw_only=True):
    user_id: int
    name: str
    sales_count: int = 0
    sales_total: int = 0
    cash_total: int = 0
    card_total: int = 0
    voids_count: int = 0
    voids_total: int = 0
    paid_voids_count: int = 0
    cash_out_total: int = 0
    discount_count: int = 0
    discount_total: int = 0
    tip_count: int = 0
    tip_total: int = 0
    cash_tip_total: int = 0
    #: The cashier's part of the cash differences: their own at close and what they handed over short or over.
    difference: int = 0


class Controls(msgspec.Struct, kw_only=True):
    voids: list[VoidLine] = msgspec.field(default_factory=list)
    discounts: list[DiscountLine] = msgspec.field(default_factory=list)
    movements: list[MovementLine] = msgspec.field(default_factory=list)
    handovers: list[HandoverLine] = msgspec.field(default_factory=list)
    authorizations: list[AuthorizationLine] = msgspec.field(default_factory=list)
    refunds: list[PaymentLine] = msgspec.field(default_factory=list)
    manual_payments: list[PaymentLine] = msgspec.field(default_factory=list)
    cashiers: list[CashierLine] = msgspec.field(default_factory=list)

    @property
    def paid_voids(self) -> list[VoidLine]:
        return [v for v in self.voids if v.was_paid]

    @property
    def unpaid_voids(self) -> list[VoidLine]:
        return [v for v in self.voids if not v.was_paid]


async def controls(
    s: AsyncSession, venue_id: int, session_ids: Select[Any], *, jornada_id: int | None = None
) -> Controls:
    """The controls of the sessions selected by ``session_ids`` (one session, or a jornada's)."""
    names = await user_names(s, venue_id)
    codes = {
        row.id: row.code
        for row in await s.execute(select(CashRegister.id, CashRegister.code).where(CashRegister.venue_id == venue_id))
    }
    registers = {
        row.id: row.register_id
        for row in await s.execute(
            select(CashSession.id, CashSession.register_id).where(CashSession.id.in_(session_ids))
        )
    }

    def name(user_id: int | None) -> str | None:
        return None if user_id is None else names.get(user_id, f"usuario #{user_id}")

    def code(session_id: int) -> str:
        return str(codes.get(registers.get(session_id, 0), "?"))

    out = Controls()
    sales = await s.scalars(
        select(Sale)
        .where(Sale.venue_id == venue_id, Sale.session_id.in_(session_ids), Sale.status == "cancelled")
        .order_by(Sale.cancelled_at, Sale.id)
    )
    out.voids = [
        VoidLine(
            sale_id=sale.id,
            session_id=sale.session_id,
            register_code=code(sale.session_id),
            total=sale.total,
            was_paid=sale.paid_at is not None,
            method=sale.payment_method,
            reason=sale.cancel_reason,
            rung_by=name(sale.cashier_id) or "",
            voided_by=name(sale.cancelled_by) or "",
            authorized_by=name(sale.cancel_authorized_by),
            voided_at=sale.cancelled_at,
        )
        for sale in sales
    ]
    given = await s.execute(
        select(SaleDiscount, SaleItem.name)
        .join(Sale, Sale.id == SaleDiscount.sale_id)
        .outerjoin(SaleItem, SaleItem.id == SaleDiscount.item_id)
        .where(SaleDiscount.venue_id == venue_id, SaleDiscount.session_id.in_(session_ids), Sale.status == "paid")
        .order_by(SaleDiscount.created_at, SaleDiscount.id)
    )
    out.discounts = [
        DiscountLine(
            sale_id=d.sale_id,
            session_id=d.session_id,
            register_code=code(d.session_id),
            item_name=item_name,
            kind=d.kind,
            value=d.value,
            amount=d.amount,
            reason=d.reason,
            by=name(d.user_id) or "",
            authorized_by=name(d.authorized_by),
            created_at=d.created_at,
        )
        for d, item_name in given
    ]
    movements = await s.scalars(
        select(CashMovement)
        .where(CashMovement.venue_id == venue_id, CashMovement.session_id.in_(session_ids))
        .order_by(CashMovement.id)
    )
    out.movements = [
        MovementLine(
            session_id=m.session_id,
            register_code=code(m.session_id),
            kind=m.kind,
            amount=m.amount,
            reason=m.reason,
            by=name(m.user_id) or "",
            authorized_by=name(m.authorized_by),
            created_at=m.created_at,
        )
        for m in movements
    ]
    handovers = await s.scalars(
        select(SessionHandover)
        .where(SessionHandover.venue_id == venue_id, SessionHandover.session_id.in_(session_ids))
        .order_by(SessionHandover.id)
    )
    handover_rows = list(handovers)
    out.handovers = [
        HandoverLine(
            session_id=h.session_id,
            register_code=code(h.session_id),
            from_name=name(h.from_user_id) or "",
            to_name=name(h.to_user_id) or "",
            authorized_by=name(h.authorized_by),
            counted_cash=h.counted_cash,
            expected_cash=h.expected_cash,
            difference=h.difference,
            created_at=h.created_at,
        )
        for h in handover_rows
    ]
    grants = await s.scalars(
        select(Authorization.id).where(Authorization.venue_id == venue_id, Authorization.session_id.in_(session_ids))
    )
    wanted = set(grants)
    out.authorizations = [
        AuthorizationLine(
            action=a.action,
            action_label=a.action_label,
            requested_by=name(a.requested_by) or "",
            authorized_by=name(a.authorized_by) or "",
            method=a.method,
            session_id=a.session_id,
            sale_id=a.sale_id,
            amount=a.amount,
            created_at=a.created_at,
            used=a.used_at is not None,
        )
        for a in await list_authorizations(s, venue_id, jornada_id=jornada_id)
        if a.id in wanted
    ]
    out.refunds = await _refunds(s, venue_id, session_ids, name)
    manual = await _payments(s, venue_id, session_ids, PaymentAttempt.state.in_(MANUAL_STATES))
    out.manual_payments = [_payment_line(a, name(a.confirmed_by), a.finished_at) for a in manual]
    out.cashiers = await _cashiers(s, venue_id, session_ids, handover_rows, names)
    return out


async def _payments(s: AsyncSession, venue_id: int, session_ids: Select[Any], state: Any) -> list[PaymentAttempt]:
    """The sessions' card payments whose state meets ``state``, in the order they were made."""
    return list(
        await s.scalars(
            select(PaymentAttempt)
            .where(PaymentAttempt.venue_id == venue_id, PaymentAttempt.session_id.in_(session_ids), state)
            .order_by(PaymentAttempt.id)
        )
    )


def _payment_line(a: PaymentAttempt, by: str | None, at: datetime | None) -> PaymentLine:
    return PaymentLine(
        attempt_id=a.id,
        sale_id=a.sale_id,
        session_id=a.session_id,
        provider_id=a.provider_id,
        amount=a.amount,
        state=a.state,
        authorization_code=a.authorization_code,
        last4=a.last4,
        by=by,
        at=at,
    )


async def _refunds(s: AsyncSession, venue_id: int, session_ids: Select[Any], name: Any) -> list[PaymentLine]:
    attempts = await _payments(s, venue_id, session_ids, PaymentAttempt.state == "refunded")
    who: dict[str, tuple[int | None, datetime]] = {}
    if attempts:
        events = await s.execute(
            select(AuditEvent.entity_id, AuditEvent.user_id, AuditEvent.created_at).where(
                AuditEvent.venue_id == venue_id,
                AuditEvent.action == "payment.refunded",
                AuditEvent.entity_id.in_([str(a.id) for a in attempts]),
            )
        )
        who = {entity_id: (user_id, at) for entity_id, user_id, at in events}
    return [
        _payment_line(a, name(who[str(a.id)][0]), who[str(a.id)][1])
        if str(a.id) in who
        else _payment_line(a, None, a.finished_at)
        for a in attempts
    ]


async def _cashiers(
    s: AsyncSession,
    venue_id: int,
    session_ids: Select[Any],
    handovers: list[SessionHandover],
    names: dict[int, str],
) -> list[CashierLine]:
    lines: dict[int, CashierLine] = {}

    def line(user_id: int) -> CashierLine:
        if user_id not in lines:
            lines[user_id] = CashierLine(user_id=user_id, name=names.get(user_id, f"usuario #{user_id}"))
        return lines[user_id]

    paid = and_(Sale.status == "paid", Sale.no_revenue.is_(False))
    sold = await s.execute(
        select(
            Sale.cashier_id,
            func.count(),
            func.coalesce(func.sum(Sale.total), 0),
            func.coalesce(func.sum(case((Sale.payment_method == "cash", Sale.total), else_=0)), 0),
            func.count(case((Sale.discount_total > 0, Sale.id))),
            func.coalesce(func.sum(Sale.discount_total), 0),
            func.count(case((Sale.tip > 0, Sale.id))),
            func.coalesce(func.sum(Sale.tip), 0),
            func.coalesce(func.sum(case((Sale.payment_method == "cash", Sale.tip), else_=0)), 0),
        )
        .where(Sale.venue_id == venue_id, Sale.session_id.in_(session_ids), paid)
        .group_by(Sale.cashier_id)
    )
    for user_id, count, total, cash, discounted, discount_total, tipped, tips, cash_tips in sold:
        entry = line(user_id)
        entry.sales_count, entry.sales_total, entry.cash_total = int(count), int(total), int(cash)
        entry.card_total = entry.sales_total - entry.cash_total
        entry.discount_count, entry.discount_total = int(discounted), int(discount_total)
        entry.tip_count, entry.tip_total, entry.cash_tip_total = int(tipped), int(tips), int(cash_tips)
    voided = await s.execute(
        select(
            Sale.cancelled_by,
            func.count(),
            func.coalesce(func.sum(Sale.total), 0),
            func.count(Sale.paid_at),
        )
        .where(
            Sale.venue_id == venue_id,
            Sale.session_id.in_(session_ids),
            Sale.status == "cancelled",
            Sale.cancelled_by.is_not(None),
        )
        .group_by(Sale.cancelled_by)
    )
    for voider, count, total, paid_count in voided:
        if voider is None:
            continue
        entry = line(voider)
        entry.voids_count, entry.voids_total, entry.paid_voids_count = int(count), int(total), int(paid_count)
    outs = await s.execute(
        select(CashMovement.user_id, func.coalesce(func.sum(CashMovement.amount), 0))
        .where(CashMovement.session_id.in_(session_ids), CashMovement.kind == "out")
        .group_by(CashMovement.user_id)
    )
    for user_id, total in outs:
        line(user_id).cash_out_total = int(total)
    closed = await s.execute(
        select(CashSession.cashier_id, CashSession.difference, CashSession.handover_difference).where(
            CashSession.id.in_(session_ids), CashSession.difference.is_not(None)
        )
    )
    for holder, difference, handed in closed:
        line(holder).difference += int(difference or 0) - int(handed or 0)
    for h in handovers:
        line(h.from_user_id).difference += h.difference
    return sorted(lines.values(), key=lambda c: c.name)
