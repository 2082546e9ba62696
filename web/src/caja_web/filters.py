"""Jinja filters and globals: CLP money, local times, labels."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from jinja2 import Environment

from caja_core.catalog.service import search_text
from caja_core.clock import DEFAULT_TIMEZONE, format_local
from caja_core.money import format_clp

STATUS_LABELS = {
    # registers
    "active": "Activa",
    "maintenance": "Mantención",
    "offline": "Sin conexión",
    "error": "Error",
    # sessions / jornadas
    "open": "Abierta",
    "closing": "Cerrando",
    "closed": "Cerrada",
    "preparing": "Preparando",
    # sales
    "pending_payment": "Pendiente de pago",
    "paid": "Pagada",
    "cancelled": "Anulada",
    # attempts
    "created": "Creado",
    "sending": "Enviando",
    "awaiting": "Esperando al terminal",
    "approved": "Aprobado",
    "declined": "Rechazado",
    "failed_not_sent": "No enviado",
    "in_doubt": "Verificando con el terminal…",
    "reconciling": "Verificando con el terminal…",
    "manual_pending": "Esperando confirmación manual",
    "approved_manual": "Aprobado (manual)",
    "verified": "Verificado",
    "disputed": "En disputa",
    "refund_due": "Cobro duplicado: devolver al cliente",
    "refunded": "Devuelto",
    "overridden": "Reemplazado por respaldo",
    # breaker
    "half_open": "Probando",
}
METHOD_LABELS = {"cash": "Efectivo", "card": "Tarjeta", "debit": "Débito", "credit": "Crédito", "courtesy": "Cortesía"}
ROLE_LABELS = {"admin": "Administrador", "supervisor": "Supervisor", "cashier": "Cajero"}
INCIDENT_LABELS = {
    "terminal": "Terminal caído",
    "printer": "Impresora",
    "printer_down": "Impresora caída",
    "network": "Red / internet",
    "double_charge": "Posible doble cobro",
    "double_charge_suspected": "Posible doble cobro",
    "cash": "Efectivo",
    "other": "Otro",
    "cash_difference": "Diferencia de caja",
    "duplicate_authorization": "Autorización repetida",
    "late_approval": "Aprobación tardía",
    "amount_mismatch": "Monto distinto al cobrado",
    "approval_not_matching": "Aprobación que no corresponde al cobro",
    "payment_needs_decision": "Cobro en duda: decide un supervisor",
    "terminal_difference": "Terminal y caja no coinciden",
    "terminal_unchecked": "Terminal no revisado",
}
#: Incidents of the end-of-night verification are named ``<provider id><suffix>`` (caja_core.payments.verification).
PROVIDER_INCIDENT_LABELS = {
    "_unmatched_attempt": "pago sin respaldo en el reporte",
    "_unmatched_report_row": "venta del reporte sin pago en caja",
    "_disputed": "pago en disputa",
}
TYPE_LABELS = {"TOTEM": "Tótem", "HUMANA": "Humana", "OFICINA": "Oficina", "VIRTUAL": "Virtual"}


def clp(amount: int | None) -> str:
    return format_clp(amount)


def local_time(instant: datetime | None, tz: str | None = None, fmt: str = "%d-%m-%Y %H:%M") -> str:
    return format_local(instant, tz or DEFAULT_TIMEZONE, fmt)


def day(value: date | None) -> str:
    return value.strftime("%d-%m-%Y") if value else "—"


def label(value: object, kind: str = "status", provider: Any = None) -> str:
    if kind == "incident" and str(value) not in INCIDENT_LABELS:
        for suffix, text in PROVIDER_INCIDENT_LABELS.items():
            if str(value).endswith(suffix) and len(str(value)) > len(suffix):
                provider_id = str(value)[: -len(suffix)]
                return f"{(provider or provider_namer())(provider_id)}: {text}"
    table = {
        "status": STATUS_LABELS,
        "method": METHOD_LABELS,
        "role": ROLE_LABELS,
        "type": TYPE_LABELS,
        "incident": INCIDENT_LABELS,
    }[kind]
    return table.get(str(value), str(value) if value is not None else "—")


def provider_namer(registry: Any = None) -> Any:
    """``provider`` filter: a provider id as people read it (``cash`` → Efectivo, any other: the provider's
    ``name``, or the id in capitals when no such provider is loaded)."""

    def provider(provider_id: object) -> str:
        if provider_id in (None, ""):
            return "—"
        pid = str(provider_id)
        if pid == "cash":
            return "Efectivo"
        if registry is not None and pid in registry:
            return str(getattr(registry.get(pid), "name", pid) or pid)
        return pid.upper()

    return provider


def install(env: Environment, registry: Any = None) -> None:
    provider = provider_namer(registry)

    def label_with_names(value: object, kind: str = "status") -> str:
        return label(value, kind, provider)

    env.filters.update(
        clp=clp, local_time=local_time, day=day, label=label_with_names, provider=provider, search_text=search_text
    )
    env.tests["startswith"] = lambda value, prefix: str(value).startswith(prefix)
