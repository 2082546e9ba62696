"""The one rule for the reasons and notes people type (why a drawer opens, why a payment is disputed…)."""

from __future__ import annotations

import re

from .errors import ValidationFailed

#: A reason says something: at least this many characters once its spaces are collapsed.
MIN_REASON = 3
MAX_REASON = 200
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")


def clean_reason(text: str | None, label: str, *, field: str = "reason", maximum: int = MAX_REASON) -> str:
    """``text`` with its spaces collapsed, or a Spanish field error: shorter than ``MIN_REASON``, longer than
    ``maximum``, or with control characters or ``<``/``>``. ``label`` names the field, e.g. "El motivo"."""
    reason = " ".join((text or "").split())
    if len(reason) < MIN_REASON:
        raise ValidationFailed(f"{label} es obligatorio (mínimo {MIN_REASON} caracteres).", field=field)
    if len(reason) > maximum or _FORBIDDEN.search(reason):
        raise ValidationFailed(
            f"{label} es demasiado largo (máximo {maximum} caracteres) o tiene caracteres no permitidos.", field=field
        )
    return reason
