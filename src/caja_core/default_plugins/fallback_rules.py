"""Built-in fallback trigger rules (the policy's trigger list names them)."""

from __future__ import annotations

from collections.abc import Callable

from ..fallback.policy import FallbackRule
from ..hookspecs import hookimpl


@hookimpl
def register_fallback_rules(add_rule: Callable[[FallbackRule], None]) -> None:
    # The rule functions live with the fallback engine; this plugin only makes the built-ins overridable.
    from ..fallback import BUILTIN_RULES

    for rule in BUILTIN_RULES:
        add_rule(rule)
