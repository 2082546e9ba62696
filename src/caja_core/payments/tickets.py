"""Ticket numbers: the ticket is the idempotency key the device remembers, so a ticket identifies one attempt
forever — across devices, restores and counter resets.

A ticket is a **series prefix** and a **number**: ``QXATBK`` + ``1234`` → ``QXATBK1234`` (letters then digits,
at most 20 characters, what card terminals accept as a ticket number). Each app instance draws a new random prefix when it
starts (six letters from an alphabet without I and O: 191 million prefixes) and registers it in
``ticket_series``, whose primary key refuses a prefix this database has ever used; the number counts up within
the series, in the same transaction that commits the attempt. So:

* tickets never depend on a device's address or key (changing how a terminal is reached restarts nothing);
* a database restored from a backup rolls the counters back, but the app restarts after a restore (it must be
  stopped for one) and draws a new prefix: the old numbers are never handed out again under a prefix that
  was already used (only a prefix drawn after the backup and lost with the restore could be drawn again, one
  chance in 191 million per start);
* two instances never share a series.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import utcnow
from .models import TicketSeries

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O: read aloud and typed without confusion
PREFIX_LENGTH = 6
MAX_TICKET_LENGTH = 20


def new_prefix() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(PREFIX_LENGTH))


def format_ticket(prefix: str, number: int) -> str:
    ticket = f"{prefix}{number}"
    if len(ticket) > MAX_TICKET_LENGTH:
        raise OverflowError("ticket series exhausted")
    return ticket


class TicketIssuer:
    """The ticket series of one app instance."""

    def __init__(self, db: Any, instance_id: str) -> None:
        self.db = db
        self.instance_id = instance_id
        self.prefix: str | None = None
        self._lock = asyncio.Lock()

    async def start_series(self) -> str:
        """Draw and register a new prefix (committed on its own, before any ticket of it is used)."""
        async with self._lock:
            for _ in range(20):
                prefix = new_prefix()
                try:
                    async with self.db.session() as s:
                        s.add(
                            TicketSeries(
                                prefix=prefix, instance=self.instance_id[:80], started_at=utcnow(), next_value=1
                            )
                        )
                except IntegrityError:
                    continue  # already used in this database: draw again
                self.prefix = prefix
                return prefix
            raise RuntimeError("could not draw a new ticket series")

    async def allocate(self, s: AsyncSession) -> str:
        """The next ticket, inside the caller's transaction (committed with the attempt or never used)."""
        for _ in range(3):
            if self.prefix is None:
                await self._series_in(s)
            prefix = self.prefix
            assert prefix is not None
            number = (
                await s.execute(
                    update(TicketSeries)
                    .where(TicketSeries.prefix == prefix)
                    .values(next_value=TicketSeries.next_value + 1)
                    .returning(TicketSeries.next_value)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one_or_none()
            if number is not None:
                try:
                    return format_ticket(prefix, int(number) - 1)
                except OverflowError:
                    pass
            # The series is exhausted, or its row is gone (its first transaction did not commit): a new one.
            self.prefix = None
        raise RuntimeError("could not allocate a ticket")

    async def _series_in(self, s: AsyncSession) -> None:
        """Register a new series inside the caller's transaction (it commits with the first ticket)."""
        for _ in range(20):
            prefix = new_prefix()
            try:
                async with s.begin_nested():
                    s.add(
                        TicketSeries(prefix=prefix, instance=self.instance_id[:80], started_at=utcnow(), next_value=1)
                    )
                    await s.flush()
            except IntegrityError:
                continue
            self.prefix = prefix
            return
        raise RuntimeError("could not draw a new ticket series")


async def series(s: AsyncSession) -> list[TicketSeries]:
    return list((await s.execute(select(TicketSeries).order_by(TicketSeries.started_at))).scalars())
