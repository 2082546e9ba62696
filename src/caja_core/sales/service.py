"""Sales: totals computed by the server from catalogue prices, idempotent submits, cash payment, card
payments marked paid by the payments orchestrator, cancellation. Session running totals are updated in the
same transaction as each paid or cancelled sale, so a close never scans the sales."""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..catalog.models import Category, Modifier, Product
from ..catalog.service import check_groups, price_as_of, price_changes_query
from ..clock import utcnow
from ..dashboard import rollups
from ..errors import Conflict, NotFound, ValidationFailed
from ..money import MAX_AMOUNT, format_clp, parse_amount
from ..payments import lifecycle
from ..payments.models import PaymentAttempt
from ..permissions import Action
from ..permissions import service as permissions
from ..registers.models import CashRegister
from ..sessions.models import CashSession, SessionTotal
from ..sessions.service import require_open
from .models import Sale, SaleDiscount, SaleItem
from .voiding import mark_cancelled

MAX_LINES = 100
MAX_QUANTITY = 999
APPROVED_STATES = lifecycle.PAID
ACTIVE_ATTEMPT_STATES = lifecycle.UNRESOLVED


class ItemInput(msgspec.Struct, kw_only=True):
    product_id: int | None = None
    quantity: int = 1
    name: str | None = None  # free-amount line
    unit_price: int | str | None = None
    free_reason: str = ""
    #: The modifiers the cashier chose for a product line (their ids; the server prices them).
    modifier_ids: list[int] = msgspec.field(default_factory=list)
    #: When the product line was added to the cart: it is charged the catalogue's price at that instant (the
    #: price the cashier saw and told the customer), not one an admin set meanwhile. Kept within the session (from
    #: its opening to now); None: the current price.
    priced_at: datetime | None = None
    #: The unit price the cart showed for the product line (modifiers included): a sale whose line the catalogue
    #: prices otherwise is refused with both prices, never charged silently at another price.
    seen_price: int | None = None


class ModifierLine(msgspec.Struct, kw_only=True):
    """A modifier as the sale recorded it: its name and what it added to the unit price."""

    name: str
    price: int
    id: int | None = None  # the catalogue's modifier (None on lines recorded before it was kept)


class ItemOut(msgspec.Struct, kw_only=True):
    product_id: int | None
    name: str
    quantity: int
    unit_price: int
    line_total: int
    free_reason: str = ""
    discount: int = 0  # the line's own discount (CLP)
    modifiers: list[ModifierLine] = msgspec.field(default_factory=list)  # unit_price includes their prices


class DiscountOut(msgspec.Struct, kw_only=True):
    id: int
    item_id: int | None  # None: on the whole sale
    line: int | None  # the line's number on the sale (1, 2…), None for the whole sale
    kind: str  # percent / amount
    value: int
    amount: int
    reason: str
    user_id: int
    authorized_by: int | None
    created_at: datetime


class SaleOut(msgspec.Struct, kw_only=True):
    id: int
    venue_id: int
    session_id: int
    register_id: int
    jornada_id: int
    cashier_id: int
    total: int
    status: str
    payment_method: str | None
    provider_id: str | None
    paid_via: str | None
    no_revenue: bool
    courtesy_reason: str
    cash_received: int | None
    change_given: int | None
    created_at: datetime
    paid_at: datetime | None
    cash_part: int = 0
    parked: bool = False  # waiting in "ventas en espera" (see ``waiting_sales``)
    cancelled_at: datetime | None
    cancel_reason: str
    cancelled_by: int | None = None
    cancel_authorized_by: int | None = None
    items: list[ItemOut] = msgspec.field(default_factory=list)
    discount_total: int = 0
    discounts: list[DiscountOut] = msgspec.field(default_factory=list)
    tip: int = 0

    @property
    def due(self) -> int:
        """What the customer pays: the total and the tip."""
        return self.total + self.tip

    @property
    def list_total(self) -> int:
        """The items at their prices, before discounts."""
        return self.total + self.discount_total


