"""Cash registers: configuration, provider settings (validated by the provider plugin), fallback policy,
operational status, agent tokens."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..catalog.models import Category
from ..clock import utcnow
from ..errors import CajaError, Conflict, NotFound, ValidationFailed
from ..fallback.policy import FallbackPolicy, default_policy, load_policy
from ..offline import rules as offline_rules
from ..providers import ProviderRegistry, is_secret_field, validate_settings
from .models import CashRegister

REGISTER_TYPES = ("TOTEM", "HUMANA", "OFICINA", "VIRTUAL")
REGISTER_TYPE_LABELS = {
    "TOTEM": "Tótem (autoservicio)",
    "HUMANA": "Humana (con cajero)",
    "OFICINA": "Oficina",
    "VIRTUAL": "Virtual (en línea)",
}
OPERATIONAL_STATUSES = ("active", "maintenance", "offline", "error")
STATUS_LABELS = {"active": "Activa", "maintenance": "En mantención", "offline": "Fuera de línea", "error": "Con error"}
PAYMENT_METHODS = ("cash", "card")
METHOD_LABELS = {"cash": "Efectivo", "card": "Tarjeta"}


class RegisterInput(msgspec.Struct, kw_only=True):
    code: str
    name: str
    register_type: str = "HUMANA"
    location: str = ""
    active: bool = True
    operational_status: str = "active"
    payment_methods: list[str] = msgspec.field(default_factory=lambda: ["cash", "card"])
    #: None: no provider. The admin's form for a new register starts from ``ProviderRegistry.defaults_for``
    #: (what the installed plugins propose).
    primary_provider: str | None = None
    backup_provider: str | None = None
    provider_settings: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    devices: dict[str, str] = msgspec.field(default_factory=dict)
    policy: FallbackPolicy | None = None
    allowed_categories: list[int] | None = None


class RegisterOut(msgspec.Struct, kw_only=True):
    id: int
    venue_id: int
    code: str
    name: str
    register_type: str
    location: str
    active: bool
    operational_status: str
    payment_methods: list[str]
    primary_provider: str | None
    backup_provider: str | None
    provider_settings: dict[str, dict[str, Any]]
    devices: dict[str, Any]
    policy: FallbackPolicy
    allowed_categories: list[int] | None
    agent_configured: bool
    agent_last_seen_at: datetime | None
    agent_status: dict[str, Any] | None
    updated_at: datetime

    @property
    def can_sell(self) -> bool:
        return self.active and self.operational_status == "active"


def register_out(r: CashRegister) -> RegisterOut:
    return RegisterOut(
        id=r.id,
        venue_id=r.venue_id,
        code=r.code,
        name=r.name,
        register_type=r.register_type,
        location=r.location,
        active=r.active,
        operational_status=r.operational_status,
        payment_methods=list(r.payment_methods or []),
        primary_provider=r.primary_provider,
        backup_provider=r.backup_provider,
        provider_settings=dict(r.provider_settings or {}),
        devices=dict(r.devices or {}),
        policy=load_policy(r.fallback_policy, r.register_type),
        allowed_categories=r.allowed_categories,
        agent_configured=bool(r.agent_token_hash),
        agent_last_seen_at=r.agent_last_seen_at,
        agent_status=r.agent_status,
        updated_at=r.updated_at,
    )


def public_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Provider settings without secrets (for forms, logs, /health)."""
    return {k: ("" if is_secret_field(k) else v) for k, v in (settings or {}).items()}


