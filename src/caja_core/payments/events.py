"""Payment events, fanned out through the ``on_payment_event`` hook after each change is committed."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

EventKind = Literal[
    "attempt_started",
    "approved",
    "declined",
    "not_sent",
    "in_doubt",
    "fell_back",
    "overridden",
    "reconciled",
    "cancelled",
    "refunded",
    "incident",
    "breaker_opened",
    "breaker_closed",
]


class PaymentEvent(msgspec.Struct, frozen=True, kw_only=True):
    kind: EventKind
    venue_id: int
    at: datetime
    attempt_id: int | None = None
    sale_id: int | None = None
    session_id: int | None = None
    register_id: int | None = None
    provider_id: str | None = None
    role: str | None = None  # primary / backup
    amount: int | None = None
    state: str | None = None
    reason: str = ""
    user_id: int | None = None
    device_key: str | None = None
    #: True when the orchestrator already wrote the audit event in the same transaction (overrides).
    audited: bool = False
    details: dict[str, Any] = msgspec.field(default_factory=dict)
