"""Incoming payment webhooks, for any provider with ``Capability.WEBHOOK`` (an online checkout).

``receive_webhook`` is what ``POST /webhooks/{provider_id}`` calls. For each notification it:

1. lets the provider parse it (``parse_webhook``) into order id, our reference (the attempt id) and outcome;
2. finds the attempt and checks authenticity with *that register's* provider settings (``verify_webhook``);
3. persists a ``WebhookEvent`` (idempotent on provider + external id: a second delivery is a no-op);
4. checks reference, order and amount against the attempt; a valid paid notice approves the attempt and pays
   the sale (``sales.mark_paid``, paid_via = the attempt's role) in the same transaction; a valid rejected
   notice declines the attempt.

Replies: 200 ``{"status": "ok"}`` when the notice is accepted (applied, a known decline, or a repeat).
Anything we will not honour (unknown reference, wrong amount or order, a paid notice for a sale that is
already paid or an attempt already closed) is recorded as ``rejected`` with an incident or alert and no state
change, and answered 4xx: a checkout provider then reverses the payment by itself, which is the refund the
customer needs. Unsigned calls get 401 and change nothing.

A checkout provider reverses a payment whose webhook is not answered 2xx within a few seconds (about 10 s). If
the database is slow the reply goes out after ``reply_within_s`` (202 ``{"status": "ok"}``) while the
processing goes on and is applied as soon as the database answers; reconciliation (``status``) covers a crash
in between.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import open_incident, record
from ..carddata import scrub, scrub_text
from ..clock import utcnow
from ..db.engine import Database
from ..errors import CajaError
from ..money import format_clp
from ..providers import Capability, OutcomeKind, ProviderRegistry, WebhookNotice, validate_settings
from ..registers.models import CashRegister
from ..sales.models import Sale
from ..sessions.models import CashSession
from . import lifecycle as lc
from .models import PaymentAttempt, WebhookEvent

log = logging.getLogger("caja.webhooks")

#: Providers give about 10 s; answer well before.
DEFAULT_REPLY_WITHIN_S = 6.0

#: Attempt states in which a final answer from the provider is still expected.
WAITING_STATES = (lc.SENDING, lc.AWAITING, lc.IN_DOUBT, lc.RECONCILING)

_pending: set[asyncio.Task] = set()

#: A notice nobody can vouch for (unknown reference, no valid signature) leaves at most this many rows per
#: provider and minute in this app instance; beyond that only a log line, so a flood fills no table.
FORGED_ROWS_PER_MINUTE = 30
_forged: dict[str, collections.deque[float]] = {}


def _may_record_forged(provider_id: str) -> bool:
    now = time.monotonic()
    recent = _forged.setdefault(provider_id[:40], collections.deque())
    while recent and recent[0] < now - 60:
        recent.popleft()
    if len(recent) >= FORGED_ROWS_PER_MINUTE:
        return False
    recent.append(now)
    return True


class WebhookReply(msgspec.Struct, frozen=True, kw_only=True):
    status_code: int
    body: dict[str, str]


def _ok(status_code: int = 200) -> WebhookReply:
    return WebhookReply(status_code=status_code, body={"status": "ok"})


def _rejected(status_code: int, reason: str) -> WebhookReply:
    return WebhookReply(status_code=status_code, body={"status": "rejected", "reason": reason})


async def receive_webhook(
    db: Database,
    registry: ProviderRegistry,
    provider_id: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    reply_within_s: float = DEFAULT_REPLY_WITHIN_S,
) -> WebhookReply:
    """Handle one webhook delivery; never raises for bad input (answers 4xx instead)."""
    headers = {str(k).lower(): str(v) for k, v in headers.items()}
    task = asyncio.create_task(_process(db, registry, provider_id, headers, body))
    _pending.add(task)  # kept until done, even if the caller goes away
    task.add_done_callback(_pending.discard)
    try:
        return await asyncio.wait_for(asyncio.shield(task), reply_within_s)
    except TimeoutError:
        log.warning(
            "Webhook %s: la base de datos está lenta; se respondió antes de aplicar la notificación "
            "(se aplicará al responder la base de datos).",
            provider_id,
        )
        return _ok(202)


async def wait_for_pending_webhooks(timeout_s: float = 30.0) -> None:
    """Let notifications that were answered early finish (tests, graceful shutdown)."""
    if _pending:
        await asyncio.wait(list(_pending), timeout=timeout_s)


async def _process(
    db: Database, registry: ProviderRegistry, provider_id: str, headers: dict[str, str], body: bytes
) -> WebhookReply:
    if provider_id not in registry:
        return _rejected(404, "Proveedor desconocido.")
    provider = registry.get(provider_id)
    if Capability.WEBHOOK not in provider.capabilities:
        return _rejected(404, "Este proveedor no recibe notificaciones.")
    try:
        notice = provider.parse_webhook(headers, body)
    except CajaError as exc:
        log.warning("Webhook %s mal formado (%d bytes): %s", provider_id, len(body), exc.message)
        return _rejected(400, exc.message)
    try:
        async with db.session() as s:
            return await _apply(s, provider, provider_id, headers, body, notice)
    except IntegrityError:
        # The same notification is being applied by a concurrent delivery: it is a repeat.
        async with db.reader() as s:
            existing = await _existing(s, provider_id, notice.external_id)
        if existing is not None:
            return _reply_for_repeat(existing)
        log.exception("Webhook %s: conflicto al guardar la orden %s", provider_id, notice.external_id)
        return _rejected(500, "Error interno; reintente.")
    except Exception:
        log.exception("Webhook %s: error al procesar la orden %s", provider_id, notice.external_id)
        return _rejected(500, "Error interno; reintente.")


async def _existing(s: AsyncSession, provider_id: str, external_id: str) -> WebhookEvent | None:
    return await s.scalar(
        select(WebhookEvent).where(WebhookEvent.provider_id == provider_id, WebhookEvent.external_id == external_id)
    )


def _reply_for_repeat(event: WebhookEvent) -> WebhookReply:
    if event.status == "rejected":
        return _rejected(409, event.error or "Notificación rechazada.")
    return _ok()


def _masked(notice: WebhookNotice) -> dict[str, Any]:
    """What is kept of a notification: the provider's parse, with masked card data only."""
    outcome = notice.outcome
    data: dict[str, Any] = {
        "order_id": notice.external_id,
        "reference": notice.reference,
        "kind": str(outcome.kind),
        "amount": outcome.amount,
        "code": outcome.code,
        "message": outcome.message,
    }
    if outcome.card is not None:
        data.update(
            brand=outcome.card.brand,
            card_type=outcome.card.card_type,
            last4=outcome.card.last4,
            authorization_code=outcome.card.authorization_code,
            installments=outcome.card.installments,
        )
    return data


