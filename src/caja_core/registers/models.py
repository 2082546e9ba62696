from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, event
from sqlalchemy.orm import Mapped, QueryContext, mapped_column

from ..clock import utcnow
from ..db.base import Base, JSONType, UTCDateTime


class CashRegister(Base):
    """A register (the seed's pos_registers)."""

    __tablename__ = "cash_registers"
    __table_args__ = (UniqueConstraint("venue_id", "code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    code: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(120))
    register_type: Mapped[str] = mapped_column(String(10))  # TOTEM / HUMANA / OFICINA / VIRTUAL
    location: Mapped[str] = mapped_column(String(120), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    operational_status: Mapped[str] = mapped_column(String(12), default="active")
    payment_methods: Mapped[list[str]] = mapped_column(JSONType, default=lambda: ["cash", "card"])
    primary_provider: Mapped[str | None] = mapped_column(String(40), nullable=True)
    backup_provider: Mapped[str | None] = mapped_column(String(40), nullable=True)
    #: {provider_id: settings JSON}, each validated by that provider's Settings Struct.
    provider_settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: {"terminal": "...", "printer": "...", "drawer": "..."}
    devices: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    fallback_policy: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: The receipt printer, drawer and comanda printers (``caja_core.printing.config.PrinterConfig``).
    printer_config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    #: Category ids this register may sell; null = all.
    allowed_categories: Mapped[list[int] | None] = mapped_column(JSONType, nullable=True)
    agent_token_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    agent_last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    agent_status: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    #: The agent process that serves the register (the random id it drew at its start) and when it last asked:
    #: commands go to that one only, until it has been silent for the lease (``agents.service.take_turn``).
    agent_instance: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_instance_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Another agent process refused while that one held the register: {"instance", "since", "seen_at",
    #: "both_alive_at", "reported"} (``both_alive_at``: the holder still asked after this one was refused).
    agent_rival: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BackupPhone(Base):
    """A phone with the backup provider's tap-on-phone app, registered per venue."""

    __tablename__ = "backup_phones"
    __table_args__ = (UniqueConstraint("venue_id", "identifier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    identifier: Mapped[str] = mapped_column(String(80))
    register_id: Mapped[int | None] = mapped_column(ForeignKey("cash_registers.id"), nullable=True, index=True)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@event.listens_for(CashRegister, "load")
def _held_by_its_session(register: CashRegister, context: QueryContext) -> None:
    """A register read in a transaction stays in its session until the session ends. The session's identity map
    holds rows weakly, and services turn a register into a ``RegisterOut`` and drop the row: without this, each
    ``s.get(CashRegister, id)`` of one request (the sale's checks, the payment's progress, the register's mode)
    read it again. A register changes only through its row in a transaction, so the held row is current."""
    context.session.info.setdefault("caja_registers", []).append(register)
