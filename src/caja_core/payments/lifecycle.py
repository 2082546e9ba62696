"""The payment attempt lifecycle: states, the one transition table, and the rules that turn what happened
(a provider's answer, a cashier's action, a supervisor's decision) into the attempt's next state and the
effects to run. Pure: no database, no clock, no I/O. The orchestrator runs the asyncio side (flights,
deadlines, cancels) and the persistence; every other module imports states and predicates from here.

This module is the only code that assigns ``PaymentAttempt.state`` (``apply``); a test scans the code base
for any other assignment.

How an answer becomes an event (``classify``):

* An approval settles an attempt only when it **matches**: same ticket, same amount, and — for an answer to
  a question asked later (status, reconciliation) — the device's own time of the operation not earlier than
  the attempt's send, minus a tolerance for the device's clock (``match_tolerance_s``). Anything else is not a
  match: the attempt stays in doubt (an amount or time that does not fit also opens an incident).
* A matching approval of an attempt that was open or declared not charged pays the sale when the sale still
  waits for its payment (``CHARGED``); when the sale was paid otherwise or cancelled it is a second charge
  (``CHARGED_TWICE``): the duplicate must be returned (``REFUND_DUE``) — refunded through the provider when it
  can, otherwise a supervisor task that blocks the session close.
* "Not charged" (``UNAVAILABLE``) is proof only when nothing says otherwise: the orchestrator passes the reason
  it is not (a batch close recorded after the send, another device answering, an agent command already
  started) and the attempt stays in doubt.
* An answer to an attempt already charged is a repeat (no-op); an answer the table does not allow for the
  attempt's state changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..providers import Outcome, OutcomeKind
from .events import EventKind


class State(enum.StrEnum):
    CREATED = "created"
    SENDING = "sending"
    AWAITING = "awaiting"
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED_NOT_SENT = "failed_not_sent"
    IN_DOUBT = "in_doubt"
    RECONCILING = "reconciling"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    REFUND_DUE = "refund_due"
    MANUAL_PENDING = "manual_pending"
    APPROVED_MANUAL = "approved_manual"
    VERIFIED = "verified"
    DISPUTED = "disputed"


CREATED = State.CREATED
SENDING = State.SENDING
AWAITING = State.AWAITING
APPROVED = State.APPROVED
DECLINED = State.DECLINED
FAILED_NOT_SENT = State.FAILED_NOT_SENT
IN_DOUBT = State.IN_DOUBT
RECONCILING = State.RECONCILING
CANCELLED = State.CANCELLED
REFUNDED = State.REFUNDED
REFUND_DUE = State.REFUND_DUE
MANUAL_PENDING = State.MANUAL_PENDING
APPROVED_MANUAL = State.APPROVED_MANUAL
VERIFIED = State.VERIFIED
DISPUTED = State.DISPUTED

#: The provider may be working on it right now (a command is in flight).
IN_FLIGHT = (CREATED, SENDING, AWAITING)
#: Nobody knows yet whether the customer was charged.
DOUBTFUL = (IN_DOUBT, RECONCILING)
#: Not finished: a session (and its jornada) with any of these cannot close.
UNRESOLVED = (CREATED, SENDING, AWAITING, IN_DOUBT, RECONCILING, MANUAL_PENDING, REFUND_DUE)
#: Provably nothing was charged: the only states after which the backup is safe.
NOT_CHARGED = (DECLINED, FAILED_NOT_SENT, CANCELLED)
#: The customer paid the sale through this attempt.
PAID = (APPROVED, APPROVED_MANUAL, VERIFIED)
#: The customer's money was taken by this attempt (paid the sale, or a duplicate still to be returned).
CHARGED = (*PAID, REFUND_DUE, DISPUTED)
#: Nothing more will happen to it by itself.
FINAL = (APPROVED, DECLINED, FAILED_NOT_SENT, CANCELLED, REFUNDED, APPROVED_MANUAL, VERIFIED, DISPUTED)
#: States whose answer is already known: a provider's answer for them is a repeat or too late to matter.
SETTLED = (*CHARGED, REFUNDED)

LABELS: dict[str, str] = {
    CREATED: "Preparando el cobro",
    SENDING: "Enviando al terminal",
    AWAITING: "Esperando al terminal",
    APPROVED: "Aprobado",
    DECLINED: "Rechazado",
    FAILED_NOT_SENT: "No se cobró",
    IN_DOUBT: "En duda: no sabemos si se cobró",
    RECONCILING: "Consultando al terminal si se cobró",
    CANCELLED: "Cancelado",
    REFUNDED: "Anulado (devuelto)",
    REFUND_DUE: "Cobro duplicado: devolver al cliente",
    MANUAL_PENDING: "Cobro manual en el celular de respaldo",
    APPROVED_MANUAL: "Aprobado (respaldo manual)",
    VERIFIED: "Verificado",
    DISPUTED: "En disputa",
}


def label(state: str | None) -> str:
    return LABELS.get(state or "", state or "")


def is_unresolved(state: str) -> bool:
    return state in UNRESOLVED


def is_paid(state: str) -> bool:
    return state in PAID


def is_not_charged(state: str) -> bool:
    return state in NOT_CHARGED


# --- events and the transition table -----------------------------------------------------------------------


class Event(enum.StrEnum):
    SEND = "send"  # write-ahead: committed before the first byte reaches the device
    RECEIPT = "receipt"  # the device confirmed receipt / sent an intermediate message
    BLOCKED = "blocked"  # never sent: the device is busy, its breaker is open, or it has an attempt in doubt
    START_MANUAL = "start_manual"  # a manual provider: a person charges on a phone and confirms
    CASHIER_CANCEL = "cashier_cancel"  # cancelled before anything was sent (or on the backup phone)
    SUPERSEDED = "superseded"  # another attempt paid the sale first: nothing to charge here any more
    CHARGED = "charged"  # a matching approval while the sale still waits for its payment
    CHARGED_TWICE = "charged_twice"  # a matching approval for a sale already paid otherwise or cancelled
    DECLINED = "declined"  # a definitive refusal
    NOT_CHARGED = "not_charged"  # provably nothing was charged
    NO_ANSWER = "no_answer"  # no final answer, or one that does not match: in doubt
    PENDING = "pending"  # accepted by the provider; the final answer comes later (webhook, status)
    ORPHANED = "orphaned"  # the instance running it died: nobody is waiting for the device's answer
    RECONCILE = "reconcile"  # caja asks the device what happened to the ticket
    CANNOT_ASK = "cannot_ask"  # the question cannot even be asked (settings or provider gone)
    MANUAL_CONFIRM = "manual_confirm"  # the cashier typed the backup phone's authorization
    REFUND_DONE = "refund_done"  # the charge was returned (by the provider, or by hand on the device)
    VERIFY = "verify"  # a manual backup charge checked against the provider's report
    DISPUTE = "dispute"  # a manual backup charge that does not hold


E = Event
#: The one transition table: state → event → next state. An event a state does not list changes nothing.
TRANSITIONS: dict[State, dict[Event, State]] = {
    CREATED: {
        E.SEND: SENDING,
        E.BLOCKED: FAILED_NOT_SENT,
        E.START_MANUAL: MANUAL_PENDING,
        E.CASHIER_CANCEL: CANCELLED,
        E.SUPERSEDED: CANCELLED,
        E.ORPHANED: FAILED_NOT_SENT,  # never sent: nothing to ask
        E.NOT_CHARGED: FAILED_NOT_SENT,
    },
    SENDING: {
        E.RECEIPT: AWAITING,
        E.CHARGED: APPROVED,
        E.CHARGED_TWICE: REFUND_DUE,
        E.DECLINED: DECLINED,
        E.NOT_CHARGED: FAILED_NOT_SENT,
        E.NO_ANSWER: IN_DOUBT,
        E.PENDING: AWAITING,
        E.ORPHANED: IN_DOUBT,
        E.RECONCILE: RECONCILING,
    },
    AWAITING: {
        E.RECEIPT: AWAITING,
        E.CHARGED: APPROVED,
        E.CHARGED_TWICE: REFUND_DUE,
        E.DECLINED: DECLINED,
        E.NOT_CHARGED: FAILED_NOT_SENT,
        E.NO_ANSWER: IN_DOUBT,
        E.PENDING: AWAITING,
        E.ORPHANED: IN_DOUBT,
        E.RECONCILE: RECONCILING,
    },
    IN_DOUBT: {
        E.RECONCILE: RECONCILING,
        E.CHARGED: APPROVED,
        E.CHARGED_TWICE: REFUND_DUE,
        E.DECLINED: DECLINED,
        E.NOT_CHARGED: FAILED_NOT_SENT,
        E.NO_ANSWER: IN_DOUBT,
        E.CANNOT_ASK: IN_DOUBT,
    },
    RECONCILING: {
        E.RECONCILE: RECONCILING,
        E.CHARGED: APPROVED,
        E.CHARGED_TWICE: REFUND_DUE,
        E.DECLINED: DECLINED,
        E.NOT_CHARGED: FAILED_NOT_SENT,
        E.NO_ANSWER: IN_DOUBT,
        E.CANNOT_ASK: IN_DOUBT,
        E.PENDING: AWAITING,
    },
    # Declared not charged, and then the device's approval arrives: it is applied, never filed away.
    DECLINED: {E.CHARGED: APPROVED, E.CHARGED_TWICE: REFUND_DUE},
    FAILED_NOT_SENT: {E.CHARGED: APPROVED, E.CHARGED_TWICE: REFUND_DUE},
    CANCELLED: {E.CHARGED: APPROVED, E.CHARGED_TWICE: REFUND_DUE, E.MANUAL_CONFIRM: REFUND_DUE},
    APPROVED: {E.REFUND_DONE: REFUNDED},
    REFUND_DUE: {E.REFUND_DONE: REFUNDED},
    MANUAL_PENDING: {
        E.MANUAL_CONFIRM: APPROVED_MANUAL,
        E.CASHIER_CANCEL: CANCELLED,
        E.SUPERSEDED: CANCELLED,
    },
    APPROVED_MANUAL: {E.VERIFY: VERIFIED, E.DISPUTE: DISPUTED, E.REFUND_DONE: REFUNDED},
    VERIFIED: {E.REFUND_DONE: REFUNDED},
    DISPUTED: {},
    REFUNDED: {},
}


def next_state(state: str, event: Event) -> State | None:
    """The table's answer: the next state, or None when the event does not apply to this state."""
    return TRANSITIONS.get(State(state), {}).get(event)


