"""Durable ticket numbers per device: the ticket is the idempotency key the terminal remembers.

A ticket is never handed out twice: the counter row is bumped inside the same transaction that commits the
attempt, so a ticket is either committed with its attempt or was never sent anywhere. Numbers keep growing
across the terminal's batch closes (``close_batch`` only records the new batch), so a ticket that may still be
in the terminal's memory is never reused.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import utcnow
from ..registers.models import TicketCounter
from .sql import insert_ignore


async def allocate_ticket(s: AsyncSession, key: str) -> str:
    await s.execute(insert_ignore(s, TicketCounter, {"key": key, "next_value": 1, "batch": 1, "updated_at": utcnow()}))
    await s.execute(
        update(TicketCounter)
        .where(TicketCounter.key == key)
        .values(next_value=TicketCounter.next_value + 1, updated_at=utcnow())
    )
    value = (await s.execute(select(TicketCounter.next_value).where(TicketCounter.key == key))).scalar_one()
    return str(value - 1)


async def close_batch(s: AsyncSession, key: str) -> int:
    """Record the terminal's batch close; returns the new batch number (ticket numbers keep growing)."""
    await s.execute(insert_ignore(s, TicketCounter, {"key": key, "next_value": 1, "batch": 1, "updated_at": utcnow()}))
    await s.execute(
        update(TicketCounter).where(TicketCounter.key == key).values(batch=TicketCounter.batch + 1, updated_at=utcnow())
    )
    return (await s.execute(select(TicketCounter.batch).where(TicketCounter.key == key))).scalar_one()
