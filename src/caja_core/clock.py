"""Time: store UTC instants, show and cut jornadas in the venue's zone, time deadlines monotonically."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ValidationFailed

DEFAULT_TIMEZONE = "America/Santiago"
#: A jornada opened before this local hour belongs to the previous night's date label.
DEFAULT_DAY_CUTOFF_HOUR = 6


class Clock:
    """Wall clock (UTC) and a monotonic clock. Tests substitute a subclass to jump time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def timer(self, seconds: float) -> float:
        """Real seconds the event loop waits for ``seconds`` of this clock's monotonic time (the same, except in
        tests whose clock runs faster)."""
        return seconds


SYSTEM_CLOCK = Clock()


def utcnow() -> datetime:
    return SYSTEM_CLOCK.now()


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(f"Zona horaria desconocida: {name!r}.", field="timezone") from exc


def to_local(instant: datetime, tz: str) -> datetime:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(zone(tz))


def jornada_label(opened_at: datetime, tz: str, cutoff_hour: int = DEFAULT_DAY_CUTOFF_HOUR) -> date:
    """The night a jornada belongs to: its local opening date, or the day before if opened after midnight
    but before the cut-off hour (a night that starts at 23:00 and one that starts at 00:30 are the same)."""
    local = to_local(opened_at, tz)
    return (local - timedelta(hours=cutoff_hour)).date()


def format_local(instant: datetime | None, tz: str, fmt: str = "%d-%m-%Y %H:%M") -> str:
    if instant is None:
        return "—"
    return to_local(instant, tz).strftime(fmt)