def can_move(old: str, new: str) -> bool:
    return any(target == new for target in TRANSITIONS.get(State(old), {}).values())


class Effect(enum.StrEnum):
    PAY_SALE = "pay_sale"  # mark the sale paid by this attempt
    CANCEL_WAITING_SIBLINGS = "cancel_waiting_siblings"  # other attempts of the sale not yet charging: cancelled
    RETURN_DUPLICATE = "return_duplicate"  # refund through the provider when it can, else a supervisor task
    OFFER_BACKUP = "offer_backup"  # the policy decides whether the backup is offered for this reason
    RELEASE_DEVICE = "release_device"  # the device is free the moment the answer is committed
    RECONCILE_NOW = "reconcile_now"  # ask the device at once
    RECONCILE_LATER = "reconcile_later"  # ask again after the back-off
    INCIDENT_AMOUNT_MISMATCH = "incident_amount_mismatch"
    INCIDENT_NOT_MATCHING = "incident_not_matching"  # an approval for our ticket that does not fit the attempt
    INCIDENT_DOUBLE_CHARGE = "incident_double_charge"
    INCIDENT_LATE_APPROVAL = "incident_late_approval"  # the sale is paid now: recorded, nothing to return
    INCIDENT_OVERRIDE_APPROVED = "incident_override_approved"  # the primary approved after a supervisor override
    INCIDENT_NEEDS_DECISION = "incident_needs_decision"  # caja cannot find out by itself: a supervisor decides