async def _validate(
    s: AsyncSession, venue_id: int, data: RegisterInput, registry: ProviderRegistry, existing: CashRegister | None
) -> tuple[dict[str, dict[str, Any]], FallbackPolicy]:
    errors: dict[str, str] = {}
    code = (data.code or "").strip().upper()
    if not re.fullmatch(r"[A-Z0-9][A-Z0-9_-]{0,29}", code):
        errors["code"] = "El código debe tener 1 a 30 letras, números, guiones o guiones bajos."
    name = (data.name or "").strip()
    if not name or len(name) > 120 or any(ord(c) < 32 for c in name):
        errors["name"] = "El nombre es obligatorio (máximo 120 caracteres)."
    if data.register_type not in REGISTER_TYPES:
        errors["register_type"] = "El tipo debe ser TOTEM, HUMANA, OFICINA o VIRTUAL."
    if data.operational_status not in OPERATIONAL_STATUSES:
        errors["operational_status"] = "Estado operativo inválido."
    methods = list(dict.fromkeys(data.payment_methods))
    if not methods or any(m not in PAYMENT_METHODS for m in methods):
        errors["payment_methods"] = "Elija al menos un medio de pago válido (efectivo, tarjeta)."
    if "card" in methods and not data.primary_provider:
        errors["primary_provider"] = "Para aceptar tarjeta elija un proveedor principal."
    # A provider the register already has whose plugin this server did not load stays, with its settings, when
    # the register is saved for something else; a new one must be loaded to be chosen.
    stored = {existing.primary_provider, existing.backup_provider} - {None} if existing else set()
    for field, pid in (("primary_provider", data.primary_provider), ("backup_provider", data.backup_provider)):
        if pid and pid not in registry and pid not in stored:
            errors[field] = f"Proveedor desconocido o no cargado en este servidor: {pid}."
    if data.backup_provider and data.backup_provider == data.primary_provider:
        errors["backup_provider"] = "El respaldo debe ser distinto del proveedor principal."
    if data.register_type == "VIRTUAL" and data.backup_provider:
        errors["backup_provider"] = "Una caja VIRTUAL no tiene proveedor de respaldo."
    if data.register_type == "VIRTUAL" and "cash" in methods:
        errors["payment_methods"] = "Una caja VIRTUAL no recibe efectivo."
    if data.allowed_categories:
        found = set(
            await s.scalars(
                select(Category.id).where(Category.venue_id == venue_id, Category.id.in_(data.allowed_categories))
            )
        )
        if found != set(data.allowed_categories):
            errors["allowed_categories"] = "Hay categorías que no existen en este local."
    if (
        not errors
        and code != (existing.code if existing else None)
        and await s.scalar(select(CashRegister.id).where(CashRegister.venue_id == venue_id, CashRegister.code == code))
    ):
        errors["code"] = f"Ya existe una caja con el código {code}."
    policy = data.policy or default_policy(data.register_type if data.register_type in REGISTER_TYPES else "HUMANA")
    try:
        policy = msgspec.convert(msgspec.to_builtins(policy), FallbackPolicy).validate()
    except CajaError as exc:
        errors.update({f"policy.{k}": v for k, v in exc.fields.items()})
    except msgspec.ValidationError as exc:
        errors["policy"] = f"Política inválida: {exc}"
    settings: dict[str, dict[str, Any]] = {}
    old = dict(existing.provider_settings or {}) if existing else {}
    for pid in (data.primary_provider, data.backup_provider):
        if not pid:
            continue
        if pid not in registry:  # not loaded here (kept above only if the register had it): settings as stored
            settings[pid] = dict(old.get(pid) or {})
            continue
        raw = dict(data.provider_settings.get(pid) or {})
        for key, value in list(raw.items()):  # secrets are write-only: blank means "keep the current one"
            if is_secret_field(key) and (value is None or value == "") and key in old.get(pid, {}):
                raw[key] = old[pid][key]
        try:
            settings[pid] = msgspec.to_builtins(validate_settings(registry.get(pid), raw))
        except CajaError as exc:
            errors[f"settings.{pid}"] = exc.message
    if errors:
        raise ValidationFailed("Revise los datos de la caja.", code="register.invalid", fields=errors)
    data.code, data.name = code, name
    return settings, policy


async def create_register(
    s: AsyncSession, *, venue_id: int, data: RegisterInput, registry: ProviderRegistry, actor_id: int | None
) -> RegisterOut:
    settings, policy = await _validate(s, venue_id, data, registry, None)
    register = CashRegister(
        venue_id=venue_id,
        code=data.code,
        name=data.name,
        register_type=data.register_type,
        location=data.location.strip()[:120],
        active=data.active,
        operational_status=data.operational_status,
        payment_methods=list(dict.fromkeys(data.payment_methods)),
        primary_provider=data.primary_provider,
        backup_provider=data.backup_provider,
        provider_settings=settings,
        devices=dict(data.devices),
        fallback_policy=msgspec.to_builtins(policy),
        allowed_categories=data.allowed_categories or None,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    s.add(register)
    await s.flush()
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="register.created",
        entity="register",
        entity_id=register.id,
        payload={"code": register.code, "type": register.register_type, "policy": msgspec.to_builtins(policy)},
    )
    return register_out(register)


async def _get(s: AsyncSession, venue_id: int, register_id: int, *, lock: bool = False) -> CashRegister:
    if lock:
        q = select(CashRegister).where(CashRegister.id == register_id, CashRegister.venue_id == venue_id)
        register = await s.scalar(q.with_for_update())
    else:  # a register this transaction already read is not read again (a select would not refresh it either)
        register = await s.get(CashRegister, register_id)
    if register is None or register.venue_id != venue_id:
        raise NotFound("La caja no existe.", code="register.not_found")
    return register


