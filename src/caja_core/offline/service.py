"""Selling without the server: what a register's device took while offline, received once and checked like any
sale.

* **Idempotent on the device's key, per cashier.** Each offline sale carries a key generated on the device; the
  first answer for a key (accepted with its sale, or rejected with its reason) is stored in ``offline_sales`` in
  the same transaction as the sale, and every later submission of that key **with the same content** gets that
  answer back, whatever runs concurrently (the key, stored with its cashier in front, is unique in the
  database). Another cashier's same key is another sale; the same key with another content is a ``conflict``
  (compared through ``content_digest``) and nothing of it is received.
* **Each sale on its own, and only the sender's.** A bad sale of a batch is answered with its reason, the others
  are received. A sale is synced by the cashier who sold it, into a session they hold or held; one sent into
  another cashier's session is ``not_yours``: nothing stored, no incident there. Rejections (each an incident
  naming who sent it) are capped per cashier and per device (``MAX_REJECTED`` per ``REJECTED_PERIOD``).
* **Checked like any sale.** Each line is priced from the catalogue as it was when the sale was taken (a price
  changed since is found in ``product_prices``); the device's prices and total must match. The method must be
  allowed by the register's offline rule **as the device had it** (the version it was given, see
  ``offline.rules``): cash, or the backup phone with the references the phone showed. The session must be the register's, still open, and held by the
  cashier who sold.
* **Rejected sales are kept.** A rejected sale is stored with its Spanish reason and opens an incident for a
  supervisor, who resolves it; nothing of it counts in any total.
* **A closed session does not change.** A sale that checks out but whose session is no longer open (a device
  that came back after the close, e.g. one closed "sin esas ventas") is stored as ``late`` with an incident on
  that session, counted nowhere, for a supervisor to settle ("ventas recibidas después del cierre").
* **Accepted sales count.** They are ordinary paid sales of the session (created at the device's time), added
  to its running totals and to the expected cash like any other.
* **The device's queue blocks the close.** The POS reports how many sales its device still holds
  (``report_queue``, carried by the sale screen's poll and the sync; bounded, and heard only from the register's
  holder or the device that sold offline on it); a session does not close while a device of its register reports
  any.
* **An offline period is an incident** on the session: start, end and the sales taken.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.models import Incident
from ..audit.service import open_incident, record, resolve_incident
from ..carddata import scrub_text
from ..catalog.models import Category, Modifier, Product
from ..catalog.service import MAX_MODIFIERS_PER_LINE, price_as_of, price_changes_query
from ..clock import DEFAULT_TIMEZONE, format_local, utcnow
from ..db.engine import Database
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..money import MAX_AMOUNT, format_clp
from ..payments import lifecycle as lc
from ..payments.models import PaymentAttempt
from ..payments.references import BRAND, CARD_TYPES
from ..registers.models import CashRegister
from ..sales.models import Sale, SaleItem
from ..sales.service import MAX_LINES, MAX_QUANTITY, ItemInput, _apply_totals, _chosen_modifiers
from ..sessions.models import CashSession, SessionHandover
from ..users.models import User
from ..venues.models import Venue
from . import rules
from .models import OfflineDevice, OfflinePeriod, OfflineSale

#: At most this many sales in one sync request (the device sends its queue in batches).
MAX_BATCH = 50
#: A device's clock may be this far off the server's.
CLOCK_SKEW = timedelta(minutes=10)
#: A sale may be dated this far after the server's clock (a device's clock a little ahead), no more.
FUTURE_SKEW = timedelta(minutes=2)
DEVICE_ID_LENGTH = 64
#: A sale's key, as the device makes it (a UUID is 36 characters). Stored with its cashier in front
#: (``<cashier id>:<key>``), which fits the column's 80.
KEY_LENGTH = 60
#: The most unsynced sales a device may say it holds (a busy register offline for a whole night sells far fewer).
MAX_UNSYNCED = 5000
#: A cashier that no longer holds the register may still report the queue of a device that synced offline sales
#: of that register this recently (a device that comes back after its session was closed or handed over).
REPORT_WINDOW = timedelta(hours=24)
#: At most this many rejected sales (each an incident for a supervisor) per cashier, and per device, in
#: ``REJECTED_PERIOD``; beyond it a sale that would be rejected is not received yet and the device keeps it.
MAX_REJECTED = 20
REJECTED_PERIOD = timedelta(hours=1)
#: At most this many offline periods (each an incident) recorded on a session in ``REJECTED_PERIOD``; a period that
#: overlaps one the same device already reported on the session is that one.
MAX_PERIODS = 20
AUTH_CODE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
METHOD_NAMES = {"cash": "efectivo", "backup": "celular de respaldo"}


Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Amount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
Text = Annotated[str, msgspec.Meta(max_length=80)]


class OfflineLine(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    product_id: Id
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    #: The price the device showed, the product's plus its modifiers' (it is checked against the catalogue).
    unit_price: Amount
    #: The modifiers chosen in the device's chooser, from those it was given with the register's data.
    modifier_ids: Annotated[list[Id], msgspec.Meta(max_length=MAX_MODIFIERS_PER_LINE)] = msgspec.field(
        default_factory=list
    )


class BackupReference(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the backup phone showed for an approved charge (masked card data only)."""

    authorization_code: Text
    last4: Text
    brand: Text
    card_type: Text


class OfflineSaleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(max_length=KEY_LENGTH)]
    register_id: Id
    session_id: Id
    cashier_id: Id
    #: The device's local time of the sale, ISO 8601 with its UTC offset (``2026-12-02T01:15:00-03:00``).
    local_time: Annotated[str, msgspec.Meta(max_length=40)]
    method: Literal["cash", "backup"]
    lines: Annotated[list[OfflineLine], msgspec.Meta(max_length=MAX_LINES)]
    total: Amount
    cash_received: Amount | None = None
    backup: BackupReference | None = None
    #: The version of the register's offline rule the device was given (``/caja/sin-conexion/datos``).
    rule_id: Id | None = None


class OfflinePeriodIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    session_id: Id
    started_at: Annotated[str, msgspec.Meta(max_length=40)]
    ended_at: Annotated[str, msgspec.Meta(max_length=40)]


class SyncResult(msgspec.Struct, kw_only=True):
    key: str
    #: accepted (a sale now), rejected (kept for a supervisor, with the reason; or, for a sale naming a register
    #: that does not exist, refused without being kept), late (checks out, but its session was closed before it
    #: arrived: kept for a supervisor), resolved (a supervisor did), conflict (its key was already received from
    #: this cashier with another content: nothing received, like an HTTP 409), not_yours (not received: only the
    #: cashier who sold syncs it, into a session they held) or limited (not received yet: too many rejected sales
    #: from this cashier or device lately; the device keeps it and sends it later).
    status: str
    reason: str = ""
    sale_id: int | None = None
    total: int | None = None


class OfflineSaleOut(msgspec.Struct, kw_only=True):
    id: int
    key: str
    register_id: int
    session_id: int | None
    device_id: str
    cashier_id: int
    local_time: str
    method: str
    claimed_total: int
    status: str
    reason: str
    sale_id: int | None
    incident_id: int | None
    received_at: datetime


