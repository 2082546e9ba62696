"""Venues (tenants)."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import DEFAULT_TIMEZONE, utcnow, zone
from ..errors import Conflict, NotFound, ValidationFailed
from .models import DEFAULT_DENOMINATIONS, Venue


class VenueOut(msgspec.Struct, kw_only=True):
    id: int
    slug: str
    name: str
    timezone: str
    currency: str
    denominations: list[int]
    close_tolerance: int
    day_cutoff_hour: int
    created_at: datetime


def venue_out(v: Venue) -> VenueOut:
    return VenueOut(
        id=v.id,
        slug=v.slug,
        name=v.name,
        timezone=v.timezone,
        currency=v.currency,
        denominations=list(v.denominations),
        close_tolerance=v.close_tolerance,
        day_cutoff_hour=v.day_cutoff_hour,
        created_at=v.created_at,
    )


async def create_venue(
    s: AsyncSession,
    *,
    slug: str,
    name: str,
    timezone: str = DEFAULT_TIMEZONE,
    close_tolerance: int = 1000,
    denominations: list[int] | None = None,
) -> VenueOut:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,58}", slug or ""):
        raise ValidationFailed(
            "El identificador del local debe tener letras minúsculas, números o guiones.", field="slug"
        )
    if not name or not name.strip():
        raise ValidationFailed("El nombre del local es obligatorio.", field="name")
    zone(timezone)
    if await s.scalar(select(Venue.id).where(Venue.slug == slug)):
        raise Conflict(f"Ya existe un local con identificador {slug!r}.", code="venue.exists", field="slug")
    venue = Venue(
        slug=slug,
        name=name.strip(),
        timezone=timezone,
        currency="CLP",
        denominations=sorted(set(denominations or DEFAULT_DENOMINATIONS), reverse=True),
        close_tolerance=close_tolerance,
        created_at=utcnow(),
    )
    s.add(venue)
    await s.flush()
    return venue_out(venue)


async def get_venue(s: AsyncSession, venue_id: int) -> VenueOut:
    venue = await s.get(Venue, venue_id)
    if venue is None:
        raise NotFound("El local no existe.", code="venue.not_found")
    return venue_out(venue)


async def get_venue_by_slug(s: AsyncSession, slug: str) -> VenueOut:
    venue = await s.scalar(select(Venue).where(Venue.slug == slug))
    if venue is None:
        raise NotFound("El local no existe.", code="venue.not_found")
    return venue_out(venue)


async def first_venue(s: AsyncSession) -> VenueOut | None:
    venue = await s.scalar(select(Venue).order_by(Venue.id).limit(1))
    return venue_out(venue) if venue else None
