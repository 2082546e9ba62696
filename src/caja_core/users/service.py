"""Users, roles and authentication (argon2; passwords for admin/supervisor, PINs for cashiers, and a PIN or
badge code for a supervisor's quick authorization at the register).

Logins take the ``Database``, not a session: a refused login writes its failure count and audit event in a
transaction of its own, committed before the error is raised, so no caller can roll it back.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..db.lookup import get_in_venue
from ..errors import AuthFailed, Conflict, RateLimited, ValidationFailed
from ..permissions import controls_from
from ..venues.models import Venue
from . import throttle
from .models import User
from .secrets import check_badge, check_password, check_pin

ROLES = ("admin", "supervisor", "cashier")
ROLE_LABELS = {"admin": "Administrador", "supervisor": "Supervisor", "cashier": "Cajero"}
STAFF = ("supervisor", "admin")

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
    credentials_version: int = 1
    has_authorization_pin: bool = False
    has_badge: bool = False
    locked_until: datetime | None = None
    last_login_at: datetime | None = None

    @property
    def role_label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)

    @property
    def locked(self) -> bool:
        return self.locked_until is not None and self.locked_until > utcnow()


class SessionUser(msgspec.Struct, kw_only=True):
    """What every authenticated request checks: is the user still who the web session says."""

    id: int
    venue_id: int
    role: str
    active: bool
    credentials_version: int


def user_out(u: User) -> UserOut:
    return UserOut(
        id=u.id,
        venue_id=u.venue_id,
        username=u.username,
        display_name=u.display_name,
        role=u.role,
        active=u.active,
        credentials_version=u.credentials_version or 1,
        has_authorization_pin=u.authorization_pin_hash is not None,
        has_badge=u.badge_hash is not None,
        locked_until=u.locked_until,
        last_login_at=u.last_login_at,
    )


def _verify(hashed: str | None, secret: str) -> bool:
    if not hashed:
        return False
    try:
        return _hasher.verify(hashed, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _dummy_verify(secret: str) -> None:
    """Same work as a real check, so timing does not tell which usernames exist."""
    _verify(_DUMMY_HASH, secret or "x")


async def pin_length(s: AsyncSession, venue_id: int) -> int:
    venue = await s.get(Venue, venue_id)
    return controls_from(venue.controls if venue else None).pin_length


# ---- secrets: rules, uniqueness ------------------------------------------------------------------------------


async def _check_secret(s: AsyncSession, venue_id: int, role: str, secret: str, username: str) -> None:
    if role == "cashier":
        check_pin(secret, length=await pin_length(s, venue_id))
    else:
        check_password(secret, username=username)


async def _pin_in_use(s: AsyncSession, venue_id: int, pin: str, *, except_user: int | None) -> bool:
    """Whether any other person of the venue has ``pin`` as login PIN or authorization PIN. PINs must be
    unique: a supervisor is found by their PIN alone, and nobody may hold someone else's PIN."""
    rows = await s.execute(
        select(User.id, User.role, User.secret_hash, User.authorization_pin_hash).where(
            User.venue_id == venue_id,
            or_(User.role == "cashier", User.authorization_pin_hash.is_not(None)),
        )
    )
    for user_id, role, secret_hash, auth_hash in rows:
        if user_id == except_user:
            continue
        if (role == "cashier" and _verify(secret_hash, pin)) or _verify(auth_hash, pin):
            return True
    return False


async def _badge_in_use(s: AsyncSession, venue_id: int, badge: str, *, except_user: int | None) -> bool:
    rows = await s.execute(
        select(User.id, User.badge_hash).where(User.venue_id == venue_id, User.badge_hash.is_not(None))
    )
    return any(user_id != except_user and _verify(h, badge) for user_id, h in rows)


async def _unique_pin(s: AsyncSession, venue_id: int, pin: str, user_id: int | None, field: str) -> None:
    if await _pin_in_use(s, venue_id, pin, except_user=user_id):
        raise Conflict("Ese PIN ya lo usa otra persona del local. Elija otro.", code="user.pin_taken", field=field)