def sale_out(sale: Sale, items: list[SaleItem] | None = None, discounts: list[SaleDiscount] | None = None) -> SaleOut:
    lines = {item.id: n for n, item in enumerate(items or [], start=1)}
    return SaleOut(
        id=sale.id,
        venue_id=sale.venue_id,
        session_id=sale.session_id,
        register_id=sale.register_id,
        jornada_id=sale.jornada_id,
        cashier_id=sale.cashier_id,
        total=sale.total,
        status=sale.status,
        payment_method=sale.payment_method,
        provider_id=sale.provider_id,
        paid_via=sale.paid_via,
        no_revenue=sale.no_revenue,
        courtesy_reason=sale.courtesy_reason,
        cash_received=sale.cash_received,
        change_given=sale.change_given,
        cash_part=sale.cash_part or 0,
        parked=sale.parked_at is not None,
        created_at=sale.created_at,
        paid_at=sale.paid_at,
        cancelled_at=sale.cancelled_at,
        cancel_reason=sale.cancel_reason,
        cancelled_by=sale.cancelled_by,
        cancel_authorized_by=sale.cancel_authorized_by,
        items=[
            ItemOut(
                product_id=i.product_id,
                name=i.name,
                quantity=i.quantity,
                unit_price=i.unit_price,
                line_total=i.line_total,
                free_reason=i.free_reason,
                discount=i.discount or 0,
                modifiers=[ModifierLine(name=m["name"], price=m["price"], id=m.get("id")) for m in (i.modifiers or [])],
            )
            for i in (items or [])
        ],
        discount_total=sale.discount_total or 0,
        tip=sale.tip or 0,
        discounts=[
            DiscountOut(
                id=d.id,
                item_id=d.item_id,
                line=lines.get(d.item_id) if d.item_id is not None else None,
                kind=d.kind,
                value=d.value,
                amount=d.amount,
                reason=d.reason,
                user_id=d.user_id,
                authorized_by=d.authorized_by,
                created_at=d.created_at,
            )
            for d in (discounts or [])
        ],
    )


def _text(value: str | None, *, field: str, label: str, minimum: int = 1, maximum: int = 200) -> str:
    value = (value or "").strip()
    if len(value) < minimum or len(value) > maximum or any(ord(ch) < 32 for ch in value):
        raise ValidationFailed(
            f"{label} debe tener entre {minimum} y {maximum} caracteres, sin caracteres de control.", field=field
        )
    return value


async def _open_session(s: AsyncSession, venue_id: int, session_id: int) -> CashSession:
    session = await s.scalar(select(CashSession).where(CashSession.id == session_id, CashSession.venue_id == venue_id))
    if session is None:
        raise NotFound("La sesión de caja no existe.", code="session.not_found")
    require_open(session)
    return session


async def _open_session_and_register(
    s: AsyncSession, venue_id: int, session_id: int
) -> tuple[CashSession, CashRegister | None]:
    """Like ``_open_session``, with the session's register read in the same statement (both stay in this
    transaction's session, where a later ``s.get`` of the register finds it without reading it again)."""
    row = (
        await s.execute(
            select(CashSession, CashRegister)
            .outerjoin(CashRegister, CashRegister.id == CashSession.register_id)
            .where(CashSession.id == session_id, CashSession.venue_id == venue_id)
        )
    ).first()
    if row is None:
        raise NotFound("La sesión de caja no existe.", code="session.not_found")
    session, register = row
    require_open(session)
    return session, register


def _require_selling(register: CashRegister | None) -> None:
    if register is None:
        raise NotFound("La caja no existe.", code="register.not_found")
    if not register.active or register.operational_status != "active":
        raise Conflict(
            f"La caja {register.name} no está operativa; no se pueden registrar ventas.",
            code="register.not_operational",
        )


