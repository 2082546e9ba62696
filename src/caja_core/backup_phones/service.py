"""Backup phones per venue: name, identifier, assigned register (or shared), available / unavailable and when
someone last checked it. A register's fallback policy says how many must be available before a session opens
(``count_available``); the POS shows which one to use (``phone_for_register``)."""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..db.lookup import get_in_venue
from ..errors import Conflict, ValidationFailed
from ..payments.models import PaymentAttempt
from ..registers.models import BackupPhone, CashRegister
from .schemas import BackupPhoneInput, BackupPhoneOut

_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f<>|\"]{1,80}$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:+#-]{0,79}$")


def _phone_out(phone: BackupPhone, register_name: str | None) -> BackupPhoneOut:
    return BackupPhoneOut(
        id=phone.id,
        venue_id=phone.venue_id,
        name=phone.name,
        identifier=phone.identifier,
        register_id=phone.register_id,
        register_name=register_name,
        available=phone.available,
        last_checked_at=phone.last_checked_at,
    )


async def _validate(s: AsyncSession, venue_id: int, data: BackupPhoneInput) -> tuple[str, str, str | None]:
    name = (data.name or "").strip()
    identifier = (data.identifier or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "Falta el nombre del celular."
    elif not _NAME_RE.match(name):
        errors["name"] = "El nombre tiene caracteres no permitidos o supera 80 caracteres."
    if not identifier:
        errors["identifier"] = "Falta el identificador del celular (número de serie, IMEI parcial o etiqueta)."
    elif not _IDENTIFIER_RE.match(identifier):
        errors["identifier"] = (
            "El identificador solo admite letras, números, espacios y . _ : + # - (hasta 80 caracteres)."
        )
    register_name = None
    if data.register_id is not None:
        register = await s.get(CashRegister, data.register_id)
        if register is None or register.venue_id != venue_id:
            errors["register_id"] = "La caja asignada no existe."
        else:
            register_name = register.name
    if errors:
        raise ValidationFailed("El celular de respaldo tiene errores.", code="backup_phone.invalid", fields=errors)
    return name, identifier, register_name


async def _get(s: AsyncSession, venue_id: int, phone_id: int) -> BackupPhone:
    return await get_in_venue(
        s, BackupPhone, phone_id, venue_id, "El celular de respaldo no existe.", "backup_phone.not_found"
    )


async def _register_name(s: AsyncSession, register_id: int | None) -> str | None:
    if register_id is None:
        return None
    return await s.scalar(select(CashRegister.name).where(CashRegister.id == register_id))


def _duplicate(identifier: str) -> Conflict:
    return Conflict(
        f"Ya existe un celular con el identificador {identifier!r} en este local.",
        code="backup_phone.duplicate",
        field="identifier",
    )


async def _check_unique(s: AsyncSession, venue_id: int, identifier: str, phone_id: int | None = None) -> None:
    q = select(BackupPhone.id).where(BackupPhone.venue_id == venue_id, BackupPhone.identifier == identifier)
    if phone_id is not None:
        q = q.where(BackupPhone.id != phone_id)
    if await s.scalar(q) is not None:
        raise _duplicate(identifier)


async def _flush_unique(s: AsyncSession, identifier: str) -> None:
    try:
        await s.flush()
    except IntegrityError:  # a concurrent insert won the race: the caller's transaction rolls back
        raise _duplicate(identifier) from None


async def create_phone(
    s: AsyncSession, *, venue_id: int, data: BackupPhoneInput, actor_id: int | None
) -> BackupPhoneOut:
    name, identifier, register_name = await _validate(s, venue_id, data)
    await _check_unique(s, venue_id, identifier)
    phone = BackupPhone(
        venue_id=venue_id,
        name=name,
        identifier=identifier,
        register_id=data.register_id,
        available=bool(data.available),
        last_checked_at=utcnow(),
    )
    s.add(phone)
    await _flush_unique(s, identifier)
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="backup_phone.created",
        entity="backup_phone",
        entity_id=phone.id,
        payload={"name": name, "identifier": identifier, "register_id": data.register_id, "available": phone.available},
    )
    return _phone_out(phone, register_name)


