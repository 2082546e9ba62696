"""The fallback engine: given how a primary attempt ended, does the register's policy offer the backup?

Whether it is *safe* (nothing was charged) is decided by the orchestrator from the attempt's state; this
module only answers whether one of the policy's triggers matches. Rules come from the
``register_fallback_rules`` hook (the built-ins are a default plugin, so a plugin can add more).
"""

from __future__ import annotations

from typing import Any

from ..providers import Outcome
from .policy import BUILTIN_RULES, FallbackPolicy, FallbackRule


def collect_rules(pm: Any | None) -> list[FallbackRule]:
    if pm is None:
        return list(BUILTIN_RULES)
    rules: list[FallbackRule] = []
    pm.hook.register_fallback_rules(add_rule=rules.append)
    return rules or list(BUILTIN_RULES)


def decide(rules: list[Any], outcome: Outcome, reason: str, policy: FallbackPolicy) -> Any | None:
    """The first rule that matches (``reason``: unavailable / transport_error / timeout / decline / ...)."""
    if not policy.enabled:
        return None
    for rule in rules:
        if rule.matches(outcome, reason, policy):
            return rule
    return None
