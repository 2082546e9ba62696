"""``ProviderConformance``: the tests every payment provider plugin must pass (fsspec style).

A plugin's test module subclasses it and supplies fixtures and a few hooks::

    import pytest
    from caja_core.testing.conformance import ProviderConformance

    class TestMiProveedor(ProviderConformance):
        plugin = caja_mi_proveedor.plugin          # the module/object with the register_providers hookimpl

        @pytest.fixture
        def upstream(self):                        # optional: the plugin's simulator / fake API
            with MiSimulador() as sim:
                yield sim

        @pytest.fixture
        def provider(self):
            return MiProveedor()

        @pytest.fixture
        def settings(self, upstream):
            return MiProveedor.Settings(url=upstream.url, timeout_s=1)

        async def script_upstream(self, upstream, reply):
            upstream.next_reply = reply            # "approved" / "declined" / "unavailable" / "silent"

The base class then checks, with real calls through the provider:

* shape: id, name, ``Settings`` Struct, capabilities, ``min_amount``, every method of the protocol present and
  async where it must be, a stable ``device_key``;
* registration: the plugin's ``register_providers`` adds the provider under its id, settings round-trip;
* outcome mapping for scripted upstream replies: approved → APPROVED (same ticket and amount, masked card
  data only), declined → DECLINED with the code kept, unavailable → UNAVAILABLE, and **silence → UNKNOWN,
  never DECLINED or UNAVAILABLE** (a time-out is "in doubt", not "not charged");
* reconciliation: ``status`` never reports a ticket nobody charged as approved (every provider), and finds an
  approved one (providers with ``Capability.STATUS``); a ticket the device (or API) says it does not know is
  UNAVAILABLE (UNKNOWN allowed meanwhile for up to ``silent_timeout_s``, the core asks again), and a device that
  cannot be reached gives UNKNOWN, never UNAVAILABLE (integrated and checkout providers; ``script_upstream(…,
  "unavailable")`` must make the device unreachable for every later call, not only the next charge);
* cancel: answers an ``Outcome`` of any kind, in time, without card data, never raising, also without a device
  (then never APPROVED), and charges nothing;
* webhooks, when the provider has ``Capability.WEBHOOK``: a signed notice round-trips through
  ``verify_webhook`` and ``parse_webhook``; a tampered one is refused. Without the capability,
  ``parse_webhook`` refuses with a ``CajaError``.

Three kinds of provider, each checked for what it can promise:

* **integrated** (``Capability.INTEGRATED``: a terminal or an API answers the sale by itself): every check above;
* **checkout** (``Capability.WEBHOOK`` without INTEGRATED nor MANUAL: the charge creates an order the customer
  pays elsewhere, the answer comes by webhook or ``status``): approved → PENDING with the order's reference;
  unavailable → UNAVAILABLE; silence → UNKNOWN within ``silent_timeout_s``; after ``pay_upstream`` (the
  customer pays the order) ``status`` answers APPROVED with the amount;
* **manual** (``Capability.MANUAL``, a person charges on a phone): no upstream to script; ``charge`` must answer
  PENDING with a short reference for the cashier, and ``status`` never invents an approval.

Every check is marked ``asyncio`` itself, so the kit runs the same under pytest-asyncio's strict and auto modes.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import msgspec
import pytest

from ..errors import CajaError
from ..hookspecs import hookimpl
from ..providers import (
    Capability,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    Progress,
    ProviderContext,
    ProviderRegistry,
    settings_to_json,
    validate_settings,
)

REPLIES = ("approved", "declined", "unavailable", "silent")
_ASYNC = ("charge", "status", "cancel", "refund", "health")
_SYNC = ("device_key", "parse_webhook", "verify_webhook")
_PAN = re.compile(r"\d{13,19}")


class _Wrapper:
    def __init__(self, provider: Any) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, add_provider: Callable[[Any], None]) -> None:
        add_provider(self.provider)


class ProviderConformance:
    """Subclass me in a plugin's tests; see the module docstring."""

    #: The plugin object (module or instance) whose ``register_providers`` hookimpl adds the provider. None:
    #: the ``provider`` fixture is registered directly.
    plugin: ClassVar[Any] = None
    #: The provider must give up (UNKNOWN) within this many seconds when the upstream is silent; configure
    #: the ``settings`` fixture with short deadlines.
    silent_timeout_s: ClassVar[float] = 10.0
    #: Amount used by the charge checks (whole CLP; at least the provider's minimum).
    amount: ClassVar[int] = 12_500

    # fixtures a subclass may override ---------------------------------------------------------------
    @pytest.fixture
    def upstream(self) -> Any:
        return None

    @pytest.fixture
    def provider(self) -> Any:
        raise NotImplementedError("Defina el fixture `provider` en la subclase de ProviderConformance.")

    @pytest.fixture
    def settings(self, provider: Any) -> Any:
        return provider.Settings()

    # hooks a subclass implements ------------------------------------------------------------------------
    async def script_upstream(self, upstream: Any, reply: str) -> None:
        """Arrange that the next charge meets ``reply`` upstream: "approved", "declined", "unavailable" (the
        device/API cannot be reached at all, for this and every later call) or "silent" (it received the request
        and never answers)."""
        raise NotImplementedError("Implemente script_upstream(upstream, reply) para un proveedor integrado.")

    async def pay_upstream(self, upstream: Any, request: ChargeRequest, outcome: Outcome) -> None:
        """Checkout providers: the customer pays the order that ``charge`` created for ``request`` (``outcome``
        is what ``charge`` answered, with the order's reference)."""
        raise NotImplementedError("Implemente pay_upstream(upstream, request, outcome) para un proveedor de checkout.")

    def webhook_for(self, settings: Any, request: ChargeRequest, outcome: Outcome) -> tuple[Mapping[str, str], bytes]:
        """The headers and body the upstream would POST to ``/webhooks/{provider_id}`` for ``request``'s
        attempt (``request.attempt_id`` is our reference) with ``outcome`` (WEBHOOK providers only)."""
        raise NotImplementedError("Implemente webhook_for(settings, request, outcome) para un proveedor con webhooks.")

    def context(self, settings: Any, upstream: Any) -> ProviderContext:
        return ProviderContext(register_id=1, venue_id=1, agent=None)

    def make_request(self, provider: Any, settings: Any, *, ticket: str | None = None) -> ChargeRequest:
        ticket = ticket or str(uuid.uuid4().int % 900_000 + 100_000)
        return ChargeRequest(
            attempt_id=int(ticket),
            ticket=ticket,
            amount=max(self.amount, provider.min_amount),
            register_id=1,
            register_code="CAJA1",
            venue_id=1,
            device_key=provider.device_key(settings, "CAJA1"),
            description="Prueba",
            reference=f"R{ticket}"[:12],
        )

    # helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def capabilities(provider: Any, settings: Any) -> frozenset[Capability]:
        per_settings = getattr(provider, "capabilities_for", None)
        return frozenset(per_settings(settings) if callable(per_settings) else provider.capabilities)

    def kind(self, provider: Any, settings: Any) -> str:
        """ "manual", "integrated" or "checkout" (see the module docstring)."""
        caps = self.capabilities(provider, settings)
        if Capability.MANUAL in caps:
            return "manual"
        if Capability.INTEGRATED in caps:
            return "integrated"
        assert Capability.WEBHOOK in caps, "un proveedor es integrado, manual o de checkout (con webhooks)"
        return "checkout"

    def integrated(self, provider: Any, settings: Any) -> bool:
        return self.kind(provider, settings) == "integrated"

    async def _bounded(self, method: str, call: Any) -> Any:
        """Await one call of the provider; one that never answers, or raises, fails the check with one line
        instead of hanging the suite (the core would wait on it no longer than the policy's deadline)."""
        limit = self.silent_timeout_s + 5
        try:
            return await asyncio.wait_for(call, limit)
        except TimeoutError:
            pytest.fail(f"{method} no respondió en {limit:g} s: debe rendirse (UNKNOWN) antes", pytrace=False)
        except Exception as exc:  # noqa: BLE001 - a provider answers with an Outcome, it does not raise
            pytest.fail(
                f"{method} lanzó {type(exc).__name__}: {exc}; debe responder un Outcome (UNAVAILABLE o UNKNOWN)",
                pytrace=False,
            )

    async def _charge(
        self, provider: Any, settings: Any, upstream: Any, reply: str
    ) -> tuple[ChargeRequest, Outcome, list[Progress]]:
        await self.script_upstream(upstream, reply)
        request = self.make_request(provider, settings)
        seen: list[Progress] = []

        async def progress(p: Progress) -> None:
            seen.append(p)

        outcome = await self._bounded(
            "charge", provider.charge(request, settings, self.context(settings, upstream), progress)
        )
        assert isinstance(outcome, Outcome), f"charge devolvió {type(outcome).__name__}, no un Outcome"
        return request, outcome, seen

    @staticmethod
    def assert_no_card_data(outcome: Outcome) -> None:
        text = msgspec.json.encode(outcome).decode()
        assert not _PAN.search(text), f"el resultado contiene algo con forma de número de tarjeta: {text}"
        if outcome.card is not None and outcome.card.last4 is not None:
            assert re.fullmatch(r"\d{4}", outcome.card.last4), f"last4 inválido: {outcome.card.last4!r}"

    # the checks -----------------------------------------------------------------------------------------
    def test_shape(self, provider: Any, settings: Any) -> None:
        assert isinstance(provider.id, str) and provider.id.isidentifier() and provider.id == provider.id.lower()
        assert isinstance(provider.name, str) and provider.name.strip()
        assert isinstance(provider.Settings, type) and issubclass(provider.Settings, msgspec.Struct)
        assert isinstance(settings, provider.Settings)
        caps = self.capabilities(provider, settings)
        assert caps and all(isinstance(c, Capability) for c in caps)
        assert isinstance(provider.min_amount, int) and provider.min_amount >= 1
        for name in _ASYNC:
            assert inspect.iscoroutinefunction(getattr(provider, name)), f"{name} debe ser async"
        for name in _SYNC:
            method = getattr(provider, name)
            assert callable(method) and not inspect.iscoroutinefunction(method), f"{name} debe ser síncrono"
        key = provider.device_key(settings, "CAJA1")
        assert isinstance(key, str) and 0 < len(key) <= 160 and key == provider.device_key(settings, "CAJA1")

    def test_registration(self, provider: Any, settings: Any, make_caja_pm: Callable[..., Any]) -> None:
        plugin = self.plugin if self.plugin is not None else _Wrapper(provider)
        pm = make_caja_pm(plugin, load_entrypoints=False)
        registry = ProviderRegistry.from_plugin_manager(pm)
        assert provider.id in registry
        registered = registry.get(provider.id)
        assert registered.id == provider.id and type(registered) is type(provider)
        again = validate_settings(provider, settings_to_json(settings))
        assert again == settings

    @pytest.mark.asyncio
    async def test_approved_maps_to_approved(self, provider: Any, settings: Any, upstream: Any) -> None:
        kind = self.kind(provider, settings)
        if kind == "manual":
            await self._manual_charge_is_pending(provider, settings, upstream)
            return
        request, outcome, _ = await self._charge(provider, settings, upstream, "approved")
        if kind == "checkout":
            assert outcome.kind is OutcomeKind.PENDING, f"un checkout crea la orden y espera: {outcome}"
            assert outcome.reference, "la orden creada debe venir con su referencia"
            return
        assert outcome.kind is OutcomeKind.APPROVED, outcome
        assert outcome.ticket in (None, request.ticket) and outcome.amount in (None, request.amount), outcome
        self.assert_no_card_data(outcome)

    async def _manual_charge_is_pending(self, provider: Any, settings: Any, upstream: Any) -> None:
        request = self.make_request(provider, settings)
        outcome = await provider.charge(request, settings, self.context(settings, upstream), _ignore_progress)
        assert isinstance(outcome, Outcome), f"charge devolvió {type(outcome).__name__}, no un Outcome"
        assert outcome.kind is OutcomeKind.PENDING, f"un proveedor manual deja el cobro pendiente, no {outcome.kind}"
        assert outcome.reference or outcome.message, "un cobro pendiente debe dar una referencia al cajero"

    @pytest.mark.asyncio
    async def test_declined_maps_to_declined_with_code(self, provider: Any, settings: Any, upstream: Any) -> None:
        kind = self.kind(provider, settings)
        if kind == "manual":
            await self._manual_charge_is_pending(provider, settings, upstream)
            return
        if kind == "checkout":
            return  # a checkout's refusal comes later, through a webhook or status: test_webhook_round_trip
        _, outcome, _ = await self._charge(provider, settings, upstream, "declined")
        assert outcome.kind is OutcomeKind.DECLINED, outcome
        assert outcome.code not in (None, ""), "un rechazo conserva el código del proveedor"
        self.assert_no_card_data(outcome)

    @pytest.mark.asyncio
    async def test_unreachable_maps_to_unavailable(self, provider: Any, settings: Any, upstream: Any) -> None:
        if self.kind(provider, settings) == "manual":
            await self._manual_charge_is_pending(provider, settings, upstream)
            return
        _, outcome, _ = await self._charge(provider, settings, upstream, "unavailable")
        assert outcome.kind is OutcomeKind.UNAVAILABLE, f"sin conexión no se cobró nada: UNAVAILABLE, no {outcome}"

    @pytest.mark.asyncio
    async def test_silence_maps_to_unknown_never_declined(self, provider: Any, settings: Any, upstream: Any) -> None:
        if self.kind(provider, settings) == "manual":
            await self._manual_charge_is_pending(provider, settings, upstream)
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, outcome, progress = await self._charge(provider, settings, upstream, "silent")
        assert outcome.kind is OutcomeKind.UNKNOWN, f"un equipo mudo es 'en duda', no {outcome.kind}"
        assert loop.time() - started <= self.silent_timeout_s + 1, "charge no se rindió a tiempo"
        assert all(isinstance(p, Progress) for p in progress)

    @pytest.mark.asyncio
    async def test_status_finds_approved_ticket_and_never_invents_one(
        self, provider: Any, settings: Any, upstream: Any
    ) -> None:
        kind = self.kind(provider, settings)
        ctx = self.context(settings, upstream)
        if kind != "manual" and Capability.STATUS in self.capabilities(provider, settings):
            request, outcome, _ = await self._charge(provider, settings, upstream, "approved")
            if kind == "checkout":
                assert outcome.kind is OutcomeKind.PENDING, outcome
                await self.pay_upstream(upstream, request, outcome)
                # As the core does: later questions carry the provider's own reference of the order.
                request = msgspec.structs.replace(request, reference=outcome.reference or request.reference)
            else:
                assert outcome.kind is OutcomeKind.APPROVED, outcome
            found = await self._bounded("status", provider.status(request, settings, ctx))
            assert isinstance(found, Outcome), f"status devolvió {type(found).__name__}, no un Outcome"
            assert found.kind is OutcomeKind.APPROVED, f"status no encontró el ticket cobrado: {found}"
            assert found.amount in (None, request.amount), found
            self.assert_no_card_data(found)
        stranger = self.make_request(provider, settings, ticket="999001")
        unknown = await self._bounded("status", provider.status(stranger, settings, ctx))
        assert isinstance(unknown, Outcome), f"status devolvió {type(unknown).__name__}, no un Outcome"
        assert unknown.kind is not OutcomeKind.APPROVED, "un ticket que nunca se cobró no puede salir aprobado"

    async def _status_until_final(self, provider: Any, settings: Any, upstream: Any, request: ChargeRequest) -> Outcome:
        """Ask ``status`` as the core does, again while it answers UNKNOWN ("cannot tell now"), until
        ``silent_timeout_s`` has passed: the last answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.silent_timeout_s
        pause = 0.05
        while True:
            answer = await self._bounded("status", provider.status(request, settings, self.context(settings, upstream)))
            assert isinstance(answer, Outcome), f"status devolvió {type(answer).__name__}, no un Outcome"
            if answer.kind is not OutcomeKind.UNKNOWN or loop.time() >= deadline:
                return answer
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.5)

    @pytest.mark.asyncio
    async def test_status_of_a_ticket_the_device_does_not_know_is_unavailable(
        self, provider: Any, settings: Any, upstream: Any
    ) -> None:
        """The device (or API) answers that it has no such ticket: UNAVAILABLE, the proof that nothing was
        charged. UNKNOWN is allowed only while the device may still be working on it (re-asked, as the core
        does, for up to ``silent_timeout_s``); never APPROVED, DECLINED or PENDING. A manual provider has no
        device to ask (the cashier confirms its payments): its ``status`` is only checked never to approve."""
        if self.kind(provider, settings) == "manual":
            stranger = self.make_request(provider, settings, ticket="999002")
            answer = await self._bounded(
                "status", provider.status(stranger, settings, self.context(settings, upstream))
            )
            assert isinstance(answer, Outcome), f"status devolvió {type(answer).__name__}, no un Outcome"
            assert answer.kind is not OutcomeKind.APPROVED, "un ticket que nunca se cobró no puede salir aprobado"
            return
        stranger = self.make_request(provider, settings, ticket="999002")
        answer = await self._status_until_final(provider, settings, upstream, stranger)
        assert answer.kind is OutcomeKind.UNAVAILABLE, (
            f"el equipo no conoce el ticket: status debe responder UNAVAILABLE (no cobrado), no {answer.kind}: {answer}"
        )

    @pytest.mark.asyncio
    async def test_status_when_the_device_cannot_be_reached_is_unknown(
        self, provider: Any, settings: Any, upstream: Any
    ) -> None:
        """Nobody answered the question: UNKNOWN ("cannot tell now", the core asks again later), never
        UNAVAILABLE (that would be "not charged" without asking) nor an exception. Manual providers: as above."""
        if self.kind(provider, settings) == "manual":
            await self.test_status_of_a_ticket_the_device_does_not_know_is_unavailable(provider, settings, upstream)
            return
        request = self.make_request(provider, settings)
        await self.script_upstream(upstream, "unavailable")
        answer = await self._bounded("status", provider.status(request, settings, self.context(settings, upstream)))
        assert isinstance(answer, Outcome), f"status devolvió {type(answer).__name__}, no un Outcome"
        assert answer.kind is OutcomeKind.UNKNOWN, (
            f"sin poder preguntar al equipo, status es UNKNOWN (en duda), no {answer.kind}: {answer}"
        )

    @pytest.mark.asyncio
    async def test_cancel_answers_an_outcome_and_charges_nothing(
        self, provider: Any, settings: Any, upstream: Any
    ) -> None:
        """``cancel`` may answer any kind (the core reconciles afterwards whatever it says), but it answers: an
        ``Outcome`` within the deadline, without card data, without raising, whether the device is there or
        cannot be reached; and a cancel never charges (``status`` does not approve the cancelled ticket)."""
        ctx = self.context(settings, upstream)
        request = self.make_request(provider, settings)
        answer = await self._bounded("cancel", provider.cancel(request, settings, ctx))
        assert isinstance(answer, Outcome), f"cancel devolvió {type(answer).__name__}, no un Outcome"
        assert isinstance(answer.kind, OutcomeKind), answer
        self.assert_no_card_data(answer)
        after = await self._bounded("status", provider.status(request, settings, ctx))
        assert isinstance(after, Outcome), f"status devolvió {type(after).__name__}, no un Outcome"
        assert after.kind is not OutcomeKind.APPROVED, f"cancelar un ticket no enviado no puede cobrarlo: {after}"
        if self.kind(provider, settings) == "manual":
            return
        await self.script_upstream(upstream, "unavailable")
        unreachable = await self._bounded("cancel", provider.cancel(request, settings, ctx))
        assert isinstance(unreachable, Outcome), f"cancel devolvió {type(unreachable).__name__}, no un Outcome"
        assert unreachable.kind is not OutcomeKind.APPROVED, (
            f"sin equipo no se canceló nada: cancel no puede responder APPROVED ({unreachable})"
        )

    @pytest.mark.asyncio
    async def test_health_answers_an_outcome(self, provider: Any, settings: Any, upstream: Any) -> None:
        outcome = await self._bounded("health", provider.health(settings, self.context(settings, upstream)))
        assert isinstance(outcome, Outcome), f"health devolvió {type(outcome).__name__}, no un Outcome"

    def test_webhook_round_trip(self, provider: Any, settings: Any) -> None:
        caps = self.capabilities(provider, settings)
        if Capability.WEBHOOK not in caps:
            with pytest.raises(CajaError):
                provider.parse_webhook({}, b'{"order_id": "1"}')
            return
        request = self.make_request(provider, settings)
        approved = Outcome(kind=OutcomeKind.APPROVED, amount=request.amount, ticket=request.ticket)
        headers, body = self.webhook_for(settings, request, approved)
        assert provider.verify_webhook(headers, body, settings), "una notificación auténtica debe verificarse"
        assert not provider.verify_webhook({}, body, settings), "una notificación sin firma nunca se verifica"
        notice = provider.parse_webhook(headers, body)
        assert notice.reference == str(request.attempt_id)
        assert notice.outcome.kind is OutcomeKind.APPROVED and notice.outcome.amount == request.amount
        assert notice.external_id
        tampered = body.replace(str(request.amount).encode(), str(request.amount + 1).encode())
        if tampered != body:
            try:
                still_valid = provider.verify_webhook(headers, tampered, settings)
                parsed = provider.parse_webhook(headers, tampered)
            except CajaError:
                return
            assert not still_valid or parsed.outcome.amount != request.amount
        with pytest.raises(CajaError):
            provider.parse_webhook(headers, b"no es json")


async def _ignore_progress(p: Progress) -> None:
    return None
