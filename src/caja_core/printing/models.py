from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db.base import Base, UTCDateTime


class PrintJob(Base):
    """One thing sent (or to send) to a printer: a sale's receipt or copy, a comanda, a report, a drawer
    kick, a test page. Automatic jobs carry a ``dedupe_key`` so a sale's receipt prints once however many
    times it is asked for; copies and retries are new jobs."""

    __tablename__ = "print_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    register_id: Mapped[int | None] = mapped_column(ForeignKey("cash_registers.id"), nullable=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("cash_sessions.id"), nullable=True, index=True)
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"), nullable=True, index=True)
    jornada_id: Mapped[int | None] = mapped_column(ForeignKey("jornadas.id"), nullable=True)
    #: receipt / copy / comanda / session_report / jornada_report / drawer / test
    kind: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(String(20), default="main")  # "main" or "comanda:<n>"
    dedupe_key: Mapped[str | None] = mapped_column(String(80), nullable=True, unique=True)
    #: pending → printed / failed; "browser": the POS's browser prints it
    status: Mapped[str] = mapped_column(String(12), default="pending")
    printer: Mapped[str] = mapped_column(String(40), default="")
    error: Mapped[str] = mapped_column(String(300), default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
