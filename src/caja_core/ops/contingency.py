"""Contingency mode: what a register may still sell when its card terminal or the database is down.

The register's fallback policy names the methods that stay allowed (``offline_methods``: cash and the
backup phone by default). The POS shows the resulting mode and hides what is not allowed; the sales made
meanwhile are ordinary sales (cash, or backup-phone payments confirmed later), reconciled when service is
back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from ..fallback.policy import FallbackPolicy, load_policy

Method = Literal["cash", "card", "backup"]
DOWN_BREAKER_STATES = ("open", "half_open")


class ContingencyState(msgspec.Struct, kw_only=True):
    mode: Literal["normal", "contingency"]
    #: Methods the POS offers now, in display order: cash, card (primary provider), backup (backup phone).
    allowed_methods: list[str]
    #: Why the register is in contingency (empty in normal mode), in Spanish for the cashier.
    reasons: list[str]
    primary_available: bool
    database_available: bool
    message: str

    @property
    def is_contingency(self) -> bool:
        return self.mode == "contingency"


def _get(register: Any, name: str, default: Any = None) -> Any:
    if isinstance(register, Mapping):
        return register.get(name, default)
    return getattr(register, name, default)


def _policy(register: Any) -> FallbackPolicy:
    policy = _get(register, "policy")
    if isinstance(policy, FallbackPolicy):
        return policy
    return load_policy(_get(register, "fallback_policy"), _get(register, "register_type", "HUMANA"))


def _breaker_values(breaker_states: Mapping[str, Any] | Iterable[Any] | None) -> list[str]:
    if not breaker_states:
        return []
    values: Iterable[Any] = breaker_states.values() if isinstance(breaker_states, Mapping) else breaker_states
    states = []
    for value in values:
        states.append(value if isinstance(value, str) else str(_get(value, "state", "closed")))
    return states


def allowed_methods(
    register: Any, breaker_states: Mapping[str, Any] | Iterable[Any] | None, db_ok: bool
) -> ContingencyState:
    """Decide the register's mode and the methods it may offer.

    ``register``: a RegisterOut, a CashRegister row or a dict with ``payment_methods``, ``primary_provider``,
    ``backup_provider`` and ``policy`` (or ``fallback_policy`` + ``register_type``).
    ``breaker_states``: the register's breakers (``{device_key: "closed"|"open"|"half_open"}`` or BreakerState
    rows). ``db_ok``: whether the database answers.
    """
    policy = _policy(register)
    accepted = set(_get(register, "payment_methods") or ["cash", "card"])
    has_primary = bool(_get(register, "primary_provider")) and "card" in accepted
    has_backup = bool(_get(register, "backup_provider")) and policy.enabled

    available: list[str] = []
    if "cash" in accepted:
        available.append("cash")
    breakers_down = any(state in DOWN_BREAKER_STATES for state in _breaker_values(breaker_states))
    primary_up = has_primary and not breakers_down
    if has_primary:
        available.append("card")
    if has_backup:
        available.append("backup")

    reasons: list[str] = []
    if not db_ok:
        reasons.append("La base de datos no responde.")
    if has_primary and breakers_down:
        reasons.append("El terminal de tarjetas no responde (corte activo).")

    if not reasons:
        return ContingencyState(
            mode="normal",
            allowed_methods=available,
            reasons=[],
            primary_available=True,
            database_available=True,
            message="",
        )

    allowed: list[str] = [m for m in available if m in policy.offline_methods]
    if not primary_up and "card" in allowed:
        allowed.remove("card")
    names = {"cash": "efectivo", "card": "tarjeta", "backup": "celular de respaldo"}
    if allowed:
        message = "Modo contingencia: solo " + ", ".join(names[m] for m in allowed) + "."
    else:
        message = "Modo contingencia: no se puede cobrar en esta caja."
    return ContingencyState(
        mode="contingency",
        allowed_methods=allowed,
        reasons=reasons,
        primary_available=primary_up,
        database_available=db_ok,
        message=message,
    )


async def register_state(s: Any, *, venue_id: int, register_id: int) -> ContingencyState:
    """The mode of one register now, read from the database (for the POS banner): its policy, accepted
    methods and providers, and its devices' breakers. The database answering is implied by this call; when
    it does not answer, the caller uses ``allowed_methods(register, {}, db_ok=False)`` with what it has."""
    from sqlalchemy import select

    from ..errors import NotFound
    from ..payments.models import BreakerState
    from ..registers.models import CashRegister

    register = await s.get(CashRegister, register_id)  # not read again when this transaction already has it
    if register is None or register.venue_id != venue_id:
        raise NotFound("La caja no existe.", code="register.not_found")
    rows = (
        await s.execute(
            select(BreakerState.device_key, BreakerState.state).where(BreakerState.register_id == register_id)
        )
    ).all()
    return allowed_methods(register, dict(rows), db_ok=True)
