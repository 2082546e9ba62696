"""The per-payment provider API: a ``typing.Protocol`` every payment plugin implements.

A provider holds only its own protocol and settings. The core owns the state machine, persistence, locks,
deadlines and fallback; it calls the provider with a validated ``Settings`` instance and a
``ChargeRequest`` and gets back an ``Outcome``.

Outcome kinds (what the core may conclude from them):

* ``APPROVED``    — the provider charged exactly this ticket and amount.
* ``DECLINED``    — definitive refusal; nothing was charged.
* ``PENDING``     — accepted, the final answer comes later (webhook, manual confirmation).
* ``UNAVAILABLE`` — provably nothing was charged (port missing, connection refused, no receipt and the
  terminal does not know the ticket). Safe to fall back.
* ``UNKNOWN``     — in doubt: anything else (time-out after receipt, corrupt or mismatched reply). Never
  safe to fall back without reconciliation.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import msgspec

from .carddata import scrub_text
from .errors import PluginError, ValidationFailed


class OutcomeKind(enum.StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    PENDING = "pending"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


class Capability(enum.StrEnum):
    INTEGRATED = "integrated"  # the provider talks to a device/API by itself (charge returns a final answer)
    MANUAL = "manual"  # a person charges elsewhere and confirms with references
    WEBHOOK = "webhook"  # final answers may arrive at /webhooks/{provider_id}
    CANCEL = "cancel"  # an in-progress charge can be cancelled
    REFUND = "refund"  # an approved charge can be refunded/voided
    STATUS = "status"  # what happened to a ticket can be asked (reconciliation)
    CASH = "cash"  # money in the drawer
    IDENTIFY = "identify"  # the device can say who it is (``identify``): serial number, terminal id
    TERMINAL_REPORT = "terminal_report"  # the device lists what it charged since its last batch close
    BATCH_CLOSE = "batch_close"  # caja can run the device's batch close (``close_batch``)


class CardData(msgspec.Struct, frozen=True, kw_only=True):
    """What may be kept about a card (PAYMENTS.md rule 10). Never a full number, track, CVV or PIN."""

    brand: str | None = None
    card_type: str | None = None  # "debito" / "credito" / provider's code
    last4: str | None = None
    authorization_code: str | None = None
    operation_id: str | None = None
    terminal_id: str | None = None
    installments: int | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    kind: OutcomeKind
    code: str | None = None  # the provider's response code, kept verbatim
    message: str = ""  # the provider's message, for people
    ticket: str | None = None  # the ticket the provider says this answer is for
    amount: int | None = None  # the amount the provider says it charged
    card: CardData | None = None
    reference: str | None = None  # provider-side reference (order id, operation id)
    occurred_at: datetime | None = None  # when the device says the operation happened (aware UTC)

    def __post_init__(self) -> None:
        # Whatever a provider read from its device or API, no card number or track reaches the core.
        if self.message:
            msgspec.structs.force_setattr(self, "message", scrub_text(self.message))

    @property
    def is_final(self) -> bool:
        return self.kind in (OutcomeKind.APPROVED, OutcomeKind.DECLINED, OutcomeKind.UNAVAILABLE)


class DeviceIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who a device says it is. The same physical device gives the same ``identity`` however it is reached
    (another spelling of its address, another port, through an agent)."""

    identity: str  # stable and unique for the physical device, e.g. "<model>:<serial number>"
    label: str = ""  # for people: model, serial number, terminal id
    clock: datetime | None = None  # the device's own clock when it answered (aware UTC), to measure skew


class TerminalSale(msgspec.Struct, frozen=True, kw_only=True):
    """One operation in a device's own list of what it did since its last batch close."""

    ticket: str
    amount: int
    approved: bool
    authorization_code: str | None = None
    occurred_at: datetime | None = None  # the device's date/time of the operation (aware UTC)
    card: CardData | None = None


class TerminalReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a device says it charged since its last batch close: its totals and, when it gives them, the
    operations one by one."""

    count: int
    total: int
    sales: list[TerminalSale] = []
    taken_at: datetime | None = None  # the device's clock when it answered (aware UTC)


class Progress(msgspec.Struct, frozen=True):
    """An intermediate message (insert card, PIN…). Progress is never a result."""

    message: str
    code: int | None = None

    def __post_init__(self) -> None:
        if self.message:
            msgspec.structs.force_setattr(self, "message", scrub_text(self.message))


ProgressCallback = Callable[[Progress], Awaitable[None]]


class ChargeRequest(msgspec.Struct, frozen=True, kw_only=True):
    attempt_id: int
    ticket: str  # unique per device until its batch close: the idempotency key
    amount: int  # whole CLP
    register_id: int
    register_code: str
    venue_id: int
    device_key: str  # what the provider said identifies the device (locks, breaker)
    description: str = ""
    employee_id: str | None = None
    reference: str | None = None  # short human reference for manual providers
    card: CardData | None = None  # known card data (refund/return by authorization code)


class WebhookNotice(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider made of an incoming webhook, before the core checks it against the attempt."""

    external_id: str  # the provider's id for this notification's subject (order id): idempotency
    reference: str  # our reference (attempt id) the provider echoes back
    outcome: Outcome


