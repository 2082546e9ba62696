"""Domain errors: a stable ``code`` for programs and a clear Spanish ``message`` for people.

Services raise these; the web layer maps them to pages/partials and HTTP statuses, the CLI to one line
and exit code 2. Nothing half-written survives an error: services raise before they commit.
"""

from __future__ import annotations

from typing import Any


class CajaError(Exception):
    """Base of every domain error."""

    status = 400
    code = "caja.error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        fields: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = dict(fields or {})
        if field:
            self.fields.setdefault(field, message)
        self.details = dict(details or {})

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class ValidationFailed(CajaError):
    """Input that can never be valid (wrong type, out of range, malformed)."""

    status = 422
    code = "validation"


class NotFound(CajaError):
    """The object does not exist in this venue (other venues' objects are not found either)."""

    status = 404
    code = "not_found"


class Conflict(CajaError):
    """The request is valid but the current state forbids it (closed jornada, session already open…)."""

    status = 409
    code = "conflict"


class Forbidden(CajaError):
    """The user's role does not allow the action."""

    status = 403
    code = "forbidden"


class AuthFailed(CajaError):
    """Wrong credentials or locked account."""

    status = 401
    code = "auth.failed"


class RateLimited(CajaError):
    """Too many failed attempts from this person or address: wait for the back-off to end."""

    status = 429
    code = "auth.rate_limited"


class Busy(CajaError):
    """A shared resource (a payment terminal) is in use right now."""

    status = 409
    code = "busy"


class PluginError(CajaError):
    """A plugin failed to load or registered something invalid; start-up stops."""

    status = 500
    code = "plugin"
