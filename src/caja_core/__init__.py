"""caja core: the domain, persistence and plugin system of the caja cash-register and payment system.

The public API is small: plugin authors need ``hookimpl``, the provider types and ``Money`` helpers;
applications use the services of each area and ``Database``.
"""

from .errors import AuthFailed, Busy, CajaError, Conflict, Forbidden, NotFound, PluginError, ValidationFailed
from .hookspecs import hookimpl
from .money import format_clp, parse_amount
from .providers import (
    AgentChannel,
    Capability,
    CardData,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    PaymentProvider,
    Progress,
    ProgressCallback,
    ProviderContext,
    ProviderDefault,
    ProviderRegistry,
    RegisterDefaults,
    WebhookNotice,
)

__version__ = "0.1.0"

__all__ = [
    "AgentChannel",
    "AuthFailed",
    "Busy",
    "CajaError",
    "Capability",
    "CardData",
    "ChargeRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Outcome",
    "OutcomeKind",
    "PaymentProvider",
    "PluginError",
    "Progress",
    "ProgressCallback",
    "ProviderContext",
    "ProviderDefault",
    "ProviderRegistry",
    "RegisterDefaults",
    "ValidationFailed",
    "WebhookNotice",
    "format_clp",
    "hookimpl",
    "parse_amount",
]
