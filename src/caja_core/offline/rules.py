"""A register's offline rule and its versions: what the device may charge without the server.

The rule is what the register's settings allow when nothing but the device answers: cash when the register takes
cash, and the backup phone when the register has a backup provider, its fallback policy is enabled and its
``offline_methods`` include it (never the integrated terminal: it needs the server). The device keeps the rule
it was last given with the register's data; each version it is given is recorded in ``offline_rules`` (with the
time it was in force) and the device names it in every sale it takes offline.

When the sale syncs it is checked against the rule its device had, not the one in force at the sync:

* an admin who **tightens** the rule while a device is offline does not turn that device's honest sales into
  rejections (the device could not know);
* an admin who **loosens** it does not make valid what the device took outside the rule it had: the device's
  screen never offers a method its rule does not allow, so such a sale is not honest and stays rejected, for a
  supervisor to settle, whatever the rule says now;
* a device cannot invent a rule: the version it names must be one the server recorded for that register, in
  force at some moment between the session's opening and the sale. A sale that names no version (a device that
  kept the register's data before versions existed) must fit both the rule in force at the time of the sale and
  the current one.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..clock import utcnow
from ..ops.contingency import allowed_methods
from ..registers.models import CashRegister
from .models import OfflineRule

OFFLINE_METHODS = ("cash", "backup")


class RuleSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a rule allows: the methods and the backup provider they go through."""

    methods: tuple[str, ...]
    backup_provider: str = ""

    @property
    def fingerprint(self) -> str:
        return ",".join(self.methods) + "|" + self.backup_provider

    def allows(self, method: str) -> bool:
        return method in self.methods and (method != "backup" or bool(self.backup_provider))


def rule_of(register: CashRegister) -> RuleSpec:
    """The register's offline rule as its settings say now."""
    mode = allowed_methods(register, {}, db_ok=False)
    methods = tuple(m for m in OFFLINE_METHODS if m in mode.allowed_methods)
    backup = (register.backup_provider or "") if "backup" in methods else ""
    return RuleSpec(methods=methods, backup_provider=backup)


def spec_of(row: OfflineRule) -> RuleSpec:
    return RuleSpec(
        methods=tuple(m for m in OFFLINE_METHODS if m in (row.methods or [])), backup_provider=row.backup_provider
    )


async def current_rule(s: AsyncSession, register: CashRegister) -> OfflineRule:
    """The version of the register's rule in force now, recorded if it is new (the one before it ends now)."""
    spec = rule_of(register)
    now = utcnow()
    latest = await s.scalar(
        select(OfflineRule)
        .where(OfflineRule.register_id == register.id, OfflineRule.valid_until.is_(None))
        .order_by(OfflineRule.id.desc())
        .limit(1)
    )
    if latest is not None and spec_of(latest).fingerprint == spec.fingerprint:
        return latest
    # Every version still open ends now (two requests at once may both have recorded one).
    await s.execute(
        update(OfflineRule)
        .where(OfflineRule.register_id == register.id, OfflineRule.valid_until.is_(None))
        .values(valid_until=now)
    )
    row = OfflineRule(
        venue_id=register.venue_id,
        register_id=register.id,
        methods=list(spec.methods),
        backup_provider=spec.backup_provider,
        valid_from=now,
        valid_until=None,
    )
    s.add(row)
    await s.flush()
    return row


async def given_rule(
    s: AsyncSession, register: CashRegister, rule_id: int, since: datetime, until: datetime
) -> OfflineRule | None:
    """The version ``rule_id`` if it is one of this register's and was in force at some moment between ``since``
    and ``until`` (the session's opening and the sale); None otherwise."""
    row = await s.get(OfflineRule, rule_id)
    if row is None or row.register_id != register.id or row.venue_id != register.venue_id:
        return None
    if row.valid_from > until or (row.valid_until is not None and row.valid_until < since):
        return None
    return row


async def rule_at(s: AsyncSession, register: CashRegister, instant: datetime) -> RuleSpec | None:
    """The recorded version in force at ``instant`` (None when none was recorded by then)."""
    row = await s.scalar(
        select(OfflineRule)
        .where(OfflineRule.register_id == register.id, OfflineRule.valid_from <= instant)
        .order_by(OfflineRule.valid_from.desc(), OfflineRule.id.desc())
        .limit(1)
    )
    return spec_of(row) if row is not None else None