class AgentChannel(Protocol):
    """How a provider reaches a device that hangs off a register PC (through ``caja agent``)."""

    async def exchange(
        self, command: dict[str, Any], *, deadline_s: float, progress: ProgressCallback | None = None
    ) -> dict[str, Any]: ...


class ProviderContext(msgspec.Struct, frozen=True, kw_only=True):
    """Per-call context the core hands a provider. ``agent`` is set when the register uses an agent."""

    register_id: int
    venue_id: int
    agent: Any = None


@runtime_checkable
class PaymentProvider(Protocol):
    """What a payment plugin implements. See plugins/README.md for the contract of each method."""

    # Read-only for the core: a provider may define them as class attributes, instance attributes or properties.
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def Settings(self) -> type[msgspec.Struct]: ...
    @property
    def capabilities(self) -> frozenset[Capability]: ...
    @property
    def min_amount(self) -> int: ...

    def device_key(self, settings: Any, register_code: str) -> str: ...

    async def charge(
        self, request: ChargeRequest, settings: Any, ctx: ProviderContext, progress: ProgressCallback
    ) -> Outcome: ...

    async def status(self, request: ChargeRequest, settings: Any, ctx: ProviderContext) -> Outcome: ...

    async def cancel(self, request: ChargeRequest, settings: Any, ctx: ProviderContext) -> Outcome: ...

    async def refund(self, request: ChargeRequest, settings: Any, ctx: ProviderContext) -> Outcome: ...

    async def health(self, settings: Any, ctx: ProviderContext) -> Outcome: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: Any) -> bool: ...


def validate_settings(provider: PaymentProvider, raw: Mapping[str, Any] | None) -> Any:
    """Turn a register's stored JSON into the provider's ``Settings`` instance, with a Spanish error."""
    try:
        return msgspec.convert(dict(raw or {}), provider.Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(
            f"Configuración inválida para {provider.name}: {exc}",
            code="provider.settings_invalid",
            field=f"settings_{provider.id}",
        ) from exc


def settings_to_json(settings: msgspec.Struct) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(settings)
    return data


_REQUIRED = ("charge", "status", "cancel", "refund", "health", "parse_webhook", "verify_webhook", "device_key")


class ProviderRegistry:
    """The validated set of providers, built once at start-up from the ``register_providers`` hook."""

    def __init__(self, providers: Mapping[str, PaymentProvider]) -> None:
        self._providers = dict(providers)

    @classmethod
    def from_plugin_manager(cls, pm: Any) -> ProviderRegistry:
        found: dict[str, PaymentProvider] = {}

        def add_provider(provider: PaymentProvider) -> None:
            pid = getattr(provider, "id", None)
            if not isinstance(pid, str) or not pid.isidentifier() or pid.lower() != pid:
                raise PluginError(f"Proveedor con id inválido: {pid!r} (se espera minúsculas, p. ej. 'getnet').")
            missing = [m for m in _REQUIRED if not callable(getattr(provider, m, None))]
            settings_cls = getattr(provider, "Settings", None)
            if missing or not (isinstance(settings_cls, type) and issubclass(settings_cls, msgspec.Struct)):
                raise PluginError(
                    f"El proveedor {pid!r} no cumple la interfaz PaymentProvider "
                    f"(faltan: {', '.join(missing) or 'Settings'})."
                )
            if pid in found:
                raise PluginError(f"Proveedor duplicado: {pid!r} está registrado por dos plugins.")
            found[pid] = provider

        pm.hook.register_providers(add_provider=add_provider)
        return cls(found)

    def get(self, provider_id: str) -> PaymentProvider:
        try:
            return self._providers[provider_id]
        except KeyError:
            raise ValidationFailed(
                f"Proveedor de pago desconocido: {provider_id!r}.", code="provider.unknown"
            ) from None

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._providers

    def ids(self) -> list[str]:
        return sorted(self._providers)

    def all(self) -> list[PaymentProvider]:
        return [self._providers[k] for k in self.ids()]
