"""Fallback policy (the Struct stored on each register) and the built-in trigger rules."""

from .policy import BUILTIN_RULES, FallbackPolicy, FallbackRule, default_policy

__all__ = ["BUILTIN_RULES", "FallbackPolicy", "FallbackRule", "default_policy"]
