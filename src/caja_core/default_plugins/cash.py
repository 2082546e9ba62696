"""The built-in cash provider: money in the drawer, approved at once, nothing to reconcile."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from ..errors import ValidationFailed
from ..hookspecs import hookimpl
from ..providers import (
    Capability,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    PaymentProvider,
    ProgressCallback,
    ProviderContext,
    WebhookNotice,
)


class CashSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class CashProvider:
    id = "cash"
    name = "Efectivo"
    Settings = CashSettings
    capabilities = frozenset({Capability.CASH})
    min_amount = 1

    def device_key(self, settings: CashSettings, register_code: str) -> str:
        return f"cash:{register_code}"

    async def charge(
        self, request: ChargeRequest, settings: CashSettings, ctx: ProviderContext, progress: ProgressCallback
    ) -> Outcome:
        return Outcome(
            kind=OutcomeKind.APPROVED, ticket=request.ticket, amount=request.amount, message="Efectivo recibido"
        )

    async def status(self, request: ChargeRequest, settings: CashSettings, ctx: ProviderContext) -> Outcome:
        return Outcome(kind=OutcomeKind.APPROVED, ticket=request.ticket, amount=request.amount)

    async def cancel(self, request: ChargeRequest, settings: CashSettings, ctx: ProviderContext) -> Outcome:
        return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message="Nada que cancelar")

    async def refund(self, request: ChargeRequest, settings: CashSettings, ctx: ProviderContext) -> Outcome:
        return Outcome(
            kind=OutcomeKind.APPROVED,
            ticket=request.ticket,
            amount=request.amount,
            message="Devolver el efectivo al cliente",
        )

    async def health(self, settings: CashSettings, ctx: ProviderContext) -> Outcome:
        return Outcome(kind=OutcomeKind.APPROVED, message="ok")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        raise ValidationFailed("El proveedor efectivo no recibe webhooks.", code="webhook.unsupported")

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: CashSettings) -> bool:
        return False


provider = CashProvider()


@hookimpl
def register_providers(add_provider: Callable[[PaymentProvider], None]) -> None:
    add_provider(provider)