class Rejected(Exception):
    """An offline sale that cannot become a sale: why, in Spanish for the cashier and the supervisor."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: The identifiers the devices make (``crypto.randomUUID()``, or a random hex token such as Python's
#: ``uuid4().hex``): never card data, even when their digits, read across the dashes or between the letters,
#: would pass for a card number (about one random UUID in 350 does). Their format is checked before the card-data
#: scrubber is asked about anything else.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_TOKEN = re.compile(r"[0-9a-f]{16,64}")


def _token(value: str) -> bool:
    """A random identifier as the devices make them: a UUID or a hex token with at least one letter (16 or more
    digits alone are a number, judged like any other text)."""
    lowered = value.lower()
    if _UUID.fullmatch(lowered):
        return True
    return bool(_HEX_TOKEN.fullmatch(lowered)) and not lowered.isdigit()


def _identifier(value: str, limit: int, field: str, name: str, long: str) -> str:
    """An identifier made on the device: a UUID or hex token, or printable ASCII with nothing that looks like card
    data; bounded. Each fault has its own Spanish message (``name`` with its article, ``long`` its agreement)."""
    value = (value or "").strip()
    if not value:
        raise ValidationFailed(f"Falta {name}.", field=field)
    if len(value) > limit:
        raise ValidationFailed(f"{name.capitalize()} es demasiado {long} (hasta {limit} caracteres).", field=field)
    if _token(value):
        return value
    if not (value.isascii() and value.isprintable()):
        raise ValidationFailed(f"{name.capitalize()} tiene caracteres no permitidos.", field=field)
    if scrub_text(value) != value:
        raise ValidationFailed(f"{name.capitalize()} parece un número de tarjeta: no se acepta.", field=field)
    return value


def _device(device_id: str) -> str:
    return _identifier(device_id, DEVICE_ID_LENGTH, "device_id", "el identificador del equipo", "largo")


def _key(key: str) -> str:
    return _identifier(key, KEY_LENGTH, "key", "la clave de una venta", "larga")


def _scoped(cashier_id: int, key: str) -> str:
    """The key as stored: a key is unique per venue **and cashier** (another cashier's same key is another sale)."""
    return f"{cashier_id}:{key}"


def _shown_key(row: OfflineSale) -> str:
    """The key as the device sent it (rows received before keys were scoped hold it bare)."""
    prefix = f"{row.cashier_id}:"
    key = row.idempotency_key
    return key[len(prefix) :] if key.startswith(prefix) else key


def _canonical(value: Any) -> Any:
    """The content without its empty parts (an absent field and its default are the same content)."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def content_digest(payload: dict[str, Any]) -> str:
    """A hash of a sale's content as stored (``_payload``): the same key resent must carry the same content."""
    return hashlib.sha256(msgspec.json.encode(_canonical(payload), order="sorted")).hexdigest()


def parse_local_time(value: str) -> datetime:
    """The device's local time (ISO 8601 with its offset) as an aware instant."""
    try:
        instant = datetime.fromisoformat((value or "").strip())
    except ValueError:
        raise Rejected(f"La hora de la venta ({scrub_text(value)[:40]!r}) no es válida.") from None
    if instant.tzinfo is None:
        raise Rejected("La hora de la venta no indica su zona horaria.")
    return instant


async def sync_sales(
    db: Database,
    *,
    venue_id: int,
    user_id: int,
    device_id: str,
    sales: list[OfflineSaleIn],
    period: OfflinePeriodIn | None = None,
) -> list[SyncResult]:
    """Receive a device's queued sales in order, each judged on its own in a transaction of its own (a bad one is
    answered with its reason, the others are received); a sale already received answers its first result. With
    ``period``, the offline period is recorded as an incident on its session. What makes the whole request
    unreadable (the device's id, a key, a key twice, too many sales) refuses it before anything is written."""
    device = _device(device_id)
    if len(sales) > MAX_BATCH:
        raise ValidationFailed(f"Se reciben hasta {MAX_BATCH} ventas por envío.", field="sales")
    keys = [_key(sale.key) for sale in sales]
    if len(set(keys)) != len(keys):
        raise ValidationFailed("Dos ventas del envío tienen la misma clave.", field="sales")
    results = []
    for sale in sales:
        results.append(await _sync_one(db, venue_id=venue_id, user_id=user_id, device=device, sale=sale))
    if period is not None:
        await record_period(db, venue_id=venue_id, user_id=user_id, device_id=device, period=period)
    return results


class _NotReceived(Exception):
    """A sale answered without being kept (its transaction is rolled back): ``result`` says why."""

    def __init__(self, result: SyncResult) -> None:
        super().__init__(result.reason)
        self.result = result


async def _first_received(s: AsyncSession, venue_id: int, cashier_id: int, key: str) -> OfflineSale | None:
    """The sale this cashier sent with this key, if any (a key is scoped to its cashier: another cashier's same
    key is not this one's)."""
    found: OfflineSale | None = await s.scalar(
        select(OfflineSale).where(
            OfflineSale.venue_id == venue_id,
            OfflineSale.idempotency_key == _scoped(cashier_id, key),
            OfflineSale.cashier_id == cashier_id,
        )
    )
    if found is None:  # received before keys were scoped to their cashier: stored bare
        found = await s.scalar(
            select(OfflineSale).where(
                OfflineSale.venue_id == venue_id,
                OfflineSale.idempotency_key == key,
                OfflineSale.cashier_id == cashier_id,
            )
        )
    return found


async def _first_result(s: AsyncSession, venue_id: int, cashier_id: int, key: str, digest: str) -> SyncResult | None:
    row = await _first_received(s, venue_id, cashier_id, key)
    if row is None:
        return None
    if content_digest(row.payload) != digest:
        return SyncResult(
            key=key,
            status="conflict",
            reason=(
                "La clave de esta venta ya se recibió con otro contenido (productos, total, hora o pago): no se "
                "recibe. Avise al supervisor; la venta recibida con esa clave es la primera."
            ),
        )
    total = await s.scalar(select(Sale.total).where(Sale.id == row.sale_id)) if row.sale_id else None
    if row.status == "late":
        total = row.claimed_total  # checked: the device's total is the catalogue's
    status = row.status
    resolved = select(Incident.resolved).where(Incident.id == row.incident_id)
    if status in ("rejected", "late") and row.incident_id is not None and await s.scalar(resolved):
        status = "resolved"  # a supervisor looked at it: the device may forget it
    return SyncResult(key=key, status=status, reason=row.reason, sale_id=row.sale_id, total=total)


async def _sync_one(db: Database, *, venue_id: int, user_id: int, device: str, sale: OfflineSaleIn) -> SyncResult:
    key = sale.key.strip()
    if sale.cashier_id != user_id:
        return SyncResult(key=key, status="not_yours", reason="Esta venta la sincroniza el cajero que la registró.")
    digest = content_digest(_payload(sale))
    try:
        async with db.session() as s:
            first = await _first_result(s, venue_id, user_id, key, digest)
            if first is not None:
                return first
            return await _receive(s, venue_id=venue_id, user_id=user_id, device=device, sale=sale)
    except _NotReceived as refused:  # rolled back: nothing of it is kept
        return refused.result
    except IntegrityError:
        # The same key arrived concurrently (another tab, a retried request, the other instance): its answer.
        async with db.session() as s:
            first = await _first_result(s, venue_id, user_id, key, digest)
        if first is None:
            raise
        return first


async def _rejected_lately(s: AsyncSession, venue_id: int, user_id: int, device: str) -> int:
    """How many sales this cashier, or this device, had rejected in the last ``REJECTED_PERIOD``."""
    return int(
        await s.scalar(
            select(func.count())
            .select_from(OfflineSale)
            .join(Incident, Incident.id == OfflineSale.incident_id)
            .where(
                OfflineSale.venue_id == venue_id,
                Incident.kind == "offline_sale_rejected",
                OfflineSale.received_at >= utcnow() - REJECTED_PERIOD,
                or_(OfflineSale.received_by == user_id, OfflineSale.device_id == device),
            )
        )
        or 0
    )


async def _receive(s: AsyncSession, *, venue_id: int, user_id: int, device: str, sale: OfflineSaleIn) -> SyncResult:
    key = sale.key.strip()
    row = OfflineSale(
        venue_id=venue_id,
        register_id=sale.register_id,
        session_id=None,
        device_id=device,
        idempotency_key=_scoped(user_id, key),
        cashier_id=sale.cashier_id,
        local_time=scrub_text(sale.local_time)[:40],
        method=sale.method,
        claimed_total=sale.total,
        payload=_payload(sale),
        status="accepted",
        reason="",
        received_by=user_id,
        received_at=utcnow(),
    )
    register = await s.scalar(
        select(CashRegister).where(CashRegister.id == sale.register_id, CashRegister.venue_id == venue_id)
    )
    if register is None:  # nothing to keep it on: refused with its reason, the batch's other sales go on
        raise _NotReceived(
            SyncResult(key=key, status="rejected", reason="La caja de la venta no existe en este local.")
        )
    session = await s.scalar(
        select(CashSession).where(CashSession.id == sale.session_id, CashSession.venue_id == venue_id).with_for_update()
    )
    if session is not None and session.register_id == register.id:
        if not await _held_by(s, session, user_id):
            # Another cashier's session: nothing of it is kept, no incident lands on it.
            raise _NotReceived(
                SyncResult(
                    key=key,
                    status="not_yours",
                    reason="La sesión de caja de esta venta es de otro cajero: solo entra en una sesión suya.",
                )
            )
        row.session_id = session.id
    s.add(row)
    await s.flush()  # takes the key: a concurrent twin waits here and then gets its IntegrityError
    try:
        sold_at = parse_local_time(sale.local_time)
        row.sold_at = sold_at
        lines, total, rule = await _check(s, sale, register, session, sold_at, row)
    except Rejected as exc:
        if await _rejected_lately(s, venue_id, user_id, device) >= MAX_REJECTED:
            raise _NotReceived(
                SyncResult(
                    key=key,
                    status="limited",
                    reason=(
                        f"Demasiadas ventas rechazadas desde este equipo o cajero en la última hora (hasta "
                        f"{MAX_REJECTED}): esta venta queda en el equipo y se enviará más tarde. Avise al supervisor."
                    ),
                )
            ) from None
        return await _reject(s, row, register, exc.reason, user_id)
    assert session is not None  # _check refuses a sale without its session
    if session.status != "open":
        return await _late(s, row, register, session, total, user_id)
    new = Sale(
        venue_id=venue_id,
        session_id=session.id,
        register_id=register.id,
        jornada_id=session.jornada_id,
        cashier_id=sale.cashier_id,
        idempotency_key=f"offline-sale:{row.id}",  # unique as its row (the device's key is unique per cashier)
        total=total,
        status="paid",
        payment_method="cash" if sale.method == "cash" else "card",
        provider_id="cash" if sale.method == "cash" else rule.backup_provider,
        paid_via="cash" if sale.method == "cash" else "backup",
        no_revenue=False,
        courtesy_reason="",
        cash_received=(sale.cash_received or total) if sale.method == "cash" else None,
        change_given=((sale.cash_received or total) - total) if sale.method == "cash" else None,
        created_at=sold_at,
        paid_at=sold_at,
        cancel_reason="",
    )
    s.add(new)
    await s.flush()
    s.add_all([SaleItem(sale_id=new.id, **line) for line in lines])
    if sale.method == "backup":
        assert sale.backup is not None
        _backup_attempt(s, new, register, rule.backup_provider, sale.backup, user_id, sold_at)
    await _apply_totals(s, new, +1)
    row.sale_id = new.id
    await record(
        s,
        venue_id=venue_id,
        user_id=sale.cashier_id,
        action="sale.paid",
        entity="sale",
        entity_id=new.id,
        payload={
            "method": new.payment_method,
            "provider": new.provider_id,
            "via": new.paid_via,
            "total": total,
            "session_id": session.id,
            "offline": True,
            "device": device,
            "local_time": row.local_time,
        },
    )
    return SyncResult(key=key, status="accepted", sale_id=new.id, total=total)


async def _late(
    s: AsyncSession, row: OfflineSale, register: CashRegister, session: CashSession, total: int, user_id: int
) -> SyncResult:
    """A sale that checks out but whose session was closed before it arrived (a device that did not come back
    before the close): the closed session does not change. It waits in "ventas recibidas después del cierre"
    for a supervisor, and the session's and the jornada's reports show it."""
    row.status = "late"
    row.reason = (
        f"Recibida después del cierre de la sesión #{session.id}: no entra en los totales de esa caja; "
        "la revisa un supervisor."
    )
    method = METHOD_NAMES.get(row.method, row.method)
    row.incident_id = await open_incident(
        s,
        venue_id=row.venue_id,
        kind="offline_sale_late",
        description=(
            f"Venta sin conexión recibida después del cierre ({register.name}, {method}, {format_clp(total)}, "
            f"hora del equipo {row.local_time}, {await _sent_by(s, row)}): no entra en los totales de la "
            "sesión cerrada. Decida qué se hace con ella (efectivo entregado, cobro verificado…) y resuélvala."
        ),
        session_id=session.id,
        register_id=register.id,
        user_id=user_id,
    )
    return SyncResult(key=_shown_key(row), status="late", reason=row.reason, total=total)


async def _sent_by(s: AsyncSession, row: OfflineSale) -> str:
    """Who sent the sale, from which device (for the supervisor's incident)."""
    name = await s.scalar(select(User.display_name).where(User.id == row.received_by)) or f"#{row.received_by}"
    return f"enviada por {name} desde el equipo {row.device_id[:12]}"


def _payload(sale: OfflineSaleIn) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(sale)
    data.pop("key", None)
    data["local_time"] = scrub_text(sale.local_time)[:40]
    if sale.backup is not None:
        data["backup"] = {k: scrub_text(str(v))[:20] for k, v in data["backup"].items()}
    return data


async def _reject(s: AsyncSession, row: OfflineSale, register: CashRegister, reason: str, user_id: int) -> SyncResult:
    row.status = "rejected"
    row.reason = reason[:300]
    method = METHOD_NAMES.get(row.method, row.method)
    row.incident_id = await open_incident(
        s,
        venue_id=row.venue_id,
        kind="offline_sale_rejected",
        description=(
            f"Venta sin conexión rechazada al sincronizar ({register.name}, {method}, {format_clp(row.claimed_total) if row.claimed_total > 0 else '$0'}, "
            f"hora del equipo {row.local_time}, {await _sent_by(s, row)}): {reason} Revísela con el cajero y "
            "resuélvala."
        ),
        session_id=row.session_id,
        register_id=row.register_id,
        user_id=user_id,
    )
    return SyncResult(key=_shown_key(row), status="rejected", reason=row.reason)


async def _check(
    s: AsyncSession,
    sale: OfflineSaleIn,
    register: CashRegister,
    session: CashSession | None,
    sold_at: datetime,
    row: OfflineSale,
) -> tuple[list[dict[str, Any]], int, rules.RuleSpec]:
    """The sale as the server sees it (priced lines and total, the offline rule it was taken under), or
    ``Rejected`` with the reason."""
    if session is None or session.register_id != register.id:
        raise Rejected("La sesión de caja de la venta no existe en esta caja.")
    if session.cashier_id != sale.cashier_id:
        raise Rejected("La caja la tiene otro cajero: la venta no puede entrar en su sesión.")
    if sold_at > utcnow() + FUTURE_SKEW:
        raise Rejected("La hora de la venta es posterior a la del servidor (revise el reloj del equipo).")
    if sold_at < session.opened_at - CLOCK_SKEW:
        raise Rejected(
            "La hora de la venta es anterior a la apertura: está fuera de la sesión de caja (revise el reloj del equipo)."
        )
    if session.closed_at is not None and sold_at > session.closed_at + CLOCK_SKEW:
        # Taken after the drawer was counted: outside the session, not a sale of it received late.
        raise Rejected("La hora de la venta es posterior al cierre de su sesión: está fuera de la sesión de caja.")
    rule = await _rule_for(s, sale, register, session, sold_at, row)
    if sale.method == "cash":
        if not rule.allows("cash"):
            raise Rejected("La regla sin conexión que tenía el equipo no permite efectivo en esta caja.")
    else:
        if not rule.allows("backup"):
            raise Rejected("La regla sin conexión que tenía el equipo no permite el celular de respaldo.")
        _check_reference(sale.backup)
    if not sale.lines:
        raise Rejected("La venta no tiene productos.")
    if len(sale.lines) > MAX_LINES:
        raise Rejected(f"Una venta admite hasta {MAX_LINES} líneas.")
    prices = await _prices_at(s, register, {line.product_id for line in sale.lines}, sold_at)
    offered = await _modifiers_offered(s, register, prices) if any(line.modifier_ids for line in sale.lines) else {}
    lines: list[dict[str, Any]] = []
    for n, line in enumerate(sale.lines, start=1):
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise Rejected(f"Línea {n}: la cantidad debe estar entre 1 y {MAX_QUANTITY}.")
        if line.product_id not in prices:
            raise Rejected(f"Línea {n}: el producto no existe o no se vende en esta caja.")
        name, price, _ = prices[line.product_id]
        chosen: list[dict[str, Any]] = []
        if line.modifier_ids:  # chosen as on the sale screen, from what the product offers (sales.service)
            item = ItemInput(product_id=line.product_id, quantity=line.quantity, modifier_ids=line.modifier_ids)
            try:
                chosen = _chosen_modifiers(n, item, offered.get(line.product_id, []), name, withdrawn_ok=True)
            except ValidationFailed as exc:
                raise Rejected(str(exc)) from None
            price += sum(m["price"] for m in chosen)
        if line.unit_price != price:
            raise Rejected(
                f"Línea {n}: el precio de {name} en el equipo ({format_clp(line.unit_price) if line.unit_price > 0 else '$0'}) "
                f"no es el del catálogo a la hora de la venta ({format_clp(price)})."
            )
        lines.append(
            {
                "product_id": line.product_id,
                "name": name,
                "quantity": line.quantity,
                "unit_price": price,
                "line_total": price * line.quantity,
                "free_reason": "",
                **({"modifiers": chosen} if chosen else {}),  # none: the column stays SQL NULL
            }
        )
    total = sum(line["line_total"] for line in lines)
    if total > MAX_AMOUNT:
        raise Rejected(f"El total supera el máximo permitido ({format_clp(MAX_AMOUNT)}).")
    if sale.total != total:
        raise Rejected(
            f"El total del equipo ({format_clp(sale.total) if sale.total > 0 else '$0'}) no es la suma de "
            f"sus productos ({format_clp(total)})."
        )
    if sale.method == "cash" and sale.cash_received is not None and not total <= sale.cash_received <= MAX_AMOUNT:
        raise Rejected(f"El efectivo recibido no cubre el total ({format_clp(total)}).")
    return lines, total, rule


async def _rule_for(
    s: AsyncSession,
    sale: OfflineSaleIn,
    register: CashRegister,
    session: CashSession,
    sold_at: datetime,
    row: OfflineSale,
) -> rules.RuleSpec:
    """The offline rule the sale is checked against: the version its device was given (a real version of this
    register, in force at some moment between the session's opening and the sale), or — when the device names
    none — what both the version in force at the sale and the current rule allow."""
    if sale.rule_id is not None:
        # The versions' times and the session's opening are the server's; the sale's is the device's.
        given = await rules.given_rule(s, register, sale.rule_id, session.opened_at, sold_at + CLOCK_SKEW)
        if given is None:
            raise Rejected(
                "La regla sin conexión que indica el equipo no es una que esta caja haya tenido durante la sesión."
            )
        row.rule_id = given.id
        return rules.spec_of(given)
    now = rules.rule_of(register)
    then = await rules.rule_at(s, register, sold_at)
    if then is None:
        return now
    methods = tuple(m for m in now.methods if m in then.methods)
    same_phone = now.backup_provider if now.backup_provider == then.backup_provider else ""
    return rules.RuleSpec(methods=methods, backup_provider=same_phone)


def _check_reference(reference: BackupReference | None) -> None:
    if reference is None:
        raise Rejected("Falta la referencia del cobro en el celular de respaldo.")
    code = reference.authorization_code.strip().upper()
    if len(code) != 6 or not set(code) <= AUTH_CODE_CHARS:
        raise Rejected("El código de autorización del celular de respaldo debe tener 6 letras o números.")
    last4 = reference.last4.strip()
    if len(last4) != 4 or not last4.isascii() or not last4.isdigit():
        raise Rejected("Los últimos 4 dígitos de la tarjeta deben ser 4 números.")
    if not BRAND.fullmatch(reference.brand.strip()):  # a name, as at the POS: never digits (a card number, a track)
        raise Rejected("Falta la marca de la tarjeta (Visa, Mastercard…): solo su nombre, sin números.")
    if reference.card_type.strip().lower() not in CARD_TYPES:
        raise Rejected("El tipo de tarjeta debe ser débito, crédito o prepago.")


async def _prices_at(
    s: AsyncSession, register: CashRegister, product_ids: set[int], sold_at: datetime
) -> dict[int, tuple[str, int, int]]:
    """Name, price and category of each product as the catalogue had it at ``sold_at`` (sellable at this
    register)."""
    q = (
        select(Product.id, Product.name, Product.price, Product.category_id)
        .join(Category, Category.id == Product.category_id)
        .where(Product.venue_id == register.venue_id, Product.id.in_(product_ids))
    )
    allowed = set(register.allowed_categories or [])
    products = {
        r.id: (r.name, r.price, r.category_id) for r in await s.execute(q) if not allowed or r.category_id in allowed
    }
    if products:
        changes = list(await s.execute(price_changes_query(products, sold_at)))
        for product_id, (name, price, category_id) in products.items():
            products[product_id] = (name, price_as_of(changes, product_id, price, sold_at), category_id)
    return products


async def _modifiers_offered(
    s: AsyncSession, register: CashRegister, products: dict[int, tuple[str, int, int]]
) -> dict[int, list[Modifier]]:
    """The modifiers each product offers (its own and its category's), withdrawn ones included: the device sold
    with those it was given, and a modifier's price never changes (a new price is a new modifier)."""
    categories = {category for _, _, category in products.values()}
    found = (
        await s.scalars(
            select(Modifier).where(
                Modifier.venue_id == register.venue_id,
                Modifier.product_id.in_(list(products)) | Modifier.category_id.in_(categories),
            )
        )
    ).all()
    return {
        product_id: [
            m for m in found if m.product_id == product_id or (m.product_id is None and m.category_id == category)
        ]
        for product_id, (_, _, category) in products.items()
    }


def _backup_attempt(
    s: AsyncSession,
    sale: Sale,
    register: CashRegister,
    provider: str,
    reference: BackupReference,
    user_id: int,
    sold_at: datetime,
) -> None:
    """The backup phone's charge as a confirmed manual attempt of the provider of the device's rule, verified
    against the provider's report at night like any other."""
    provider_id = provider or "backup"
    ticket = f"SC{sale.id}"
    attempt = PaymentAttempt(
        venue_id=sale.venue_id,
        sale_id=sale.id,
        session_id=sale.session_id,
        register_id=sale.register_id,
        provider_id=provider_id,
        device_key=f"offline:{provider_id}:{register.code}"[:160],
        role="backup",
        amount=sale.total,
        ticket=ticket,
        reference=f"{register.code}-{ticket}"[:40],
        active=True,
        started_by=sale.cashier_id,
        confirmed_by=user_id,
        created_at=sold_at,
        progress_message="",
        response_message="Aprobado en el celular de respaldo (venta sin conexión)",
        verification_note="",
        reconcile_tries=0,
        needs_decision=False,
        authorization_code=reference.authorization_code.strip().upper(),
        last4=reference.last4.strip(),
        card_brand=reference.brand.strip()[:20],
        card_type=CARD_TYPES[reference.card_type.strip().lower()],
        details={"offline": True},
    )
    lc.begin(attempt, manual=True, now=sold_at)
    lc.apply(attempt, lc.decide(lc.AttemptView(state=attempt.state), lc.Event.MANUAL_CONFIRM), sold_at)
    s.add(attempt)


class GivenRule(msgspec.Struct, kw_only=True):
    """The version of a register's offline rule a device is given with the register's data."""

    id: int
    methods: list[str]
    backup_provider: str
    #: What the sale screen's poll says the rule is now (``ScreenStatus.offline_rule``): when they differ, the
    #: device fetches the new version.
    fingerprint: str


async def give_rule(s: AsyncSession, venue_id: int, register_id: int) -> GivenRule:
    """The register's offline rule in force now, as a recorded version the device keeps and names in its sales."""
    register = await s.scalar(
        select(CashRegister).where(CashRegister.id == register_id, CashRegister.venue_id == venue_id)
    )
    if register is None:
        raise NotFound("La caja no existe.", code="register.not_found")
    row = await rules.current_rule(s, register)
    spec = rules.spec_of(row)
    return GivenRule(
        id=row.id, methods=list(spec.methods), backup_provider=spec.backup_provider, fingerprint=spec.fingerprint
    )


# ---- the device's queue, the offline periods, the supervisor ---------------------------------------------------
async def report_queue(
    s: AsyncSession, *, venue_id: int, register_id: int, device_id: str, unsynced: int, user_id: int
) -> None:
    """The device says how many sales it holds unsynced (the sale screen's poll and the sync carry the count).

    Only who may speak for that register's queue is heard: the cashier holding its open session, or a cashier
    whose device synced offline sales of that register lately (a device that comes back after its session was
    closed or handed over still reports, and empties, its queue), or who made this device's last report and now
    reports no more than then (the register is no longer theirs: its queue can only shrink). Another cashier's
    report would hold a close that is not theirs: ``Forbidden``, nothing written."""
    device = _device(device_id)
    if not 0 <= unsynced <= MAX_UNSYNCED:
        raise ValidationFailed(
            f"Cantidad de ventas por sincronizar inválida (entre 0 y {MAX_UNSYNCED}).", field="unsynced"
        )
    row = await s.get(OfflineDevice, (register_id, device))
    if row is None and unsynced == 0:
        return  # a device that never held anything needs no row
    if row is not None and row.venue_id != venue_id:
        raise ValidationFailed("La caja no existe en este local.", field="register_id")
    if row is not None and row.unsynced == unsynced:
        return  # nothing changes
    if row is None:
        register = await s.scalar(
            select(CashRegister.id).where(CashRegister.id == register_id, CashRegister.venue_id == venue_id)
        )
        if register is None:
            raise ValidationFailed("La caja no existe en este local.", field="register_id")
    if not await _may_report(s, venue_id, register_id, device, user_id, row, unsynced):
        raise Forbidden(
            "Solo el cajero que tiene la caja abierta, o el equipo que vendió sin conexión en ella, informa sus "
            "ventas por sincronizar.",
            code="offline.queue_not_yours",
        )
    if row is None:
        s.add(
            OfflineDevice(
                register_id=register_id,
                device_id=device,
                venue_id=venue_id,
                unsynced=unsynced,
                reported_by=user_id,
                reported_at=utcnow(),
            )
        )
        return
    row.unsynced, row.reported_by, row.reported_at = unsynced, user_id, utcnow()


async def _may_report(
    s: AsyncSession,
    venue_id: int,
    register_id: int,
    device: str,
    user_id: int,
    row: OfflineDevice | None,
    unsynced: int,
) -> bool:
    """Whether the user may report this device's queue on this register (see ``report_queue``)."""
    holder = await s.scalar(
        select(CashSession.cashier_id).where(
            CashSession.venue_id == venue_id, CashSession.register_id == register_id, CashSession.status != "closed"
        )
    )
    if holder == user_id:
        return True
    since = utcnow() - REPORT_WINDOW
    if row is not None and row.reported_by == user_id and row.reported_at >= since and unsynced <= row.unsynced:
        return True  # its queue only empties: a device that sells again syncs, and is heard as one that sold
    sold = await s.scalar(
        select(OfflineSale.id)
        .where(
            OfflineSale.venue_id == venue_id,
            OfflineSale.register_id == register_id,
            OfflineSale.device_id == device,
            OfflineSale.received_by == user_id,
            OfflineSale.received_at >= since,
        )
        .limit(1)
    )
    return sold is not None


async def unsynced_on_register(s: AsyncSession, register_id: int) -> int:
    """How many sales the devices of a register still report unsynced."""
    return int(
        await s.scalar(
            select(func.coalesce(func.sum(OfflineDevice.unsynced), 0)).where(OfflineDevice.register_id == register_id)
        )
        or 0
    )


async def _held_by(s: AsyncSession, session: CashSession, user_id: int) -> bool:
    """Whether the user holds the session's drawer or held it before a handover."""
    if session.cashier_id == user_id:
        return True
    handed = await s.scalar(
        select(SessionHandover.id)
        .where(SessionHandover.session_id == session.id, SessionHandover.from_user_id == user_id)
        .limit(1)
    )
    return handed is not None


async def record_period(
    db: Database, *, venue_id: int, user_id: int, device_id: str, period: OfflinePeriodIn
) -> int | None:
    """An offline period of a device as an incident on its session (once per device and start): start, end and
    the sales the device took in it, cut to the session's life. Returns the incident's id (None when the session is
    not this venue's or was never held by the reporting user)."""
    device = _device(device_id)
    try:
        started = parse_local_time(period.started_at)
        ended = parse_local_time(period.ended_at)
    except Rejected as exc:
        raise ValidationFailed(exc.reason, field="period") from None
    if ended < started:
        raise ValidationFailed("El periodo sin conexión termina antes de empezar.", field="period")
    try:
        async with db.session() as s:
            session = await s.scalar(
                select(CashSession).where(CashSession.id == period.session_id, CashSession.venue_id == venue_id)
            )
            if session is None or not await _held_by(s, session, user_id):
                return None  # not a session this cashier held: nothing of theirs to record on it
            # Within the session's life, as the server's clock allows the device's: a period never spans years.
            started = max(started, session.opened_at - CLOCK_SKEW)
            ended = min(ended, utcnow() + CLOCK_SKEW)
            if session.closed_at is not None:
                ended = min(ended, session.closed_at)  # the session's life ends at its close
            if ended < started:
                return None
            overlapping = await s.scalar(
                select(OfflinePeriod.incident_id).where(
                    OfflinePeriod.venue_id == venue_id,
                    OfflinePeriod.session_id == session.id,
                    OfflinePeriod.device_id == device,
                    OfflinePeriod.started_at <= ended,
                    OfflinePeriod.ended_at >= started,
                )
            )
            if overlapping is not None:
                return int(overlapping)  # the same outage reported again (its start read a little differently)
            recorded = await s.scalar(
                select(func.count())
                .select_from(OfflinePeriod)
                .join(Incident, Incident.id == OfflinePeriod.incident_id)
                .where(
                    OfflinePeriod.session_id == session.id,
                    Incident.created_at >= utcnow() - REJECTED_PERIOD,
                )
            )
            if int(recorded or 0) >= MAX_PERIODS:
                return None  # a session's incidents are not flooded: enough outages recorded lately
            existing = await s.scalar(
                select(OfflinePeriod).where(
                    OfflinePeriod.venue_id == venue_id,
                    OfflinePeriod.device_id == device,
                    OfflinePeriod.started_at == started,
                )
            )
            if existing is not None:
                return int(existing.incident_id) if existing.incident_id is not None else None
            count = int(
                await s.scalar(
                    select(func.count())
                    .select_from(OfflineSale)
                    .where(
                        OfflineSale.venue_id == venue_id,
                        OfflineSale.device_id == device,
                        OfflineSale.session_id == session.id,
                        OfflineSale.sold_at >= started,
                        OfflineSale.sold_at <= ended,
                    )
                )
                or 0
            )
            row = OfflinePeriod(
                venue_id=venue_id,
                register_id=session.register_id,
                session_id=session.id,
                device_id=device,
                started_at=started,
                ended_at=ended,
                sales=count,
            )
            s.add(row)
            await s.flush()
            tz = await s.scalar(select(Venue.timezone).where(Venue.id == venue_id)) or DEFAULT_TIMEZONE
            minutes = max(0, round((ended - started).total_seconds() / 60))
            row.incident_id = await open_incident(
                s,
                venue_id=venue_id,
                kind="offline",
                description=(
                    f"Sin conexión con el servidor desde las {format_local(started, tz, '%H:%M:%S')} hasta las "
                    f"{format_local(ended, tz, '%H:%M:%S')} ({minutes} min): {count} "
                    f"{'venta' if count == 1 else 'ventas'} tomadas en el equipo y sincronizadas."
                ),
                session_id=session.id,
                register_id=session.register_id,
                user_id=user_id,
            )
            return row.incident_id
    except IntegrityError:  # the same period reported twice at once
        async with db.session() as s:
            found: int | None = await s.scalar(
                select(OfflinePeriod.incident_id).where(
                    OfflinePeriod.venue_id == venue_id,
                    OfflinePeriod.device_id == device,
                    OfflinePeriod.started_at == started,
                )
            )
            return found


async def list_offline_sales(
    s: AsyncSession, venue_id: int, *, session_id: int | None = None, status: str | None = None
) -> list[OfflineSaleOut]:
    q = select(OfflineSale).where(OfflineSale.venue_id == venue_id)
    if session_id is not None:
        q = q.where(OfflineSale.session_id == session_id)
    if status is not None:
        q = q.where(OfflineSale.status == status)
    rows = await s.scalars(q.order_by(OfflineSale.id).limit(1000))
    return [
        OfflineSaleOut(
            id=r.id,
            key=_shown_key(r),
            register_id=r.register_id,
            session_id=r.session_id,
            device_id=r.device_id,
            cashier_id=r.cashier_id,
            local_time=r.local_time,
            method=r.method,
            claimed_total=r.claimed_total,
            status=r.status,
            reason=r.reason,
            sale_id=r.sale_id,
            incident_id=r.incident_id,
            received_at=r.received_at,
        )
        for r in rows
    ]


async def resolve_rejected(s: AsyncSession, *, venue_id: int, offline_sale_id: int, user_id: int, note: str) -> None:
    """A supervisor settled a rejected offline sale (charged again, returned, written off…): it is marked
    resolved with the note, its incident too, and the device that holds it may forget it."""
    note = " ".join((note or "").split())
    if not 5 <= len(note) <= 500:
        raise ValidationFailed("Escriba qué se hizo con la venta (entre 5 y 500 caracteres).", field="note")
    row = await s.scalar(
        select(OfflineSale).where(OfflineSale.id == offline_sale_id, OfflineSale.venue_id == venue_id).with_for_update()
    )
    if row is None:
        raise NotFound("La venta sin conexión no existe.", code="offline_sale.not_found")
    if row.status not in ("rejected", "late"):
        raise Conflict("Esta venta sin conexión no está pendiente de resolver.", code="offline_sale.not_rejected")
    row.status = "resolved"
    if row.incident_id is not None:
        incident = await s.get(Incident, row.incident_id)
        if incident is not None and not incident.resolved:
            await resolve_incident(s, venue_id=venue_id, incident_id=incident.id, user_id=user_id, resolution=note)
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="offline_sale.resolved",
        entity="offline_sale",
        entity_id=row.id,
        payload={"note": note[:300], "key": _shown_key(row)},
    )


