"""KLAP passes the core's ProviderConformance in both modes (checkout against the fake KLAP API on loopback)."""

from __future__ import annotations

import json

import pytest

import caja_klap.plugin
from caja_core.testing.conformance import ProviderConformance
from caja_klap.fake_server import FakeKlapServer
from caja_klap.provider import KlapProvider, KlapSettings, webhook_signature


class TestKlapManual(ProviderConformance):
    plugin = caja_klap.plugin

    @pytest.fixture
    def provider(self):
        return KlapProvider()

    @pytest.fixture
    def settings(self, provider):
        return KlapSettings()


class TestKlapCheckout(ProviderConformance):
    plugin = caja_klap.plugin
    silent_timeout_s = 1.0

    @pytest.fixture
    async def upstream(self):
        async with FakeKlapServer(api_key="k-conf") as server:
            yield server

    @pytest.fixture
    def provider(self):
        return KlapProvider()

    @pytest.fixture
    def settings(self, upstream):
        return KlapSettings(
            mode="checkout",
            api_base_url=upstream.api_base_url,
            api_key="k-conf",
            webhook_url="http://127.0.0.1:9/webhooks/klap",
            request_timeout_s=1.0,
        )

    async def script_upstream(self, upstream, reply):
        if reply == "silent":
            upstream.hang = True
        elif reply == "unavailable":
            await upstream.stop()

    async def pay_upstream(self, upstream, request, outcome):
        upstream.pay(outcome.reference)

    def webhook_for(self, settings, request, outcome):
        body = {
            "order_id": f"KLAP-{request.attempt_id}",
            "reference_id": str(request.attempt_id),
            "amount": outcome.amount,
            "brand": "VISA",
            "last_digits": "4242",
            "card_type": "DEBIT",
            "quotas": 0,
        }
        headers = {"apikey": webhook_signature(body["reference_id"], body["order_id"], settings.api_key)}
        return headers, json.dumps(body).encode()

    async def test_charge_creates_a_real_order(self, provider, settings, upstream):
        request = self.make_request(provider, settings)
        outcome = await provider.charge(request, settings, self.context(settings, upstream), _ignore)
        assert upstream.orders[outcome.reference]["reference_id"] == str(request.attempt_id)


async def _ignore(_):
    return None