async def create_sale(
    s: AsyncSession,
    *,
    venue_id: int,
    session_id: int,
    cashier_id: int,
    items: list[ItemInput],
    idempotency_key: str,
    no_revenue: bool = False,
    courtesy_reason: str = "",
) -> SaleOut:
    """Create a sale waiting for payment. Repeating the same ``idempotency_key`` returns the first sale."""
    key = (idempotency_key or "").strip()
    if not key or len(key) > 80:
        raise ValidationFailed("Falta la clave de idempotencia de la venta.", field="idempotency_key")
    first = await s.scalar(select(Sale).where(Sale.venue_id == venue_id, Sale.idempotency_key == key))
    if first is not None:
        return await get_sale(s, venue_id, first.id)
    session, register = await _open_session_and_register(s, venue_id, session_id)
    permissions.require_holder(session, cashier_id)
    if not items:
        raise ValidationFailed("La venta no tiene productos.", field="items")
    if len(items) > MAX_LINES:
        raise ValidationFailed(f"Una venta admite hasta {MAX_LINES} líneas.", field="items")
    _require_selling(register)
    now = utcnow()
    items = [_within_session(item, session.opened_at, now) for item in items]
    lines = await _price_lines(s, venue_id, items, register.allowed_categories if register else None)
    total = sum(line["line_total"] for line in lines)
    if total > MAX_AMOUNT:
        raise ValidationFailed(f"El total supera el máximo permitido ({format_clp(MAX_AMOUNT)}).", field="items")
    courtesy_reason = (courtesy_reason or "").strip()
    if no_revenue:
        if register is None or register.register_type != "OFICINA":
            raise ValidationFailed("Solo las cajas de OFICINA registran cortesías.", field="no_revenue")
        courtesy_reason = _text(courtesy_reason, field="courtesy_reason", minimum=3, label="El motivo de la cortesía")
    # One INSERT that gives way to the same submit made meanwhile (no savepoint around it): its row, every column
    # as stored, is the sale of this transaction's session.
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    sale = await s.scalar(
        insert(Sale)
        .values(
            venue_id=venue_id,
            session_id=session.id,
            register_id=session.register_id,
            jornada_id=session.jornada_id,
            cashier_id=cashier_id,
            idempotency_key=key,
            total=total,
            status="pending_payment",
            no_revenue=no_revenue,
            courtesy_reason=courtesy_reason,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Sale.venue_id, Sale.idempotency_key])
        .returning(Sale)
    )
    if sale is None:  # the same submit raced us: return the first sale
        first = await s.scalar(select(Sale).where(Sale.venue_id == venue_id, Sale.idempotency_key == key))
        if first is None:
            raise Conflict("La venta no se pudo registrar; intente de nuevo.", code="sale.conflict")
        return await get_sale(s, venue_id, first.id)
    rows = [SaleItem(sale_id=sale.id, **line) for line in lines]
    s.add_all(rows)
    await s.flush()
    return sale_out(sale, rows)


async def _locked_sale(s: AsyncSession, sale_id: int, venue_id: int | None = None) -> Sale:
    q = select(Sale).where(Sale.id == sale_id).with_for_update()
    if venue_id is not None:
        q = q.where(Sale.venue_id == venue_id)
    # As the lock found it, even if this transaction had read it before (what it then writes is the truth).
    sale = await s.scalar(q.execution_options(populate_existing=True))
    if sale is None:
        raise NotFound("La venta no existe.", code="sale.not_found")
    return sale


