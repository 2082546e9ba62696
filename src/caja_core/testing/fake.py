"""A scriptable payment provider for tests and rehearsals.

Script each call with ``Step``s: the outcome kind, a delay, a hang (never answers until cancelled), or a
crash point (``os._exit`` at a named moment, for kill -9 style tests in a subprocess). The provider keeps a
ledger of what it actually charged, so tests can check charges == approved attempts == paid sales.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Mapping

import msgspec

from ..errors import ValidationFailed
from ..providers import (CardData, Capability, ChargeRequest, Outcome, OutcomeKind, Progress, ProgressCallback,
                         ProviderContext, WebhookNotice)


class FakeSettings(msgspec.Struct, kw_only=True):
    device: str = "fake-1"
    webhook_secret: str = "fake-secret"


class Step(msgspec.Struct, kw_only=True):
    """What the next call does. ``charged`` says whether the provider really took the money (by default:
    approved charges are charged; ``UNKNOWN`` with ``charged=True`` models "approved but the answer was
    lost")."""

    kind: OutcomeKind = OutcomeKind.APPROVED
    delay_s: float = 0.0
    hang: bool = False
    code: str | None = None
    message: str = ""
    charged: bool | None = None
    amount: int | None = None       # report a different amount than requested
    progress: list[str] = msgspec.field(default_factory=list)
    crash: bool = False             # os._exit(137) after the provider "sent" the request
    raise_exc: bool = False         # raise ConnectionError (a transport fault)


class FakeProvider:
    id = "fake"
    name = "Proveedor de prueba"
    Settings = FakeSettings
    capabilities = frozenset({Capability.INTEGRATED, Capability.CANCEL, Capability.STATUS, Capability.REFUND,
                              Capability.WEBHOOK})
    min_amount = 1

    def __init__(self, provider_id: str = "fake", name: str | None = None) -> None:
        self.id = provider_id
        self.name = name or f"Proveedor de prueba ({provider_id})"
        self.scripts: dict[str, deque[Step]] = {m: deque() for m in ("charge", "status", "cancel", "refund", "health")}
        self.ledger: dict[str, int] = {}       # ticket -> amount actually charged
        self.calls: list[tuple[str, str | None]] = []
        self.refunded: dict[str, int] = {}

    # scripting -------------------------------------------------------------------------------------
    def script(self, method: str, *steps: Step) -> FakeProvider:
        self.scripts[method].extend(steps)
        return self

    def _next(self, method: str, default: Step) -> Step:
        queue = self.scripts[method]
        return queue.popleft() if queue else default

    async def _run(self, step: Step, progress: ProgressCallback | None = None) -> None:
        for text in step.progress:
            if progress:
                await progress(Progress(message=text))
        if step.hang:
            await asyncio.Event().wait()
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.raise_exc:
            raise ConnectionError("transport fault (scripted)")

    # protocol --------------------------------------------------------------------------------------
    def device_key(self, settings: FakeSettings, register_code: str) -> str:
        return f"{self.id}:{settings.device}"

    async def charge(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext,
                     progress: ProgressCallback) -> Outcome:
        self.calls.append(("charge", request.ticket))
        step = self._next("charge", Step())
        charged = step.charged if step.charged is not None else step.kind is OutcomeKind.APPROVED
        if step.crash:
            if charged:
                self.ledger[request.ticket] = request.amount
            os._exit(137)
        await self._run(step, progress)
        if charged:
            self.ledger[request.ticket] = step.amount or request.amount
        return self._outcome(step, request)

    def _outcome(self, step: Step, request: ChargeRequest) -> Outcome:
        card = None
        if step.kind is OutcomeKind.APPROVED:
            card = CardData(brand="VI", card_type="DB", last4="4242", authorization_code="A1B2C3",
                            operation_id="0", terminal_id="FAKE0001")
        return Outcome(kind=step.kind, code=step.code or ("0" if step.kind is OutcomeKind.APPROVED else None),
                       message=step.message, ticket=request.ticket, amount=step.amount or request.amount,
                       card=card)

    async def status(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("status", request.ticket))
        queued = self.scripts["status"]
        if queued:
            step = queued.popleft()
            await self._run(step)
            return self._outcome(step, request)
        if request.ticket in self.ledger:
            return self._outcome(Step(kind=OutcomeKind.APPROVED, amount=self.ledger[request.ticket]), request)
        return Outcome(kind=OutcomeKind.UNAVAILABLE, ticket=request.ticket, message="Ticket no encontrado")

    async def cancel(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("cancel", request.ticket))
        step = self._next("cancel", Step(kind=OutcomeKind.APPROVED))
        await self._run(step)
        return Outcome(kind=step.kind, ticket=request.ticket, message=step.message or "Cancelado")

    async def refund(self, request: ChargeRequest, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("refund", request.ticket))
        step = self._next("refund", Step(kind=OutcomeKind.APPROVED))
        await self._run(step)
        if step.kind is OutcomeKind.APPROVED and request.ticket in self.ledger:
            self.refunded[request.ticket] = self.ledger.pop(request.ticket)
        return Outcome(kind=step.kind, ticket=request.ticket, amount=request.amount, message="Anulado")

    async def health(self, settings: FakeSettings, ctx: ProviderContext) -> Outcome:
        self.calls.append(("health", None))
        step = self._next("health", Step(kind=OutcomeKind.APPROVED))
        await self._run(step)
        return Outcome(kind=step.kind, message=step.message or "ok")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        try:
            data = msgspec.json.decode(body)
            return WebhookNotice(external_id=str(data["order_id"]), reference=str(data["reference_id"]),
                                 outcome=Outcome(kind=OutcomeKind(data.get("status", "approved")),
                                                 amount=int(data["amount"])))
        except (msgspec.DecodeError, KeyError, ValueError, TypeError) as exc:
            raise ValidationFailed("Notificación mal formada.", code="webhook.malformed") from exc

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: FakeSettings) -> bool:
        return headers.get("x-fake-secret") == settings.webhook_secret
