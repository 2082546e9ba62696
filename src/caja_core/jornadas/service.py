"""Jornadas (business days/nights): open, close, current; labelled in the venue's time zone."""

from __future__ import annotations

from datetime import date, datetime

import msgspec
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import jornada_label, utcnow
from ..db.lookup import get_in_venue
from ..errors import Conflict, NotFound
from ..registers.models import CashRegister
from ..sessions.models import CashSession
from ..venues.models import Venue
from .models import Jornada


class JornadaOut(msgspec.Struct, kw_only=True):
    id: int
    venue_id: int
    label_date: date
    status: str
    opened_at: datetime
    opened_by: int | None
    closed_at: datetime | None = None
    closed_by: int | None = None

    @property
    def label(self) -> str:
        return self.label_date.strftime("%d-%m-%Y")


def jornada_out(j: Jornada) -> JornadaOut:
    return JornadaOut(
        id=j.id,
        venue_id=j.venue_id,
        label_date=j.label_date,
        status=j.status,
        opened_at=j.opened_at,
        opened_by=j.opened_by,
        closed_at=j.closed_at,
        closed_by=j.closed_by,
    )


async def open_jornada(
    s: AsyncSession, *, venue_id: int, user_id: int | None, now: datetime | None = None
) -> JornadaOut:
    venue = await s.get(Venue, venue_id)
    if venue is None:
        raise NotFound("El local no existe.", code="venue.not_found")
    current = await s.scalar(select(Jornada).where(Jornada.venue_id == venue_id, Jornada.status != "closed"))
    if current is not None:
        raise Conflict(
            f"Ya hay una jornada abierta ({current.label_date:%d-%m-%Y}). Ciérrela antes de abrir otra.",
            code="jornada.already_open",
        )
    now = now or utcnow()
    label_date = jornada_label(now, venue.timezone, venue.day_cutoff_hour)
    # Opened again on the same night (closed too early): the night's jornada is reopened, never a second
    # jornada with the same date; its sessions, sales and reports go on in it.
    jornada = await s.scalar(
        select(Jornada)
        .where(Jornada.venue_id == venue_id, Jornada.label_date == label_date, Jornada.status == "closed")
        .order_by(Jornada.id.desc())
        .limit(1)
        .with_for_update()
    )
    action = "jornada.reopened" if jornada is not None else "jornada.opened"
    if jornada is not None:
        jornada.status, jornada.closed_at, jornada.closed_by = "open", None, None
    else:
        jornada = Jornada(venue_id=venue_id, status="open", opened_by=user_id, opened_at=now, label_date=label_date)
        s.add(jornada)
    try:
        await s.flush()
    except IntegrityError as exc:  # another instance opened one at the same moment
        raise Conflict("Ya hay una jornada abierta.", code="jornada.already_open") from exc
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action=action,
        entity="jornada",
        entity_id=jornada.id,
        payload={"label": jornada.label_date.isoformat()},
    )
    return jornada_out(jornada)


async def close_jornada(
    s: AsyncSession, *, venue_id: int, jornada_id: int, user_id: int | None, notes: str = ""
) -> JornadaOut:
    jornada = await s.scalar(
        select(Jornada).where(Jornada.id == jornada_id, Jornada.venue_id == venue_id).with_for_update()
    )
    if jornada is None:
        raise NotFound("La jornada no existe.", code="jornada.not_found")
    if jornada.status == "closed":
        raise Conflict("La jornada ya está cerrada.", code="jornada.closed")
    open_codes = list(
        await s.scalars(
            select(CashRegister.code)
            .join(CashSession, CashSession.register_id == CashRegister.id)
            .where(CashSession.jornada_id == jornada_id, CashSession.status != "closed")
            .order_by(CashRegister.code)
        )
    )
    if open_codes:
        raise Conflict(
            f"No se puede cerrar la jornada: hay sesiones de caja abiertas ({', '.join(open_codes)}).",
            code="jornada.sessions_open",
            details={"registers": open_codes},
        )
    pending = await unresolved_payments(s, jornada_id)
    if pending:
        raise Conflict(
            "No se puede cerrar la jornada: hay cobros sin resolver. " + "; ".join(pending),
            code="jornada.unresolved_payments",
            details={"attempts": pending},
        )
    jornada.status = "closed"
    jornada.closed_at = utcnow()
    jornada.closed_by = user_id
    jornada.notes = notes[:1000]
    await record(s, venue_id=venue_id, user_id=user_id, action="jornada.closed", entity="jornada", entity_id=jornada.id)
    return jornada_out(jornada)


async def unresolved_payments(s: AsyncSession, jornada_id: int) -> list[str]:
    """The jornada's payment attempts that are not resolved (a duplicate charge still to return, an attempt in
    doubt of a session already closed): the jornada cannot close while any."""
    from ..payments import lifecycle
    from ..payments.models import PaymentAttempt
    from ..payments.service import describe

    rows = (
        await s.execute(
            select(PaymentAttempt)
            .join(CashSession, CashSession.id == PaymentAttempt.session_id)
            .where(CashSession.jornada_id == jornada_id, PaymentAttempt.state.in_(lifecycle.UNRESOLVED))
            .order_by(PaymentAttempt.id)
        )
    ).scalars()
    return [describe(a) for a in rows]


async def closable(s: AsyncSession, *, venue_id: int, jornada_id: int) -> None:
    """Raise the Conflict ``close_jornada`` would raise, without changing anything."""
    jornada = await s.scalar(select(Jornada).where(Jornada.id == jornada_id, Jornada.venue_id == venue_id))
    if jornada is None:
        raise NotFound("La jornada no existe.", code="jornada.not_found")
    if jornada.status == "closed":
        raise Conflict("La jornada ya está cerrada.", code="jornada.closed")
    if await count_open_sessions(s, jornada_id):
        raise Conflict("No se puede cerrar la jornada: hay sesiones de caja abiertas.", code="jornada.sessions_open")


async def current_jornada(s: AsyncSession, venue_id: int) -> JornadaOut | None:
    jornada = await s.scalar(select(Jornada).where(Jornada.venue_id == venue_id, Jornada.status == "open"))
    return jornada_out(jornada) if jornada else None


async def get_jornada(s: AsyncSession, venue_id: int, jornada_id: int) -> JornadaOut:
    return jornada_out(
        await get_in_venue(s, Jornada, jornada_id, venue_id, "La jornada no existe.", "jornada.not_found")
    )


async def list_jornadas(s: AsyncSession, venue_id: int, *, limit: int = 60) -> list[JornadaOut]:
    rows = await s.scalars(
        select(Jornada).where(Jornada.venue_id == venue_id).order_by(Jornada.opened_at.desc()).limit(limit)
    )
    return [jornada_out(j) for j in rows]


async def count_open_sessions(s: AsyncSession, jornada_id: int) -> int:
    return (
        await s.scalar(
            select(func.count())
            .select_from(CashSession)
            .where(CashSession.jornada_id == jornada_id, CashSession.status != "closed")
        )
        or 0
    )
