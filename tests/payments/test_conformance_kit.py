"""The conformance kit itself: a sound provider of each kind passes every check, and each check fails against a
provider that breaks exactly the rule it checks (so no check of the kit passes whatever the provider does)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from caja_core.errors import ValidationFailed
from caja_core.hookspecs import hookimpl
from caja_core.plugins import make_plugin_manager
from caja_core.providers import Capability, Outcome, OutcomeKind, Progress, WebhookNotice
from caja_core.testing.conformance import ProviderConformance

INTEGRATED = frozenset({Capability.INTEGRATED, Capability.STATUS})
CHECKOUT = frozenset({Capability.WEBHOOK, Capability.STATUS})
MANUAL = frozenset({Capability.MANUAL})


class ToySettings(msgspec.Struct, kw_only=True):
    timeout_s: float = 0.2


class Toy:
    """An in-memory provider of any kind; ``broken`` names the rules it breaks."""

    id = "toy"
    name = "Toy"
    Settings = ToySettings
    min_amount = 1

    def __init__(self, capabilities: frozenset[Capability] = INTEGRATED, *broken: str) -> None:
        self.capabilities = capabilities
        self.broken = set(broken)
        self.next_reply = "approved"
        self.unreachable = False  # "unavailable" was scripted: nothing answers any more
        self.ledger: dict[str, int] = {}  # ticket (or order) → amount charged
        self.orders: dict[str, str] = {}  # checkout: order → ticket

    def device_key(self, settings: ToySettings, register_code: str) -> str:
        return "toy:1"

    async def charge(self, request: Any, settings: ToySettings, ctx: Any, progress: Any) -> Outcome:
        reply, self.next_reply = self.next_reply, "approved"
        if Capability.MANUAL in self.capabilities:
            if "manual_approves" in self.broken:
                return Outcome(kind=OutcomeKind.APPROVED, ticket=request.ticket, amount=request.amount)
            return Outcome(kind=OutcomeKind.PENDING, reference="ABC123", message="Cobre en el celular")
        if reply == "unavailable":
            return Outcome(
                kind=OutcomeKind.UNKNOWN if "unreachable_unknown" in self.broken else OutcomeKind.UNAVAILABLE
            )
        if reply == "silent":
            if "silence_declined" in self.broken:
                return Outcome(kind=OutcomeKind.DECLINED, code="timeout")
            if "silence_pending" in self.broken:
                return Outcome(kind=OutcomeKind.PENDING, reference="ord-silent")
            if "silence_hangs" in self.broken:
                await asyncio.Event().wait()  # ignores its own time-out
            await asyncio.sleep(settings.timeout_s * (20 if "silence_forever" in self.broken else 1))
            return Outcome(kind=OutcomeKind.UNKNOWN)
        await progress(Progress("Acerque la tarjeta"))
        if reply == "declined":
            return Outcome(kind=OutcomeKind.DECLINED, code="" if "declined_without_code" in self.broken else "51")
        if Capability.WEBHOOK in self.capabilities:
            order = f"ord-{request.ticket}"
            self.orders[order] = request.ticket
            return Outcome(
                kind=OutcomeKind.PENDING, reference=None if "order_without_reference" in self.broken else order
            )
        self.ledger[request.ticket] = request.amount
        amount = request.amount + 1 if "approves_another_amount" in self.broken else request.amount
        return Outcome(kind=OutcomeKind.APPROVED, code="00", ticket=request.ticket, amount=amount)

    async def status(self, request: Any, settings: ToySettings, ctx: Any) -> Outcome:
        if self.unreachable:
            if "status_unreachable_unavailable" in self.broken:
                return Outcome(kind=OutcomeKind.UNAVAILABLE)  # "not charged" without asking anyone
            if "status_unreachable_raises" in self.broken:
                raise ValidationFailed("Sin conexión.")
            return Outcome(kind=OutcomeKind.UNKNOWN, message="Sin conexión")
        if "status_hangs" in self.broken:
            await asyncio.Event().wait()  # never answers, whatever the deadline
        if "status_invents" in self.broken:
            return Outcome(kind=OutcomeKind.APPROVED, ticket=request.ticket, amount=request.amount)
        ticket = self.orders.get(request.reference or "", request.ticket)
        if ticket in self.ledger and "status_forgets" not in self.broken:
            return Outcome(kind=OutcomeKind.APPROVED, ticket=ticket, amount=self.ledger[ticket])
        if "status_unknown_forever" in self.broken:
            return Outcome(kind=OutcomeKind.UNKNOWN, message="No sé")  # even when the device says it has none
        if "status_declines_unknown" in self.broken:
            return Outcome(kind=OutcomeKind.DECLINED, code="404")
        if "status_pending_unknown" in self.broken:
            return Outcome(kind=OutcomeKind.PENDING)
        return Outcome(kind=OutcomeKind.UNAVAILABLE)

    async def cancel(self, request: Any, settings: ToySettings, ctx: Any) -> Any:
        if "cancel_hangs" in self.broken:
            await asyncio.Event().wait()
        if "cancel_not_an_outcome" in self.broken:
            return "cancelado"
        if "cancel_raises" in self.broken:
            raise RuntimeError("cancel roto")
        if "cancel_charges" in self.broken:
            self.ledger[request.ticket] = request.amount
        if "cancel_leaks_card" in self.broken:
            return Outcome(kind=OutcomeKind.APPROVED, message="", card=None, reference="4111111111111111")
        if self.unreachable:
            if "cancel_unreachable_raises" in self.broken:
                raise OSError("Conexión rechazada")
            if "cancel_unreachable_approves" in self.broken:
                return Outcome(kind=OutcomeKind.APPROVED, message="Cancelada")
            return Outcome(kind=OutcomeKind.UNAVAILABLE, message="Sin conexión")
        return Outcome(kind=OutcomeKind.APPROVED)

    async def refund(self, request: Any, settings: ToySettings, ctx: Any) -> Outcome:
        return Outcome(kind=OutcomeKind.APPROVED)

    async def health(self, settings: ToySettings, ctx: Any) -> Any:
        if "health_hangs" in self.broken:
            await asyncio.Event().wait()
        return "ok" if "health_not_an_outcome" in self.broken else Outcome(kind=OutcomeKind.APPROVED)

    def parse_webhook(self, headers: Any, body: bytes) -> WebhookNotice:
        data = msgspec.json.decode(body) if body.startswith(b"{") else None
        if data is None or (Capability.WEBHOOK not in self.capabilities and "webhook_accepted" not in self.broken):
            raise ValidationFailed("No es una notificación.")
        return WebhookNotice(
            external_id=str(data.get("order_id")),
            reference=str(data.get("reference_id")),
            outcome=Outcome(kind=OutcomeKind.APPROVED, amount=data.get("amount")),
        )

    def verify_webhook(self, headers: Any, body: bytes, settings: ToySettings) -> bool:
        if "webhook_unsigned" in self.broken:
            return True
        return headers.get("x-firma") == str(hash(body))


class ToySync(Toy):
    def status(self, request: Any, settings: ToySettings, ctx: Any) -> Outcome:  # type: ignore[override]
        return Outcome(kind=OutcomeKind.UNKNOWN)


class Kit(ProviderConformance):
    silent_timeout_s = 0.5

    async def script_upstream(self, upstream: Toy, reply: str) -> None:
        upstream.next_reply = reply
        upstream.unreachable = upstream.unreachable or reply == "unavailable"

    async def pay_upstream(self, upstream: Toy, request: Any, outcome: Outcome) -> None:
        upstream.ledger[upstream.orders[outcome.reference or ""]] = request.amount

    def webhook_for(self, settings: Any, request: Any, outcome: Outcome) -> tuple[dict[str, str], bytes]:
        body = msgspec.json.encode(
            {"order_id": f"ord-{request.ticket}", "reference_id": str(request.attempt_id), "amount": outcome.amount}
        )
        return {"x-firma": str(hash(body))}, body


CHECKS = (
    "test_shape",
    "test_registration",
    "test_approved_maps_to_approved",
    "test_declined_maps_to_declined_with_code",
    "test_unreachable_maps_to_unavailable",
    "test_silence_maps_to_unknown_never_declined",
    "test_status_finds_approved_ticket_and_never_invents_one",
    "test_status_of_a_ticket_the_device_does_not_know_is_unavailable",
    "test_status_when_the_device_cannot_be_reached_is_unknown",
    "test_cancel_answers_an_outcome_and_charges_nothing",
    "test_health_answers_an_outcome",
    "test_webhook_round_trip",
)


def _make_pm(*plugins: object, load_entrypoints: bool = False) -> Any:
    return make_plugin_manager(*plugins, load_entrypoints=load_entrypoints)


async def run_check(kit: Kit, check: str, provider: Toy) -> None:
    settings = ToySettings()
    method: Callable[..., Any] = getattr(kit, check)
    arguments = {"provider": provider, "settings": settings, "upstream": provider, "make_caja_pm": _make_pm}
    wanted = {name: arguments[name] for name in method.__code__.co_varnames[1 : method.__code__.co_argcount]}
    result = method(**wanted)
    if asyncio.iscoroutine(result):
        await result


@pytest.mark.parametrize("capabilities", [INTEGRATED, CHECKOUT, MANUAL], ids=["integrated", "checkout", "manual"])
@pytest.mark.parametrize("check", CHECKS)
async def test_a_sound_provider_of_every_kind_passes(check: str, capabilities: frozenset[Capability]) -> None:
    await run_check(Kit(), check, Toy(capabilities))


class _EmptyPlugin:
    @hookimpl
    def register_providers(self, add_provider: Callable[[Any], None]) -> None:
        return None  # forgets to add its provider


BROKEN = [
    ("test_shape", INTEGRATED, "a synchronous status"),
    ("test_registration", INTEGRATED, "a plugin that registers nothing"),
    ("test_approved_maps_to_approved", INTEGRATED, "approves_another_amount"),
    ("test_approved_maps_to_approved", CHECKOUT, "order_without_reference"),
    ("test_approved_maps_to_approved", MANUAL, "manual_approves"),
    ("test_declined_maps_to_declined_with_code", INTEGRATED, "declined_without_code"),
    ("test_declined_maps_to_declined_with_code", MANUAL, "manual_approves"),
    ("test_unreachable_maps_to_unavailable", INTEGRATED, "unreachable_unknown"),
    ("test_unreachable_maps_to_unavailable", CHECKOUT, "unreachable_unknown"),
    ("test_silence_maps_to_unknown_never_declined", INTEGRATED, "silence_declined"),
    ("test_silence_maps_to_unknown_never_declined", INTEGRATED, "silence_forever"),
    ("test_silence_maps_to_unknown_never_declined", INTEGRATED, "silence_hangs"),
    ("test_silence_maps_to_unknown_never_declined", CHECKOUT, "silence_pending"),
    ("test_status_finds_approved_ticket_and_never_invents_one", INTEGRATED, "status_invents"),
    ("test_status_finds_approved_ticket_and_never_invents_one", INTEGRATED, "status_forgets"),
    ("test_status_finds_approved_ticket_and_never_invents_one", CHECKOUT, "status_forgets"),
    ("test_status_finds_approved_ticket_and_never_invents_one", MANUAL, "status_invents"),
    ("test_status_finds_approved_ticket_and_never_invents_one", INTEGRATED, "status_hangs"),
    ("test_status_finds_approved_ticket_and_never_invents_one", MANUAL, "status_hangs"),
    ("test_status_of_a_ticket_the_device_does_not_know_is_unavailable", INTEGRATED, "status_unknown_forever"),
    ("test_status_of_a_ticket_the_device_does_not_know_is_unavailable", INTEGRATED, "status_declines_unknown"),
    ("test_status_of_a_ticket_the_device_does_not_know_is_unavailable", CHECKOUT, "status_unknown_forever"),
    ("test_status_of_a_ticket_the_device_does_not_know_is_unavailable", CHECKOUT, "status_pending_unknown"),
    ("test_status_of_a_ticket_the_device_does_not_know_is_unavailable", MANUAL, "status_invents"),
    ("test_status_when_the_device_cannot_be_reached_is_unknown", INTEGRATED, "status_unreachable_unavailable"),
    ("test_status_when_the_device_cannot_be_reached_is_unknown", INTEGRATED, "status_unreachable_raises"),
    ("test_status_when_the_device_cannot_be_reached_is_unknown", CHECKOUT, "status_unreachable_unavailable"),
    ("test_status_when_the_device_cannot_be_reached_is_unknown", MANUAL, "status_invents"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_not_an_outcome"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_raises"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_hangs"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_charges"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_leaks_card"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_unreachable_raises"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", INTEGRATED, "cancel_unreachable_approves"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", CHECKOUT, "cancel_unreachable_approves"),
    ("test_cancel_answers_an_outcome_and_charges_nothing", MANUAL, "cancel_not_an_outcome"),
    ("test_health_answers_an_outcome", INTEGRATED, "health_not_an_outcome"),
    ("test_health_answers_an_outcome", INTEGRATED, "health_hangs"),
    ("test_webhook_round_trip", INTEGRATED, "webhook_accepted"),
    ("test_webhook_round_trip", CHECKOUT, "webhook_unsigned"),
]


@pytest.mark.parametrize(
    ("check", "capabilities", "broken"), BROKEN, ids=[f"{c[5:]}-{b.replace(' ', '_')}" for c, _, b in BROKEN]
)
async def test_each_check_fails_against_a_provider_that_breaks_its_rule(
    check: str, capabilities: frozenset[Capability], broken: str
) -> None:
    kit = Kit()
    if broken == "a synchronous status":
        provider: Toy = ToySync(capabilities)
    elif broken == "a plugin that registers nothing":
        kit.plugin = _EmptyPlugin()
        provider = Toy(capabilities)
    else:
        provider = Toy(capabilities, broken)
    with pytest.raises((AssertionError, pytest.fail.Exception)):  # a failed assert, or pytest.raises unmet
        await run_check(kit, check, provider)
    # …and the same check passes once the provider keeps the rule: the failure was the rule's.
    await run_check(Kit(), check, Toy(capabilities))
