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
  approved one (providers with ``Capability.STATUS``);
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
        device/API cannot be reached at all) or "silent" (it received the request and never answers)."""
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
        """Await one call of the provider; one that never answers fails the check with one line instead of
        hanging the suite (the core would wait on it no longer than the policy's deadline)."""
        limit = self.silent_timeout_s + 5
        try:
            return await asyncio.wait_for(call, limit)
        except TimeoutError:
            pytest.fail(f"{method} no respondió en {limit:g} s: debe rendirse (UNKNOWN) antes", pytrace=False)

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
