"""Enforcing the permission table: the venue's thresholds, a supervisor's authorization at the register, and
the check every money service makes before it acts (``require``).

A supervisor authorizes with their PIN or badge code, typed on the cashier's screen (``authorize``). The code
is throttled like a login (per requesting person and address, per address), a wrong one is recorded in its
own committed transaction, and a right one becomes an ``authorizations`` row: one action, one requester, one
session or sale (and amount), usable once within a few minutes. Its audit event names both people. The
service that performs the action consumes it (``require``), so an authorization can never be replayed, moved
to another sale or raised to another amount.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..audit.service import record
from ..clock import utcnow
from ..db.engine import Database, rowcount
from ..errors import AuthFailed, Conflict, Forbidden, NotFound, RateLimited, ValidationFailed
from ..sales.models import Sale
from ..sessions.models import CashSession
from ..users import throttle
from ..users.models import User
from ..users.service import find_authorizer
from ..venues.models import Venue
from . import ACTION_LABELS, HOLDER_ACTIONS, ROLES, Action, Rule, VenueControls, controls_from, decide
from .models import Authorization


class SupervisorRequired(Forbidden):
    """The action needs a supervisor's authorization and none (or no valid one) came with it."""

    code = "auth.supervisor_required"


class Decision(msgspec.Struct, kw_only=True):
    actor_id: int
    actor_role: str
    authorized_by: int | None = None  # the supervisor whose authorization was used
    authorization_id: int | None = None


class AuthorizationOut(msgspec.Struct, kw_only=True):
    id: int
    action: str
    action_label: str
    requested_by: int
    authorized_by: int
    method: str
    session_id: int | None
    sale_id: int | None
    amount: int | None
    created_at: datetime
    used_at: datetime | None


# ---- venue thresholds -----------------------------------------------------------------------------------------


async def get_controls(s: AsyncSession, venue_id: int) -> VenueControls:
    venue = await s.get(Venue, venue_id)
    if venue is None:
        raise NotFound("El local no existe.", code="venue.not_found")
    return controls_from(venue.controls)


async def set_controls(s: AsyncSession, venue_id: int, *, actor_id: int | None, **values: object) -> VenueControls:
    venue = await s.get(Venue, venue_id)
    if venue is None:
        raise NotFound("El local no existe.", code="venue.not_found")
    merged = msgspec.to_builtins(controls_from(venue.controls)) | values
    try:
        controls = msgspec.convert(merged, VenueControls)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValidationFailed(
            "Revise los límites: retiro máximo y descuento máximo sin autorización entre $0 y $50.000.000, "
            "propina sugerida de 0 a 100 %, PIN de 6 a 8 dígitos, "
            "autorización válida de 1 a 60 minutos.",
            code="controls.invalid",
        ) from exc
    before = msgspec.to_builtins(controls_from(venue.controls))
    venue.controls = msgspec.to_builtins(controls)
    # The audit says what changed, from what to what ("changed": {"discount_limit": [5000, 8000]}), and the
    # values now in force.
    changed = {k: [before.get(k), v] for k, v in venue.controls.items() if before.get(k) != v}
    await record(
        s,
        venue_id=venue_id,
        user_id=actor_id,
        action="controls.updated",
        payload={**venue.controls, "changed": changed},
    )
    return controls


def table_rows(controls: VenueControls) -> list[dict[str, Any]]:
    """The permission table for people (documentation pages, admin view)."""
    from . import RULE_LABELS, TABLE

    return [
        {
            "action": action.value,
            "label": ACTION_LABELS[action],
            "rules": {role: RULE_LABELS[TABLE[action][n]] for n, role in enumerate(ROLES)},
        }
        for action in Action
    ]


# ---- scope of an action ---------------------------------------------------------------------------------------


async def _actor(s: AsyncSession, venue_id: int, user_id: int) -> User:
    user = await s.get(User, user_id)
    if user is None or user.venue_id != venue_id or not user.active:
        raise Forbidden("Su usuario no está activo en este local.", code="auth.inactive")
    return user