@dataclass(frozen=True)
class AttemptView:
    """What the rules need to know about an attempt and its sale."""

    state: str
    role: str = "primary"
    ticket: str = ""
    amount: int = 0
    sent_at: datetime | None = None
    sale_pending: bool = True  # the sale still waits for its payment
    overridden: bool = False  # a supervisor switched the sale to the backup while this attempt was unresolved
    classification: str | None = None
    fenced_out: bool = False  # the answer comes from an instance that lost the device's lease


@dataclass(frozen=True)
class Answer:
    """A provider's answer (or a person's decision) about one attempt."""

    outcome: Outcome
    source: str  # charge, status, webhook, agent, cancel, resolution
    #: Why a "not charged" answer is not proof this time (None: it is proof).
    not_proof: str | None = None
    #: Accepted difference between the device's clock and ours for the time check (seconds).
    tolerance_s: float = 0.0


@dataclass(frozen=True)
class Classified:
    event: Event
    reason: str = ""  # why it is not a match / not proof (for people)
    mismatch: str | None = None  # amount / no_amount / time / ticket


@dataclass(frozen=True)
class Decision:
    """The next state and what to do about it."""

    old: str
    state: str
    event: Event
    effects: tuple[Effect, ...] = ()
    classification: str | None = None
    active: bool | None = None  # None: unchanged
    finished: bool = False  # the attempt reached an end (finished_at is set)
    notify: EventKind | None = None  # the payment event announced (audit, metrics, receipts)
    reason: str = ""
    changed: bool = True

    @property
    def applies(self) -> bool:
        return self.changed


