from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db.base import Base, UTCDateTime


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("venue_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    username: Mapped[str] = mapped_column(String(60))
    display_name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(20))  # admin / supervisor / cashier
    secret_hash: Mapped[str] = mapped_column(String(255))  # argon2: password (admin/supervisor) or PIN
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Bumped on every change of role, active flag, password or PIN and on "log out everywhere": a web
    #: session carries the version it was opened with and ends when it no longer matches.
    credentials_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: Quick authorization at the register (supervisors and admins): a PIN and/or a badge code (argon2).
    authorization_pin_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    badge_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSession(Base):
    """Server-side web session data (the shared store when no Redis is configured)."""

    __tablename__ = "web_sessions"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class AuthThrottle(Base):
    """Failed-credential counters shared by every app instance: per (venue, user, client address), per
    client address and per account. ``blocked_until`` holds a back-off whose length doubles with ``level``."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    level: Mapped[int] = mapped_column(Integer, default=0)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