class LateSale(msgspec.Struct, kw_only=True):
    """An offline sale received after its session was closed: waiting for a supervisor, or settled."""

    id: int
    session_id: int | None
    register_name: str
    device_id: str
    local_time: str
    method: str
    total: int
    resolved: bool
    resolution: str


async def late_sales(s: AsyncSession, venue_id: int, session_ids: Any) -> list[LateSale]:
    """The sales received after the close of the sessions ``session_ids`` (a list or a select of ids)."""
    rows = await s.execute(
        select(OfflineSale, CashRegister.name, Incident.resolved, Incident.resolution)
        .join(Incident, Incident.id == OfflineSale.incident_id)
        .join(CashRegister, CashRegister.id == OfflineSale.register_id)
        .where(
            OfflineSale.venue_id == venue_id,
            Incident.kind == "offline_sale_late",
            OfflineSale.session_id.in_(session_ids),
        )
        .order_by(OfflineSale.id)
    )
    return [
        LateSale(
            id=row.id,
            session_id=row.session_id,
            register_name=name,
            device_id=row.device_id[:12],
            local_time=row.local_time,
            method=METHOD_NAMES.get(row.method, row.method),
            total=row.claimed_total,
            resolved=bool(resolved),
            resolution=resolution or "",
        )
        for row, name, resolved, resolution in rows
    ]


def new_key() -> str:
    """A key like the devices generate (for tests and tools)."""
    return str(uuid.uuid4())