async def update_phone(
    s: AsyncSession, *, venue_id: int, phone_id: int, data: BackupPhoneInput, actor_id: int | None
) -> BackupPhoneOut:
    phone = await _get(s, venue_id, phone_id)
    name, identifier, register_name = await _validate(s, venue_id, data)
    await _check_unique(s, venue_id, identifier, phone.id)
    before = {
        "name": phone.name,
        "identifier": phone.identifier,
        "register_id": phone.register_id,
        "available": phone.available,
    }
    if bool(data.available) != phone.available:
        phone.last_checked_at = utcnow()
    phone.name, phone.identifier = name, identifier
    phone.register_id, phone.available = data.register_id, bool(data.available)
    await _flush_unique(s, identifier)
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="backup_phone.updated",
        entity="backup_phone",
        entity_id=phone.id,
        payload={
            "before": before,
            "after": {
                "name": name,
                "identifier": identifier,
                "register_id": data.register_id,
                "available": phone.available,
            },
        },
    )
    return _phone_out(phone, register_name)


async def set_availability(
    s: AsyncSession, *, venue_id: int, phone_id: int, available: bool, actor_id: int | None
) -> BackupPhoneOut:
    """Someone checked the phone (charged, app logged in, NFC on): record the result and when."""
    phone = await _get(s, venue_id, phone_id)
    phone.available = bool(available)
    phone.last_checked_at = utcnow()
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="backup_phone.checked",
        entity="backup_phone",
        entity_id=phone.id,
        payload={"available": phone.available},
    )
    return _phone_out(phone, await _register_name(s, phone.register_id))


async def delete_phone(s: AsyncSession, *, venue_id: int, phone_id: int, actor_id: int | None) -> None:
    """Remove a phone registered by mistake. A phone already used for a payment stays (mark it unavailable)."""
    phone = await _get(s, venue_id, phone_id)
    used = await s.scalar(
        select(func.count()).select_from(PaymentAttempt).where(PaymentAttempt.backup_phone_id == phone_id)
    )
    if used:
        raise Conflict(
            f"El celular {phone.name} ya se usó en {used} cobro(s); márquelo como no disponible en vez de eliminarlo.",
            code="backup_phone.in_use",
        )
    await s.delete(phone)
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="backup_phone.deleted",
        entity="backup_phone",
        entity_id=phone_id,
        payload={"name": phone.name, "identifier": phone.identifier},
    )


async def get_phone(s: AsyncSession, venue_id: int, phone_id: int) -> BackupPhoneOut:
    phone = await _get(s, venue_id, phone_id)
    return _phone_out(phone, await _register_name(s, phone.register_id))


async def list_phones(s: AsyncSession, venue_id: int, *, register_id: int | None = None) -> list[BackupPhoneOut]:
    """All phones of the venue, or those a register may use (its own and the shared ones)."""
    q = (
        select(BackupPhone, CashRegister.name)
        .outerjoin(CashRegister, CashRegister.id == BackupPhone.register_id)
        .where(BackupPhone.venue_id == venue_id)
    )
    if register_id is not None:
        q = q.where(or_(BackupPhone.register_id == register_id, BackupPhone.register_id.is_(None)))
    rows = (await s.execute(q.order_by(BackupPhone.name, BackupPhone.id))).all()
    return [_phone_out(phone, register_name) for phone, register_name in rows]


def _usable_by(venue_id: int, register_id: int) -> tuple[ColumnElement[bool], ...]:
    return (
        BackupPhone.venue_id == venue_id,
        BackupPhone.available.is_(True),
        or_(BackupPhone.register_id == register_id, BackupPhone.register_id.is_(None)),
    )


async def count_available(s: AsyncSession, venue_id: int, register_id: int) -> int:
    """Available phones this register may use: assigned to it or shared (unassigned)."""
    return await s.scalar(select(func.count()).select_from(BackupPhone).where(*_usable_by(venue_id, register_id))) or 0


async def phone_for_register(s: AsyncSession, venue_id: int, register_id: int) -> BackupPhoneOut | None:
    """The phone the POS tells the cashier to use: an available one assigned to the register first, then a
    shared one; among equals the most recently checked."""
    q = (
        select(BackupPhone)
        .where(*_usable_by(venue_id, register_id))
        .order_by(BackupPhone.register_id.is_(None), BackupPhone.last_checked_at.desc().nulls_last(), BackupPhone.id)
    )
    phone = (await s.scalars(q.limit(1))).first()
    if phone is None:
        return None
    return _phone_out(phone, await _register_name(s, phone.register_id))


async def ensure_available(s: AsyncSession, venue_id: int, register_id: int, required: int) -> int:
    """Raise Conflict unless ``required`` phones are available for the register; return how many are."""
    available = await count_available(s, venue_id, register_id)
    if available < required:
        raise Conflict(
            f"Se requieren {required} celular(es) de respaldo disponible(s) y hay {available}.",
            code="backup_phones.missing",
        )
    return available
