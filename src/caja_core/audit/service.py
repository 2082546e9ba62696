"""Audit log (append-only) and incidents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..carddata import scrub, scrub_text
from ..clock import utcnow
from ..db.lookup import get_in_venue
from .models import AuditEvent, Incident


class IncidentOut(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    description: str
    created_at: datetime
    resolved: bool
    jornada_id: int | None = None
    session_id: int | None = None
    register_id: int | None = None
    attempt_id: int | None = None
    resolution: str = ""


class AuditOut(msgspec.Struct, kw_only=True):
    id: int
    action: str
    user_id: int | None
    entity: str
    entity_id: str
    payload: dict[str, Any] | None
    created_at: datetime


async def record(
    s: AsyncSession,
    *,
    venue_id: int | None,
    user_id: int | None,
    action: str,
    entity: str = "",
    entity_id: object = "",
    payload: dict[str, Any] | None = None,
) -> None:
    s.add(
        AuditEvent(
            venue_id=venue_id,
            user_id=user_id,
            action=action,
            entity=entity,
            entity_id=str(entity_id or ""),
            payload=scrub(payload) if payload else payload,  # no card data, whatever a caller passes
            created_at=utcnow(),
        )
    )


async def open_incident(
    s: AsyncSession,
    *,
    venue_id: int,
    kind: str,
    description: str,
    jornada_id: int | None = None,
    session_id: int | None = None,
    register_id: int | None = None,
    attempt_id: int | None = None,
    user_id: int | None = None,
) -> int:
    if jornada_id is None and session_id is not None:  # an incident of a session belongs to its jornada
        from ..sessions.models import CashSession

        jornada_id = await s.scalar(select(CashSession.jornada_id).where(CashSession.id == session_id))
    description = scrub_text(description)
    incident = Incident(
        venue_id=venue_id,
        kind=kind,
        description=description[:1000],
        jornada_id=jornada_id,
        session_id=session_id,
        register_id=register_id,
        attempt_id=attempt_id,
        created_by=user_id,
        created_at=utcnow(),
    )
    s.add(incident)
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="incident.opened",
        entity="incident",
        entity_id=incident.id,
        payload={"kind": kind, "description": description[:300]},
    )
    return incident.id


async def resolve_incident(s: AsyncSession, *, venue_id: int, incident_id: int, user_id: int, resolution: str) -> None:
    incident = await get_in_venue(s, Incident, incident_id, venue_id, "La incidencia no existe.", "incident.not_found")
    incident.resolved = True
    incident.resolved_by = user_id
    incident.resolved_at = utcnow()
    incident.resolution = scrub_text(resolution)[:1000]
    await record(
        s, venue_id=venue_id, user_id=user_id, action="incident.resolved", entity="incident", entity_id=incident_id
    )


def _incident_out(i: Incident) -> IncidentOut:
    return IncidentOut(
        id=i.id,
        kind=i.kind,
        description=i.description,
        created_at=i.created_at,
        resolved=i.resolved,
        jornada_id=i.jornada_id,
        session_id=i.session_id,
        register_id=i.register_id,
        attempt_id=i.attempt_id,
        resolution=i.resolution,
    )


async def list_incidents(
    s: AsyncSession,
    venue_id: int,
    *,
    jornada_id: int | None = None,
    session_id: int | None = None,
    unresolved_only: bool = False,
) -> list[IncidentOut]:
    q = select(Incident).where(Incident.venue_id == venue_id)
    if jornada_id is not None:
        q = q.where(Incident.jornada_id == jornada_id)
    if session_id is not None:
        q = q.where(Incident.session_id == session_id)
    if unresolved_only:
        q = q.where(Incident.resolved.is_(False))
    rows = (await s.scalars(q.order_by(Incident.id))).all()
    return [_incident_out(i) for i in rows]


async def list_audit(
    s: AsyncSession, venue_id: int, *, action_prefix: str | None = None, limit: int = 200
) -> list[AuditOut]:
    q = select(AuditEvent).where(AuditEvent.venue_id == venue_id)
    if action_prefix:
        q = q.where(AuditEvent.action.startswith(action_prefix))
    rows = (await s.scalars(q.order_by(AuditEvent.id.desc()).limit(limit))).all()
    return [
        AuditOut(
            id=a.id,
            action=a.action,
            user_id=a.user_id,
            entity=a.entity,
            entity_id=a.entity_id,
            payload=a.payload,
            created_at=a.created_at,
        )
        for a in rows
    ]
