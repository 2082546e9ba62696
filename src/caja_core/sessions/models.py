from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db.base import Base, JSONType, UTCDateTime


class CashSession(Base):
    """A register session (the seed's register_sessions), with running totals kept in each sale's
    transaction so that close is O(1)."""

    __tablename__ = "cash_sessions"
    __table_args__ = (
        # At most one non-closed session per register, enforced by the database.
        Index(
            "uq_cash_sessions_one_open_per_register",
            "register_id",
            unique=True,
            sqlite_where=text("status != 'closed'"),
            postgresql_where=text("status != 'closed'"),
        ),
        UniqueConstraint("venue_id", "open_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    register_id: Mapped[int] = mapped_column(ForeignKey("cash_registers.id"), index=True)
    jornada_id: Mapped[int] = mapped_column(ForeignKey("jornadas.id"), index=True)
    opened_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: Who holds the drawer now: the opener, until a handover gives it to another cashier. Only the holder
    #: sells, moves cash and closes in the session.
    cashier_id: Mapped[int] = mapped_column(
        ForeignKey("users.id"), index=True, default=lambda ctx: ctx.get_current_parameters()["opened_by"]
    )
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    open_key: Mapped[str] = mapped_column(String(80))  # idempotency key of the open request
    status: Mapped[str] = mapped_column(String(10), default="open")  # open / closing / closed
    initial_cash: Mapped[int] = mapped_column(BigInteger, default=0)
    initial_count: Mapped[dict[str, int] | None] = mapped_column(JSONType, nullable=True)

    # Running totals (revenue sales only: not cancelled, not courtesy).
    ticket_count: Mapped[int] = mapped_column(Integer, default=0)
    sales_total: Mapped[int] = mapped_column(BigInteger, default=0)
    cash_sales_count: Mapped[int] = mapped_column(Integer, default=0)
    cash_sales_total: Mapped[int] = mapped_column(BigInteger, default=0)
    card_sales_total: Mapped[int] = mapped_column(BigInteger, default=0)
    courtesy_count: Mapped[int] = mapped_column(Integer, default=0)
    courtesy_total: Mapped[int] = mapped_column(BigInteger, default=0)
    cancelled_count: Mapped[int] = mapped_column(Integer, default=0)
    cancelled_total: Mapped[int] = mapped_column(BigInteger, default=0)
    cash_in_total: Mapped[int] = mapped_column(BigInteger, default=0)
    cash_out_total: Mapped[int] = mapped_column(BigInteger, default=0)
    primary_count: Mapped[int] = mapped_column(Integer, default=0)
    backup_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Discounts on the paid revenue sales (already out of sales_total): how many sales, how much.
    discount_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    discount_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: Tips on the paid sales (not in sales_total): how many, how much, and how much of it in cash (in the drawer).
    tip_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tip_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cash_tip_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: Sum of the differences found at handovers (each one belongs to the cashier who handed over).
    handover_difference: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    # Close (blind count).
    closed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    counted_breakdown: Mapped[dict[str, int] | None] = mapped_column(JSONType, nullable=True)
    counted_cash: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expected_cash: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    difference: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    close_note: Mapped[str] = mapped_column(String(1000), default="")
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)

    @property
    def expected_cash_now(self) -> int:
        return (
            self.initial_cash + self.cash_sales_total + self.cash_tip_total + self.cash_in_total - self.cash_out_total
        )


class SessionTotal(Base):
    """Running totals of a session's card sales per (dimension, key): dimension 'provider' or 'method'.
    Cash sales are counted in the session's own cash columns (one UPDATE on the hot path)."""

    __tablename__ = "session_totals"

    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(12), primary_key=True)
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)


class CashMovement(Base):
    """Paid in / paid out during an open session (counted in expected cash)."""

    __tablename__ = "cash_movements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(4))  # in / out
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    authorized_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FallbackEvent(Base):
    """A switch from one provider to another during a session (from, to, reason, who, when)."""

    __tablename__ = "fallback_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), index=True)
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"), nullable=True, index=True)
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("payment_attempts.id"), nullable=True)
    from_provider: Mapped[str] = mapped_column(String(40))
    to_provider: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(300))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    override: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class SessionHandover(Base):
    """A drawer handed from one cashier to another in the middle of a session: the incoming cashier counts
    it blind by denomination; the difference at that moment belongs to the outgoing cashier."""

    __tablename__ = "session_handovers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), index=True)
    from_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    to_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    authorized_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    counted_breakdown: Mapped[dict[str, int]] = mapped_column(JSONType)
    counted_cash: Mapped[int] = mapped_column(BigInteger)
    expected_cash: Mapped[int] = mapped_column(BigInteger)
    difference: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
