"""The modifiers sold in a session or a jornada: how many of each and what they added, for the reports beside
the product mix (where each product's amount already includes its modifiers)."""

from __future__ import annotations

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Sale, SaleItem


class ModifierMix(msgspec.Struct, kw_only=True):
    name: str
    units: int
    amount: int  # what the modifier added to the lines' prices (whole CLP), before discounts


async def modifier_mix(
    s: AsyncSession, venue_id: int, *, jornada_id: int | None = None, session_id: int | None = None
) -> list[ModifierMix]:
    """Paid sales' lines with modifiers (courtesies apart), summed per modifier name; most added first."""
    q = (
        select(SaleItem.quantity, SaleItem.modifiers)
        .join(Sale, Sale.id == SaleItem.sale_id)
        .where(
            Sale.venue_id == venue_id,
            Sale.status == "paid",
            Sale.no_revenue.is_(False),
            SaleItem.modifiers.is_not(None),
        )
    )
    if session_id is not None:
        q = q.where(Sale.session_id == session_id)
    elif jornada_id is not None:
        q = q.where(Sale.jornada_id == jornada_id)
    else:
        return []
    found: dict[str, list[int]] = {}
    for quantity, modifiers in (await s.execute(q)).all():
        for m in modifiers or []:
            entry = found.setdefault(str(m.get("name", "")), [0, 0])
            entry[0] += quantity
            entry[1] += int(m.get("price", 0)) * quantity
    mix = [ModifierMix(name=name, units=u, amount=a) for name, (u, a) in found.items()]
    return sorted(mix, key=lambda m: (-m.units, -m.amount, m.name))