def _check_fields(username: str, display_name: str, role: str) -> None:
    errors = {}
    if not re.fullmatch(r"[a-zA-Z0-9._-]{2,60}", username or ""):
        errors["username"] = "El usuario debe tener 2 a 60 letras, números, puntos, guiones o guiones bajos."
    if (
        not display_name
        or not display_name.strip()
        or len(display_name) > 120
        or any(ord(ch) < 32 for ch in display_name)
    ):
        errors["display_name"] = "El nombre es obligatorio (máximo 120 caracteres)."
    if role not in ROLES:
        errors["role"] = "El rol debe ser administrador, supervisor o cajero."
    if errors:
        raise ValidationFailed("Revise los datos del usuario.", code="user.invalid", fields=errors)


async def _set_authorization(
    s: AsyncSession, user: User, *, venue_id: int, pin: str | None, badge: str | None, changes: dict
) -> None:
    """A supervisor's or admin's quick authorization: a PIN and/or a badge code, unique in the venue."""
    if (pin or badge) and user.role not in STAFF:
        raise ValidationFailed(
            "Solo supervisores y administradores tienen PIN o tarjeta de autorización.", field="authorization_pin"
        )
    if pin:
        pin = check_pin(pin, length=await pin_length(s, venue_id), field="authorization_pin")
        await _unique_pin(s, venue_id, pin, user.id, "authorization_pin")
        user.authorization_pin_hash = _hasher.hash(pin)
        changes["authorization_pin"] = "cambiado"
    if badge:
        badge = check_badge(badge)
        if await _badge_in_use(s, venue_id, badge, except_user=user.id):
            raise Conflict("Esa tarjeta ya está asignada a otra persona.", code="user.badge_taken", field="badge")
        user.badge_hash = _hasher.hash(badge)
        changes["badge"] = "cambiada"


# ---- management -----------------------------------------------------------------------------------------------


async def create_user(
    s: AsyncSession,
    *,
    venue_id: int,
    username: str,
    display_name: str,
    role: str,
    secret: str,
    actor_id: int | None = None,
    authorization_pin: str | None = None,
    badge: str | None = None,
) -> UserOut:
    username = (username or "").strip().lower()
    _check_fields(username, display_name, role)
    await _check_secret(s, venue_id, role, secret, username)
    if await s.scalar(select(User.id).where(User.venue_id == venue_id, User.username == username)):
        raise Conflict(f"El usuario {username!r} ya existe.", code="user.exists", field="username")
    if role == "cashier":
        await _unique_pin(s, venue_id, secret.strip(), None, "secret")
    user = User(
        venue_id=venue_id,
        username=username,
        display_name=display_name.strip(),
        role=role,
        secret_hash=_hasher.hash(secret.strip() if role == "cashier" else secret),
        active=True,
        failed_logins=0,
        credentials_version=1,
        created_at=utcnow(),
    )
    await _set_authorization(s, user, venue_id=venue_id, pin=authorization_pin, badge=badge, changes={})
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


async def users_with_known_secrets(s: AsyncSession, known: dict[str, list[str]]) -> list[UserOut]:
    """Active users (any venue) who still log in or authorize with one of the secrets ``known`` lists for
    their username: published secrets such as the demo's."""
    rows = (await s.scalars(select(User).where(User.active.is_(True), User.username.in_(list(known))))).all()
    return [
        user_out(u)
        for u in rows
        if any(
            _verify(u.secret_hash, secret) or _verify(u.authorization_pin_hash, secret) for secret in known[u.username]
        )
    ]


async def get_user(s: AsyncSession, venue_id: int, user_id: int) -> UserOut:
    user = await get_in_venue(s, User, user_id, venue_id, "El usuario no existe.", "user.not_found")
    return user_out(user)


