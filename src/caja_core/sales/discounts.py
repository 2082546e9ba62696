"""Discounts on a sale waiting for payment: on one line or on the whole sale, a percent or an amount, always
with a reason.

* A line's discount comes off that line; a sale discount comes off what the lines add up to after their own
  discounts. A second discount on the same line (or on the sale) replaces the first.
* Percents are whole numbers from 1 to 100 and give whole pesos, rounded half up: 10 % of $3.550 is $355,
  15 % of $3.330 ($499,5) is $500. An amount may not exceed what it discounts, and no discount may leave the
  sale at $0 (that is a courtesy, or a void).
* A cashier gives discounts alone up to the venue's limit (``VenueControls.discount_limit``, all the sale's
  discounts together); above it, with a supervisor's authorization (PIN or badge) for this sale.
* Only before any payment of the sale may have charged: while a card attempt is in flight, in doubt or
  approved, the total is fixed. The sale's ``total`` is always the price after discounts, so the payment,
  the session's running totals, the expected cash and the reports need nothing else; ``discount_total``
  says what the discounts took off, and the session counts it when the sale is paid.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..errors import Conflict, NotFound, ValidationFailed
from ..money import format_clp, parse_amount
from ..payments import lifecycle
from ..payments.models import PaymentAttempt
from ..permissions import Action
from ..permissions import service as permissions
from .models import Sale, SaleDiscount, SaleItem
from .service import SaleOut, _locked_sale, _open_session, _text, get_sale

PERCENT = "percent"
AMOUNT = "amount"
KINDS = {PERCENT: "porcentaje", AMOUNT: "monto"}


def percent_of(base: int, percent: int) -> int:
    """``percent`` % of ``base`` in whole pesos, rounded half up (integers only, never a float)."""
    return (base * percent + 50) // 100


def _value(kind: str, raw: object) -> int:
    if kind == PERCENT:
        text = str(raw if raw is not None else "").strip().rstrip("%").strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 100):
            raise ValidationFailed(
                "El porcentaje de descuento debe ser un número entero entre 1 y 100.", field="discount_value"
            )
        return int(text)
    return parse_amount(raw, field="discount_value", label="El monto del descuento")


def _recompute(items: list[SaleItem], discounts: list[SaleDiscount]) -> tuple[int, int]:
    """Each discount's amount, each line's discount, and the sale's (total, discount_total)."""
    by_item = {d.item_id: d for d in discounts}
    net = 0
    for item in items:
        line = by_item.get(item.id)
        item.discount = 0
        if line is not None:
            wanted = percent_of(item.line_total, line.value) if line.kind == PERCENT else line.value
            line.amount = item.discount = min(item.line_total, wanted)
        net += item.line_total - item.discount
    whole = by_item.get(None)
    off = sum(item.discount for item in items)
    if whole is not None:
        wanted = percent_of(net, whole.value) if whole.kind == PERCENT else whole.value
        whole.amount = min(net, wanted)
        net -= whole.amount
        off += whole.amount
    return net, off


async def _editable(s: AsyncSession, venue_id: int, sale_id: int, user_id: int, what: str = "descontar") -> Sale:
    """The sale, locked, when its total may still change; ``what`` is what the refusal says cannot be done."""
    sale = await _locked_sale(s, sale_id, venue_id)
    if sale.status != "pending_payment":
        raise Conflict(f"Solo se puede {what} una venta por cobrar.", code="sale.not_pending")
    if sale.no_revenue:
        raise Conflict("Una cortesía no lleva descuentos.", code="sale.courtesy")
    session = await _open_session(s, venue_id, sale.session_id)
    permissions.require_holder(session, user_id)
    states = await s.scalars(select(PaymentAttempt.state).where(PaymentAttempt.sale_id == sale_id))
    if any(state not in lifecycle.NOT_CHARGED for state in states):
        raise Conflict(
            "La venta tiene un pago en curso o cobrado: su total ya no se puede cambiar.",
            code="sale.payment_in_progress",
        )
    if sale.cash_part:
        raise Conflict(
            "Ya se recibió una parte en efectivo: el total ya no se puede cambiar.", code="sale.cash_part_taken"
        )
    return sale


