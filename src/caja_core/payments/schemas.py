"""What the POS renders: ``PaymentProgress`` (one poll) and its parts."""

from __future__ import annotations

from datetime import datetime

import msgspec


class AttemptOut(msgspec.Struct, kw_only=True):
    id: int
    sale_id: int
    provider_id: str
    role: str
    state: str
    state_label: str
    classification: str | None
    amount: int
    ticket: str
    reference: str | None
    response_code: str | None
    response_message: str
    card_brand: str | None
    card_type: str | None
    last4: str | None
    authorization_code: str | None
    created_at: datetime
    finished_at: datetime | None
    overridden: bool
    refund_offered: bool
    active: bool
    needs_decision: bool = False
    cancel_requested: bool = False  # the cashier asked to cancel it (an approval then means the cancel came late)


class ManualInstructions(msgspec.Struct, kw_only=True):
    """What the cashier needs to charge on the backup phone."""

    attempt_id: int
    provider_id: str
    provider_name: str
    amount: int
    reference: str
    phone_name: str | None
    phone_identifier: str | None


class PaymentProgress(msgspec.Struct, kw_only=True):
    sale_id: int
    sale_status: str  # pending_payment / paid / cancelled
    paid: bool
    paid_via: str | None  # primary / backup / cash
    attempt_id: int | None  # the attempt the POS is following (active, else the latest)
    provider_id: str | None
    role: str | None
    state: str | None
    state_label: str
    message: str  # provider progress ("Inserte o acerque tarjeta") or result message
    seconds_left: int | None  # before the backup may be offered (None: not waiting)
    backup_offered: bool
    backup_reason: str
    backup_provider: str | None
    in_doubt: bool
    doubt_message: str
    can_cancel: bool
    can_override: bool
    breaker_state: str
    manual: ManualInstructions | None
    refund_offered: list[int]  # attempts charged twice whose money must go back to the customer
    attempts: list[AttemptOut]
    needs_decision: bool = False  # caja cannot find out by itself: a supervisor resolves it with evidence
    #: a charge its server left behind (a restart, a kill): nobody is running it, it is in doubt until asked
    orphaned: bool = False
    #: of ``refund_offered``, the refunds sent whose answer never came: not sent again, a supervisor records them
    refund_unanswered: list[int] = msgspec.field(default_factory=list)
    #: of ``refund_offered``, the refunds running on the terminal now (their answer is awaited)
    refund_in_progress: list[int] = msgspec.field(default_factory=list)


class SupervisorItem(msgspec.Struct, kw_only=True):
    """An attempt that waits for a supervisor: resolve it by hand (in doubt), or return a duplicate charge."""

    attempt_id: int
    sale_id: int
    register_code: str
    provider_id: str
    ticket: str
    amount: int
    state: str
    state_label: str
    needs_decision: bool
    reason: str
    created_at: datetime
    kind: str  # resolve / return
    #: return: a refund was sent and its answer never came (it is not sent again; the supervisor records it)
    refund_unanswered: bool = False
