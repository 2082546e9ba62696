"""Users, roles and authentication (argon2; passwords for admin/supervisor, PINs for cashiers)."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, timedelta

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..errors import AuthFailed, Conflict, NotFound, ValidationFailed
from .models import User

ROLES = ("admin", "supervisor", "cashier")
ROLE_LABELS = {"admin": "Administrador", "supervisor": "Supervisor", "cashier": "Cajero"}
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)

# Fast enough for a POS login (≈ 20 ms), far too slow for brute force of stolen hashes at scale.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_DUMMY_HASH = _hasher.hash("dummy-password-for-timing")


class UserOut(msgspec.Struct, kw_only=True):
    id: int
    venue_id: int
    username: str
    display_name: str
    role: str
    active: bool
    locked_until: datetime | None = None
    last_login_at: datetime | None = None

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


def user_out(u: User) -> UserOut:
    return UserOut(
        id=u.id,
        venue_id=u.venue_id,
        username=u.username,
        display_name=u.display_name,
        role=u.role,
        active=u.active,
        locked_until=u.locked_until,
        last_login_at=u.last_login_at,
    )


def _check_secret(role: str, secret: str) -> None:
    if role == "cashier":
        if not re.fullmatch(r"\d{4,6}", secret or ""):
            raise ValidationFailed("El PIN del cajero debe tener entre 4 y 6 dígitos.", field="secret")
    elif len(secret or "") < 8:
        raise ValidationFailed("La contraseña debe tener al menos 8 caracteres.", field="secret")
    elif len(secret) > 200:
        raise ValidationFailed("La contraseña es demasiado larga.", field="secret")


def _check_fields(username: str, display_name: str, role: str) -> None:
    errors = {}
    if not re.fullmatch(r"[a-zA-Z0-9._-]{2,60}", username or ""):
        errors["username"] = "El usuario debe tener 2 a 60 letras, números, puntos, guiones o guiones bajos."
    if not display_name or not display_name.strip() or len(display_name) > 120:
        errors["display_name"] = "El nombre es obligatorio (máximo 120 caracteres)."
    if role not in ROLES:
        errors["role"] = "El rol debe ser administrador, supervisor o cajero."
    if errors:
        raise ValidationFailed("Revise los datos del usuario.", code="user.invalid", fields=errors)


async def create_user(
    s: AsyncSession,
    *,
    venue_id: int,
    username: str,
    display_name: str,
    role: str,
    secret: str,
    actor_id: int | None = None,
) -> UserOut:
    username = (username or "").strip().lower()
    _check_fields(username, display_name, role)
    _check_secret(role, secret)
    if await s.scalar(select(User.id).where(User.venue_id == venue_id, User.username == username)):
        raise Conflict(f"El usuario {username!r} ya existe.", code="user.exists", field="username")
    user = User(
        venue_id=venue_id,
        username=username,
        display_name=display_name.strip(),
        role=role,
        secret_hash=_hasher.hash(secret),
        active=True,
        failed_logins=0,
        created_at=utcnow(),
    )
    s.add(user)
    try:
        await s.flush()
    except IntegrityError as exc:
        raise Conflict(f"El usuario {username!r} ya existe.", code="user.exists", field="username") from exc
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="user.created",
        entity="user",
        entity_id=user.id,
        payload={"username": username, "role": role},
    )
    return user_out(user)


async def _verify(s: AsyncSession, user: User | None, secret: str, *, venue_id: int, who: str) -> UserOut:
    now = utcnow()
    if user is None or not user.active:
        with contextlib.suppress(VerificationError):  # same work as a real check: timing hides which users exist
            _hasher.verify(_DUMMY_HASH, secret or "x")
        await record(s, venue_id=venue_id, user_id=None, action="auth.login_failed", payload={"who": who})
        raise AuthFailed("Usuario o clave incorrectos.", code="auth.invalid")
    if user.locked_until and user.locked_until > now:
        await record(s, venue_id=venue_id, user_id=user.id, action="auth.login_locked")
        minutes = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
        raise AuthFailed(
            f"Cuenta bloqueada por intentos fallidos. Intente de nuevo en {minutes} min "
            "o pida a un administrador que la desbloquee.",
            code="auth.locked",
        )
    try:
        _hasher.verify(user.secret_hash, secret or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        user.failed_logins += 1
        locked = user.failed_logins >= MAX_FAILED_LOGINS
        if locked:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        await record(
            s, venue_id=venue_id, user_id=user.id, action="auth.login_failed", payload={"who": who, "locked": locked}
        )
        raise AuthFailed(
            "Cuenta bloqueada por intentos fallidos. Intente de nuevo en 15 min."
            if locked
            else "Usuario o clave incorrectos.",
            code="auth.locked" if locked else "auth.invalid",
        ) from None
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    if _hasher.check_needs_rehash(user.secret_hash):
        user.secret_hash = _hasher.hash(secret)
    await record(s, venue_id=venue_id, user_id=user.id, action="auth.login", payload={"who": who})
    return user_out(user)


async def authenticate_password(s: AsyncSession, *, venue_id: int, username: str, password: str) -> UserOut:
    username = (username or "").strip().lower()[:60]
    user = await s.scalar(select(User).where(User.venue_id == venue_id, User.username == username))
    if user is not None and user.role == "cashier":
        user = None  # cashiers log in with their PIN at the POS
    return await _verify(s, user, password, venue_id=venue_id, who=username)


async def authenticate_pin(s: AsyncSession, *, venue_id: int, user_id: int, pin: str) -> UserOut:
    user = await s.get(User, user_id)
    if user is not None and (user.venue_id != venue_id or user.role != "cashier"):
        user = None
    return await _verify(s, user, pin, venue_id=venue_id, who=f"id:{user_id}")


async def get_user(s: AsyncSession, venue_id: int, user_id: int) -> UserOut:
    user = await s.get(User, user_id)
    if user is None or user.venue_id != venue_id:
        raise NotFound("El usuario no existe.", code="user.not_found")
    return user_out(user)


async def list_users(s: AsyncSession, venue_id: int) -> list[UserOut]:
    rows = await s.scalars(select(User).where(User.venue_id == venue_id).order_by(User.role, User.display_name))
    return [user_out(u) for u in rows]


async def list_cashiers(s: AsyncSession, venue_id: int) -> list[UserOut]:
    rows = await s.scalars(
        select(User)
        .where(User.venue_id == venue_id, User.role == "cashier", User.active.is_(True))
        .order_by(User.display_name)
    )
    return [user_out(u) for u in rows]


async def update_user(
    s: AsyncSession,
    venue_id: int,
    user_id: int,
    *,
    actor_id: int | None,
    display_name: str | None = None,
    role: str | None = None,
    active: bool | None = None,
    secret: str | None = None,
    unlock: bool = False,
) -> UserOut:
    user = await s.get(User, user_id)
    if user is None or user.venue_id != venue_id:
        raise NotFound("El usuario no existe.", code="user.not_found")
    new_role = role or user.role
    _check_fields(user.username, display_name if display_name is not None else user.display_name, new_role)
    changes: dict[str, object] = {}
    if display_name is not None and display_name.strip() != user.display_name:
        user.display_name = display_name.strip()
        changes["display_name"] = user.display_name
    if role is not None and role != user.role:
        if not secret:
            raise ValidationFailed("Al cambiar el rol debe definir una nueva clave o PIN.", field="secret")
        changes["role"] = role
        user.role = role
    if secret:
        _check_secret(new_role, secret)
        user.secret_hash = _hasher.hash(secret)
        changes["secret"] = "cambiada"
    if active is not None and active != user.active:
        if not active and actor_id == user.id:
            raise Conflict("No puede desactivar su propio usuario.", code="user.self_deactivate")
        user.active = active
        changes["active"] = active
    if unlock:
        user.locked_until = None
        user.failed_logins = 0
        changes["unlocked"] = True
    if changes:
        await record(
            s,
            venue_id=venue_id,
            user_id=actor_id,
            action="user.updated",
            entity="user",
            entity_id=user.id,
            payload=changes,
        )
    return user_out(user)
