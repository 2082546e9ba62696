"""Payment attempt states (PAYMENTS.md §1) and what each one means for the cashier."""

from __future__ import annotations

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
MANUAL_PENDING = "manual_pending"
APPROVED_MANUAL = "approved_manual"
VERIFIED = "verified"
DISPUTED = "disputed"

#: The provider may be working on it right now (a command is in flight).
IN_FLIGHT = (CREATED, SENDING, AWAITING)
#: Nobody knows yet whether the customer was charged.
DOUBTFUL = (IN_DOUBT, RECONCILING)
#: Not finished: a session with any of these cannot close.
UNRESOLVED = (CREATED, SENDING, AWAITING, IN_DOUBT, RECONCILING, MANUAL_PENDING)
#: Provably nothing was charged: the only states after which the backup is safe.
NOT_CHARGED = (DECLINED, FAILED_NOT_SENT, CANCELLED)
#: The customer paid through this attempt.
PAID = (APPROVED, APPROVED_MANUAL, VERIFIED)
FINAL = (APPROVED, DECLINED, FAILED_NOT_SENT, CANCELLED, REFUNDED, APPROVED_MANUAL, VERIFIED, DISPUTED)

LABELS = {
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
    MANUAL_PENDING: "Cobro manual en el celular de respaldo",
    APPROVED_MANUAL: "Aprobado (respaldo manual)",
    VERIFIED: "Verificado",
    DISPUTED: "En disputa",
}

ALLOWED = {
    CREATED: {SENDING, CANCELLED, FAILED_NOT_SENT},
    SENDING: {AWAITING, FAILED_NOT_SENT, IN_DOUBT, APPROVED, DECLINED},
    AWAITING: {APPROVED, DECLINED, IN_DOUBT},
    IN_DOUBT: {RECONCILING},
    RECONCILING: {APPROVED, FAILED_NOT_SENT, IN_DOUBT, DECLINED},
    APPROVED: {REFUNDED},
    MANUAL_PENDING: {APPROVED_MANUAL, CANCELLED},
    APPROVED_MANUAL: {VERIFIED, DISPUTED},
}


def can_move(old: str, new: str) -> bool:
    return new in ALLOWED.get(old, set())
