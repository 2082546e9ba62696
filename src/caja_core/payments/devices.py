"""What caja knows about each payment device: who it says it is, its clock, and its recorded batch closes.

A device is reached through a **device key** (the provider's name for it, from the connection settings, which
the provider normalises so that two spellings of one address give one key) and, when the provider can ask it
(``Capability.IDENTIFY``), it has an **identity** (e.g. model and serial number) that does not depend on how it
is reached at all. Attempts record both when they are created.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..providers import DeviceIdentity
from .models import PaymentDevice, TerminalClose
from .sql import insert_ignore


async def known_device(s: AsyncSession, device_key: str) -> PaymentDevice | None:
    return (
        await s.execute(
            select(PaymentDevice)
            .where(PaymentDevice.device_key == device_key)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def remember_identity(
    s: AsyncSession, *, provider_id: str, device_key: str, identity: DeviceIdentity, now: datetime
) -> PaymentDevice:
    """Store what the device said about itself (and how far its clock is from ours)."""
    await s.execute(
        insert_ignore(s, PaymentDevice, {"device_key": device_key, "provider_id": provider_id, "label": ""})
    )
    row = await known_device(s, device_key)
    assert row is not None
    row.provider_id = provider_id
    row.identity = identity.identity[:160]
    row.label = (identity.label or identity.identity)[:200]
    row.identified_at = now
    if identity.clock is not None:
        row.clock_skew_s = round((identity.clock - now).total_seconds(), 3)
    return row


async def note_clock(s: AsyncSession, *, device_key: str, device_time: datetime, now: datetime) -> None:
    """How far the device's clock is from ours, read off an answer it has just given to a charge (its own time
    of the operation, stamped a moment before the answer left it). A later question's answers are then matched
    within that difference: a terminal whose clock runs behind (never set, drifted, read in the wrong zone)
    still has its charge found."""
    row = await known_device(s, device_key)
    if row is not None:
        row.clock_skew_s = round((device_time - now).total_seconds(), 3)


def same_device(device_key: str, identity: str | None) -> Any:
    """A SQL condition for "this device": its key, or its identity when known."""
    from .models import PaymentAttempt

    if identity:
        return or_(PaymentAttempt.device_key == device_key, PaymentAttempt.device_identity == identity)
    return PaymentAttempt.device_key == device_key


async def close_after(
    s: AsyncSession, *, device_key: str, identity: str | None, after: datetime
) -> TerminalClose | None:
    """The first batch close of the device recorded after ``after``, if any."""
    condition = TerminalClose.device_key == device_key
    if identity:
        condition = or_(condition, TerminalClose.device_identity == identity)
    return (
        await s.execute(
            select(TerminalClose)
            .where(condition, TerminalClose.closed_at > after)
            .order_by(TerminalClose.closed_at)
            .limit(1)
        )
    ).scalar_one_or_none()


async def last_close(
    s: AsyncSession, *, device_key: str, identity: str | None, before: datetime | None = None
) -> TerminalClose | None:
    """The device's latest recorded batch close (with ``before``: the latest one before that time)."""
    condition = TerminalClose.device_key == device_key
    if identity:
        condition = or_(condition, TerminalClose.device_identity == identity)
    if before is not None:
        condition = and_(condition, TerminalClose.closed_at < before)
    return (
        await s.execute(select(TerminalClose).where(condition).order_by(TerminalClose.closed_at.desc()).limit(1))
    ).scalar_one_or_none()
