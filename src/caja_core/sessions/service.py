"""Cash sessions: open (idempotent, one per register, inside an open jornada), cash movements, blind close
by denomination with supervisor approval over tolerance, fallback events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import open_incident, record
from ..clock import format_local, utcnow
from ..db.lookup import get_in_venue
from ..errors import Conflict, NotFound, ValidationFailed
from ..jornadas.models import Jornada
from ..money import MAX_AMOUNT, format_clp, parse_amount
from ..offline.models import OfflineDevice
from ..payments import lifecycle
from ..payments.models import PaymentAttempt
from ..permissions import Action
from ..permissions import service as permissions
from ..registers.models import BackupPhone, CashRegister
from ..registers.service import STATUS_LABELS, register_out
from ..sales.models import Sale
from ..sales.voiding import mark_cancelled
from ..text import clean_reason
from ..users.models import User
from ..venues.models import Venue
from .models import CashMovement, CashSession, FallbackEvent, SessionHandover

#: Attempt states that block a close (docs/architecture.md, "Where we changed the starting design", 2): the
#: payments lifecycle decides which they are.
UNRESOLVED_STATES = lifecycle.UNRESOLVED
STATE_LABELS = {
    lifecycle.CREATED: "creado",
    lifecycle.SENDING: "enviando",
    lifecycle.AWAITING: "esperando al terminal",
    lifecycle.IN_DOUBT: "en duda",
    lifecycle.RECONCILING: "verificando con el terminal",
    lifecycle.MANUAL_PENDING: "respaldo sin confirmar",
    lifecycle.REFUND_DUE: "cobro duplicado por devolver al cliente",
}
MAX_COUNT_PER_DENOMINATION = 100_000


class SessionOut(msgspec.Struct, kw_only=True):
    id: int
    venue_id: int
    register_id: int
    jornada_id: int
    opened_by: int
    cashier_id: int  # who holds the drawer now
    opened_at: datetime
    status: str
    initial_cash: int
    initial_count: dict[str, int] | None
    ticket_count: int
    sales_total: int
    cash_sales_count: int
    cash_sales_total: int
    card_sales_total: int
    courtesy_count: int
    courtesy_total: int
    cancelled_count: int
    cancelled_total: int
    cash_in_total: int
    cash_out_total: int
    primary_count: int
    backup_count: int
    handover_difference: int = 0
    discount_count: int = 0
    discount_total: int = 0
    tip_count: int = 0
    tip_total: int = 0
    cash_tip_total: int = 0
    closed_at: datetime | None = None
    closed_by: int | None = None
    counted_cash: int | None = None
    counted_breakdown: dict[str, int] | None = None
    expected_cash: int | None = None
    difference: int | None = None
    close_note: str = ""
    approved_by: int | None = None


class CloseResult(msgspec.Struct, kw_only=True):
    session_id: int
    status: str  # "closed", or "closing" while waiting for a supervisor's approval
    counted_cash: int
    expected_cash: int
    difference: int  # counted − expected: positive = surplus (sobrante), negative = shortage
    tolerance: int
    needs_approval: bool
    breakdown: dict[str, int]
    #: The part of the difference found at handovers (the earlier cashiers'), and the closing cashier's own.
    handover_difference: int = 0
    cashier_difference: int = 0


class HandoverOut(msgspec.Struct, kw_only=True):
    id: int
    session_id: int
    from_user_id: int
    to_user_id: int
    authorized_by: int | None
    counted_cash: int
    expected_cash: int
    difference: int  # counted − expected at the handover: the outgoing cashier's
    breakdown: dict[str, int]
    note: str
    created_at: datetime


def session_out(c: CashSession) -> SessionOut:
    return SessionOut(**{f: getattr(c, f) for f in SessionOut.__struct_fields__})


def expected_cash(c: CashSession) -> int:
    return c.initial_cash + c.cash_sales_total + (c.cash_tip_total or 0) + c.cash_in_total - c.cash_out_total


async def _venue(s: AsyncSession, venue_id: int) -> Venue:
    venue = await s.get(Venue, venue_id)
    if venue is None:
        raise NotFound("El local no existe.", code="venue.not_found")
    return venue


def parse_count(raw: dict[Any, Any] | None, denominations: list[int], *, field: str = "count") -> dict[str, int]:
    """Validate a count by denomination: ``{"20000": 3, "500": 10}`` → same with ints; zeros dropped."""
    out: dict[str, int] = {}
    errors: dict[str, str] = {}
    for key, value in (raw or {}).items():
        try:
            denom = int(str(key).strip())
        except ValueError:
            errors[f"{field}.{key}"] = f"Denominación desconocida: {key}."
            continue
        if denom not in denominations:
            errors[f"{field}.{key}"] = f"Denominación desconocida: {format_clp(denom)}."
            continue
        if value in (None, ""):
            continue
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.strip().isascii() and value.strip().isdigit())
        ):
            errors[f"{field}.{denom}"] = f"La cantidad de {format_clp(denom)} debe ser un número entero ≥ 0."
            continue
        qty = int(value)
        if qty > MAX_COUNT_PER_DENOMINATION:
            errors[f"{field}.{denom}"] = f"La cantidad de {format_clp(denom)} es demasiado grande."
            continue
        if qty:
            out[str(denom)] = qty
    if errors:
        raise ValidationFailed("Revise el conteo por denominación.", code="count.invalid", fields=errors)
    return out


def count_total(count: dict[str, int]) -> int:
    return sum(int(d) * q for d, q in count.items())


async def available_backup_phones(s: AsyncSession, venue_id: int, register_id: int) -> int:
    try:  # the backup-phones service, when installed, is the source of truth
        from ..backup_phones.service import count_available
    except ImportError:
        return (
            await s.scalar(
                select(func.count())
                .select_from(BackupPhone)
                .where(
                    BackupPhone.venue_id == venue_id,
                    BackupPhone.available.is_(True),
                    or_(BackupPhone.register_id == register_id, BackupPhone.register_id.is_(None)),
                )
            )
            or 0
        )
    return await count_available(s, venue_id, register_id)


async def open_session(
    s: AsyncSession,
    *,
    venue_id: int,
    register_id: int,
    user_id: int,
    initial_cash: object = None,
    count: dict[Any, Any] | None = None,
    open_key: str,
) -> SessionOut:
    """Open a session on a register. Repeating the same ``open_key`` returns the first session."""
    open_key = (open_key or "").strip()
    if not open_key or len(open_key) > 80:
        raise ValidationFailed("Falta la clave de idempotencia de la apertura.", field="open_key")
    existing = await s.scalar(
        select(CashSession).where(CashSession.venue_id == venue_id, CashSession.open_key == open_key)
    )
    if existing is not None:
        if existing.register_id != register_id:
            raise Conflict("Esta apertura ya se usó en otra caja.", code="session.key_reused")
        return session_out(existing)
    venue = await _venue(s, venue_id)
    register = await get_in_venue(s, CashRegister, register_id, venue_id, "La caja no existe.", "register.not_found")
    if not register.active:
        raise Conflict(f"La caja {register.name} está desactivada.", code="register.inactive")
    if register.operational_status != "active":
        label = STATUS_LABELS.get(register.operational_status, register.operational_status)
        raise Conflict(f"La caja {register.name} no está operativa (estado: {label}).", code="register.not_operational")
    jornada = await s.scalar(select(Jornada).where(Jornada.venue_id == venue_id, Jornada.status == "open"))
    if jornada is None:
        raise Conflict(
            "No hay una jornada abierta. Un supervisor debe abrir la jornada primero.", code="jornada.none_open"
        )
    parsed_count = parse_count(count, venue.denominations) if count else None
    if parsed_count is not None and initial_cash in (None, ""):
        cash = count_total(parsed_count)
    else:
        cash = parse_amount(
            0 if initial_cash in (None, "") else initial_cash,
            field="initial_cash",
            allow_zero=True,
            label="El fondo inicial",
        )
        if parsed_count is not None and count_total(parsed_count) != cash:
            raise ValidationFailed(
                f"El fondo inicial ({format_clp(cash)}) no coincide con el conteo ({format_clp(count_total(parsed_count))}).",
                field="initial_cash",
            )
    policy = register_out(register).policy
    if register.backup_provider and policy.enabled and policy.backup_phones_required > 0:
        phones = await available_backup_phones(s, venue_id, register_id)
        if phones < policy.backup_phones_required:
            raise Conflict(
                f"La política de la caja exige {policy.backup_phones_required} celular(es) de respaldo "
                f"disponible(s) y hay {phones}. Registre o marque disponibles los celulares de respaldo.",
                code="session.backup_phones_missing",
            )
    session = CashSession(
        venue_id=venue_id,
        register_id=register_id,
        jornada_id=jornada.id,
        opened_by=user_id,
        opened_at=utcnow(),
        open_key=open_key,
        status="open",
        initial_cash=cash,
        initial_count=parsed_count,
    )
    try:
        async with s.begin_nested():
            s.add(session)
            await s.flush()
    except IntegrityError:
        again = await s.scalar(
            select(CashSession).where(CashSession.venue_id == venue_id, CashSession.open_key == open_key)
        )
        if again is not None and again.register_id == register_id:
            return session_out(again)
        raise Conflict(f"La caja {register.name} ya tiene una sesión abierta.", code="session.already_open") from None
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="session.opened",
        entity="session",
        entity_id=session.id,
        payload={"register": register.code, "initial_cash": cash},
    )
    return session_out(session)


async def _session(s: AsyncSession, venue_id: int, session_id: int, *, lock: bool = False) -> CashSession:
    q = select(CashSession).where(CashSession.id == session_id, CashSession.venue_id == venue_id)
    if lock:
        q = q.with_for_update()
    session = await s.scalar(q)
    if session is None:
        raise NotFound("La sesión de caja no existe.", code="session.not_found")
    return session


async def get_session(s: AsyncSession, venue_id: int, session_id: int) -> SessionOut:
    return session_out(await _session(s, venue_id, session_id))


async def current_session(s: AsyncSession, venue_id: int, register_id: int) -> SessionOut | None:
    session = await s.scalar(
        select(CashSession).where(
            CashSession.venue_id == venue_id, CashSession.register_id == register_id, CashSession.status != "closed"
        )
    )
    return session_out(session) if session else None


async def sessions_of_user(s: AsyncSession, venue_id: int, user_id: int) -> list[SessionOut]:
    """The sessions whose drawer ``user_id`` holds now."""
    rows = await s.scalars(
        select(CashSession).where(
            CashSession.venue_id == venue_id, CashSession.cashier_id == user_id, CashSession.status != "closed"
        )
    )
    return [session_out(c) for c in rows]


async def resume_session(s: AsyncSession, *, venue_id: int, register_id: int, user_id: int) -> SessionOut:
    """Go back to the open session of a register (another device, after a reload): only its holder may. Anyone
    else takes the drawer over with a handover (``take_over``)."""
    session = await s.scalar(
        select(CashSession).where(
            CashSession.venue_id == venue_id, CashSession.register_id == register_id, CashSession.status != "closed"
        )
    )
    if session is None:
        raise Conflict("Esa caja no tiene una sesión abierta.", code="session.none_open")
    permissions.require_holder(session, user_id)
    return session_out(session)


async def list_sessions(
    s: AsyncSession, venue_id: int, *, jornada_id: int | None = None, register_id: int | None = None, limit: int = 200
) -> list[SessionOut]:
    q = select(CashSession).where(CashSession.venue_id == venue_id)
    if jornada_id is not None:
        q = q.where(CashSession.jornada_id == jornada_id)
    if register_id is not None:
        q = q.where(CashSession.register_id == register_id)
    rows = await s.scalars(q.order_by(CashSession.opened_at.desc()).limit(limit))
    return [session_out(c) for c in rows]


def require_open(session: CashSession) -> None:
    if session.status == "closed":
        raise Conflict("La sesión de caja está cerrada.", code="session.closed")
    if session.status != "open":
        raise Conflict("La sesión de caja está en cierre; no admite más movimientos.", code="session.closing")


async def add_cash_movement(
    s: AsyncSession,
    *,
    venue_id: int,
    session_id: int,
    kind: str,
    amount: object,
    reason: str,
    user_id: int,
    authorization_id: int | None = None,
) -> SessionOut:
    """Cash paid in or out by the drawer's holder. A cashier's cash-outs without a supervisor add up within the
    session: once they would pass the venue's limit, each further cash-out needs a supervisor's authorization
    for its amount (splitting a large withdrawal into small ones does not avoid it)."""
    if kind not in ("in", "out"):
        raise ValidationFailed("El movimiento debe ser ingreso o retiro.", field="kind")
    value = parse_amount(amount, field="amount")
    reason = clean_reason(
        reason, "El motivo del movimiento", missing="Indique el motivo del movimiento (3 a 200 caracteres)."
    )
    session = await _session(s, venue_id, session_id, lock=True)
    require_open(session)
    if kind == "out" and value > expected_cash(session):
        raise Conflict(
            f"No hay suficiente efectivo en la caja para retirar {format_clp(value)}.",
            code="session.insufficient_cash",
            field="amount",
        )
    alone = 0
    if kind == "out":
        alone = (
            await s.scalar(
                select(func.coalesce(func.sum(CashMovement.amount), 0)).where(
                    CashMovement.session_id == session_id,
                    CashMovement.kind == "out",
                    CashMovement.user_id == user_id,
                    CashMovement.authorized_by.is_(None),
                )
            )
            or 0
        )
    decision = await permissions.require(
        s,
        venue_id=venue_id,
        action=Action.CASH_IN if kind == "in" else Action.CASH_OUT,
        actor_id=user_id,
        session_id=session_id,
        amount=value,
        authorization_id=authorization_id,
        threshold_amount=alone + value,
    )
    s.add(
        CashMovement(
            venue_id=venue_id,
            session_id=session_id,
            kind=kind,
            amount=value,
            reason=reason,
            user_id=user_id,
            authorized_by=decision.authorized_by,
            created_at=utcnow(),
        )
    )
    column = CashSession.cash_in_total if kind == "in" else CashSession.cash_out_total
    await s.execute(
        update(CashSession)
        .where(CashSession.id == session_id)
        .values({column: column + value})
        .execution_options(synchronize_session=False)
    )
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action=f"session.cash_{kind}",
        entity="session",
        entity_id=session_id,
        payload={"amount": value, "reason": reason, "authorized_by": decision.authorized_by},
    )
    await s.refresh(session)
    return session_out(session)


async def list_cash_movements(
    s: AsyncSession, venue_id: int, session_id: int | None = None, *, jornada_id: int | None = None
) -> list[dict[str, Any]]:
    q = select(CashMovement).where(CashMovement.venue_id == venue_id)
    if session_id is not None:
        q = q.where(CashMovement.session_id == session_id)
    if jornada_id is not None:
        q = q.where(CashMovement.session_id.in_(select(CashSession.id).where(CashSession.jornada_id == jornada_id)))
    rows = await s.scalars(q.order_by(CashMovement.id))
    return [
        {
            "id": m.id,
            "session_id": m.session_id,
            "kind": m.kind,
            "amount": m.amount,
            "reason": m.reason,
            "user_id": m.user_id,
            "authorized_by": m.authorized_by,
            "created_at": m.created_at,
        }
        for m in rows
    ]


async def unresolved_attempts(s: AsyncSession, session_id: int) -> list[str]:
    """Human descriptions of the payment attempts of a session that are not resolved yet."""
    rows = (
        await s.execute(
            select(
                PaymentAttempt.id,
                PaymentAttempt.provider_id,
                PaymentAttempt.state,
                PaymentAttempt.amount,
                PaymentAttempt.ticket,
                PaymentAttempt.sale_id,
            )
            .where(PaymentAttempt.session_id == session_id, PaymentAttempt.state.in_(UNRESOLVED_STATES))
            .order_by(PaymentAttempt.id)
        )
    ).all()
    return [
        f"Pago #{r.id} (venta #{r.sale_id}, {r.provider_id.upper()}, ticket {r.ticket}, "
        f"{format_clp(r.amount)}): {STATE_LABELS.get(r.state, r.state)}"
        for r in rows
    ]


async def _refuse_unresolved(s: AsyncSession, session_id: int, what: str) -> None:
    pending = await unresolved_attempts(s, session_id)
    if pending:
        raise Conflict(
            f"No se puede {what}: hay pagos sin resolver. " + "; ".join(pending),
            code="session.unresolved_payments",
            details={"attempts": pending},
        )


async def _unsynced_devices(s: AsyncSession, register_id: int) -> list[OfflineDevice]:
    return list(
        await s.scalars(
            select(OfflineDevice)
            .where(OfflineDevice.register_id == register_id, OfflineDevice.unsynced > 0)
            .order_by(OfflineDevice.reported_at)
        )
    )


async def _refuse_unsynced(s: AsyncSession, register_id: int, tz: str) -> None:
    """A device of the register still holds sales taken offline (it says so in its poll): they belong to this
    session's totals, so the close waits for them (or for a supervisor's "cerrar sin esas ventas")."""
    devices = await _unsynced_devices(s, register_id)
    unsynced = sum(d.unsynced for d in devices)
    if unsynced:
        raise Conflict(
            f"No se puede cerrar: un equipo de esta caja tiene {unsynced} "
            f"{'venta' if unsynced == 1 else 'ventas'} sin conexión por sincronizar. Conéctelo a la red y espere "
            "a que las envíe.",
            code="session.unsynced_offline_sales",
            details={
                "unsynced": int(unsynced),
                "devices": [
                    {
                        "device": d.device_id[:12],
                        "unsynced": d.unsynced,
                        "last_seen": format_local(d.reported_at, tz, "%d-%m %H:%M:%S"),
                    }
                    for d in devices
                ],
            },
        )


async def _close_without_unsynced(
    s: AsyncSession, session: CashSession, *, user_id: int, reason: str, authorization_id: int | None, tz: str
) -> int:
    """A supervisor's "cerrar sin esas ventas": the devices that report unsynced sales and do not come back are
    recorded as an incident on the session (device, count, last report, reason) and no longer hold the close.
    If such a device syncs later, its sales go to the supervisor's "ventas recibidas después del cierre"
    (``offline.service``); the closed session does not change. Returns how many sales were left out."""
    devices = await _unsynced_devices(s, session.register_id)
    if not devices:
        return 0  # they synced meanwhile: an ordinary close
    reason = clean_reason(reason, "El motivo para cerrar sin esas ventas", field="offline_reason")
    decision = await permissions.require(
        s,
        venue_id=session.venue_id,
        action=Action.CLOSE_WITHOUT_OFFLINE,
        actor_id=user_id,
        session_id=session.id,
        authorization_id=authorization_id,
    )
    names = dict(
        (
            await s.execute(
                select(User.id, User.display_name).where(
                    User.id.in_([d.reported_by for d in devices if d.reported_by] or [0])
                )
            )
        ).all()
    )
    left_out = 0
    for device in devices:
        count = device.unsynced
        left_out += count
        who = names.get(device.reported_by or 0, "")
        await open_incident(
            s,
            venue_id=session.venue_id,
            kind="offline_unsynced_at_close",
            description=(
                f"Caja cerrada sin {count} {'venta' if count == 1 else 'ventas'} sin conexión del equipo "
                f"{device.device_id[:12]} (último aviso {format_local(device.reported_at, tz, '%d-%m %H:%M:%S')}"
                f"{', ' + who if who else ''}). Motivo: {reason} Si el equipo vuelve, sus ventas quedan en "
                "«Ventas recibidas después del cierre» para un supervisor."
            ),
            session_id=session.id,
            register_id=session.register_id,
            user_id=user_id,
        )
        await record(
            s,
            venue_id=session.venue_id,
            user_id=user_id,
            action="session.closed_without_offline_sales",
            entity="session",
            entity_id=session.id,
            payload={
                "device": device.device_id,
                "unsynced": count,
                "last_report": device.reported_at.isoformat(),
                "reason": reason,
                "authorized_by": decision.authorized_by,
            },
        )
        device.unsynced, device.reported_by, device.reported_at = 0, user_id, utcnow()
    return left_out


# ---- handover: another cashier takes the drawer over ----------------------------------------------------------


async def take_over(
    s: AsyncSession,
    *,
    venue_id: int,
    session_id: int,
    user_id: int,
    counted: dict[Any, Any],
    note: str = "",
    authorization_id: int | None = None,
) -> HandoverOut:
    """``user_id`` takes the drawer of an open session over. They count it blind by denomination; the
    difference against the expected cash at that moment belongs to the outgoing cashier (over the venue's
    tolerance it is an incident). From now on the session's sales and movements are the new holder's."""
    session = await _session(s, venue_id, session_id, lock=True)
    require_open(session)
    if session.cashier_id == user_id:
        raise Conflict("Usted ya tiene esta caja.", code="session.already_holder")
    venue = await _venue(s, venue_id)
    breakdown = parse_count(counted, venue.denominations, field="counted")
    note = (note or "").strip()
    if len(note) > 300 or any(ord(ch) < 32 for ch in note):
        raise ValidationFailed("La nota admite hasta 300 caracteres, sin caracteres de control.", field="note")
    await _refuse_unresolved(s, session_id, "relevar la caja")
    decision = await permissions.require(
        s,
        venue_id=venue_id,
        action=Action.TAKE_OVER,
        actor_id=user_id,
        session_id=session_id,
        authorization_id=authorization_id,
    )
    counted_cash = count_total(breakdown)
    expected = expected_cash(session)
    difference = counted_cash - expected
    outgoing = session.cashier_id
    handover = SessionHandover(
        venue_id=venue_id,
        session_id=session_id,
        from_user_id=outgoing,
        to_user_id=user_id,
        authorized_by=decision.authorized_by,
        counted_breakdown=breakdown,
        counted_cash=counted_cash,
        expected_cash=expected,
        difference=difference,
        note=note,
        created_at=utcnow(),
    )
    s.add(handover)
    session.cashier_id = user_id
    session.handover_difference = (session.handover_difference or 0) + difference
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="session.handover",
        entity="session",
        entity_id=session_id,
        payload={
            "from": outgoing,
            "to": user_id,
            "authorized_by": decision.authorized_by,
            "counted": counted_cash,
            "expected": expected,
            "difference": difference,
        },
    )
    if abs(difference) > venue.close_tolerance:
        names = dict((await s.execute(select(User.id, User.display_name).where(User.id == outgoing))).all())
        await open_incident(
            s,
            venue_id=venue_id,
            kind="cash_difference",
            session_id=session_id,
            jornada_id=session.jornada_id,
            register_id=session.register_id,
            user_id=user_id,
            description=(
                f"Diferencia de {format_clp(difference)} en el relevo de caja: "
                f"{names.get(outgoing, f'usuario #{outgoing}')} entregó {format_clp(counted_cash)} "
                f"de {format_clp(expected)} esperados."
            ),
        )
    return _handover_out(handover)


def _handover_out(h: SessionHandover) -> HandoverOut:
    return HandoverOut(
        id=h.id,
        session_id=h.session_id,
        from_user_id=h.from_user_id,
        to_user_id=h.to_user_id,
        authorized_by=h.authorized_by,
        counted_cash=h.counted_cash,
        expected_cash=h.expected_cash,
        difference=h.difference,
        breakdown=dict(h.counted_breakdown or {}),
        note=h.note,
        created_at=h.created_at,
    )


async def list_handovers(
    s: AsyncSession, venue_id: int, *, session_id: int | None = None, jornada_id: int | None = None
) -> list[HandoverOut]:
    q = select(SessionHandover).where(SessionHandover.venue_id == venue_id)
    if session_id is not None:
        q = q.where(SessionHandover.session_id == session_id)
    if jornada_id is not None:
        q = q.where(SessionHandover.session_id.in_(select(CashSession.id).where(CashSession.jornada_id == jornada_id)))
    return [_handover_out(h) for h in await s.scalars(q.order_by(SessionHandover.id))]


# ---- blind close ----------------------------------------------------------------------------------------------


async def close_session(
    s: AsyncSession,
    *,
    venue_id: int,
    session_id: int,
    user_id: int,
    counted: dict[Any, Any],
    note: str = "",
    without_offline_reason: str = "",
    authorization_id: int | None = None,
) -> CloseResult:
    """Blind close by the drawer's holder: the server computes counted, expected and difference. When the
    holder's own part of the difference (the total minus what was found at handovers) is over the venue's
    tolerance the session waits in ``closing`` for a supervisor's approval (``approve_close``).

    A device of the register that reports unsynced offline sales holds the close; with
    ``without_offline_reason`` and a supervisor's authorization (``close_without_offline``) the close goes on
    without them, recorded as an incident on the session."""
    # The unpaid sales first, then the session: the order a card payment takes them in (its sale, then the
    # session its attempt refers to). A payment starting meanwhile is then either seen as unresolved below (the
    # close is refused) or finds its sale cancelled; the opposite order deadlocks on PostgreSQL.
    await s.execute(
        select(Sale.id)
        .where(Sale.session_id == session_id, Sale.venue_id == venue_id, Sale.status == "pending_payment")
        .order_by(Sale.id)
        .with_for_update()
    )
    session = await _session(s, venue_id, session_id, lock=True)
    if session.status == "closed":
        raise Conflict("La sesión de caja ya está cerrada.", code="session.closed")
    permissions.require_holder(session, user_id)
    venue = await _venue(s, venue_id)
    breakdown = parse_count(counted, venue.denominations, field="counted")
    await _refuse_unresolved(s, session_id, "cerrar")
    if without_offline_reason.strip():
        await _close_without_unsynced(
            s,
            session,
            user_id=user_id,
            reason=without_offline_reason,
            authorization_id=authorization_id,
            tz=venue.timezone,
        )
    await _refuse_unsynced(s, session.register_id, venue.timezone)
    note = (note or "").strip()[:1000]
    # Carts that were never paid do not survive the close (they never counted in any total).
    abandoned = list(
        await s.scalars(select(Sale).where(Sale.session_id == session_id, Sale.status == "pending_payment"))
    )
    with_cash = [sale for sale in abandoned if sale.cash_part]
    if with_cash:  # its cash part is in the drawer: the cashier settles it or voids it and hands the cash back
        sale = with_cash[0]
        raise Conflict(
            f"La venta #{sale.id} tiene {format_clp(sale.cash_part)} en efectivo ya recibidos: cobre lo que falta "
            "o anúlela (y devuelva ese efectivo al cliente) antes de cerrar la caja.",
            code="session.cash_part_pending",
        )
    for sale in abandoned:
        await mark_cancelled(
            s,
            sale,
            venue_id=venue_id,
            user_id=user_id,
            reason="Venta sin pagar al cierre de caja",
            was_paid=False,
            at_close_of_session=session_id,
        )
    counted_cash = count_total(breakdown)
    expected = expected_cash(session)
    difference = counted_cash - expected
    own = difference - (session.handover_difference or 0)
    needs_approval = abs(own) > venue.close_tolerance
    session.counted_breakdown = breakdown
    session.counted_cash = counted_cash
    session.expected_cash = expected
    session.difference = difference
    session.close_note = note
    if needs_approval:
        session.status = "closing"
        await record(
            s,
            venue_id=venue_id,
            user_id=user_id,
            action="session.close_requested",
            entity="session",
            entity_id=session_id,
            payload={"counted": counted_cash, "expected": expected, "difference": difference, "own": own},
        )
    else:
        session.status = "closed"
        session.closed_at = utcnow()
        session.closed_by = user_id
        await record(
            s,
            venue_id=venue_id,
            user_id=user_id,
            action="session.closed",
            entity="session",
            entity_id=session_id,
            payload={
                "counted": counted_cash,
                "expected": expected,
                "difference": difference,
                "own": own,
                "breakdown": breakdown,
                "abandoned_sales": len(abandoned),
            },
        )
    return CloseResult(
        session_id=session_id,
        status=session.status,
        counted_cash=counted_cash,
        expected_cash=expected,
        difference=difference,
        tolerance=venue.close_tolerance,
        needs_approval=needs_approval,
        breakdown=breakdown,
        handover_difference=session.handover_difference or 0,
        cashier_difference=own,
    )


def close_result(session: SessionOut, tolerance: int) -> CloseResult:
    """The close as it stands (for a page shown again while it waits for approval)."""
    difference = session.difference or 0
    return CloseResult(
        session_id=session.id,
        status=session.status,
        counted_cash=session.counted_cash or 0,
        expected_cash=session.expected_cash or 0,
        difference=difference,
        tolerance=tolerance,
        needs_approval=session.status == "closing",
        breakdown=dict(session.counted_breakdown or {}),
        handover_difference=session.handover_difference,
        cashier_difference=difference - session.handover_difference,
    )


async def pending_close(s: AsyncSession, venue_id: int, session_id: int) -> CloseResult:
    session = await _session(s, venue_id, session_id)
    venue = await _venue(s, venue_id)
    return close_result(session_out(session), venue.close_tolerance)


async def approve_close(
    s: AsyncSession,
    *,
    venue_id: int,
    session_id: int,
    user_id: int,
    note: str,
    authorization_id: int | None = None,
) -> CloseResult:
    """Approve a close whose difference is over tolerance, with a note: a supervisor or admin alone (never
    for a drawer they hold), or the cashier with a supervisor's authorization given at the register."""
    note = (note or "").strip()
    if len(note) < 5:
        raise ValidationFailed(
            "La aprobación requiere una nota que explique la diferencia (mínimo 5 caracteres).", field="note"
        )
    session = await _session(s, venue_id, session_id, lock=True)
    if session.status != "closing":
        raise Conflict("La sesión no está esperando aprobación de cierre.", code="session.not_closing")
    decision = await permissions.require(
        s,
        venue_id=venue_id,
        action=Action.APPROVE_DIFFERENCE,
        actor_id=user_id,
        session_id=session_id,
        authorization_id=authorization_id,
    )
    approver = decision.authorized_by or user_id
    venue = await _venue(s, venue_id)
    session.status = "closed"
    session.closed_at = utcnow()
    session.closed_by = session.closed_by or session.cashier_id
    session.approved_by = approver
    session.close_note = (session.close_note + "\n" if session.close_note else "") + f"Aprobación: {note[:900]}"
    await record(
        s,
        venue_id=venue_id,
        user_id=approver,
        action="session.close_approved",
        entity="session",
        entity_id=session_id,
        payload={"difference": session.difference, "note": note[:300], "requested_by": user_id},
    )
    await open_incident(
        s,
        venue_id=venue_id,
        kind="cash_difference",
        session_id=session_id,
        jornada_id=session.jornada_id,
        register_id=session.register_id,
        user_id=approver,
        description=f"Diferencia de caja {format_clp(session.difference)} aprobada: {note[:300]}",
    )
    return close_result(session_out(session), venue.close_tolerance)


