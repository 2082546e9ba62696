"""Import every model so that ``Base.metadata`` holds the whole schema (Alembic's target)."""

from ..audit.models import AuditEvent, Incident
from ..catalog.models import Category, Modifier, Product, ProductPrice
from ..dashboard.models import ProductSales, SalesQuarter
from ..jornadas.models import Jornada
from ..offline.models import OfflineDevice, OfflinePeriod, OfflineRule, OfflineSale
from ..ops.models import OpsProcess
from ..payments.models import (
    AgentCommand,
    BreakerState,
    DeviceLease,
    PaymentAttempt,
    PaymentDevice,
    TerminalCheck,
    TerminalClose,
    TicketSeries,
    WebhookEvent,
)
from ..permissions.models import Authorization
from ..printing.models import PrintJob
from ..registers.models import BackupPhone, CashRegister
from ..sales.models import Sale, SaleDiscount, SaleItem
from ..sessions.models import CashMovement, CashSession, FallbackEvent, SessionHandover, SessionTotal
from ..users.models import AuthThrottle, User, WebSession
from ..venues.models import Venue
from .base import Base

metadata = Base.metadata

__all__ = [
    "AgentCommand",
    "AuditEvent",
    "AuthThrottle",
    "Authorization",
    "BackupPhone",
    "Base",
    "BreakerState",
    "CashMovement",
    "CashRegister",
    "CashSession",
    "Category",
    "DeviceLease",
    "FallbackEvent",
    "Incident",
    "Jornada",
    "Modifier",
    "OfflineDevice",
    "OfflinePeriod",
    "OfflineRule",
    "OfflineSale",
    "OpsProcess",
    "PaymentAttempt",
    "PaymentDevice",
    "PrintJob",
    "Product",
    "ProductPrice",
    "ProductSales",
    "Sale",
    "SaleDiscount",
    "SaleItem",
    "SalesQuarter",
    "SessionHandover",
    "SessionTotal",
    "TerminalCheck",
    "TerminalClose",
    "TicketSeries",
    "User",
    "Venue",
    "WebSession",
    "WebhookEvent",
    "metadata",
]
