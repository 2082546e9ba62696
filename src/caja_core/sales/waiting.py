"""Ventas en espera: sales left waiting while their card payment is in doubt, kept with the sale in the database.

The register serves the next customer while caja keeps asking the terminal about the waiting sale. The list is
derived from the database, so it survives a logout, a restart and a second device on the same register, and a
supervisor sees it too: every sale of the session whose payment is in doubt, and every sale that was left
waiting and whose end (paid or voided) nobody at the register has seen yet. Nothing caps it.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..errors import Conflict, NotFound
from ..payments import lifecycle
from ..payments.models import PaymentAttempt
from .models import Sale
from .service import SaleOut, get_sale, sale_out

ENDED = ("paid", "cancelled")


async def _sale(s: AsyncSession, venue_id: int, sale_id: int) -> Sale:
    sale = (
        await s.execute(
            select(Sale)
            .where(Sale.id == sale_id, Sale.venue_id == venue_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if sale is None:
        raise NotFound("La venta no existe.", code="sale.not_found")
    return sale


async def park_sale(s: AsyncSession, *, venue_id: int, sale_id: int, user_id: int) -> SaleOut:
    """Leave the sale waiting: its card payment is unresolved (in doubt, or still on its way), it goes on being
    reconciled, and it stays listed until its end has been seen. Nothing about the payment changes."""
    sale = await _sale(s, venue_id, sale_id)
    unresolved = await s.scalar(
        select(PaymentAttempt.id).where(
            PaymentAttempt.sale_id == sale_id, PaymentAttempt.state.in_(lifecycle.UNRESOLVED)
        )
    )
    if sale.status != "pending_payment" or unresolved is None:
        raise Conflict("Solo una venta con el cobro en duda puede quedar en espera.", code="pos.park_not_in_doubt")
    if sale.parked_at is None:
        sale.parked_at = utcnow()
        await record(
            s,
            venue_id=venue_id,
            user_id=user_id,
            action="sale.parked",
            entity="sale",
            entity_id=sale.id,
            payload={"session_id": sale.session_id, "total": sale.total},
        )
    return await get_sale(s, venue_id, sale_id)


async def waiting_sales(s: AsyncSession, venue_id: int, session_id: int, *, with_open: bool = False) -> list[SaleOut]:
    """The session's ventas en espera, oldest first: sales whose payment is in doubt, and sales left waiting
    that are still pending or whose end nobody has seen yet. ``with_open``: every other unpaid sale of the
    session too (its ``parked`` False), in the same query: a sale taken to its pay screen and left there by a
    logout, an expired login or another device is never an unpaid sale nobody sees (``open_sale``)."""
    if with_open:
        listed = or_(Sale.parked_at.is_not(None), Sale.status == "pending_payment")
    else:
        doubtful = select(PaymentAttempt.sale_id).where(
            PaymentAttempt.session_id == session_id, PaymentAttempt.state.in_(lifecycle.DOUBTFUL)
        )
        listed = or_(Sale.parked_at.is_not(None), (Sale.status == "pending_payment") & Sale.id.in_(doubtful))
    rows = await s.scalars(
        select(Sale).where(Sale.venue_id == venue_id, Sale.session_id == session_id, listed).order_by(Sale.id)
    )
    return [sale_out(r) for r in rows]


async def open_sale(s: AsyncSession, venue_id: int, session_id: int) -> int | None:
    """The session's latest unpaid sale that is not left waiting (created at «Cobrar» and not paid nor voided),
    or None: where a cashier who comes back to the register (after a logout or an expired login) lands."""
    return await s.scalar(
        select(Sale.id)
        .where(
            Sale.venue_id == venue_id,
            Sale.session_id == session_id,
            Sale.status == "pending_payment",
            Sale.parked_at.is_(None),
        )
        .order_by(Sale.id.desc())
        .limit(1)
    )


async def seen_ended(s: AsyncSession, *, venue_id: int, sale_id: int, user_id: int) -> bool:
    """Someone at the register has seen how a waiting sale ended (its receipt, or that it was voided): it leaves
    the list. True when it was waiting and has ended."""
    sale = await _sale(s, venue_id, sale_id)
    if sale.parked_at is None or sale.status not in ENDED:
        return False
    sale.parked_at = None
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.waiting_ended",
        entity="sale",
        entity_id=sale.id,
        payload={"session_id": sale.session_id, "status": sale.status},
    )
    return True