async def _scope(
    s: AsyncSession, venue_id: int, action: Action, actor_id: int, session_id: int | None, sale_id: int | None
) -> tuple[CashSession | None, Sale | None]:
    """The session and sale the action is about, in this venue; for drawer actions, held by the actor."""
    sale = None
    if sale_id is not None:
        sale = await s.get(Sale, sale_id)
        if sale is None or sale.venue_id != venue_id:
            raise NotFound("La venta no existe.", code="sale.not_found")
        if session_id is not None and sale.session_id != session_id:
            raise NotFound("La venta no es de esta sesión.", code="sale.not_found")
        session_id = sale.session_id
    session = None
    if session_id is not None:
        session = await s.get(CashSession, session_id)
        if session is None or session.venue_id != venue_id:
            raise NotFound("La sesión de caja no existe.", code="session.not_found")
        if action in HOLDER_ACTIONS:
            require_holder(session, actor_id)
    return session, sale


def require_holder(session: CashSession, user_id: int) -> None:
    """Only the person holding the drawer acts in its session."""
    if session.cashier_id != user_id:
        raise Forbidden(
            "Esta caja la tiene otro cajero. Para usarla, haga un relevo de caja con conteo.",
            code="session.not_holder",
        )


def _separate(action: Action, session: CashSession | None, approver_id: int) -> None:
    """Segregation of duties: nobody approves the difference of a drawer they hold."""
    if action is Action.APPROVE_DIFFERENCE and session is not None and session.cashier_id == approver_id:
        raise Forbidden(
            "Nadie aprueba la diferencia de una caja que tiene a su cargo: debe aprobarla otro supervisor.",
            code="session.own_difference",
        )


# ---- authorization at the register ----------------------------------------------------------------------------


def _person_key(venue_id: int, actor_id: int, address: str) -> str:
    return throttle.person_address_key(f"authz{venue_id}:{actor_id}", address)


@dataclasses.dataclass(frozen=True)
class Verified:
    """A supervisor's code checked for an act: who authorizes what, not yet written."""

    venue_id: int
    action: Action
    actor_id: int
    supervisor_id: int
    method: str
    jornada_id: int | None
    session_id: int | None
    sale_id: int | None
    amount: int | None
    throttle_key: str