#: Sources whose approvals answer a question asked after the charge (the device's time must fit).
LATER_QUESTIONS = ("status", "reconcile", "agent")
#: Default tolerance for the device's clock when it was never measured (seconds). See docs/reliability.md.
DEFAULT_MATCH_TOLERANCE_S = 300.0


def match_tolerance_s(measured_skew_s: float | None, base_s: float = DEFAULT_MATCH_TOLERANCE_S) -> float:
    """How much earlier than our send the device's own time of an approval may be and still match: a fixed
    allowance plus the device's clock difference as last measured."""
    return base_s + abs(measured_skew_s or 0.0)


def valid_amount(value: object) -> bool:
    """Whether an approval's amount is a whole number of pesos above zero (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def approval_mismatch(view: AttemptView, outcome: Outcome, source: str, tolerance_s: float) -> tuple[str, str] | None:
    """None when the approval matches the attempt; else (what, why) for people."""
    if outcome.ticket and outcome.ticket != view.ticket:
        return "ticket", f"La aprobación es del ticket {outcome.ticket}, no del {view.ticket}."
    if not valid_amount(outcome.amount):
        # A provider error: an approval must say what it charged. Never paid on an unknown amount.
        return (
            "no_amount",
            f"El proveedor informó aprobado sin un monto válido ({str(outcome.amount)[:20]}): no se da por "
            "pagado; se consulta de nuevo.",
        )
    if outcome.amount != view.amount:
        return "amount", f"Aprobación por {outcome.amount} en vez de {view.amount}."
    if (
        source in LATER_QUESTIONS
        and outcome.occurred_at is not None
        and view.sent_at is not None
        and outcome.occurred_at < view.sent_at - timedelta(seconds=tolerance_s)
    ):
        return (
            "time",
            f"El terminal tiene este ticket por este monto, aprobado el {outcome.occurred_at.isoformat(timespec='seconds')} "
            f"según su reloj, antes de que se enviara este cobro ({view.sent_at.isoformat(timespec='seconds')}): o el "
            "reloj o la zona horaria del terminal están mal (revíselos; si el voucher del terminal muestra este "
            "ticket, la venta está cobrada), o es un ticket antiguo repetido tras restaurar la base de datos.",
        )
    return None


def classify(view: AttemptView, answer: Answer) -> Classified:
    """Turn a provider's answer into an event for this attempt."""
    outcome, kind = answer.outcome, answer.outcome.kind
    if kind is OutcomeKind.APPROVED:
        if view.state in SETTLED:
            return Classified(Event.CHARGED if view.sale_pending else Event.CHARGED_TWICE, reason="repeat")
        mismatch = approval_mismatch(view, outcome, answer.source, answer.tolerance_s)
        if mismatch is not None:
            return Classified(Event.NO_ANSWER, reason=mismatch[1], mismatch=mismatch[0])
        return Classified(Event.CHARGED if view.sale_pending else Event.CHARGED_TWICE)
    if kind is OutcomeKind.DECLINED:
        return Classified(Event.DECLINED)
    if kind is OutcomeKind.UNAVAILABLE:
        if answer.not_proof:
            return Classified(Event.NO_ANSWER, reason=answer.not_proof)
        return Classified(Event.NOT_CHARGED)
    if kind is OutcomeKind.PENDING:
        return Classified(Event.PENDING)
    return Classified(Event.NO_ANSWER, reason=outcome.message or "Sin respuesta final")


