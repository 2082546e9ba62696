from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import DEFAULT_TIMEZONE, utcnow
from ..db.base import Base, JSONType, UTCDateTime

#: CLP bills and coins in circulation, largest first.
DEFAULT_DENOMINATIONS = [20000, 10000, 5000, 2000, 1000, 500, 100, 50, 10]


class Venue(Base):
    """A tenant: one venue (club, bar, event). Every other row belongs to one."""

    __tablename__ = "venues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    currency: Mapped[str] = mapped_column(String(3), default="CLP")
    denominations: Mapped[list[int]] = mapped_column(JSONType, default=lambda: list(DEFAULT_DENOMINATIONS))
    #: A close whose |difference| is above this needs a supervisor's approval and note.
    close_tolerance: Mapped[int] = mapped_column(BigInteger, default=1000)
    day_cutoff_hour: Mapped[int] = mapped_column(Integer, default=6)
    #: Money-control thresholds (``permissions.VenueControls``); None = the defaults.
    controls: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
