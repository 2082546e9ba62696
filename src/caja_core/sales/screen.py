"""What a register's sale screen must show about the world around the cart, read in one call that the POS
polls: whether the session still takes sales (closed or closing elsewhere, taken over by another cashier),
whether the register is still operational, and the register's payment mode (a terminal in breaker puts it in
contingency). The POS shows the answer within one poll, so a cashier never sells on a session that is gone.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import DEFAULT_TIMEZONE, format_local
from ..errors import NotFound
from ..offline.rules import rule_of
from ..ops import contingency
from ..registers.models import CashRegister
from ..registers.service import STATUS_LABELS
from ..sessions.models import CashSession
from ..users.models import User
from ..venues.models import Venue


class ScreenStatus(msgspec.Struct, kw_only=True):
    session_id: int
    session_status: str  # open / closing / closed
    register_id: int
    register_name: str
    register_status: str  # the register's operational status
    holder_id: int
    #: Whether this screen may keep selling: the session is open, held by the viewer, the register works.
    can_sell: bool
    #: Why it may not (Spanish, for the cashier); empty when it may.
    reason: str
    mode: contingency.ContingencyState
    closed_at: datetime | None = None
    #: The register's offline rule now (methods and backup provider): when it changes, the screen has the device
    #: keep the new version for selling offline.
    offline_rule: str = ""


async def screen_status(
    s: AsyncSession, *, venue_id: int, session_id: int, user_id: int, timezone: str | None = None
) -> ScreenStatus:
    """The sale screen's situation for ``user_id`` selling in ``session_id`` (three indexed reads)."""
    row = (
        await s.execute(
            select(CashSession, CashRegister)
            .join(CashRegister, CashRegister.id == CashSession.register_id)
            .where(CashSession.id == session_id, CashSession.venue_id == venue_id)
        )
    ).first()
    if row is None:
        raise NotFound("La sesión de caja no existe.", code="session.not_found")
    session, register = row
    tz = timezone or await s.scalar(select(Venue.timezone).where(Venue.id == venue_id)) or DEFAULT_TIMEZONE
    mode = await contingency.register_state(s, venue_id=venue_id, register_id=register.id)
    reason = ""
    if session.status == "closed":
        who = await _name(s, session.approved_by or session.closed_by)
        when = format_local(session.closed_at, tz, "%H:%M") if session.closed_at else ""
        reason = (
            f"Esta caja se cerró{' a las ' + when if when else ''}{' (' + who + ')' if who else ''}. "
            "No se pueden registrar más ventas en ella: elija una caja."
        )
    elif session.status != "open":
        reason = "Esta caja está en cierre: espera la aprobación de un supervisor. No se pueden registrar ventas."
    elif session.cashier_id != user_id:
        who = await _name(s, session.cashier_id)
        reason = f"{who or 'Otro cajero'} tomó esta caja en un relevo: ya no puede vender en ella."
    elif not register.active or register.operational_status != "active":
        label = (
            STATUS_LABELS.get(register.operational_status, register.operational_status).lower()
            if register.active
            else "desactivada"
        )
        reason = f"La caja {register.name} fue suspendida ({label}): no se pueden registrar ventas."
    return ScreenStatus(
        session_id=session.id,
        session_status=session.status,
        register_id=register.id,
        register_name=register.name,
        register_status=register.operational_status if register.active else "inactive",
        holder_id=session.cashier_id,
        can_sell=not reason,
        reason=reason,
        mode=mode,
        closed_at=session.closed_at,
        offline_rule=rule_of(register).fingerprint,
    )


async def _name(s: AsyncSession, user_id: int | None) -> str:
    if user_id is None:
        return ""
    return (await s.scalar(select(User.display_name).where(User.id == user_id))) or ""
