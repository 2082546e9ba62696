"""A register's printer configuration (the seed's ``printer_config``): which printer, paper, what a ticket
shows, the cash drawer, and the comanda printers that take products of some categories."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..errors import ValidationFailed
from .drivers import PrinterRegistry, validate_printer_settings

MAX_COMANDAS = 4


class ComandaRoute(msgspec.Struct, kw_only=True):
    """Products of ``categories`` also print on this printer (bar, kitchen) when the sale is paid."""

    name: str = ""
    printer: str = "escpos_network"
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    categories: list[int] = msgspec.field(default_factory=list)


class PrinterConfig(msgspec.Struct, kw_only=True):
    #: The printer id (``escpos_network``, ``escpos_serial``, ``escpos_usb``, ``browser`` or a plugin's);
    #: empty: this register prints nothing.
    printer: str = ""
    name: str = ""  # the printer's name, for people ("Epson TM-T20 caja 1")
    printer_type: Literal["thermal", "inkjet", "laser"] = "thermal"
    paper_width: Literal[58, 80] = 80
    auto_print: bool = True
    print_items: bool = True
    print_total: bool = True
    print_barcode: bool = True
    print_qr: bool = True
    cut_paper: bool = True
    open_drawer: bool = False  # kick the drawer on cash sales
    drawer_on_movements: bool = False  # and on cash in/out
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    comandas: list[ComandaRoute] = msgspec.field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.printer)


def load_config(raw: dict[str, Any] | None) -> PrinterConfig:
    """The stored configuration (already validated when saved); anything unreadable means "no printer"."""
    try:
        return msgspec.convert(dict(raw or {}), PrinterConfig, strict=False)
    except msgspec.ValidationError:
        return PrinterConfig()


def validate_config(
    raw: dict[str, Any] | PrinterConfig, registry: PrinterRegistry, category_ids: set[int]
) -> PrinterConfig:
    """Check a submitted configuration: each printer's settings with that printer's ``Settings``, the
    drawer only on an ESC/POS printer, inkjet and laser printers only through the browser. Raises
    ``ValidationFailed`` with one Spanish message per field."""
    errors: dict[str, str] = {}
    try:
        config = raw if isinstance(raw, PrinterConfig) else msgspec.convert(dict(raw), PrinterConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(
            f"Configuración de impresora inválida: {exc}", code="printer.invalid", field="printer"
        ) from exc
    config.name = config.name.strip()[:80]
    if any(ord(c) < 32 for c in config.name):
        errors["printer.name"] = "El nombre no admite caracteres de control."
    if config.printer:
        if config.printer not in registry:
            errors["printer.printer"] = f"Impresora desconocida: {config.printer}."
        else:
            printer = registry.get(config.printer)
            settings, problems = validate_printer_settings(printer, config.settings)
            errors.update({f"printer.settings.{k}": v for k, v in problems.items()})
            if settings is not None:
                config.settings = msgspec.to_builtins(settings)
            if config.printer_type != "thermal" and not printer.browser:
                errors["printer.printer_type"] = (
                    "Las impresoras de tinta o láser imprimen desde el navegador de la caja."
                )
            if (config.open_drawer or config.drawer_on_movements) and printer.browser:
                errors["printer.open_drawer"] = (
                    "El cajón se abre con un pulso de una impresora ESC/POS; "
                    "con la impresora del navegador no se puede abrir desde caja."
                )
    if len(config.comandas) > MAX_COMANDAS:
        errors["printer.comandas"] = f"Hasta {MAX_COMANDAS} impresoras de comandas."
    for n, route in enumerate(config.comandas):
        route.name = route.name.strip()[:40]
        key = f"printer.comandas.{n}"
        if not route.name or any(ord(c) < 32 for c in route.name):
            errors[f"{key}.name"] = "Ponga un nombre a la impresora de comandas (por ejemplo Barra)."
        if not route.categories:
            errors[f"{key}.categories"] = "Elija las categorías que van a esta impresora."
        elif not set(route.categories) <= category_ids:
            errors[f"{key}.categories"] = "Hay categorías que no existen en este local."
        if route.printer not in registry:
            errors[f"{key}.printer"] = f"Impresora desconocida: {route.printer}."
            continue
        printer = registry.get(route.printer)
        if printer.browser:
            errors[f"{key}.printer"] = "Las comandas se imprimen en una impresora ESC/POS, no en el navegador."
            continue
        settings, problems = validate_printer_settings(printer, route.settings)
        errors.update({f"{key}.settings.{k}": v for k, v in problems.items()})
        if settings is not None:
            route.settings = msgspec.to_builtins(settings)
    if errors:
        raise ValidationFailed("Revise la configuración de la impresora.", code="printer.invalid", fields=errors)
    return config