async def _lines_and_discounts(s: AsyncSession, sale_id: int) -> tuple[list[SaleItem], list[SaleDiscount]]:
    items = list(await s.scalars(select(SaleItem).where(SaleItem.sale_id == sale_id).order_by(SaleItem.id)))
    discounts = list(await s.scalars(select(SaleDiscount).where(SaleDiscount.sale_id == sale_id)))
    return items, discounts


async def apply_discount(
    s: AsyncSession,
    *,
    venue_id: int,
    sale_id: int,
    user_id: int,
    kind: str,
    value: object,
    reason: str,
    line: int | None = None,
    authorization_id: int | None = None,
) -> SaleOut:
    """Discount line number ``line`` (1, 2…) of the sale, or the whole sale when ``line`` is None."""
    if kind not in KINDS:
        raise ValidationFailed("Elija un descuento en porcentaje o en monto.", field="discount_kind")
    number = _value(kind, value)
    reason = _text(reason, field="discount_reason", minimum=3, label="El motivo del descuento")
    sale = await _editable(s, venue_id, sale_id, user_id)
    items, discounts = await _lines_and_discounts(s, sale_id)
    item = None
    if line is not None:
        if not 1 <= line <= len(items):
            raise ValidationFailed("Esa línea no existe en la venta.", field="discount_line")
        item = items[line - 1]
    target = item.id if item is not None else None
    replaced = [d for d in discounts if d.item_id == target]
    new = SaleDiscount(
        venue_id=venue_id,
        sale_id=sale.id,
        session_id=sale.session_id,
        item_id=target,
        kind=kind,
        value=number,
        amount=0,
        reason=reason,
        user_id=user_id,
        created_at=utcnow(),
    )
    kept = [d for d in discounts if d.item_id != target]
    base = item.line_total if item is not None else sum(i.line_total - i.discount for i in items if i.id != target)
    if kind == AMOUNT and item is not None and number > item.line_total:
        raise ValidationFailed(
            f"El descuento ({format_clp(number)}) supera el monto de la línea ({format_clp(item.line_total)}).",
            field="discount_value",
        )
    total, off = _recompute(items, [*kept, new])
    if kind == AMOUNT and item is None and new.amount < number:
        raise ValidationFailed(
            f"El descuento ({format_clp(number)}) supera el total de la venta ({format_clp(base)}).",
            field="discount_value",
        )
    if new.amount < 1:
        raise ValidationFailed("Ese descuento no rebaja nada (menos de $1).", field="discount_value")
    if total < 1:
        raise ValidationFailed(
            "Un descuento no puede dejar la venta en $0: anúlela, o regístrela como cortesía en una caja de OFICINA.",
            field="discount_value",
        )
    decision = await permissions.require(
        s,
        venue_id=venue_id,
        action=Action.DISCOUNT,
        actor_id=user_id,
        sale_id=sale.id,
        amount=off,
        authorization_id=authorization_id,
    )
    for old in replaced:
        await s.delete(old)
    new.authorized_by = decision.authorized_by
    s.add(new)
    sale.total, sale.discount_total = total, off
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.discounted",
        entity="sale",
        entity_id=sale.id,
        payload={
            "line": line,
            "kind": kind,
            "value": number,
            "amount": new.amount,
            "reason": reason,
            "total": total,
            "discount_total": off,
            "authorized_by": decision.authorized_by,
        },
    )
    return await get_sale(s, venue_id, sale_id)


async def remove_discount(s: AsyncSession, *, venue_id: int, sale_id: int, discount_id: int, user_id: int) -> SaleOut:
    """Take a discount back (the sale's total goes up again): the holder's call, before any payment charged."""
    sale = await _editable(s, venue_id, sale_id, user_id)
    items, discounts = await _lines_and_discounts(s, sale_id)
    gone = next((d for d in discounts if d.id == discount_id), None)
    if gone is None:
        raise NotFound("Ese descuento no existe en la venta.", code="discount.not_found")
    await s.delete(gone)
    sale.total, sale.discount_total = _recompute(items, [d for d in discounts if d is not gone])
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.discount_removed",
        entity="sale",
        entity_id=sale.id,
        payload={"amount": gone.amount, "reason": gone.reason, "total": sale.total},
    )
    return await get_sale(s, venue_id, sale_id)