async def verify_authorizer(
    db: Database,
    *,
    venue_id: int,
    action: Action | str,
    actor_id: int,
    code: str,
    session_id: int | None = None,
    sale_id: int | None = None,
    amount: int | None = None,
    address: str = "",
) -> Verified:
    """Check the PIN or badge code a supervisor typed to authorize ``actor_id``'s ``action`` (on this
    session/sale, for this amount). A wrong code is counted (and audited) in a transaction of its own, so it
    counts even when the request then fails; a right one is only returned: :func:`grant` writes it with the act."""
    action = Action(action)
    keys = [_person_key(venue_id, actor_id, address), throttle.address_key(address)]
    async with db.reader() as s:
        await _actor(s, venue_id, actor_id)
        session, _ = await _scope(s, venue_id, action, actor_id, session_id, sale_id)
        until = await throttle.blocked_until(s, keys)
        if until is not None:
            minutes = max(1, int((until - utcnow()).total_seconds() + 59) // 60)
            raise RateLimited(f"Demasiados códigos de supervisor incorrectos. Espere {minutes} min.")
        if not (code or "").strip():
            raise ValidationFailed("Falta el PIN o la tarjeta del supervisor.", field="supervisor_code")
        roles = tuple(r for r in ROLES if decide(r, action, amount=0) is Rule.ALLOW and r != "cashier")
        found = await find_authorizer(s, venue_id, code, roles)
        if found is not None and found[0].id != actor_id:
            supervisor, method = found
            return Verified(
                venue_id=venue_id,
                action=action,
                actor_id=actor_id,
                supervisor_id=supervisor.id,
                method=method,
                jornada_id=session.jornada_id if session else None,
                session_id=session.id if session else session_id,
                sale_id=sale_id,
                amount=amount,
                throttle_key=keys[0],
            )
    async with db.session() as s:
        blocked = await throttle.record_failure(s, keys[0], throttle.PERSON_ADDRESS)
        blocked = await throttle.record_failure(s, keys[1], throttle.ADDRESS) or blocked
        await record(
            s,
            venue_id=venue_id,
            user_id=actor_id,
            action="authorization.failed",
            payload={"action": action.value, "session_id": session_id, "sale_id": sale_id, "address": address[:64]},
        )
    if blocked is not None:
        raise RateLimited("Demasiados códigos de supervisor incorrectos. Espere unos minutos.")
    raise AuthFailed("PIN o tarjeta de supervisor incorrecto.", code="auth.supervisor_invalid", field="supervisor_code")


async def grant(s: AsyncSession, verified: Verified) -> int:
    """Write a checked authorization and its audit row in ``s``, the transaction of the act it is for (an act
    then refused leaves no authorization granted for nothing); the person's count of wrong codes starts again.
    Returns the authorization's id, for the service that performs the act."""
    v = verified
    row = Authorization(
        venue_id=v.venue_id,
        action=v.action.value,
        requested_by=v.actor_id,
        authorized_by=v.supervisor_id,
        method=v.method,
        jornada_id=v.jornada_id,
        session_id=v.session_id,
        sale_id=v.sale_id,
        amount=v.amount,
        created_at=utcnow(),
    )
    s.add(row)
    await s.flush()
    await throttle.clear(s, [v.throttle_key])
    await record(
        s,
        venue_id=v.venue_id,
        user_id=v.supervisor_id,
        action="authorization.granted",
        entity="authorization",
        entity_id=row.id,
        payload={
            "action": v.action.value,
            "requested_by": v.actor_id,
            "authorized_by": v.supervisor_id,
            "method": v.method,
            "session_id": v.session_id,
            "sale_id": v.sale_id,
            "amount": v.amount,
        },
    )
    return row.id


async def authorize(
    db: Database,
    *,
    venue_id: int,
    action: Action | str,
    actor_id: int,
    code: str,
    session_id: int | None = None,
    sale_id: int | None = None,
    amount: int | None = None,
    address: str = "",
) -> int:
    """:func:`verify_authorizer` then :func:`grant` in a transaction of its own (for a caller with no
    transaction of the act to write it in)."""
    verified = await verify_authorizer(
        db,
        venue_id=venue_id,
        action=action,
        actor_id=actor_id,
        code=code,
        session_id=session_id,
        sale_id=sale_id,
        amount=amount,
        address=address,
    )
    async with db.session() as s:
        return await grant(s, verified)


# ---- the check every money service makes ---------------------------------------------------------------------


async def require(
    s: AsyncSession,
    *,
    venue_id: int,
    action: Action,
    actor_id: int,
    session_id: int | None = None,
    sale_id: int | None = None,
    amount: int | None = None,
    authorization_id: int | None = None,
    threshold_amount: int | None = None,
) -> Decision:
    """Whether ``actor_id`` may do ``action`` now: their role's rule in the table, the drawer's holder, and —
    when the rule asks for it — a supervisor's unused authorization for exactly this, which is consumed.
    ``threshold_amount`` is what the venue's threshold is compared with when it adds up more than this act
    (a cash-out: all of the person's unauthorized cash-outs in the session); an authorization still covers
    ``amount``."""
    actor = await _actor(s, venue_id, actor_id)
    session, _ = await _scope(s, venue_id, action, actor_id, session_id, sale_id)
    controls = await get_controls(s, venue_id)
    measured = amount if threshold_amount is None else threshold_amount
    rule = decide(actor.role, action, amount=measured, controls=controls)
    if rule is Rule.DENY:
        raise Forbidden(f"Su rol no permite: {ACTION_LABELS[action].lower()}.", code="auth.denied")
    if authorization_id is None:
        if rule is Rule.ALLOW:
            _separate(action, session, actor_id)
            return Decision(actor_id=actor_id, actor_role=actor.role)
        raise SupervisorRequired(
            f"{ACTION_LABELS[action]} requiere la autorización de un supervisor (PIN o tarjeta).",
            field="supervisor_code",
        )
    grant = await s.scalar(
        select(Authorization).where(Authorization.id == authorization_id, Authorization.venue_id == venue_id)
    )
    fresh_after = utcnow() - timedelta(minutes=controls.authorization_minutes)
    if (
        grant is None
        or grant.action != action.value
        or grant.requested_by != actor_id
        or grant.used_at is not None
        or grant.created_at < fresh_after
        or (sale_id is not None and grant.sale_id not in (None, sale_id))
        or (session_id is not None and grant.session_id not in (None, session_id))
        or (amount is not None and grant.amount is not None and amount > grant.amount)
    ):
        raise SupervisorRequired(
            "La autorización del supervisor no sirve para esta acción (ya se usó, venció o era para otra). "
            "Pídala de nuevo.",
            field="supervisor_code",
        )
    supervisor = await s.get(User, grant.authorized_by)
    if (
        supervisor is None
        or not supervisor.active
        or decide(supervisor.role, action, controls=controls) is not Rule.ALLOW
    ):
        raise SupervisorRequired("Quien autorizó ya no puede hacerlo. Pida otra autorización.", field="supervisor_code")
    stamp = utcnow()
    claimed = await s.execute(
        update(Authorization)
        .where(Authorization.id == grant.id, Authorization.used_at.is_(None))
        .values(used_at=stamp)
        .execution_options(synchronize_session=False)
    )
    if rowcount(claimed) != 1:
        raise Conflict("Esa autorización ya se usó.", code="auth.authorization_used")
    _separate(action, session, grant.authorized_by)
    return Decision(
        actor_id=actor_id, actor_role=actor.role, authorized_by=grant.authorized_by, authorization_id=grant.id
    )


async def require_role(s: AsyncSession, *, venue_id: int, action: Action, user_id: int | None) -> None:
    """For callers that already hold a supervisor's identity: the person may do ``action`` alone."""
    if user_id is None:
        raise Forbidden(f"{ACTION_LABELS[action]} requiere un supervisor.", code="auth.denied")
    user = await _actor(s, venue_id, user_id)
    if decide(user.role, action, controls=await get_controls(s, venue_id)) is not Rule.ALLOW:
        raise Forbidden(f"{ACTION_LABELS[action]} requiere un supervisor o administrador.", code="auth.denied")


async def rule_for(s: AsyncSession, *, venue_id: int, user_id: int, action: Action, amount: int | None = None) -> Rule:
    """What the screen should ask for before ``action`` (nothing, or a supervisor's code)."""
    user = await s.get(User, user_id)
    if user is None or user.venue_id != venue_id:
        return Rule.DENY
    return decide(user.role, action, amount=amount, controls=await get_controls(s, venue_id))


def _action_label(value: str) -> str:
    try:
        return ACTION_LABELS[Action(value)]
    except ValueError:
        return value


async def list_authorizations(
    s: AsyncSession, venue_id: int, *, jornada_id: int | None = None, session_id: int | None = None
) -> list[AuthorizationOut]:
    q = select(Authorization).where(Authorization.venue_id == venue_id)
    if jornada_id is not None:
        q = q.where(Authorization.jornada_id == jornada_id)
    if session_id is not None:
        q = q.where(Authorization.session_id == session_id)
    rows = await s.scalars(q.order_by(Authorization.id))
    return [
        AuthorizationOut(
            id=a.id,
            action=a.action,
            action_label=_action_label(a.action),
            requested_by=a.requested_by,
            authorized_by=a.authorized_by,
            method=a.method,
            session_id=a.session_id,
            sale_id=a.sale_id,
            amount=a.amount,
            created_at=a.created_at,
            used_at=a.used_at,
        )
        for a in rows
    ]