async def add_fallback_event(
    s: AsyncSession,
    *,
    venue_id: int,
    session_id: int,
    sale_id: int | None,
    attempt_id: int | None,
    from_provider: str,
    to_provider: str,
    reason: str,
    user_id: int | None,
    override: bool = False,
    details: dict[str, Any] | None = None,
) -> int:
    event = FallbackEvent(
        venue_id=venue_id,
        session_id=session_id,
        sale_id=sale_id,
        attempt_id=attempt_id,
        from_provider=from_provider,
        to_provider=to_provider,
        reason=reason[:300],
        user_id=user_id,
        override=override,
        created_at=utcnow(),
        details=details,
    )
    s.add(event)
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=user_id,
        action="payment.override" if override else "payment.fallback",
        entity="sale",
        entity_id=sale_id or "",
        payload={"from": from_provider, "to": to_provider, "reason": reason[:300], "attempt_id": attempt_id},
    )
    return event.id


async def list_fallback_events(
    s: AsyncSession, venue_id: int, *, session_id: int | None = None, jornada_id: int | None = None
) -> list[dict[str, Any]]:
    q = select(FallbackEvent).where(FallbackEvent.venue_id == venue_id)
    if session_id is not None:
        q = q.where(FallbackEvent.session_id == session_id)
    if jornada_id is not None:
        q = q.join(CashSession, CashSession.id == FallbackEvent.session_id).where(CashSession.jornada_id == jornada_id)
    rows = await s.scalars(q.order_by(FallbackEvent.id))
    return [
        {
            "id": e.id,
            "session_id": e.session_id,
            "sale_id": e.sale_id,
            "attempt_id": e.attempt_id,
            "from_provider": e.from_provider,
            "to_provider": e.to_provider,
            "reason": e.reason,
            "user_id": e.user_id,
            "override": e.override,
            "created_at": e.created_at,
        }
        for e in rows
    ]


__all__ = [
    "MAX_AMOUNT",
    "CloseResult",
    "SessionOut",
    "add_cash_movement",
    "add_fallback_event",
    "approve_close",
    "close_session",
    "current_session",
    "get_session",
    "open_session",
    "unresolved_attempts",
]
