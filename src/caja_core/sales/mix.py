"""The modifiers sold in a session or a jornada: how many of each and what they added, for the reports beside
the product mix (where each product's amount already includes its modifiers).

What a modifier added counts like the product mix counts a product (``dashboard.rollups.net_lines``): net of
the line's own discount and of the line's part of a discount on the whole sale. What the line lost to them is
split across the product's own price and each modifier's in proportion to what each came to, with the same
whole-peso rule (``prorate``), so a modifier's amount never exceeds what the line was charged."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..dashboard.rollups import net_lines, prorate
from .models import Sale, SaleItem


class ModifierMix(msgspec.Struct, kw_only=True):
    name: str
    units: int
    amount: int  # what the modifier added to the lines' prices (whole CLP), net of the sale's discounts


def modifier_amounts(
    quantity: int, unit_price: int, modifiers: list[dict[str, Any]], net: int
) -> list[tuple[str, int]]:
    """Each modifier of a line (name, amount) once the line comes to ``net``: the line's reduction
    (``unit_price × quantity − net``) prorated across the product's own price and the modifiers' prices."""
    added = [int(m.get("price", 0)) * quantity for m in modifiers]
    own = unit_price * quantity - sum(added)
    shares = prorate(unit_price * quantity - net, [own, *added])[1:]
    return [(str(m.get("name", "")), a - share) for m, a, share in zip(modifiers, added, shares, strict=True)]


async def modifier_mix(
    s: AsyncSession, venue_id: int, *, jornada_id: int | None = None, session_id: int | None = None
) -> list[ModifierMix]:
    """Paid sales' lines with modifiers (courtesies apart), summed per modifier name; most added first."""
    scope = (Sale.venue_id == venue_id) & (Sale.status == "paid") & Sale.no_revenue.is_(False)
    if session_id is not None:
        scope = scope & (Sale.session_id == session_id)
    elif jornada_id is not None:
        scope = scope & (Sale.jornada_id == jornada_id)
    else:
        return []
    with_modifiers = select(SaleItem.sale_id).where(SaleItem.modifiers.is_not(None))
    rows = await s.execute(
        select(
            Sale.id,
            Sale.total,
            SaleItem.product_id,
            SaleItem.quantity,
            SaleItem.unit_price,
            SaleItem.line_total - SaleItem.discount,
            SaleItem.modifiers,
        )
        .join(Sale, Sale.id == SaleItem.sale_id)
        .where(scope, Sale.id.in_(with_modifiers))
        .order_by(SaleItem.sale_id, SaleItem.id)
    )
    by_sale: dict[int, list[Any]] = defaultdict(list)
    totals: dict[int, int] = {}
    for sale_id, total, *line in rows.all():
        by_sale[sale_id].append(line)
        totals[sale_id] = int(total)
    found: dict[str, list[int]] = {}
    for sale_id, lines in by_sale.items():
        # The sale's lines as the product mix counts them: its whole-sale discount prorated across them.
        nets = net_lines([(p, int(q), int(a)) for p, q, _, a, _ in lines], totals[sale_id])
        for (_, quantity, unit_price, _, modifiers), (_, _, net) in zip(lines, nets, strict=True):
            if not modifiers:
                continue
            for name, amount in modifier_amounts(int(quantity), int(unit_price), modifiers, net):
                entry = found.setdefault(name, [0, 0])
                entry[0] += int(quantity)
                entry[1] += amount
    mix = [ModifierMix(name=name, units=u, amount=a) for name, (u, a) in found.items()]
    return sorted(mix, key=lambda m: (-m.units, -m.amount, m.name))
