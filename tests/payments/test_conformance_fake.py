"""The scriptable provider passes the conformance kit every plugin must pass (and so shows how to use it)."""

from __future__ import annotations

import msgspec
import pytest

from caja_core.providers import Capability, OutcomeKind
from caja_core.testing.conformance import ProviderConformance
from caja_core.testing.fake import FakeSettings, ScriptableProvider, Step, manual_provider

REPLY_STEPS = {
    "approved": Step(),
    "declined": Step(kind=OutcomeKind.DECLINED, code="05", message="Rechazada"),
    "unavailable": Step(kind=OutcomeKind.UNAVAILABLE, message="Conexión rechazada"),
    "silent": Step(hang=True),
}


class TestScriptableProviderConformance(ProviderConformance):
    silent_timeout_s = 0.5

    @pytest.fixture
    def provider(self):
        return ScriptableProvider("fake")

    @pytest.fixture
    def upstream(self, provider):
        return provider  # the scriptable provider is its own upstream

    @pytest.fixture
    def settings(self):
        return FakeSettings(timeout_s=0.3)

    async def script_upstream(self, upstream, reply):
        upstream.script("charge", REPLY_STEPS[reply])
        if reply == "unavailable":  # nothing answers any more: a question stays open, a cancel is not sent
            upstream.set_default("status", Step(kind=OutcomeKind.UNKNOWN, message="Sin conexión"))
            upstream.set_default("cancel", Step(kind=OutcomeKind.UNAVAILABLE, message="Sin conexión"))

    def webhook_for(self, settings, request, outcome):
        body = msgspec.json.encode(
            {
                "order_id": f"ord-{request.ticket}",
                "reference_id": str(request.attempt_id),
                "amount": outcome.amount,
                "status": outcome.kind.value,
            }
        )
        return {"x-fake-secret": settings.webhook_secret}, body


class TestManualProviderConformance(ProviderConformance):
    @pytest.fixture
    def provider(self):
        provider = manual_provider("respaldo")

        async def pending(request, settings, ctx, progress):
            from caja_core.providers import Outcome

            return Outcome(
                kind=OutcomeKind.PENDING, reference=request.reference, message="Cobre en el celular de respaldo"
            )

        provider.charge = pending
        return provider


def test_conformance_catches_a_provider_that_declines_on_silence():
    """The kit is not a rubber stamp: a provider that reports a time-out as a decline fails it."""
    import asyncio

    class Liar(ScriptableProvider):
        async def charge(self, request, settings, ctx, progress):
            outcome = await super().charge(request, settings, ctx, progress)
            if outcome.kind is OutcomeKind.UNKNOWN:
                return msgspec.structs.replace(outcome, kind=OutcomeKind.DECLINED)
            return outcome

    kit = TestScriptableProviderConformance()
    liar = Liar("fake")
    with pytest.raises(AssertionError, match="en duda"):
        asyncio.run(kit.test_silence_maps_to_unknown_never_declined(liar, FakeSettings(timeout_s=0.1), liar))
    assert Capability.INTEGRATED in liar.capabilities
