"""A sale marked voided, and the audit row that says so: one shape whether a cashier or supervisor voided it
or the session's close voided it because it was left unpaid."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from .models import Sale


async def mark_cancelled(
    s: AsyncSession,
    sale: Sale,
    *,
    venue_id: int,
    user_id: int,
    reason: str,
    was_paid: bool,
    authorized_by: int | None = None,
    **context: Any,
) -> None:
    """Mark ``sale`` voided by ``user_id`` for ``reason`` and record ``sale.cancelled`` with its total, method
    and cashier; ``context`` adds what the row should say besides (the session whose close voided it)."""
    sale.status = "cancelled"
    sale.cancelled_at = utcnow()
    sale.cancelled_by = user_id
    sale.cancel_reason = reason
    sale.cancel_authorized_by = authorized_by
    payload = {
        "reason": reason,
        "was_paid": was_paid,
        "total": sale.total,
        "method": sale.payment_method,
        "cashier_id": sale.cashier_id,
        "authorized_by": authorized_by,
    }
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="sale.cancelled",
        entity="sale",
        entity_id=sale.id,
        payload=payload | context,
    )
