"""Who sees what of operations: the install's operators versus a venue's admins.

One caja installation may serve several venues. Whole-install operations (backups of the whole database,
the instance's metrics, every venue's registers in ``/health``) belong to the install's operators and to
the metrics token; a venue's admin sees only that venue.

The install's operators are the admins named in ``CAJA_INSTALL_OPERATORS`` (``venue-slug/username``,
comma separated): being one takes access to the server's configuration, never a web form. Without that
setting, an install with a single venue treats that venue's admins as its operators (there is nothing else
to see) and an install with several venues has none in the web (the metrics token and the command line
remain).
"""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

OPERATOR = re.compile(r"^[a-z0-9][a-z0-9-]{1,58}/[^\s,/]{1,60}$")


def parse_operators(value: str | None) -> list[tuple[str, str]] | None:
    """``"luna/admin, sol/jefe"`` → ``[("luna", "admin"), ("sol", "jefe")]``; None when not set."""
    if value is None or not value.strip():
        return None
    pairs = []
    for item in value.split(","):
        item = item.strip()
        if item:
            slug, _, username = item.partition("/")
            pairs.append((slug, username))
    return pairs


def invalid_operators(value: str | None) -> list[str]:
    """The items of ``CAJA_INSTALL_OPERATORS`` that are not ``venue-slug/username``."""
    if value is None:
        return []
    return [item.strip() for item in value.split(",") if item.strip() and not OPERATOR.match(item.strip())]


async def is_install_operator(s: AsyncSession, *, user_id: int, operators: list[tuple[str, str]] | None) -> bool:
    """Whether the (active admin) user with ``user_id`` is one of the install's operators."""
    from ..users.models import User
    from ..venues.models import Venue

    row = (
        await s.execute(
            select(User.username, User.role, User.active, Venue.slug)
            .join(Venue, Venue.id == User.venue_id)
            .where(User.id == user_id)
        )
    ).one_or_none()
    if row is None or row.role != "admin" or not row.active:
        return False
    if operators is None:
        venues = (await s.execute(select(func.count()).select_from(Venue))).scalar_one()
        return int(venues) == 1
    return (row.slug, row.username) in operators