#: Events a writer that lost the device's lease may still apply: proofs of what the device did.
FENCED_OUT_EVENTS = (Event.CHARGED, Event.CHARGED_TWICE, Event.DECLINED)


def decide(
    view: AttemptView, event: Event, *, source: str = "", reason: str = "", mismatch: str | None = None
) -> Decision:
    """The next state of the attempt and the effects to run, for one event."""
    old = str(view.state)
    target = next_state(old, event)
    if event is Event.MANUAL_CONFIRM and target == REFUND_DUE and view.sale_pending:
        # a phone charge given up on screen whose sale still waits (and nothing else is charging it) pays it
        target = APPROVED_MANUAL
    if target is None or (view.fenced_out and event not in FENCED_OUT_EVENTS):
        return Decision(old=old, state=old, event=event, changed=False, reason=reason)
    effects: list[Effect] = []
    classification: str | None = None
    active: bool | None = None
    notify: EventKind | None = None
    finished = target in FINAL or target == REFUND_DUE
    was_not_charged = old in NOT_CHARGED
    from_status = source in LATER_QUESTIONS

    if event is Event.SEND or event is Event.RECEIPT or event is Event.START_MANUAL:
        pass
    elif event is Event.BLOCKED:
        classification, active = "not_sent", False
        effects.append(Effect.OFFER_BACKUP)
        notify = "not_sent"
    elif event in (Event.CASHIER_CANCEL, Event.SUPERSEDED):
        classification = "cancelled" if event is Event.CASHIER_CANCEL else "superseded"
        effects.append(Effect.RELEASE_DEVICE)
        notify = "cancelled"
    elif event is Event.CHARGED:
        if source == "resolution":
            classification = "resolved_by_hand"
        elif was_not_charged:
            classification = "late_approval"
        else:
            classification = "reconciled" if from_status else "approved"
        effects += [Effect.PAY_SALE, Effect.CANCEL_WAITING_SIBLINGS, Effect.RELEASE_DEVICE]
        if view.overridden:
            effects.append(Effect.INCIDENT_OVERRIDE_APPROVED)
        elif was_not_charged:
            effects.append(Effect.INCIDENT_LATE_APPROVAL)
        notify = "reconciled" if from_status or source == "resolution" else "approved"
    elif event is Event.CHARGED_TWICE:
        classification = "duplicate"
        effects += [Effect.INCIDENT_DOUBLE_CHARGE, Effect.RETURN_DUPLICATE, Effect.RELEASE_DEVICE]
        notify = "reconciled" if from_status else "approved"
    elif event is Event.DECLINED:
        classification = "declined"
        effects += [Effect.OFFER_BACKUP, Effect.RELEASE_DEVICE]
        notify = "reconciled" if from_status else "declined"
    elif event is Event.NOT_CHARGED:
        if source == "resolution":
            classification = "resolved_by_hand"
        else:
            classification = "reconciled" if from_status else "not_sent"
        effects += [Effect.OFFER_BACKUP, Effect.RELEASE_DEVICE]
        notify = "reconciled" if from_status or source == "resolution" else "not_sent"
    elif event is Event.NO_ANSWER:
        classification = "in_doubt"
        effects.append(Effect.RECONCILE_LATER if from_status else Effect.RECONCILE_NOW)
        if mismatch == "amount":
            effects.append(Effect.INCIDENT_AMOUNT_MISMATCH)
        elif mismatch == "time":
            effects.append(Effect.INCIDENT_NOT_MATCHING)
        if old != RECONCILING:
            notify = "in_doubt"
    elif event is Event.PENDING:
        classification = "pending"
        effects += [Effect.RELEASE_DEVICE, Effect.RECONCILE_LATER]
    elif event is Event.ORPHANED:
        if target == FAILED_NOT_SENT:
            classification, active = "not_sent", False
            effects.append(Effect.RELEASE_DEVICE)
        else:
            classification = "in_doubt"
            effects.append(Effect.RECONCILE_NOW)
            notify = "in_doubt"
    elif event is Event.RECONCILE:
        pass
    elif event is Event.CANNOT_ASK:
        effects += [Effect.INCIDENT_NEEDS_DECISION, Effect.RECONCILE_LATER]
    elif event is Event.MANUAL_CONFIRM:
        if target == REFUND_DUE:
            classification = "duplicate"
            effects.append(Effect.INCIDENT_DOUBLE_CHARGE)
            effects.append(Effect.RETURN_DUPLICATE)
            notify = "approved"
        else:
            classification = "manual"
            effects += [Effect.PAY_SALE, Effect.CANCEL_WAITING_SIBLINGS]
            notify = "approved"
    elif event is Event.REFUND_DONE:
        notify = "refunded"
    if finished:
        active = False
    return Decision(
        old=old,
        state=str(target),
        event=event,
        effects=tuple(effects),
        classification=classification,
        active=active,
        finished=finished,
        notify=notify,
        reason=reason,
    )