async def _apply_totals(s: AsyncSession, sale: Sale, sign: int, items: list[SaleItem] | None = None) -> None:
    """Add (+1) or remove (−1) a paid sale from its session's running totals. ``items``: the sale's lines when
    the caller has read them in this transaction (else they are read here)."""
    amount = sign * sale.total
    t = CashSession
    if sale.no_revenue:
        values = {t.courtesy_count: t.courtesy_count + sign, t.courtesy_total: t.courtesy_total + amount}
    else:
        values = {t.ticket_count: t.ticket_count + sign, t.sales_total: t.sales_total + amount}
        if sale.payment_method == "cash":
            values[t.cash_sales_count] = t.cash_sales_count + sign
            values[t.cash_sales_total] = t.cash_sales_total + amount
        else:  # a split payment's cash part is cash in the drawer; the rest went to the card
            cash_part = sign * (sale.cash_part or 0)
            if cash_part:
                values[t.cash_sales_total] = t.cash_sales_total + cash_part
            amount -= cash_part
            values[t.card_sales_total] = t.card_sales_total + amount
        if sale.paid_via == "primary":
            values[t.primary_count] = t.primary_count + sign
        elif sale.paid_via == "backup":
            values[t.backup_count] = t.backup_count + sign
    if sale.tip and not sale.no_revenue:
        values[t.tip_count] = t.tip_count + sign
        values[t.tip_total] = t.tip_total + sign * sale.tip
        if sale.payment_method == "cash":
            values[t.cash_tip_total] = t.cash_tip_total + sign * sale.tip
    if sale.discount_total and not sale.no_revenue:
        values[t.discount_count] = t.discount_count + sign
        values[t.discount_total] = t.discount_total + sign * sale.discount_total
    if sign < 0:
        values[t.cancelled_count] = t.cancelled_count + 1
        values[t.cancelled_total] = t.cancelled_total + sale.total
    await s.execute(
        update(t).where(t.id == sale.session_id).values(values).execution_options(synchronize_session=False)
    )
    await rollups.add_sale(s, sale, sign, items)
    if sale.no_revenue or sale.payment_method == "cash":
        return  # cash is in the session's own columns
    dialect = s.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    rows = [
        {
            "session_id": sale.session_id,
            "dimension": "provider",
            "key": sale.provider_id or "cash",
            "count": sign,
            "amount": amount,
        },
        {
            "session_id": sale.session_id,
            "dimension": "method",
            "key": sale.payment_method or "cash",
            "count": sign,
            "amount": amount,
        },
    ]
    stmt = insert(SessionTotal).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SessionTotal.session_id, SessionTotal.dimension, SessionTotal.key],
        set_={"count": SessionTotal.count + stmt.excluded.count, "amount": SessionTotal.amount + stmt.excluded.amount},
    )
    await s.execute(stmt)


async def pay_cash(s: AsyncSession, *, venue_id: int, sale_id: int, cash_received: object, user_id: int) -> SaleOut:
    sale = await _locked_sale(s, sale_id, venue_id)
    if sale.status == "paid":
        return await get_sale(s, venue_id, sale_id)  # a repeated submit shows the same receipt
    if sale.status != "pending_payment":
        raise Conflict("La venta está anulada.", code="sale.cancelled")
    session, register = await _open_session_and_register(s, venue_id, sale.session_id)
    permissions.require_holder(session, user_id)
    if register is not None and "cash" not in (register.payment_methods or []):
        raise Conflict("Esta caja no recibe efectivo.", code="sale.method_not_allowed")
    active = await s.scalar(
        select(PaymentAttempt.id).where(PaymentAttempt.sale_id == sale_id, PaymentAttempt.active.is_(True))
    )
    if active is not None:
        raise Conflict(
            "La venta tiene un pago con tarjeta en curso; cancélelo o espere su resultado.",
            code="sale.payment_in_progress",
        )
    part = sale.cash_part or 0
    due = sale.total + (sale.tip or 0) - part  # the tip is paid with the sale; a split's cash part is paid
    received = (
        due
        if cash_received in (None, "")
        else parse_amount(cash_received, field="cash_received", label="El efectivo recibido")
    )
    if received < due:
        what = "lo que falta" if part else ("el total con propina" if sale.tip else "el total")
        raise ValidationFailed(
            f"El efectivo recibido ({format_clp(received)}) es menor que {what} ({format_clp(due)}).",
            field="cash_received",
        )
    sale.status = "paid"
    sale.payment_method = "cash"
    sale.provider_id = "cash"
    sale.paid_via = "cash"
    sale.cash_received = part + received
    sale.change_given = received - due
    sale.paid_at = utcnow()
    items = await _lines(s, sale.id)  # read once: for the running totals and for the receipt
    await _apply_totals(s, sale, +1, items)
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.paid",
        entity="sale",
        entity_id=sale.id,
        payload={"method": "cash", "total": sale.total, "tip": sale.tip or 0, "session_id": sale.session_id},
    )
    # The receipt: the sale as it was just locked and written here (every column of it is set in Python, none
    # by the database), so it is not read again, with the lines read above.
    return await _with_lines(s, sale, items)


