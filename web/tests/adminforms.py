"""The admin's register form as the browser posts it: a HUMANA register selling cash and card, the test
terminal as primary and the manual backup, the default fallback policy. A test names what it is about."""

from __future__ import annotations

from typing import Any

REGISTER_FIELDS: dict[str, Any] = {
    "register_type": "HUMANA",
    "active": "1",
    "operational_status": "active",
    "payment_methods": ["cash", "card"],
    "primary_provider": "fake",
    "backup_provider": "fakebackup",
    "policy.enabled": "1",
    "policy.max_wait_s": "60",
    "policy.backup_phones_required": "2",
    "policy.breaker_failures": "3",
    "policy.breaker_window_s": "120",
    "policy.breaker_cooldown_s": "30",
    "policy.triggers": ["unavailable", "transport_error", "timeout"],
    "policy.offline_methods": ["cash", "backup"],
}


def register_form(code: str, name: str, **fields: Any) -> dict[str, Any]:
    """The form for register ``code``; ``fields`` are further fields (a dotted name is passed with ``**{...}``)."""
    return {"code": code, "name": name, **REGISTER_FIELDS, **fields}