async def user_names(s: AsyncSession, venue_id: int) -> dict[int, str]:
    rows = await s.execute(select(User.id, User.display_name).where(User.venue_id == venue_id))
    return dict(rows.all())


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
    authorization_pin: str | None = None,
    badge: str | None = None,
    remove_authorization: bool = False,
) -> UserOut:
    """Change a user. A new role, a deactivation or a new password/PIN end the user's open web sessions."""
    user = await get_in_venue(s, User, user_id, venue_id, "El usuario no existe.", "user.not_found")
    new_role = role or user.role
    _check_fields(user.username, display_name if display_name is not None else user.display_name, new_role)
    changes: dict[str, object] = {}
    if display_name is not None and display_name.strip() != user.display_name:
        user.display_name = display_name.strip()
        changes["display_name"] = user.display_name
    if role is not None and role != user.role:
        if not secret:
            raise ValidationFailed("Al cambiar el rol debe definir una nueva clave o PIN.", field="secret")
        if actor_id == user.id:
            raise Conflict("No puede cambiar su propio rol.", code="user.self_role")
        changes["role"] = role
        user.role = role
        if role not in STAFF:
            user.authorization_pin_hash = user.badge_hash = None
    if secret:
        await _check_secret(s, venue_id, new_role, secret, user.username)
        if new_role == "cashier":
            secret = secret.strip()
            await _unique_pin(s, venue_id, secret, user.id, "secret")
        user.secret_hash = _hasher.hash(secret)
        changes["secret"] = "cambiada"
    if active is not None and active != user.active:
        if not active and actor_id == user.id:
            raise Conflict("No puede desactivar su propio usuario.", code="user.self_deactivate")
        user.active = active
        changes["active"] = active
    if remove_authorization and (user.authorization_pin_hash or user.badge_hash):
        user.authorization_pin_hash = user.badge_hash = None
        changes["authorization"] = "quitada"
    await _set_authorization(s, user, venue_id=venue_id, pin=authorization_pin, badge=badge, changes=changes)
    if unlock:
        user.locked_until = None
        user.failed_logins = 0
        await throttle.lift(s, user_id=user.id)
        changes["unlocked"] = True
    if changes.keys() & {"role", "secret", "active"}:
        user.credentials_version = (user.credentials_version or 1) + 1
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


async def logout_everywhere(s: AsyncSession, venue_id: int, user_id: int, *, actor_id: int | None) -> UserOut:
    """End every web session of the user, on every device (their next request goes to the login)."""
    user = await get_in_venue(s, User, user_id, venue_id, "El usuario no existe.", "user.not_found")
    user.credentials_version = (user.credentials_version or 1) + 1
    await record(
        s, venue_id=venue_id, user_id=actor_id, action="user.logged_out_everywhere", entity="user", entity_id=user_id
    )
    return user_out(user)


async def session_user(s: AsyncSession | AsyncConnection, user_id: int) -> SessionUser | None:
    """The one indexed read each authenticated request makes (primary key)."""
    row = (
        await s.execute(
            select(User.id, User.venue_id, User.role, User.active, User.credentials_version).where(User.id == user_id)
        )
    ).first()
    if row is None:
        return None
    return SessionUser(
        id=row.id, venue_id=row.venue_id, role=row.role, active=row.active, credentials_version=row.credentials_version
    )


# ---- logins ---------------------------------------------------------------------------------------------------


class _Candidate(msgspec.Struct):
    user_id: int | None
    secret_hash: str | None
    locked_until: datetime | None


def _person(venue_id: int, user_id: int | None, who: str) -> str:
    return str(user_id) if user_id is not None else f"{venue_id}?{who}"