async def _find_attempt(s: AsyncSession, provider_id: str, notice: WebhookNotice) -> PaymentAttempt | None:
    conditions = [PaymentAttempt.provider_reference == notice.external_id]
    if notice.reference.isascii() and notice.reference.isdigit() and len(notice.reference) < 12:
        conditions.append(PaymentAttempt.id == int(notice.reference))
    where = (PaymentAttempt.provider_id == provider_id, or_(*conditions))
    # The sales first, then their attempts: the one lock order of every payment writer.
    sale_ids = sorted(set((await s.scalars(select(PaymentAttempt.sale_id).where(*where))).all()))
    if sale_ids:
        await s.execute(select(Sale.id).where(Sale.id.in_(sale_ids)).order_by(Sale.id).with_for_update())
    q = select(PaymentAttempt).where(*where).order_by(PaymentAttempt.id).with_for_update()
    found = (await s.scalars(q)).all()
    by_reference = [a for a in found if str(a.id) == notice.reference]
    return by_reference[0] if by_reference else (found[0] if found else None)


async def _apply(
    s: AsyncSession, provider: Any, provider_id: str, headers: dict[str, str], body: bytes, notice: WebhookNotice
) -> WebhookReply:
    existing = await _existing(s, provider_id, notice.external_id)
    attempt = await _find_attempt(s, provider_id, notice)
    if attempt is None and existing is not None:
        return _reply_for_repeat(existing)
    if attempt is None:
        reason = f"Referencia desconocida ({notice.reference[:40]}) para la orden {notice.external_id[:40]}."
        if _may_record_forged(provider_id):  # unverifiable: one bounded row at most, never an incident
            _add_event(s, provider_id, _unverified_id(notice), notice, None, "rejected", reason)
        log.warning("Webhook %s rechazado: %s", provider_id, reason)
        return _rejected(404, reason)

    register = await s.get_one(CashRegister, attempt.register_id)
    settings = validate_settings(provider, (register.provider_settings or {}).get(provider_id))
    if not provider.verify_webhook(headers, body, settings):
        reason = "Notificación sin firma válida."
        if _may_record_forged(provider_id):  # anyone can send one: one bounded row at most, never an incident
            _add_event(s, provider_id, _unverified_id(notice), notice, attempt.id, "rejected", reason)
        log.warning(
            "Webhook %s sin firma válida para el intento %s: revise la configuración del webhook.",
            provider_id,
            attempt.id,
        )
        return _rejected(401, reason)

    if existing is not None:
        return _reply_for_repeat(existing)  # a repeat (authentic): no-op
    event = _add_event(s, provider_id, notice.external_id, notice, attempt.id, "received", "")
    await s.flush()  # the unique (provider, external id) claims this notification now

    problem = _mismatch(attempt, notice)
    if problem:
        return await _reject(s, event, attempt, "webhook_mismatch", problem, provider.name)

    outcome = notice.outcome
    if outcome.kind is OutcomeKind.DECLINED:
        if attempt.state in WAITING_STATES:
            lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.DECLINED), utcnow())
            attempt.response_code = (outcome.code or "")[:20] or None
            attempt.response_message = outcome.message[:300]
            attempt.provider_reference = notice.external_id[:80]
            _processed(event, "applied")
            await record(
                s,
                venue_id=attempt.venue_id,
                user_id=None,
                action="payment.declined",
                entity="attempt",
                entity_id=attempt.id,
                payload={"provider": provider_id, "code": outcome.code, "via": "webhook"},
            )
            return _ok()
        if attempt.state == lc.DECLINED:
            _processed(event, "applied")
            return _ok()
        return await _reject(
            s, event, attempt, "webhook_mismatch", f"Rechazo para un intento en estado {attempt.state}.", provider.name
        )

    if outcome.kind is not OutcomeKind.APPROVED:
        _processed(event, "applied")
        return _ok()
    if attempt.state == lc.APPROVED:
        _processed(event, "applied")  # already approved (reconciliation got there first)
        return _ok()
    sale = await s.get(Sale, attempt.sale_id)
    # A paid notice pays the sale while it still waits (also a late one for an attempt given up as not charged);
    # for a sale paid otherwise or cancelled it is refused: the provider reverses it, which returns the customer's money.
    waiting = attempt.state in WAITING_STATES or attempt.state in lc.NOT_CHARGED
    if not waiting or sale is None or sale.status != "pending_payment":
        what = (
            f"venta {sale.status}"
            if sale is not None and sale.status != "pending_payment"
            else f"intento en estado {attempt.state}"
        )
        return await _reject(
            s,
            event,
            attempt,
            "double_charge_suspected",
            f"Pago {provider.name} confirmado para un cobro que ya no lo espera ({what}): "
            "posible doble cobro; se pide la reversa.",
            provider.name,
        )
    from ..sales.service import mark_paid

    card = outcome.card
    decision = lc.decide(
        lc.AttemptView(state=attempt.state, ticket=attempt.ticket, amount=attempt.amount), lc.Event.CHARGED
    )
    lc.apply(attempt, decision, utcnow())
    attempt.response_code = (outcome.code or "")[:20] or None
    attempt.response_message = outcome.message[:300]
    attempt.reported_amount = outcome.amount
    attempt.provider_reference = notice.external_id[:80]
    if card is not None:
        attempt.card_brand = (card.brand or "")[:20] or None
        attempt.card_type = (card.card_type or "")[:20] or None
        attempt.last4 = card.last4[-4:] if card.last4 else None
        attempt.authorization_code = (card.authorization_code or "")[:20] or None
    await mark_paid(
        s,
        sale_id=attempt.sale_id,
        provider_id=provider_id,
        method="card",
        paid_via=attempt.role if attempt.role in ("primary", "backup") else "primary",
    )
    _processed(event, "applied")
    await record(
        s,
        venue_id=attempt.venue_id,
        user_id=None,
        action="payment.approved",
        entity="attempt",
        entity_id=attempt.id,
        payload={"provider": provider_id, "amount": outcome.amount, "via": "webhook", "order_id": notice.external_id},
    )
    return _ok()


