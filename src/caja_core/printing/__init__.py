"""Receipt printers: the ``register_printers`` hook, the built-in printers (ESC/POS over TCP, serial and
USB, and the POS's browser), tickets as documents, print jobs and the drawer. See plugins/README.md."""

from .config import ComandaRoute, PrinterConfig, load_config, validate_config
from .document import Document, Line, render_escpos
from .drivers import Printer, PrinterRegistry
from .service import JobOut, PrintService, SalePrint

__all__ = [
    "ComandaRoute",
    "Document",
    "JobOut",
    "Line",
    "PrintService",
    "Printer",
    "PrinterConfig",
    "PrinterRegistry",
    "SalePrint",
    "load_config",
    "render_escpos",
    "validate_config",
]
