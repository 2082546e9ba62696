"""Form → Struct for the admin pages: registers (all fields, fallback policy, provider settings generated
from each provider plugin's ``Settings`` Struct, secrets write-only)."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
from litestar.datastructures import FormMultiDict

from caja_core.errors import ValidationFailed
from caja_core.fallback.policy import FallbackPolicy
from caja_core.providers import ProviderRegistry
from caja_core.registers.service import RegisterInput, RegisterOut, is_secret_field

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


#: Spanish labels of the provider settings fields the bundled plugins declare (others: the field's name).
SETTING_LABELS = {
    "connection": "Conexión",
    "host": "Host del terminal",
    "port": "Puerto",
    "serial_path": "Puerto serie",
    "receipt_timeout_s": "Espera del acuse de recibo (s)",
    "sale_timeout_s": "Espera de la venta (s)",
    "short_timeout_s": "Espera de comandos cortos (s)",
    "other_timeout_s": "Espera de otros comandos (s)",
    "employee_id": "Id. de empleado",
    "print_on_pos": "Imprimir en el terminal",
    "send_messages": "Mostrar mensajes del terminal",
    "max_message_bytes": "Tamaño máximo de mensaje (bytes)",
    "mode": "Modo",
    "min_credit_amount": "Monto mínimo con crédito (CLP)",
    "api_base_url": "URL de la API",
    "api_key": "Clave de la API",
    "webhook_auth": "Autenticación del webhook",
    "webhook_auth_header": "Cabecera de autenticación",
    "webhook_secret": "Secreto del webhook",
    "webhook_url": "URL pública del webhook",
    "return_url": "URL de retorno",
    "cancel_url": "URL de cancelación",
    "request_timeout_s": "Espera de la API (s)",
    "device": "Dispositivo",
    "timeout_s": "Espera (s)",
}


class SettingField(msgspec.Struct, kw_only=True):
    """One input of a provider's settings form."""

    name: str
    label: str
    kind: str  # text / number / checkbox / select / password
    value: Any = None
    options: list[str] = msgspec.field(default_factory=list)
    secret_set: bool = False


def _kind(annotation: Any) -> tuple[str, list[str]]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return "select", [str(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _kind(args[0])
    if annotation is bool:
        return "checkbox", []
    if annotation in (int, float):
        return "number", []
    return "text", []


def settings_fields(registry: ProviderRegistry, register: RegisterOut | None) -> dict[str, list[SettingField]]:
    """For every card provider: the inputs of its Settings Struct, filled from the register (secrets never)."""
    out: dict[str, list[SettingField]] = {}
    for provider in registry.all():
        if provider.id == "cash":
            continue
        stored = (register.provider_settings.get(provider.id) or {}) if register else {}
        hints = typing.get_type_hints(provider.Settings)
        fields = []
        for f in msgspec.structs.fields(provider.Settings):
            kind, options = _kind(hints.get(f.name, str))
            default = None if f.default is msgspec.NODEFAULT else f.default
            value = stored.get(f.name, default)
            secret = is_secret_field(f.name)
            label = SETTING_LABELS.get(f.name, f.name.replace("_", " ").capitalize())
            fields.append(
                SettingField(
                    name=f.name,
                    label=label,
                    kind="password" if secret else kind,
                    options=options,
                    value=None if secret else value,
                    secret_set=secret and bool(stored.get(f.name)),
                )
            )
        out[provider.id] = fields
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
        if provider.id == "cash":
            continue
        hints = typing.get_type_hints(provider.Settings)
        raw: dict[str, Any] = {}
        for f in msgspec.structs.fields(provider.Settings):
            key = f"settings.{provider.id}.{f.name}"
            kind, _ = _kind(hints.get(f.name, str))
            if kind == "checkbox":
                raw[f.name] = form.get(key) is not None
            elif form.get(key) is not None:
                value = get(key)
                if value == "" and f.default is not msgspec.NODEFAULT and not is_secret_field(f.name):
                    continue
                raw[f.name] = value
        settings[provider.id] = raw
    try:
        policy = msgspec.convert(policy_raw, FallbackPolicy, strict=False)
    except msgspec.ValidationError as exc:
        errors["policy"] = f"Política inválida: {exc}"
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
