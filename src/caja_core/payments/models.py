from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column

from ..clock import utcnow
from ..db.base import Base, JSONType, UTCDateTime


class PaymentAttempt(Base):
    """One try on one provider/device for one sale. States and rules: docs/architecture.md, "The payment attempt lifecycle"."""

    __tablename__ = "payment_attempts"
    __table_args__ = (
        # The ticket is the idempotency key on the device: a duplicate final response is a no-op.
        UniqueConstraint("provider_id", "device_key", "ticket"),
        # At most one active (not final, not overridden) attempt per sale: double click, two tabs and two
        # app instances all end in exactly one.
        Index(
            "uq_payment_attempts_one_active_per_sale",
            "sale_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
        Index("ix_payment_attempts_state", "state"),
        Index("ix_payment_attempts_session_state", "session_id", "state"),
        # The dashboard reads the last 15 minutes of attempts per terminal (on PostgreSQL from the index alone).
        Index(
            "ix_payment_attempts_venue_created",
            "venue_id",
            "created_at",
            postgresql_include=["register_id", "role", "state", "sent_at", "finished_at"],
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    sale_id: Mapped[int] = mapped_column(ForeignKey("sales.id"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("cash_sessions.id"), index=True)
    register_id: Mapped[int] = mapped_column(ForeignKey("cash_registers.id"), index=True)
    provider_id: Mapped[str] = mapped_column(String(40))
    device_key: Mapped[str] = mapped_column(String(160))
    role: Mapped[str] = mapped_column(String(10))  # primary / backup
    amount: Mapped[int] = mapped_column(BigInteger)
    #: The part of ``amount`` that is the customer's tip (sent to terminals that take it apart).
    tip: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ticket: Mapped[str] = mapped_column(String(40))
    reference: Mapped[str | None] = mapped_column(String(40), nullable=True)  # short reference (manual)
    state: Mapped[str] = mapped_column(String(20), default="created")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    classification: Mapped[str | None] = mapped_column(String(20), nullable=True)
    progress_message: Mapped[str] = mapped_column(String(200), default="")
    progress_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_code: Mapped[str | None] = mapped_column(String(20), nullable=True)
    response_message: Mapped[str] = mapped_column(String(300), default="")
    reported_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Masked card data only (docs/architecture.md, "No card data").
    card_brand: Mapped[str | None] = mapped_column(String(20), nullable=True)
    card_type: Mapped[str | None] = mapped_column(String(20), nullable=True)
    last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    authorization_code: Mapped[str | None] = mapped_column(String(20), nullable=True)
    operation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    terminal_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    provider_reference: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    # Timings.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    backup_offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Reconciliation and override.
    reconcile_tries: Mapped[int] = mapped_column(Integer, default=0)
    next_reconcile_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    overridden_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    overridden_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    confirmed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    backup_phone_id: Mapped[int | None] = mapped_column(ForeignKey("backup_phones.id"), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    verification_note: Mapped[str] = mapped_column(String(300), default="")
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # The device the attempt was sent to, for its whole life: the provider settings it used (a snapshot taken
    # at creation; cancel, status, reconcile and refund use it, whatever the register says later) and what the
    # device said it is (``identify``), when known.
    device_settings: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    device_identity: Mapped[str | None] = mapped_column(String(160), nullable=True)
    # The lease token of the instance that may write this attempt's progress (fencing).
    fence: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # caja cannot find out by itself (device gone, settings unusable, proof erased): a supervisor decides.
    needs_decision: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A supervisor resolved it by hand (the evidence is in ``details["resolution"]``).
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeviceLease(Base):
    """One command in flight per device, across app instances: a row per busy device. The holder renews it
    (``beat``) while it works; another instance takes it over only after seeing the beat stand still for the
    lease's time on its own monotonic clock. ``token`` fences the holder's writes."""

    __tablename__ = "device_leases"

    device_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    attempt_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(80))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the holder's estimate, for people (/health)
    token: Mapped[str] = mapped_column(String(32), default="", server_default="")
    beat: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    purpose: Mapped[str] = mapped_column(String(20), default="charge", server_default="charge")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class BreakerState(Base):
    """Circuit breaker per device, persisted so every instance and /health see the same state."""

    __tablename__ = "breaker_states"

    device_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    register_id: Mapped[int | None] = mapped_column(ForeignKey("cash_registers.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(10), default="closed")  # closed / open / half_open
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_failure: Mapped[str] = mapped_column(String(300), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Bumped when a fault window starts or the breaker opens: each instance times windows and cool-downs on its
    # own monotonic clock from the moment it first sees a generation (the wall clocks play no part).
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AgentCommand(Base):
    """A command for a register-PC agent (long-polled), and its result (posted back, idempotent)."""

    __tablename__ = "agent_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    register_id: Mapped[int] = mapped_column(ForeignKey("cash_registers.id"), index=True)
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("payment_attempts.id"), nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    deadline_s: Mapped[int] = mapped_column(Integer, default=60)
    # queued/delivered/claimed/done/expired/revoked (see caja_core.agents.service)
    status: Mapped[str] = mapped_column(String(12), default="queued")
    progress_message: Mapped[str] = mapped_column(String(200), default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # bumped at every delivery
    start_by: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # never started after this
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # the agent started it
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # a late result applied


class WebhookEvent(Base):
    """Every webhook received, persisted before it is answered (idempotent on provider + external id)."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(40))
    external_id: Mapped[str] = mapped_column(String(120))
    reference: Mapped[str] = mapped_column(String(120), default="")
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("payment_attempts.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="received")  # received/applied/rejected
    error: Mapped[str] = mapped_column(String(300), default="")
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # masked
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TicketSeries(Base):
    """Where ticket numbers come from: each app instance start draws a new random prefix (unique here, so a
    restored database or a reset counter never hands out a ticket again) and counts up within it."""

    __tablename__ = "ticket_series"

    prefix: Mapped[str] = mapped_column(String(8), primary_key=True)
    instance: Mapped[str] = mapped_column(String(80), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_value: Mapped[int] = mapped_column(BigInteger, default=1)


class PaymentDevice(Base):
    """What a payment device said about itself (``identify``), per device key: its stable identity, and its
    clock difference with ours when it answered."""

    __tablename__ = "payment_devices"

    device_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(40))
    identity: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    clock_skew_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    identified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TerminalClose(Base):
    """A batch close of a payment device, as caja ran it: when, and the totals the device closed."""

    __tablename__ = "terminal_closes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int | None] = mapped_column(ForeignKey("venues.id"), nullable=True, index=True)
    jornada_id: Mapped[int | None] = mapped_column(ForeignKey("jornadas.id"), nullable=True, index=True)
    register_id: Mapped[int | None] = mapped_column(ForeignKey("cash_registers.id"), nullable=True)
    provider_id: Mapped[str] = mapped_column(String(40))
    device_key: Mapped[str] = mapped_column(String(160), index=True)
    device_identity: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    device_label: Mapped[str] = mapped_column(String(200), default="")
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    count: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    sales: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    source: Mapped[str] = mapped_column(String(20), default="admin")  # admin / cli
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class TerminalCheck(Base):
    """A device's own totals and sales since its last batch close, compared with caja's approved attempts."""

    __tablename__ = "terminal_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    venue_id: Mapped[int] = mapped_column(ForeignKey("venues.id"), index=True)
    jornada_id: Mapped[int | None] = mapped_column(ForeignKey("jornadas.id"), nullable=True, index=True)
    provider_id: Mapped[str] = mapped_column(String(40))
    device_key: Mapped[str] = mapped_column(String(160))
    device_identity: Mapped[str | None] = mapped_column(String(160), nullable=True)
    device_label: Mapped[str] = mapped_column(String(200), default="")
    trigger: Mapped[str] = mapped_column(String(20), default="admin")  # jornada_close / admin
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # the last recorded batch close
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    terminal_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    terminal_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    caja_count: Mapped[int] = mapped_column(Integer, default=0)
    caja_total: Mapped[int] = mapped_column(BigInteger, default=0)
    differences: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    message: Mapped[str] = mapped_column(String(300), default="")
    incident_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
