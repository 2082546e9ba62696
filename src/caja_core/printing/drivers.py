"""Printers: the ``Printer`` protocol a printer plugin implements, the registry built from the
``register_printers`` hook, and the built-in printers (ESC/POS over TCP, over a serial line, over a USB
printer's device file, and the POS's own browser).

A printer is a way to reach a device, nothing more. The core renders every ticket (receipt, comanda,
report, drawer kick) into ESC/POS bytes with python-escpos and hands them to the printer's ``connect``
result; a "browser" printer receives nothing from the server: the POS opens a printable HTML page instead.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import msgspec
from escpos.escpos import Escpos

from ..errors import PluginError, ValidationFailed
from ..hookspecs import hookimpl
from ..providers import describe_settings
from ..validation_text import spanish_validation

#: Code pages for Spanish text (ñ, á, ¿, ¡…), as python-escpos names them; the printer's manual says which
#: table numbers it has. CP858 is CP850 with the euro sign; CP437 has no accented capitals (they print
#: without the accent).
CODEPAGES = ("CP858", "CP850", "CP437", "CP1252")
CodePage = Literal["CP858", "CP850", "CP437", "CP1252"]


def _t(title: str, description: str = "") -> msgspec.Meta:
    return msgspec.Meta(title=title, description=description) if description else msgspec.Meta(title=title)


class EscposSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What every ESC/POS printer needs besides its address."""

    codepage: Annotated[CodePage, _t("Página de códigos")] = "CP858"
    #: Ask the printer whether it has paper before printing (DLE EOT 4). Printers that do not answer are
    #: printed on anyway; one that says "no paper" fails the job with a clear message.
    check_status: Annotated[bool, _t("Preguntar si tiene papel")] = True
    timeout_s: Annotated[float, _t("Espera máxima (s)")] = 5.0


class NetworkSettings(EscposSettings, kw_only=True, forbid_unknown_fields=True):
    host: Annotated[str, _t("Dirección IP o nombre")] = ""
    port: Annotated[int, _t("Puerto")] = 9100


class SerialSettings(EscposSettings, kw_only=True, forbid_unknown_fields=True):
    path: Annotated[str, _t("Dispositivo")] = "/dev/ttyUSB0"
    baudrate: Annotated[int, _t("Velocidad (baudios)")] = 9600


class DeviceFileSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: Annotated[str, _t("Dispositivo")] = "/dev/usb/lp0"
    codepage: Annotated[CodePage, _t("Página de códigos")] = "CP858"
    timeout_s: Annotated[float, _t("Espera máxima (s)")] = 5.0


class BrowserSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


@runtime_checkable
class Printer(Protocol):
    """What a printer plugin implements. See plugins/README.md."""

    id: str
    name: str
    Settings: type[msgspec.Struct]
    #: True: the POS's browser prints a printable HTML page; nothing is sent from the server.
    browser: bool

    def check(self, settings: Any) -> dict[str, str]:
        """Field errors (Spanish) for settings that parse but cannot work; empty when fine."""
        ...

    def describe(self, settings: Any) -> str:
        """Where the printer is, for people ("192.168.1.50:9100")."""
        ...

    def connect(self, settings: Any) -> Escpos:
        """An open python-escpos printer, with every blocking operation bounded by ``settings.timeout_s``.
        Raise ``OSError`` (or python-escpos' ``DeviceNotFoundError``) when the device cannot be reached."""
        ...


_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _check_timeout(settings: Any, errors: dict[str, str]) -> None:
    if not 0.5 <= settings.timeout_s <= 30:
        errors["timeout_s"] = "La espera debe estar entre 0,5 y 30 segundos."


class NetworkPrinter:
    """ESC/POS over raw TCP (port 9100, "JetDirect"): Ethernet and Wi-Fi receipt printers."""

    id = "escpos_network"
    name = "ESC/POS en red (TCP)"
    Settings: type[msgspec.Struct] = NetworkSettings
    browser = False

    def check(self, settings: NetworkSettings) -> dict[str, str]:
        errors: dict[str, str] = {}
        host = settings.host.strip()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST.match(host):
                errors["host"] = "Indique la dirección IP o el nombre de la impresora."
        if not 1 <= settings.port <= 65535:
            errors["port"] = "El puerto debe estar entre 1 y 65535."
        _check_timeout(settings, errors)
        return errors

    def describe(self, settings: NetworkSettings) -> str:
        return f"{settings.host}:{settings.port}"

    def connect(self, settings: NetworkSettings) -> Escpos:
        from escpos.printer import Network

        printer = Network(settings.host, settings.port, timeout=settings.timeout_s)
        printer.open()
        return printer