async def update_register(
    s: AsyncSession,
    *,
    venue_id: int,
    register_id: int,
    data: RegisterInput,
    registry: ProviderRegistry,
    actor_id: int | None,
) -> RegisterOut:
    register = await _get(s, venue_id, register_id, lock=True)
    settings, policy = await _validate(s, venue_id, data, registry, register)
    before = {
        "policy": register.fallback_policy,
        "status": register.operational_status,
        "primary": register.primary_provider,
        "backup": register.backup_provider,
    }
    register.code, register.name, register.register_type = data.code, data.name, data.register_type
    register.location = data.location.strip()[:120]
    register.active, register.operational_status = data.active, data.operational_status
    register.payment_methods = list(dict.fromkeys(data.payment_methods))
    register.primary_provider, register.backup_provider = data.primary_provider, data.backup_provider
    register.provider_settings = settings
    register.devices = dict(data.devices)
    register.fallback_policy = msgspec.to_builtins(policy)
    register.allowed_categories = data.allowed_categories or None
    register.updated_at = utcnow()
    after = {
        "policy": register.fallback_policy,
        "status": register.operational_status,
        "primary": register.primary_provider,
        "backup": register.backup_provider,
    }
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="register.updated",
        entity="register",
        entity_id=register.id,
        payload={"before": before, "after": after},
    )
    if before["policy"] != after["policy"]:
        await record(
            s,
            venue_id=venue_id,
            user_id=actor_id,
            action="register.policy_changed",
            entity="register",
            entity_id=register.id,
            payload=register.fallback_policy,
        )
    # A new offline rule (methods, backup provider) starts now: the version devices kept ends at this instant.
    await offline_rules.current_rule(s, register)
    return register_out(register)


async def get_register(s: AsyncSession, venue_id: int, register_id: int) -> RegisterOut:
    return register_out(await _get(s, venue_id, register_id))


async def get_register_by_code(s: AsyncSession, venue_id: int, code: str) -> RegisterOut:
    register = await s.scalar(
        select(CashRegister).where(CashRegister.venue_id == venue_id, CashRegister.code == code.upper())
    )
    if register is None:
        raise NotFound("La caja no existe.", code="register.not_found")
    return register_out(register)


async def list_registers(s: AsyncSession, venue_id: int, *, only_active: bool = False) -> list[RegisterOut]:
    q = select(CashRegister).where(CashRegister.venue_id == venue_id)
    if only_active:
        q = q.where(CashRegister.active.is_(True))
    return [register_out(r) for r in await s.scalars(q.order_by(CashRegister.register_type, CashRegister.code))]


async def set_operational_status(
    s: AsyncSession, *, venue_id: int, register_id: int, status: str, actor_id: int | None, reason: str = ""
) -> RegisterOut:
    if status not in OPERATIONAL_STATUSES:
        raise ValidationFailed("Estado operativo inválido.", field="operational_status")
    register = await _get(s, venue_id, register_id, lock=True)
    old = register.operational_status
    register.operational_status = status
    register.updated_at = utcnow()
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="register.status_changed",
        entity="register",
        entity_id=register_id,
        payload={"from": old, "to": status, "reason": reason[:200]},
    )
    return register_out(register)


def provider_settings(register: RegisterOut, provider: Any) -> Any:
    """The provider's validated Settings instance for this register."""
    return validate_settings(provider, register.provider_settings.get(provider.id))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def rotate_agent_token(s: AsyncSession, *, venue_id: int, register_id: int, actor_id: int | None) -> str:
    """A new agent token for the register (shown once; stored hashed). The old one stops working."""
    register = await _get(s, venue_id, register_id, lock=True)
    token = f"caja_{register.id}_{secrets.token_urlsafe(32)}"
    register.agent_token_hash = _token_hash(token)
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="register.agent_token_rotated",
        entity="register",
        entity_id=register_id,
    )
    return token


async def register_for_agent_token(s: AsyncSession, token: str | None) -> RegisterOut | None:
    if not token or len(token) > 200:
        return None
    register = await s.scalar(select(CashRegister).where(CashRegister.agent_token_hash == _token_hash(token)))
    if register is None or not hmac.compare_digest(register.agent_token_hash or "", _token_hash(token)):
        return None
    return register_out(register)


async def record_agent_heartbeat(s: AsyncSession, *, register_id: int, status: dict[str, Any]) -> None:
    register = await s.get(CashRegister, register_id)
    if register is None:
        raise NotFound("La caja no existe.", code="register.not_found")
    register.agent_last_seen_at = utcnow()
    register.agent_status = status


__all__ = [
    "METHOD_LABELS",
    "OPERATIONAL_STATUSES",
    "REGISTER_TYPES",
    "REGISTER_TYPE_LABELS",
    "STATUS_LABELS",
    "Conflict",
    "RegisterInput",
    "RegisterOut",
    "create_register",
    "get_register",
    "list_registers",
    "provider_settings",
    "public_settings",
    "register_for_agent_token",
    "rotate_agent_token",
    "set_operational_status",
    "update_register",
]
