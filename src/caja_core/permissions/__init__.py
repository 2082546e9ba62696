"""Who may do what with the money: one table of role × action, with the venue's thresholds.

Each cell is a :class:`Rule`:

* ``allow`` — the role does it alone;
* ``limit`` — alone up to the venue's threshold, above it with a supervisor's authorization;
* ``supervisor`` — only with a supervisor's authorization given at the register (PIN or badge), which
  names both people;
* ``deny`` — never.

Besides the table, two rules hold for every action on a drawer (sell, void, cash in/out, close): only the
session's holder acts in it (taking a drawer over is a handover with a blind count), and nobody approves
the difference of a drawer they hold. The services enforce both (``permissions.service.require``), so no
page, command or script can skip them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from ..money import MAX_AMOUNT


class Action(StrEnum):
    SELL = "sell"
    VOID_UNPAID = "void_unpaid"
    VOID_PAID = "void_paid"
    REFUND = "refund"
    CASH_IN = "cash_in"
    CASH_OUT = "cash_out"
    APPROVE_DIFFERENCE = "approve_difference"
    TAKE_OVER = "take_over"
    USE_BACKUP = "use_backup"
    FORCE_BACKUP = "force_backup"
    OPEN_DRAWER = "open_drawer"
    DISCOUNT = "discount"
    CLOSE_WITHOUT_OFFLINE = "close_without_offline"


class Rule(StrEnum):
    ALLOW = "allow"
    LIMIT = "limit"
    SUPERVISOR = "supervisor"
    DENY = "deny"


ROLES = ("cashier", "supervisor", "admin")

A, L, S, D = Rule.ALLOW, Rule.LIMIT, Rule.SUPERVISOR, Rule.DENY

#: The permission table: action → (cashier, supervisor, admin).
TABLE: dict[Action, tuple[Rule, Rule, Rule]] = {
    Action.SELL: (A, A, A),
    Action.VOID_UNPAID: (A, A, A),
    Action.VOID_PAID: (S, A, A),
    Action.REFUND: (S, A, A),
    Action.CASH_IN: (A, A, A),
    Action.CASH_OUT: (L, A, A),
    Action.APPROVE_DIFFERENCE: (S, A, A),
    Action.TAKE_OVER: (S, A, A),
    Action.USE_BACKUP: (S, A, A),
    Action.FORCE_BACKUP: (S, A, A),
    Action.OPEN_DRAWER: (S, A, A),
    Action.DISCOUNT: (L, A, A),
    Action.CLOSE_WITHOUT_OFFLINE: (S, A, A),
}

#: Actions on a drawer: only the session's holder performs them.
HOLDER_ACTIONS = frozenset(
    {
        Action.SELL,
        Action.VOID_UNPAID,
        Action.VOID_PAID,
        Action.CASH_IN,
        Action.CASH_OUT,
        Action.OPEN_DRAWER,
        Action.DISCOUNT,
    }
)

ACTION_LABELS = {
    Action.SELL: "Vender",
    Action.VOID_UNPAID: "Anular una venta sin pagar",
    Action.VOID_PAID: "Anular una venta pagada",
    Action.REFUND: "Devolver un cobro con tarjeta",
    Action.CASH_IN: "Ingresar efectivo",
    Action.CASH_OUT: "Retirar efectivo",
    Action.APPROVE_DIFFERENCE: "Aprobar una diferencia de cierre",
    Action.TAKE_OVER: "Tomar la caja de otro cajero (relevo)",
    Action.USE_BACKUP: "Usar el respaldo cuando la caja lo exige autorizado",
    Action.FORCE_BACKUP: "Forzar el respaldo con el pago principal en duda",
    Action.OPEN_DRAWER: "Abrir el cajón sin venta",
    Action.DISCOUNT: "Hacer un descuento",
    Action.CLOSE_WITHOUT_OFFLINE: "Cerrar la caja sin las ventas sin conexión de un equipo que no vuelve",
}
RULE_LABELS = {
    Rule.ALLOW: "Sí",
    Rule.LIMIT: "Hasta el límite del local; sobre él, con autorización",
    Rule.SUPERVISOR: "Con autorización de supervisor",
    Rule.DENY: "No",
}


class VenueControls(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A venue's thresholds for the table (stored in ``venues.controls``)."""

    #: A cashier's cash-out above this needs a supervisor's authorization (CLP).
    cash_out_limit: int = 20_000
    #: A cashier's discounts on one sale above this, in all, need a supervisor's authorization (CLP).
    discount_limit: int = 5_000
    #: The tip the POS suggests, in percent of the sale's total (0: no suggestion).
    suggested_tip_percent: int = 10
    #: Digits of the cashiers' and supervisors' PINs.
    pin_length: int = 6
    #: How long an authorization given at the register stays usable.
    authorization_minutes: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.cash_out_limit <= MAX_AMOUNT:
            raise ValueError("cash_out_limit")
        if not 0 <= self.discount_limit <= MAX_AMOUNT:
            raise ValueError("discount_limit")
        if not 0 <= self.suggested_tip_percent <= 100:
            raise ValueError("suggested_tip_percent")
        if not 6 <= self.pin_length <= 8:
            raise ValueError("pin_length")
        if not 1 <= self.authorization_minutes <= 60:
            raise ValueError("authorization_minutes")


def controls_from(raw: dict[str, Any] | None) -> VenueControls:
    if not raw:
        return VenueControls()
    try:
        return msgspec.convert(raw, VenueControls)
    except (msgspec.ValidationError, ValueError):
        return VenueControls()


def decide(role: str, action: Action, *, amount: int | None = None, controls: VenueControls | None = None) -> Rule:
    """What ``role`` needs to do ``action`` (for ``amount`` when the rule has a threshold): allow, supervisor
    or deny. Never returns ``limit``: the threshold is applied here."""
    if role not in ROLES:
        return Rule.DENY
    rule = TABLE[action][ROLES.index(role)]
    if rule is Rule.LIMIT:
        venue = controls or VenueControls()
        limit = venue.discount_limit if action is Action.DISCOUNT else venue.cash_out_limit
        return Rule.ALLOW if amount is not None and amount <= limit else Rule.SUPERVISOR
    return rule


def may_authorize(role: str, action: Action) -> bool:
    """Whether someone of ``role`` may give the authorization ``action`` needs (they may do it alone)."""
    return role in ROLES and TABLE[action][ROLES.index(role)] is Rule.ALLOW


__all__ = [
    "ACTION_LABELS",
    "HOLDER_ACTIONS",
    "ROLES",
    "RULE_LABELS",
    "TABLE",
    "Action",
    "Rule",
    "VenueControls",
    "controls_from",
    "decide",
    "may_authorize",
]