def _wait_message(until: datetime) -> str:
    minutes = max(1, int((until - utcnow()).total_seconds() + 59) // 60)
    return f"Demasiados intentos fallidos. Espere {minutes} min e intente de nuevo."


async def _login(
    db,
    *,
    venue_id: int,
    who: str,
    address: str,
    secret: str,
    load: Callable[[AsyncSession], Awaitable[User | None]],
    account_limit: throttle.Limit,
) -> UserOut:
    """Check blocks, verify the secret outside any transaction, then write the outcome: success in one
    transaction; failure (counters, lock, audit) in its own transaction, committed, then the error."""
    async with db.session() as s:
        user = await load(s)
        candidate = _Candidate(
            user.id if user else None, user.secret_hash if user else None, user.locked_until if user else None
        )
        keys = [throttle.person_address_key(_person(venue_id, candidate.user_id, who), address)]
        keys.append(throttle.address_key(address))
        until = await throttle.blocked_until(s, keys)
    if until is not None:
        raise RateLimited(_wait_message(until))
    now = utcnow()
    if candidate.locked_until and candidate.locked_until > now:
        minutes = max(1, int((candidate.locked_until - now).total_seconds() // 60) + 1)
        raise AuthFailed(
            f"Cuenta bloqueada por intentos fallidos. Intente de nuevo en {minutes} min "
            "o pida a un administrador que la desbloquee.",
            code="auth.locked",
        )
    if candidate.user_id is None:
        _dummy_verify(secret)
        ok = False
    else:
        ok = _verify(candidate.secret_hash, secret or "")
    if ok:
        async with db.session() as s:
            user = await s.get(User, candidate.user_id)
            if user is not None and user.active and user.secret_hash == candidate.secret_hash:
                user.failed_logins = 0
                user.locked_until = None
                user.last_login_at = utcnow()
                if _hasher.check_needs_rehash(user.secret_hash):
                    user.secret_hash = _hasher.hash(secret)
                await throttle.clear(s, [keys[0], throttle.account_key(user.id)])
                await record(
                    s,
                    venue_id=venue_id,
                    user_id=user.id,
                    action="auth.login",
                    payload={"who": who, "address": address[:64]},
                )
                return user_out(user)
    locked = None
    async with db.session() as s:
        blocked = await throttle.record_failure(s, keys[0], throttle.PERSON_ADDRESS)
        blocked = await throttle.record_failure(s, keys[1], throttle.ADDRESS) or blocked
        if candidate.user_id is not None:
            locked = await throttle.record_failure(s, throttle.account_key(candidate.user_id), account_limit)
            values: dict = {User.failed_logins: User.failed_logins + 1}
            if locked is not None:
                values = {User.failed_logins: 0, User.locked_until: locked}
            await s.execute(
                update(User)
                .where(User.id == candidate.user_id)
                .values(values)
                .execution_options(synchronize_session=False)
            )
        await record(
            s,
            venue_id=venue_id,
            user_id=candidate.user_id,
            action="auth.login_failed",
            payload={"who": who[:60], "address": address[:64], "locked": locked is not None},
        )
        if locked is not None:
            await record(
                s,
                venue_id=venue_id,
                user_id=candidate.user_id,
                action="auth.account_locked",
                entity="user",
                entity_id=candidate.user_id,
                payload={"until": locked.isoformat()},
            )
    if locked is not None:
        raise AuthFailed(
            "Cuenta bloqueada por intentos fallidos. Un administrador puede desbloquearla.", code="auth.locked"
        )
    if blocked is not None:
        raise RateLimited(_wait_message(blocked))
    raise AuthFailed("Usuario o clave incorrectos.", code="auth.invalid")


async def authenticate_password(db, *, venue_id: int, username: str, password: str, address: str = "") -> UserOut:
    """Staff login (admin, supervisor) by username and password."""
    username = (username or "").strip().lower()[:60]

    async def load(s: AsyncSession) -> User | None:
        user = await s.scalar(select(User).where(User.venue_id == venue_id, User.username == username))
        return user if user is not None and user.active and user.role in STAFF else None

    return await _login(
        db,
        venue_id=venue_id,
        who=username,
        address=address,
        secret=(password or "")[:1000],
        load=load,
        account_limit=throttle.PASSWORD_ACCOUNT,
    )


async def authenticate_pin(db, *, venue_id: int, user_id: int, pin: str, address: str = "") -> UserOut:
    """Cashier login at the POS: choose the name, type the PIN."""

    async def load(s: AsyncSession) -> User | None:
        user = await s.get(User, user_id)
        ok = user is not None and user.venue_id == venue_id and user.role == "cashier" and user.active
        return user if ok else None

    return await _login(
        db,
        venue_id=venue_id,
        who=f"id:{user_id}",
        address=address,
        secret=(pin or "")[:100],
        load=load,
        account_limit=throttle.PIN_ACCOUNT,
    )


async def find_authorizer(s: AsyncSession, venue_id: int, code: str, roles: tuple[str, ...]) -> tuple[User, str] | None:
    """The active person of ``roles`` whose authorization PIN or badge code is ``code`` (and which it was)."""
    code = (code or "").strip()[:100]
    if not code:
        return None
    rows = await s.scalars(
        select(User).where(
            User.venue_id == venue_id,
            User.active.is_(True),
            User.role.in_(roles),
            or_(User.authorization_pin_hash.is_not(None), User.badge_hash.is_not(None)),
        )
    )
    digits = code.isascii() and code.isdigit()
    found = None
    for user in rows:
        if digits and _verify(user.authorization_pin_hash, code):
            found = found or (user, "pin")
        elif _verify(user.badge_hash, code):
            found = found or (user, "badge")
    if found is None:
        _dummy_verify(code)
    return found