def _mismatch(attempt: PaymentAttempt, notice: WebhookNotice) -> str:
    if notice.reference != str(attempt.id):
        return (
            f"La orden {notice.external_id[:40]} pertenece al intento {attempt.id}, pero la notificación "
            f"trae la referencia {notice.reference[:40]}."
        )
    if attempt.provider_reference and attempt.provider_reference != notice.external_id:
        return f"El intento {attempt.id} tiene la orden {attempt.provider_reference}, no {notice.external_id[:40]}."
    amount = notice.outcome.amount
    if notice.outcome.kind is OutcomeKind.APPROVED and amount != attempt.amount:
        return f"Monto distinto: la notificación dice {format_clp(amount)} y el cobro era {format_clp(attempt.amount)}."
    return ""


def _unverified_id(notice: WebhookNotice) -> str:
    # Rejected-before-authentication rows must not claim the real order id (a forged call would block the
    # genuine notification); they get an id of their own.
    return f"x-{uuid.uuid4().hex[:12]}-{notice.external_id}"[:120]


def _add_event(
    s: AsyncSession,
    provider_id: str,
    external_id: str,
    notice: WebhookNotice,
    attempt_id: int | None,
    status: str,
    error: str,
) -> WebhookEvent:
    event = WebhookEvent(
        provider_id=provider_id,
        external_id=scrub_text(external_id)[:120],
        reference=scrub_text(notice.reference)[:120],
        attempt_id=attempt_id,
        status=status,
        error=scrub_text(error)[:300],
        payload=scrub(_masked(notice)),
        received_at=utcnow(),
        processed_at=utcnow() if status != "received" else None,
    )
    s.add(event)
    return event


def _processed(event: WebhookEvent, status: str, error: str = "") -> None:
    event.status = status
    event.error = error[:300]
    event.processed_at = utcnow()


async def _reject(
    s: AsyncSession, event: WebhookEvent, attempt: PaymentAttempt, kind: str, reason: str, provider_name: str
) -> WebhookReply:
    _processed(event, "rejected", reason)
    await _alert(
        s,
        attempt,
        kind,
        f"Notificación {provider_name} rechazada (orden {event.external_id[:40]}, intento {attempt.id}): {reason}",
    )
    log.warning("Webhook rechazado para el intento %s: %s", attempt.id, reason)
    return _rejected(409, reason)


async def _alert(s: AsyncSession, attempt: PaymentAttempt, kind: str, description: str) -> None:
    jornada_id = await s.scalar(select(CashSession.jornada_id).where(CashSession.id == attempt.session_id))
    await open_incident(
        s,
        venue_id=attempt.venue_id,
        kind=kind,
        description=description,
        jornada_id=jornada_id,
        session_id=attempt.session_id,
        register_id=attempt.register_id,
        attempt_id=attempt.id,
    )
