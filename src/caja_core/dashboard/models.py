"""Running totals of a jornada for its dashboard and charts, kept in each sale's transaction (like the
sessions' running totals), so that a long night costs a few thousand rows to read, never a scan of its sales.

A quarter is the quarter hour of the payment, counted in quarter hours since 1970-01-01 UTC: every zone's
offset is a whole number of quarter hours, so a UTC quarter is also a local one, and a change of daylight
saving time in the middle of the night neither merges two quarters nor leaves a gap.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db.base import Base

#: Seconds in a quarter hour.
QUARTER_S = 900


class SalesQuarter(Base):
    """Revenue sales (paid, not courtesy) of one session, cashier and provider in one quarter hour of the
    payment. A void of a paid sale subtracts it from the quarter it was paid in."""

    __tablename__ = "sales_quarters"

    jornada_id: Mapped[int] = mapped_column(ForeignKey("jornadas.id"), primary_key=True)
    quarter: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), primary_key=True)
    cashier_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "cash" for cash
    method: Mapped[str] = mapped_column(String(16), primary_key=True)  # cash / card
    count: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The sales with a tip, and their tips (not revenue: apart from ``amount``).
    tip_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tip: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ProductSales(Base):
    """Units and amount of one product sold in one session (revenue sales only); product 0 is the free-amount
    lines. The amount is net of the lines' discounts and of each sale discount's prorated part, so the products
    add up to the sales."""

    __tablename__ = "product_sales"

    jornada_id: Mapped[int] = mapped_column(ForeignKey("jornadas.id"), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), primary_key=True)
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    units: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
