"""The one rule for the reasons and notes people type (why a drawer opens, why a payment is disputed, why a
supervisor switched to the backup…): at least ``MIN_REASON`` characters once the spaces are collapsed, at most
the field's maximum, no control characters. Pages escape what they show, so other characters are kept."""

from __future__ import annotations

import re

from .errors import ValidationFailed

#: A reason says something: at least this many characters once its spaces are collapsed.
MIN_REASON = 3
MAX_REASON = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_reason(
    text: str | None,
    label: str,
    *,
    field: str = "reason",
    maximum: int = MAX_REASON,
    missing: str | None = None,
    code: str | None = None,
) -> str:
    """``text`` with its spaces collapsed, or a Spanish field error. ``label`` names the field ("El motivo de la
    disputa"); ``missing`` replaces the message for a reason that is absent or too short."""
    reason = " ".join((text or "").split())
    if len(reason) < MIN_REASON:
        message = missing or f"{label} es obligatorio (mínimo {MIN_REASON} caracteres)."
        raise ValidationFailed(message, field=field, code=code)
    if len(reason) > maximum or _CONTROL.search(reason):
        raise ValidationFailed(
            f"{label} es demasiado largo (máximo {maximum} caracteres) o tiene caracteres no permitidos.", field=field
        )
    return reason
