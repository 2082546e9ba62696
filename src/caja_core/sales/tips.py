"""Tips (propina): what the customer adds to a sale, on top of its total, before paying it.

* The POS suggests the venue's percent of the sale's total (``VenueControls.suggested_tip_percent``, 10 % by
  default), in whole pesos rounded half up; the cashier adds it with one tap, types another amount, or leaves
  it at $0. A tip may not be larger than the sale's total (a typing slip, not generosity).
* The tip is set on the sale while it waits for payment, like a discount: once a card attempt is in flight, in
  doubt or charged, it is fixed. It is paid with the sale and by the same means: cash (``received`` must cover
  total + tip, the change is what is left) or card (the terminal charges total + tip; the charge request
  carries the tip, so a provider whose terminal takes tips passes it on).
* The sale's ``total`` stays the venue's revenue; the tip is kept apart on the sale and in the session's running
  totals (``tip_count``, ``tip_total``, and ``cash_tip_total``, which is in the drawer and so in the expected cash
  of the blind close).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..errors import ValidationFailed
from ..money import format_clp, parse_amount
from ..permissions import service as permissions
from .discounts import _editable, percent_of
from .service import SaleOut, get_sale


def suggested_tip(total: int, percent: int) -> int:
    """The suggested tip: ``percent`` % of ``total`` in whole pesos, rounded half up."""
    return percent_of(total, percent)


def parse_tip(raw: object) -> int:
    """A tip typed by a person: $0 (or nothing) means no tip; otherwise a whole amount in CLP."""
    text = str(raw if raw is not None else "").strip().lstrip("$").strip()
    if text in ("", "0"):
        return 0
    return parse_amount(raw, field="tip", label="La propina")


async def set_tip(s: AsyncSession, *, venue_id: int, sale_id: int, user_id: int, amount: object) -> SaleOut:
    """The sale's tip (0 takes it away): the holder's call, before any payment of the sale charged."""
    tip = parse_tip(amount)
    sale = await _editable(s, venue_id, sale_id, user_id, what="poner o cambiar la propina de")
    if tip > sale.total:
        raise ValidationFailed(
            f"La propina ({format_clp(tip)}) no puede superar el total de la venta ({format_clp(sale.total)}).",
            field="tip",
        )
    if tip == (sale.tip or 0):
        return await get_sale(s, venue_id, sale_id)
    sale.tip = tip
    await s.flush()
    controls = await permissions.get_controls(s, venue_id)
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.tip_set",
        entity="sale",
        entity_id=sale.id,
        payload={
            "tip": tip,
            "total": sale.total,
            "suggested": suggested_tip(sale.total, controls.suggested_tip_percent),
        },
    )
    return await get_sale(s, venue_id, sale_id)
