"""Fallback policy (the Struct stored on each register), the built-in trigger rules and the engine."""

from .engine import collect_rules, decide
from .policy import BUILTIN_RULES, FallbackPolicy, FallbackRule, default_policy, load_policy

__all__ = [
    "BUILTIN_RULES",
    "FallbackPolicy",
    "FallbackRule",
    "collect_rules",
    "decide",
    "default_policy",
    "load_policy",
]
