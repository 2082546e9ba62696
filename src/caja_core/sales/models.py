from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db.base import Base, JSONType, UTCDateTime


class Sale(Base):
    __tablename__ = "sales"
    __table_args__ = (
        UniqueConstraint("venue_id", "idempotency_key"),
        # Close and reports look for a session's sales in one state; never a scan of all its sales.
        Index("ix_sales_session_status", "session_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), index=True)
    register_id: Mapped[int] = mapped_column(ForeignKey("cash_registers.id"), index=True)
    jornada_id: Mapped[int] = mapped_column(ForeignKey("jornadas.id"), index=True)
    cashier_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    idempotency_key: Mapped[str] = mapped_column(String(80))
    total: Mapped[int] = mapped_column(BigInteger)  # computed by the server from the items, less discounts
    #: What the discounts took off the items' prices (line and sale discounts): total + discount_total = list price.
    discount_total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: The customer's tip, paid with the sale and by the same means; not revenue (kept apart from total).
    tip: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16), default="pending_payment")  # pending_payment/paid/cancelled
    payment_method: Mapped[str | None] = mapped_column(String(16), nullable=True)  # cash / card
    provider_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # who took the money
    paid_via: Mapped[str | None] = mapped_column(String(10), nullable=True)  # cash / primary / backup
    no_revenue: Mapped[bool] = mapped_column(Boolean, default=False)  # courtesy (OFICINA)
    courtesy_reason: Mapped[str] = mapped_column(String(200), default="")
    cash_received: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    change_given: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: A split payment: the part of the total already paid in cash; the rest is paid by card or the backup (its
    #: attempts charge only the rest) or in cash.
    cash_part: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: Left waiting ("ventas en espera") while its card payment was in doubt; cleared once someone at the
    #: register has seen how it ended (paid or voided).
    parked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    cancel_reason: Mapped[str] = mapped_column(String(300), default="")
    #: The supervisor whose authorization the void of a paid sale carried (None: the voider's own role).
    cancel_authorized_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class SaleItem(Base):
    __tablename__ = "sale_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(120))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(BigInteger)
    line_total: Mapped[int] = mapped_column(BigInteger)
    free_reason: Mapped[str] = mapped_column(String(200), default="")  # free-amount line: why
    #: The line's own discount (CLP); the line is charged line_total − discount (before any sale discount).
    discount: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: The modifiers chosen for the line, as they were when it was sold: [{"id", "name", "price"}] (price: what
    #: each added to unit_price, whole CLP). None: no modifiers.
    modifiers: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)


class SaleDiscount(Base):
    """A discount on one line of a sale, or on the whole sale (``item_id`` None): percent or amount, why, who
    gave it and the supervisor who authorized it when it went over the venue's limit."""

    __tablename__ = "sale_discounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("sale_items.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(8))  # percent / amount
    value: Mapped[int] = mapped_column(BigInteger)  # the percent (1–100) or the amount in CLP, as typed
    amount: Mapped[int] = mapped_column(BigInteger)  # what it takes off, in whole CLP
    reason: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    authorized_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