class SerialPrinter:
    """ESC/POS over a serial line (RS-232, or a USB-serial adapter such as /dev/ttyUSB0)."""

    id = "escpos_serial"
    name = "ESC/POS por puerto serie"
    Settings: type[msgspec.Struct] = SerialSettings
    browser = False

    def check(self, settings: SerialSettings) -> dict[str, str]:
        errors: dict[str, str] = {}
        if not settings.path.startswith("/dev/") or any(ord(c) < 33 for c in settings.path):
            errors["path"] = "Indique el dispositivo serie (por ejemplo /dev/ttyUSB0)."
        if settings.baudrate not in (2400, 4800, 9600, 19200, 38400, 57600, 115200):
            errors["baudrate"] = "Velocidad inválida (9600, 19200, 38400, 57600 o 115200)."
        _check_timeout(settings, errors)
        return errors

    def describe(self, settings: SerialSettings) -> str:
        return f"{settings.path} a {settings.baudrate} baudios"

    def connect(self, settings: SerialSettings) -> Escpos:
        from escpos.printer import Serial

        printer = Serial(settings.path, baudrate=settings.baudrate, timeout=settings.timeout_s)
        printer.open()
        printer.device.write_timeout = settings.timeout_s
        return printer


class DeviceFilePrinter:
    """ESC/POS to a USB printer through the operating system's device file (Linux: /dev/usb/lp0)."""

    id = "escpos_usb"
    name = "ESC/POS por USB (/dev/usb/lp*)"
    Settings: type[msgspec.Struct] = DeviceFileSettings
    browser = False

    def check(self, settings: DeviceFileSettings) -> dict[str, str]:
        errors: dict[str, str] = {}
        if not settings.path.startswith("/") or any(ord(c) < 33 for c in settings.path):
            errors["path"] = "Indique el dispositivo de la impresora (por ejemplo /dev/usb/lp0)."
        _check_timeout(settings, errors)
        return errors

    def describe(self, settings: DeviceFileSettings) -> str:
        return settings.path

    def connect(self, settings: DeviceFileSettings) -> Escpos:
        from escpos.printer import File

        printer = File(settings.path)
        printer.open()
        return printer


class BrowserPrinter:
    """The POS's browser prints a page sized for the paper (58 or 80 mm); the computer's own printer
    driver does the rest. Also what an inkjet or laser printer uses."""

    id = "browser"
    name = "Navegador de la caja (página imprimible)"
    Settings: type[msgspec.Struct] = BrowserSettings
    browser = True

    def check(self, settings: BrowserSettings) -> dict[str, str]:
        return {}

    def describe(self, settings: BrowserSettings) -> str:
        return "navegador de la caja"

    def connect(self, settings: BrowserSettings) -> Escpos:
        raise OSError("La impresora del navegador imprime desde la caja, no desde el servidor.")


BUILTIN_PRINTERS = (NetworkPrinter(), SerialPrinter(), DeviceFilePrinter(), BrowserPrinter())


@hookimpl
def register_printers(add_printer: Any) -> None:
    for printer in BUILTIN_PRINTERS:
        add_printer(printer)


_REQUIRED = ("check", "describe", "connect")


class PrinterRegistry:
    """The validated set of printers, built once at start-up from the ``register_printers`` hook."""

    def __init__(self, printers: Mapping[str, Printer]) -> None:
        self._printers = dict(printers)

    @classmethod
    def from_plugin_manager(cls, pm: Any) -> PrinterRegistry:
        found: dict[str, Printer] = {}

        def add_printer(printer: Printer) -> None:
            pid = getattr(printer, "id", None)
            if not isinstance(pid, str) or not pid.isidentifier() or pid.lower() != pid:
                raise PluginError(f"Impresora con id inválido: {pid!r} (se espera minúsculas, p. ej. 'escpos_red').")
            missing = [m for m in _REQUIRED if not callable(getattr(printer, m, None))]
            settings_cls = getattr(printer, "Settings", None)
            if missing or not (isinstance(settings_cls, type) and issubclass(settings_cls, msgspec.Struct)):
                raise PluginError(
                    f"La impresora {pid!r} no cumple la interfaz Printer (faltan: {', '.join(missing) or 'Settings'})."
                )
            if pid in found:
                raise PluginError(f"Impresora duplicada: {pid!r} está registrada por dos plugins.")
            found[pid] = printer

        pm.hook.register_printers(add_printer=add_printer)
        return cls(found)

    @classmethod
    def builtin(cls) -> PrinterRegistry:
        return cls({p.id: p for p in BUILTIN_PRINTERS})

    def get(self, printer_id: str) -> Printer:
        try:
            return self._printers[printer_id]
        except KeyError:
            raise ValidationFailed(f"Impresora desconocida: {printer_id!r}.", code="printer.unknown") from None

    def __contains__(self, printer_id: object) -> bool:
        return printer_id in self._printers

    def all(self) -> list[Printer]:
        return [self._printers[k] for k in sorted(self._printers)]


def validate_printer_settings(printer: Printer, raw: Mapping[str, Any] | None) -> tuple[Any, dict[str, str]]:
    """The printer's ``Settings`` from stored/submitted JSON, and field errors in Spanish."""
    try:
        settings = msgspec.convert(dict(raw or {}), printer.Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.startswith(("Expected", "Object ", "Invalid")):  # msgspec's own English
            message = spanish_validation(
                message, {spec.name: spec.title for spec in describe_settings(printer.Settings)}
            )
        return None, {"settings": f"Configuración inválida para {printer.name}: {message}."}
    return settings, printer.check(settings)