async def pay_cash_part(
    s: AsyncSession, *, venue_id: int, sale_id: int, amount: object, user_id: int, paid_before: int | None = None
) -> SaleOut:
    """A split payment: part of a pending sale is paid in cash now (the cash goes into the drawer); the rest is
    then paid by card, the backup or cash, each its own payment. Only while no card payment of the sale is in
    flight or in doubt. Several cash parts add up (the customer pays 10 000 in cash, the card declines, they pay
    5 000 more in cash, the rest on the backup), each one audited; a part that would cover what is left is
    the cash payment of the rest (with its change), not a part.

    ``paid_before`` is what the screen showed as already paid in cash when the part was typed: a part sent
    again (a double tap, a second tab) finds more paid than its screen showed and is refused, so the drawer
    never counts a banknote twice."""
    sale = await _locked_sale(s, sale_id, venue_id)
    if sale.status != "pending_payment":
        raise Conflict("La venta ya no está por cobrar.", code="sale.not_payable")
    if paid_before is not None and paid_before != (sale.cash_part or 0):
        raise Conflict(
            f"Esa parte en efectivo ya se había recibido: van {format_clp(sale.cash_part or 0)} pagados en "
            "efectivo y no se registró de nuevo. Revise lo que falta antes de recibir otra parte.",
            code="sale.cash_part_repeated",
        )
    session, register = await _open_session_and_register(s, venue_id, sale.session_id)
    permissions.require_holder(session, user_id)
    if register is not None and "cash" not in (register.payment_methods or []):
        raise Conflict("Esta caja no recibe efectivo.", code="sale.method_not_allowed")
    attempts = (
        await s.execute(select(PaymentAttempt.state, PaymentAttempt.active).where(PaymentAttempt.sale_id == sale_id))
    ).all()
    if any(a.active or a.state in ACTIVE_ATTEMPT_STATES for a in attempts):
        raise Conflict(
            "La venta tiene un pago con tarjeta en curso o sin resolver; espere su resultado.",
            code="sale.payment_in_progress",
        )
    part = parse_amount(amount, field="cash_part", label="La parte en efectivo")
    paid = sale.cash_part or 0
    left = sale.total - paid
    if not 0 < part < left:
        what = f"lo que falta ({format_clp(left)})" if paid else f"el total ({format_clp(sale.total)})"
        raise ValidationFailed(
            f"La parte en efectivo debe ser mayor que $0 y menor que {what}. Para pagar todo lo que falta "
            "use Exacto o un billete.",
            field="cash_part",
        )
    sale.cash_part = paid + part
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.cash_part",
        entity="sale",
        entity_id=sale.id,
        payload={
            "cash_part": part,
            "cash_parts_total": sale.cash_part,
            "rest": sale.total - sale.cash_part,
            "session_id": sale.session_id,
        },
    )
    return await get_sale(s, venue_id, sale_id)


async def mark_paid(
    s: AsyncSession,
    *,
    sale_id: int,
    provider_id: str,
    method: str = "card",
    paid_via: str = "primary",
    user_id: int | None = None,
) -> SaleOut:
    """Mark a sale paid by a provider (called by the payments orchestrator in the transaction that approves
    the attempt). A sale already paid raises Conflict ``sale.already_paid``: a second approval is an
    incident for the caller, never a silent success."""
    sale = await _locked_sale(s, sale_id)
    if sale.status == "paid":
        raise Conflict("La venta ya estaba pagada.", code="sale.already_paid")
    if sale.status == "cancelled":
        raise Conflict("La venta está anulada.", code="sale.cancelled")
    if paid_via not in ("primary", "backup"):
        raise ValidationFailed("Vía de pago inválida.", field="paid_via")
    sale.status = "paid"
    sale.payment_method = method
    sale.provider_id = provider_id
    sale.paid_via = paid_via
    sale.paid_at = utcnow()
    await _apply_totals(s, sale, +1)
    await record(
        s,
        venue_id=sale.venue_id,
        user_id=user_id,
        action="sale.paid",
        entity="sale",
        entity_id=sale.id,
        payload={
            "method": method,
            "provider": provider_id,
            "via": paid_via,
            "total": sale.total,
            "session_id": sale.session_id,
        },
    )
    return sale_out(sale)


