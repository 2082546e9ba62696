from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..errors import ValidationFailed
from ..providers import Outcome, OutcomeKind

Trigger = Literal["unavailable", "transport_error", "timeout", "decline"]
OfflineMethod = Literal["cash", "backup", "card"]


class FallbackPolicy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A register's fallback policy. Defaults are the seed's; validated on every save."""

    enabled: bool = True
    #: Seconds after Pay before the cashier may be offered the backup (on expiry: cancel + reconcile first).
    max_wait_s: int = 60
    triggers: list[Trigger] = msgspec.field(default_factory=lambda: ["unavailable", "transport_error", "timeout"])
    #: Decline codes (provider's ResponseCode, as text) that offer the backup at once.
    decline_codes: list[str] = msgspec.field(default_factory=list)
    backup_phones_required: int = 2
    require_supervisor: bool = False
    breaker_failures: int = 3
    breaker_window_s: int = 120
    breaker_cooldown_s: int = 30
    #: What stays allowed when providers or the network are down (contingency mode).
    offline_methods: list[OfflineMethod] = msgspec.field(default_factory=lambda: ["cash", "backup"])

    def validate(self) -> FallbackPolicy:
        errors: dict[str, str] = {}
        if not 5 <= self.max_wait_s <= 120:
            errors["max_wait_s"] = "La espera máxima debe estar entre 5 y 120 segundos (el terminal corta a los 120)."
        if not 0 <= self.backup_phones_required <= 10:
            errors["backup_phones_required"] = "Los celulares de respaldo requeridos deben estar entre 0 y 10."
        if not 1 <= self.breaker_failures <= 50:
            errors["breaker_failures"] = "Las fallas para abrir el corte deben estar entre 1 y 50."
        if not 10 <= self.breaker_window_s <= 3600:
            errors["breaker_window_s"] = "La ventana del corte debe estar entre 10 y 3600 segundos."
        if not 5 <= self.breaker_cooldown_s <= 3600:
            errors["breaker_cooldown_s"] = "El enfriamiento del corte debe estar entre 5 y 3600 segundos."
        for code in self.decline_codes:
            digits = code[1:] if code.startswith("-") else code
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 9):
                errors["decline_codes"] = (
                    f"Código de rechazo inválido: «{code}». Los códigos son números, separados por coma (p. ej. 5, 51)."
                )
                break
        if errors:
            raise ValidationFailed("La política de respaldo tiene errores.", code="policy.invalid", fields=errors)
        return self


def default_policy(register_type: str) -> FallbackPolicy:
    phones = {"OFICINA": 1, "VIRTUAL": 0}.get(register_type, 2)
    policy = FallbackPolicy(backup_phones_required=phones)
    if register_type == "VIRTUAL":
        policy.enabled = False
    return policy


def load_policy(raw: dict[str, Any] | None, register_type: str) -> FallbackPolicy:
    if not raw:
        return default_policy(register_type)
    try:
        return msgspec.convert(raw, FallbackPolicy, strict=False).validate()
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"Política de respaldo inválida: {exc}", code="policy.invalid") from exc


class FallbackRule(msgspec.Struct, frozen=True):
    """A named trigger: ``matches(outcome, policy)`` says whether this outcome is a reason to offer the
    backup. Whether it is *safe* to do so is the orchestrator's decision, never a rule's."""

    name: str
    description: str

    def matches(self, outcome: Outcome, reason: str, policy: FallbackPolicy) -> bool:
        if self.name not in policy.triggers and self.name != "decline":
            return False
        if self.name == "unavailable":
            return outcome.kind is OutcomeKind.UNAVAILABLE and reason in ("", "unavailable")
        if self.name == "transport_error":
            return reason == "transport_error"
        if self.name == "timeout":
            return reason == "timeout"
        if self.name == "decline":
            return (
                outcome.kind is OutcomeKind.DECLINED
                and "decline" in policy.triggers
                and (not policy.decline_codes or (outcome.code or "") in policy.decline_codes)
            )
        return False


BUILTIN_RULES = (
    FallbackRule("unavailable", "El terminal no está disponible (no hubo cobro)"),
    FallbackRule("transport_error", "Error de comunicación con el terminal"),
    FallbackRule("timeout", "Se agotó la espera máxima"),
    FallbackRule("decline", "Rechazo con un código de la lista"),
)