def on_answer(view: AttemptView, answer: Answer) -> Decision:
    """``classify`` then ``decide``: what one provider answer does to the attempt."""
    c = classify(view, answer)
    return decide(view, c.event, source=answer.source, reason=c.reason, mismatch=c.mismatch)


#: Classifications that replace "overridden" (an overridden attempt otherwise keeps saying so in reports).
KEEP_OVER_OVERRIDE = ("duplicate", "late_approval", "resolved_by_hand", "superseded", "cancelled")


def apply(attempt: Any, decision: Decision, now: datetime) -> bool:
    """Write a decision onto an attempt row (the only place an attempt's state is assigned). Returns whether
    anything changed."""
    if not decision.changed:
        return False
    attempt.state = decision.state
    if decision.classification is not None and (
        attempt.classification != "overridden" or decision.classification in KEEP_OVER_OVERRIDE
    ):
        attempt.classification = decision.classification
    if decision.active is not None:
        attempt.active = decision.active
    if decision.finished:
        attempt.finished_at = now
    return True


def begin(attempt: Any, *, manual: bool, now: datetime) -> None:
    """A new attempt's first state: ``created``, or ``manual_pending`` for a person charging on a phone."""
    attempt.state = str(CREATED)
    if manual:
        apply(attempt, decide(AttemptView(state=CREATED), Event.START_MANUAL), now)


__all__ = [
    "CHARGED",
    "DOUBTFUL",
    "FINAL",
    "IN_FLIGHT",
    "LABELS",
    "NOT_CHARGED",
    "PAID",
    "SETTLED",
    "TRANSITIONS",
    "UNRESOLVED",
    "Answer",
    "AttemptView",
    "Classified",
    "Decision",
    "Effect",
    "Event",
    "State",
    "apply",
    "begin",
    "classify",
    "decide",
    "label",
    "next_state",
    "on_answer",
]