async def cancel_sale(
    s: AsyncSession,
    *,
    venue_id: int,
    sale_id: int,
    user_id: int,
    reason: str,
    authorization_id: int | None = None,
) -> SaleOut:
    """Void a sale (why, who and who authorized are kept), by the holder of its drawer. Voiding an unpaid
    sale is the holder's call; voiding a paid one takes the money out of the drawer's totals and needs the
    permission table's ``void_paid`` (a cashier: a supervisor's authorization). A card payment must be
    refunded through its provider first."""
    reason = _text(reason, field="reason", minimum=3, label="El motivo de la anulación")
    sale = await _locked_sale(s, sale_id, venue_id)
    if sale.status == "cancelled":
        raise Conflict("La venta ya está anulada.", code="sale.cancelled")
    session = await s.get(CashSession, sale.session_id)
    if session is None or session.status != "open":
        raise Conflict(
            "La sesión de la venta ya no está abierta; la anulación la hace un supervisor como incidencia.",
            code="session.closed",
        )
    attempts = (
        await s.execute(
            select(PaymentAttempt.id, PaymentAttempt.state, PaymentAttempt.active).where(
                PaymentAttempt.sale_id == sale_id
            )
        )
    ).all()
    if any(a.active or a.state in ACTIVE_ATTEMPT_STATES for a in attempts):
        raise Conflict(
            "La venta tiene un pago en curso o sin resolver; resuélvalo antes de anular.",
            code="sale.payment_in_progress",
        )
    if sale.status == "paid" and sale.payment_method != "cash" and any(a.state in APPROVED_STATES for a in attempts):
        raise Conflict(
            "El pago con tarjeta debe anularse (reembolso) antes de anular la venta.", code="sale.refund_required"
        )
    was_paid = sale.status == "paid"
    decision = await permissions.require(
        s,
        venue_id=venue_id,
        action=Action.VOID_PAID if was_paid else Action.VOID_UNPAID,
        actor_id=user_id,
        sale_id=sale.id,
        amount=sale.total,
        authorization_id=authorization_id,
    )
    if was_paid:
        await _apply_totals(s, sale, -1)
    await mark_cancelled(
        s,
        sale,
        venue_id=venue_id,
        user_id=user_id,
        reason=reason,
        was_paid=was_paid,
        authorized_by=decision.authorized_by,
    )
    return await get_sale(s, venue_id, sale_id)


async def get_sale(s: AsyncSession, venue_id: int, sale_id: int, *, lines: bool = True) -> SaleOut:
    """The sale with its lines and discounts; ``lines=False``: the sale alone, its ``items`` and ``discounts``
    empty (for a screen that shows only its totals)."""
    sale = await s.get(Sale, sale_id, populate_existing=True)
    if sale is None or sale.venue_id != venue_id:
        raise NotFound("La venta no existe.", code="sale.not_found")
    if not lines:
        return sale_out(sale)
    return await _with_lines(s, sale)


async def _lines(s: AsyncSession, sale_id: int) -> list[SaleItem]:
    """The sale's lines, in the order rung up."""
    return list(await s.scalars(select(SaleItem).where(SaleItem.sale_id == sale_id).order_by(SaleItem.id)))


async def _with_lines(s: AsyncSession, sale: Sale, items: list[SaleItem] | None = None) -> SaleOut:
    """``sale`` as this transaction holds it, with its lines (``items`` when the caller has read them) and
    discounts read."""
    if items is None:
        items = await _lines(s, sale.id)
    discounts = (
        list(await s.scalars(select(SaleDiscount).where(SaleDiscount.sale_id == sale.id).order_by(SaleDiscount.id)))
        if sale.discount_total
        else []
    )
    return sale_out(sale, items, discounts)


