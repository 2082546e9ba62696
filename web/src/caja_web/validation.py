"""msgspec's validation messages in Spanish: the translator lives in the core (``caja_core.validation_text``),
which also uses it for provider settings."""

from caja_core.validation_text import spanish_validation

__all__ = ["spanish_validation"]
