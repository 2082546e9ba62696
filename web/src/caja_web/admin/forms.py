"""Form → Struct for the admin pages: registers (all fields, fallback policy, provider settings generated
from each provider plugin's ``Settings`` Struct, secrets write-only)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.datastructures import FormMultiDict

from caja_core.errors import ValidationFailed
from caja_core.fallback.policy import FallbackPolicy
from caja_core.providers import ProviderRegistry, describe_settings, is_secret_field
from caja_core.registers.service import RegisterInput

from ..validation import spanish_validation

POLICY_LABELS = {
    "enabled": "Respaldo habilitado",
    "max_wait_s": "Espera máxima antes de ofrecer el respaldo (s)",
    "triggers": "Eventos que ofrecen el respaldo",
    "decline_codes": "Códigos de rechazo que ofrecen el respaldo (separados por coma)",
    "backup_phones_required": "Celulares de respaldo requeridos",
    "require_supervisor": "Cambio a respaldo requiere supervisor",
    "breaker_failures": "Fallas para abrir el corte",
    "breaker_window_s": "Ventana de fallas (s)",
    "breaker_cooldown_s": "Enfriamiento del corte (s)",
    "offline_methods": "Medios permitidos sin red / proveedor",
}
TRIGGER_LABELS = {
    "unavailable": "Terminal no disponible",
    "transport_error": "Error de comunicación",
    "timeout": "Tiempo agotado",
    "decline": "Rechazo con código de la lista",
}
OFFLINE_LABELS = {"cash": "Efectivo", "backup": "Respaldo (celular)", "card": "Tarjeta"}


class SettingField(msgspec.Struct, kw_only=True):
    """One input of a provider's settings form: the plugin's title and help, the stored value."""

    name: str
    label: str
    help: str = ""
    kind: str  # text / number / checkbox / select / password
    value: Any = None
    options: list[str] = msgspec.field(default_factory=list)
    secret_set: bool = False


def settings_fields(registry: ProviderRegistry, stored: dict[str, dict[str, Any]]) -> dict[str, list[SettingField]]:
    """For every provider: the inputs of its Settings Struct with the plugin's labels (``msgspec.Meta(title=…,
    description=…)``), filled from ``stored`` (a register's settings, or a new register's defaults; secrets
    never)."""
    out: dict[str, list[SettingField]] = {}
    for provider in registry.all():
        values = stored.get(provider.id) or {}
        out[provider.id] = [
            SettingField(
                name=spec.name,
                label=spec.title,
                help=spec.description,
                kind=spec.kind,
                options=list(spec.options),
                value=None if spec.secret else values.get(spec.name, spec.default),
                secret_set=spec.secret and bool(values.get(spec.name)),
            )
            for spec in describe_settings(provider.Settings)
        ]
    return out


def _ints(values: list[str], field: str) -> list[int]:
    try:
        return [int(v) for v in values if v.strip()]
    except ValueError:
        raise ValidationFailed("Valor inválido.", field=field) from None


def register_input(form: FormMultiDict, registry: ProviderRegistry) -> RegisterInput:
    """Build a ``RegisterInput`` from the register form; malformed values become Spanish field errors."""

    def get(name: str, default: str = "") -> str:
        value = form.get(name)
        return (value or default).strip() if isinstance(value, str) else default

    policy_raw: dict[str, Any] = {
        "enabled": form.get("policy.enabled") is not None,
        "require_supervisor": form.get("policy.require_supervisor") is not None,
        "triggers": form.getall("policy.triggers", []),
        "offline_methods": form.getall("policy.offline_methods", []),
        "decline_codes": [c.strip() for c in get("policy.decline_codes").split(",") if c.strip()],
    }
    errors: dict[str, str] = {}
    for name in ("max_wait_s", "backup_phones_required", "breaker_failures", "breaker_window_s", "breaker_cooldown_s"):
        value = get(f"policy.{name}")
        if not (value.isascii() and value.isdigit() and len(value) <= 9):
            errors[f"policy.{name}"] = "Debe ser un número entero."
        else:
            policy_raw[name] = int(value)
    settings: dict[str, dict[str, Any]] = {}
    for provider in registry.all():
        raw: dict[str, Any] = {}
        for spec in describe_settings(provider.Settings):
            key = f"settings.{provider.id}.{spec.name}"
            if spec.kind == "checkbox":
                raw[spec.name] = form.get(key) is not None
            elif form.get(key) is not None:
                value = get(key)
                if value == "" and not spec.required and not spec.secret:
                    continue
                raw[spec.name] = value
        settings[provider.id] = raw
    try:
        policy = msgspec.convert(policy_raw, FallbackPolicy, strict=False)
    except msgspec.ValidationError as exc:
        errors["policy"] = f"Política inválida: {spanish_validation(str(exc))}."
        policy = None
    if errors:
        raise ValidationFailed("Revise los datos de la caja.", code="register.invalid", fields=errors)
    return RegisterInput(
        code=get("code"),
        name=get("name"),
        register_type=get("register_type", "HUMANA"),
        location=get("location"),
        active=form.get("active") is not None,
        operational_status=get("operational_status", "active"),
        payment_methods=form.getall("payment_methods", []),
        primary_provider=get("primary_provider") or None,
        backup_provider=get("backup_provider") or None,
        provider_settings=settings,
        devices={k: get(f"devices.{k}") for k in ("terminal", "printer", "drawer") if get(f"devices.{k}")},
        policy=policy,
        allowed_categories=_ints(form.getall("allowed_categories", []), "allowed_categories") or None,
    )


def form_values(form: FormMultiDict) -> dict[str, Any]:
    """The submitted values, to re-render the form as the user left it (secrets dropped)."""
    out: dict[str, Any] = {}
    for key in form:
        if is_secret_field(key.rpartition(".")[2]):
            continue
        values = form.getall(key)
        out[key] = (
            values
            if len(values) > 1
            or key in ("payment_methods", "allowed_categories", "policy.triggers", "policy.offline_methods")
            else values[0]
        )
    return out