async def list_sales(
    s: AsyncSession,
    venue_id: int,
    *,
    session_id: int | None = None,
    jornada_id: int | None = None,
    status: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[SaleOut]:
    q = select(Sale).where(Sale.venue_id == venue_id)
    if session_id is not None:
        q = q.where(Sale.session_id == session_id)
    if jornada_id is not None:
        q = q.where(Sale.jornada_id == jornada_id)
    if status is not None:
        q = q.where(Sale.status == status)
    rows = await s.scalars(q.order_by(Sale.id.desc()).limit(min(limit, 1000)).offset(offset))
    return [sale_out(r) for r in rows]


def _within_session(item: ItemInput, opened_at: datetime, now: datetime) -> ItemInput:
    """The line's ``priced_at`` kept between the session's opening and now: a cart's price is one the catalogue
    had while this session sold."""
    if item.priced_at is None or item.product_id is None:
        return item
    at = item.priced_at if item.priced_at.tzinfo else item.priced_at.replace(tzinfo=now.tzinfo)
    return msgspec.structs.replace(item, priced_at=min(max(at, opened_at), now))


async def _price_lines(
    s: AsyncSession, venue_id: int, items: list[ItemInput], allowed_categories: list[int] | None
) -> list[dict]:
    return await s.run_sync(_price_lines_sync, venue_id, items, allowed_categories)


def _price_lines_sync(s, venue_id: int, items: list[ItemInput], allowed_categories: list[int] | None) -> list[dict]:
    """Price each line from the catalogue (free-amount lines need a reason); the browser never sets prices."""
    product_ids = {i.product_id for i in items if i.product_id is not None}
    products: dict[int, tuple[str, int]] = {}
    withdrawn: dict[int, str] = {}  # the venue's products asked for that are not sold here now (by name)
    prices_then: dict[int, int] = {}  # line index → the product's price when the line was added
    categories: dict[int, int] = {}
    if product_ids:
        q = (
            select(Product.id, Product.name, Product.price, Product.category_id)
            .join(Category, Category.id == Product.category_id)
            .where(
                Product.venue_id == venue_id,
                Product.id.in_(product_ids),
                Product.active.is_(True),
                Category.active.is_(True),
            )
        )
        if allowed_categories:
            q = q.where(Product.category_id.in_(allowed_categories))
        rows = list(s.execute(q))
        products = {r.id: (r.name, r.price) for r in rows}
        categories = {r.id: r.category_id for r in rows}
        if missing := product_ids - set(products):  # withdrawn while in a cart: the refusal names them
            withdrawn = {
                r.id: r.name
                for r in s.execute(
                    select(Product.id, Product.name).where(Product.venue_id == venue_id, Product.id.in_(missing))
                )
            }
        instants = [i.priced_at for i in items if i.priced_at is not None and i.product_id in products]
        if instants:  # lines priced as of when they were added: the changes since the earliest of them
            changes = list(s.execute(price_changes_query(products, min(instants))))
            for n, i in enumerate(items):
                if i.priced_at is not None and i.product_id in products:
                    prices_then[n] = price_as_of(changes, i.product_id, products[i.product_id][1], i.priced_at)
    modifiers: dict[int, list[Modifier]] = {}
    if products:
        # The modifiers the lines chose (withdrawn ones too: a line that still has one is refused naming it) and
        # the required groups' options (a line without its choice is refused naming them).
        requested = [m for i in items for m in (i.modifier_ids or []) if type(m) is int]
        wanted = Modifier.required.is_(True) & Modifier.active.is_(True)
        if requested:
            wanted = wanted | Modifier.id.in_(requested)
        found = s.scalars(
            select(Modifier).where(
                Modifier.venue_id == venue_id,
                (Modifier.product_id.in_(list(products))) | (Modifier.category_id.in_(set(categories.values()))),
                wanted,
            )
        ).all()
        for product_id, category_id in categories.items():
            modifiers[product_id] = [
                m
                for m in found
                if m.product_id == product_id or (m.product_id is None and m.category_id == category_id)
            ]
    return _price(items, products, modifiers, prices_then, withdrawn)


def _chosen_modifiers(
    n: int, item: ItemInput, allowed: list[Modifier], product: str = "", *, withdrawn_ok: bool = False
) -> list[dict]:
    """The line's modifiers from the catalogue, as sold now (name and price); any the product does not offer
    (another product's, another venue's, or withdrawn unless ``withdrawn_ok``) refuses the sale, naming the
    product and, when it is one of the product's withdrawn ones, the modifier. ``allowed``: the product's
    modifiers, withdrawn ones included."""
    ids = item.modifier_ids or []
    what = product or f"Línea {n}"
    if len(ids) > 10 or len(set(ids)) != len(ids):
        raise ValidationFailed(f"{what}: modificadores repetidos o demasiados (máximo 10).", field="modifiers")
    by_id = {m.id: m for m in allowed}
    chosen = []
    for modifier_id in ids:
        m = by_id.get(modifier_id) if isinstance(modifier_id, int) and not isinstance(modifier_id, bool) else None
        if m is not None and not m.active and not withdrawn_ok:
            raise ValidationFailed(
                f"{what}: el modificador «{m.name}» ya no se ofrece. Quite la línea y agréguela de nuevo sin él.",
                field="modifiers",
            )
        if m is None:
            raise ValidationFailed(
                f"{what}: ese modificador no existe o no se ofrece para este producto.", field="modifiers"
            )
        chosen.append({"id": m.id, "name": m.name, "price": m.price_delta})
    return chosen


def _price(
    items: list[ItemInput],
    products: dict[int, tuple[str, int]],
    modifiers: dict[int, list[Modifier]] | None = None,
    prices_then: dict[int, int] | None = None,
    withdrawn: dict[int, str] | None = None,
) -> list[dict]:
    lines: list[dict] = []
    for n, item in enumerate(items, start=1):
        if (
            isinstance(item.quantity, bool)
            or not isinstance(item.quantity, int)
            or not 1 <= item.quantity <= MAX_QUANTITY
        ):
            raise ValidationFailed(
                f"Línea {n}: la cantidad debe ser un entero entre 1 y {MAX_QUANTITY}.", field="quantity"
            )
        if item.product_id is not None:
            if item.product_id not in products and item.product_id in (withdrawn or {}):
                raise ValidationFailed(
                    f"{(withdrawn or {})[item.product_id]} ya no se vende en esta caja: quite la línea del pedido.",
                    field="product_id",
                )
            if item.product_id not in products:
                raise ValidationFailed(
                    f"Línea {n}: el producto no existe o no se vende en esta caja.", field="product_id"
                )
            name, price = products[item.product_id]
            price = (prices_then or {}).get(n - 1, price)
            allowed = (modifiers or {}).get(item.product_id, [])
            chosen = _chosen_modifiers(n, item, allowed, name) if item.modifier_ids else []
            check_groups(name, allowed, item.modifier_ids or [])
            price += sum(m["price"] for m in chosen)
            if item.seen_price is not None and item.seen_price != price:
                raise Conflict(
                    f"El precio de {name} cambió de {format_clp(item.seen_price)} a {format_clp(price)}. "
                    "Quite la línea y agréguela de nuevo para cobrar el precio actual.",
                    code="sale.price_changed",
                )
            line = {
                "product_id": item.product_id,
                "name": name,
                "quantity": item.quantity,
                "unit_price": price,
                "line_total": price * item.quantity,
                "free_reason": "",
            }
            if chosen:  # else the column stays SQL NULL (not JSON null): no modifiers is no data
                line["modifiers"] = chosen
            lines.append(line)
        else:
            if item.modifier_ids:
                raise ValidationFailed(f"Línea {n}: un monto libre no lleva modificadores.", field="modifiers")
            price = parse_amount(item.unit_price, field="unit_price", label=f"Línea {n}: el monto libre")
            reason = _text(
                item.free_reason, field="free_reason", minimum=3, label=f"Línea {n}: el motivo del monto libre"
            )
            name = _text(item.name or "Monto libre", field="name", maximum=120, label=f"Línea {n}: el nombre")
            lines.append(
                {
                    "product_id": None,
                    "name": name,
                    "quantity": item.quantity,
                    "unit_price": price,
                    "line_total": price * item.quantity,
                    "free_reason": reason,
                }
            )
    return lines
