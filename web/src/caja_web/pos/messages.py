"""One plain-Spanish message per payment state, for the cashier: what happened to the customer's money, in
one big word (APROBADO, NO SE COBRÓ, EN DUDA, COBRANDO) and one sentence. The provider's own wording (a
decline reason, a terminal prompt) is shown when it speaks to the cashier; technical detail (command numbers,
time-outs, transport errors) goes under "Detalle técnico", never in the message."""

from __future__ import annotations

import re
from typing import Any

import msgspec

#: Words that mark a provider message as written for a technician rather than a cashier.
TECHNICAL = re.compile(
    r"\b(comando|command|transport\w*|time-?out|socket|errno|connection|puerto|port|frame|json|sign|ack|"
    r"receipt|refused|reset|traceback|exception)\b|\b\d{3,}\b|_",
    re.IGNORECASE,
)

IN_FLIGHT = ("created", "sending", "awaiting")
NOT_CHARGED = ("declined", "failed_not_sent", "cancelled")
DOUBT = ("in_doubt", "reconciling")


class Outcome(msgspec.Struct, kw_only=True):
    kind: str  # charging / not_charged / in_doubt / manual / approved / none
    headline: str
    text: str
    detail: str = ""  # technical detail, folded away


def plain(message: str | None) -> bool:
    return bool(message) and not TECHNICAL.search(message or "")


def outcome(progress: Any) -> Outcome:
    """The message for the attempt the POS follows (``PaymentProgress``)."""
    if progress is None or progress.state is None:
        return Outcome(kind="none", headline="", text="")
    state = progress.state
    message = (progress.message or "").strip()
    if progress.manual is not None:
        return Outcome(
            kind="manual",
            headline="COBRE EN EL CELULAR DE RESPALDO",
            text="Cobre el monto en el celular de respaldo y escriba aquí el código de autorización que muestra.",
        )
    if progress.paid or state in ("approved", "approved_manual", "verified"):
        return Outcome(kind="approved", headline="APROBADO", text="El pago quedó registrado. Entregue el pedido.")
    if state in DOUBT or progress.in_doubt:
        text = (
            "No sabemos si la tarjeta se cobró. No cobre de nuevo ni entregue el pedido: la caja lo está "
            "consultando con el terminal."
        )
        if getattr(progress, "orphaned", False):
            text = (
                "El servidor se reinició mientras se cobraba. La caja está consultando al terminal si se cobró: "
                "no cobre de nuevo ni entregue el pedido."
            )
        if getattr(progress, "needs_decision", False):
            text = (
                "No sabemos si la tarjeta se cobró y el terminal no puede responder: un supervisor lo resuelve. "
                "No cobre de nuevo."
            )
        return Outcome(kind="in_doubt", headline="EN DUDA", text=text, detail=progress.doubt_message or message)
    if state in NOT_CHARGED:
        if state == "declined":
            reason = message if plain(message) else ""
            text = "La tarjeta fue rechazada" + (f": {reason.rstrip('.')}." if reason else ".")
            text += " No se cobró nada."
        elif state == "cancelled":
            text = "El cobro se canceló antes de pasar la tarjeta. No se cobró nada."
        elif plain(message):
            text = message.rstrip(".") + "."
        else:
            text = "El terminal no alcanzó a procesar el cobro. No se cobró nada."
        return Outcome(kind="not_charged", headline="NO SE COBRÓ", text=text, detail="" if plain(message) else message)
    if state in IN_FLIGHT:
        prompt = message if plain(message) else ""
        if state in ("created", "sending") and not prompt:
            prompt = "Enviando el cobro al terminal…"
        return Outcome(
            kind="charging",
            headline="COBRANDO",
            text=prompt or "Siga las instrucciones del terminal.",
            detail="" if plain(message) else message,
        )
    return Outcome(kind="none", headline=progress.state_label or state, text="", detail=message)


#: A terminal fault's reason (the breaker's record "reason: message") in the words of whoever reads /admin/salud.
FAULT_REASONS = {
    "transport_error": "Error de comunicación con el terminal",
    "timeout": "El terminal no respondió a tiempo",
    "unavailable": "Terminal no disponible",
    "decline": "Rechazo",
}


class Fault(msgspec.Struct, kw_only=True):
    text: str
    detail: str = ""  # the record as written, folded away


def terminal_fault(description: str | None) -> Fault:
    """A breaker's last failure in plain words; the raw record (command numbers, errno…) as detail."""
    description = (description or "").strip()
    if not description:
        return Fault(text="")
    reason, _, message = description.partition(": ")
    if reason not in FAULT_REASONS:
        reason, message = "", description
    words = FAULT_REASONS.get(reason, "")
    if plain(message):
        return Fault(text=f"{words}: {message}" if words else message)
    return Fault(text=words or "Falla del terminal", detail=description)


def install(env: Any) -> None:
    env.globals["payment_outcome"] = outcome
    env.globals["cash_bills"] = cash_bills
    env.globals["terminal_fault"] = terminal_fault


def cash_bills(due: int, limit: int = 3) -> list[int]:
    """Amounts a customer typically hands over for ``due``, above it, ascending and at most ``limit``: the next
    multiple of 1 000 (when ``due`` is not one), of 5 000, of 10 000 and of 20 000, then further 20 000s."""
    steps = (1_000, 5_000, 10_000, 20_000) if due % 1_000 else (5_000, 10_000, 20_000)
    found = sorted({(due // step + 1) * step for step in steps})
    while len(found) < limit:
        found.append(found[-1] + 20_000)
    return found[:limit]
