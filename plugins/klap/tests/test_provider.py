"""KlapProvider against the fake KLAP API over a real loopback socket."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from caja_core.errors import ValidationFailed
from caja_core.providers import (
    ChargeRequest,
    OutcomeKind,
    PaymentProvider,
    ProviderContext,
    ProviderRegistry,
    validate_settings,
)
from caja_klap.fake_server import FakeKlapServer
from caja_klap.provider import REFERENCE_ALPHABET, KlapProvider, KlapSettings, webhook_signature

CTX = ProviderContext(register_id=1, venue_id=1)


async def _no_progress(_):
    return None


def request(amount: int = 5000, attempt_id: int = 41, reference: str | None = None) -> ChargeRequest:
    return ChargeRequest(
        attempt_id=attempt_id,
        ticket=f"T{attempt_id}",
        amount=amount,
        register_id=1,
        register_code="LUNA1",
        venue_id=1,
        device_key="klap:x",
        reference=reference,
    )


@pytest.fixture
async def klap_api():
    async with FakeKlapServer(api_key="k-123") as server:
        yield server


def checkout(server: FakeKlapServer, **extra) -> KlapSettings:
    raw = {
        "mode": "checkout",
        "api_base_url": server.api_base_url,
        "api_key": "k-123",
        "webhook_url": "http://127.0.0.1:9/webhooks/klap",
        "request_timeout_s": 0.5,
        **extra,
    }
    return validate_settings(KlapProvider(), raw)


def test_registers_through_the_plugin(make_caja_pm):
    from importlib.metadata import entry_points

    import caja_klap.plugin

    assert any(ep.value == "caja_klap.plugin" for ep in entry_points(group="caja"))
    registry = ProviderRegistry.from_plugin_manager(make_caja_pm(caja_klap.plugin, load_entrypoints=False))
    provider = registry.get("klap")
    assert isinstance(provider, PaymentProvider)
    assert provider.name == "KLAP"


def test_settings_default_to_manual_and_validate_checkout():
    provider = KlapProvider()
    assert validate_settings(provider, None).mode == "manual"
    with pytest.raises(ValidationFailed) as err:
        validate_settings(provider, {"mode": "checkout"})
    assert "api_base_url" in err.value.message and "api_key" in err.value.message
    with pytest.raises(ValidationFailed):
        validate_settings(provider, {"mode": "manual", "api_base_url": "javascript:alert(1)"})
    with pytest.raises(ValidationFailed):
        validate_settings(provider, {"mode": "manual", "unknown_field": 1})


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "enlace local"),
        ("http://[fe80::1]:8080", "enlace local"),
        ("http://127.0.0.1:6379", "Redis"),
        ("http://localhost:5432/api", "PostgreSQL"),
    ],
)
def test_the_api_address_cannot_point_at_what_no_provider_is(url, why):
    """Found: the KLAP API base URL could be pointed at any internal host and port."""
    with pytest.raises(ValidationFailed) as err:
        validate_settings(KlapProvider(), {"mode": "manual", "api_base_url": url})
    assert why in err.value.message
    ok = validate_settings(KlapProvider(), {"mode": "manual", "api_base_url": "http://127.0.0.1:38123/api"})
    assert ok.api_base_url == "http://127.0.0.1:38123/api"


def test_secrets_never_appear_in_repr_or_logs(caplog):
    settings = KlapSettings(
        mode="checkout",
        api_base_url="https://klap.example/v1",
        api_key="sk_live_SECRET",
        webhook_url="https://caja.example/webhooks/klap",
        webhook_auth="shared_secret",
        webhook_secret="whsec_SECRET",
    )
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("caja.klap").info("settings %s %r", settings, settings)
    assert "SECRET" not in repr(settings) and "SECRET" not in str(settings)
    assert "SECRET" not in caplog.text


async def test_manual_charge_hands_out_a_short_unambiguous_reference():
    provider, settings = KlapProvider(), KlapSettings()
    outcomes = [await provider.charge(request(attempt_id=i), settings, CTX, _no_progress) for i in range(30)]
    for outcome in outcomes:
        assert outcome.kind is OutcomeKind.PENDING and outcome.code == "manual"
        assert outcome.amount == 5000
        assert len(outcome.reference) == 6 and set(outcome.reference) <= set(REFERENCE_ALPHABET)
        assert outcome.reference in outcome.message and "$5.000" in outcome.message
    assert len({o.reference for o in outcomes}) > 25
    given = await provider.charge(request(reference="K7RM3X"), settings, CTX, _no_progress)
    assert given.reference == "K7RM3X"
    assert provider.capabilities_for(settings) == {"manual"}


@pytest.mark.parametrize("amount", [0, -100, 12.5, "5000", True, 50_000_001])
async def test_bad_amounts_are_rejected_before_sending(klap_api, amount):
    provider = KlapProvider()
    for settings in (KlapSettings(), checkout(klap_api)):
        with pytest.raises(ValidationFailed):
            await provider.charge(request(amount=amount), settings, CTX, _no_progress)
    assert klap_api.requests == []


async def test_checkout_under_the_credit_minimum_is_rejected_before_sending(klap_api):
    with pytest.raises(ValidationFailed) as err:
        await KlapProvider().charge(request(amount=999), checkout(klap_api), CTX, _no_progress)
    assert "$1.000" in err.value.message
    assert klap_api.requests == []


async def test_checkout_creates_an_order_with_our_attempt_as_reference(klap_api):
    provider, settings = KlapProvider(), checkout(klap_api)
    outcome = await provider.charge(request(amount=15000, attempt_id=77), settings, CTX, _no_progress)
    assert outcome.kind is OutcomeKind.PENDING and outcome.code == "checkout"
    order = klap_api.orders[outcome.reference]
    assert order["reference_id"] == "77" and order["amount"] == 15000
    assert order["webhooks"]["webhook_confirm"] == "http://127.0.0.1:9/webhooks/klap"
    assert "/pay/" in outcome.message
    assert provider.capabilities_for(settings) == {"webhook", "status"}


async def test_status_follows_the_order(klap_api):
    provider, settings = KlapProvider(), checkout(klap_api)
    created = await provider.charge(request(amount=8000, attempt_id=5), settings, CTX, _no_progress)
    ask = request(amount=8000, attempt_id=5, reference=created.reference)
    assert (await provider.status(ask, settings, CTX)).kind is OutcomeKind.PENDING
    klap_api.pay(created.reference, brand="MASTERCARD", last4="5454", card_type="CREDIT", quotas=3)
    paid = await provider.status(ask, settings, CTX)
    assert paid.kind is OutcomeKind.APPROVED and paid.amount == 8000
    assert paid.card.last4 == "5454" and paid.card.card_type == "credito" and paid.card.installments == 3
    unknown = await provider.status(request(attempt_id=5, reference="KLAP-999999"), settings, CTX)
    assert unknown.kind is OutcomeKind.UNAVAILABLE
    other = await provider.status(request(attempt_id=6, reference=created.reference), settings, CTX)
    assert other.kind is OutcomeKind.UNKNOWN


async def test_rejected_order_status_is_declined(klap_api):
    provider, settings = KlapProvider(), checkout(klap_api)
    created = await provider.charge(request(amount=8000, attempt_id=9), settings, CTX, _no_progress)
    klap_api.reject(created.reference, code="R05", message="Fondos insuficientes")
    outcome = await provider.status(request(attempt_id=9, reference=created.reference), settings, CTX)
    assert outcome.kind is OutcomeKind.DECLINED and outcome.code == "R05"


async def test_transport_outcomes(klap_api):
    provider, settings = KlapProvider(), checkout(klap_api)
    # Wrong API key: KLAP refuses definitively.
    bad_key = checkout(klap_api, api_key="wrong")
    refused = await provider.charge(request(), bad_key, CTX, _no_progress)
    assert refused.kind is OutcomeKind.DECLINED and refused.code == "403"
    # The API answers 500: in doubt, never declined.
    klap_api.script(500, {"error": "boom"})
    assert (await provider.charge(request(), settings, CTX, _no_progress)).kind is OutcomeKind.UNKNOWN
    # Silence past the deadline: in doubt, never declined.
    klap_api.hang = True
    timed_out = await provider.charge(request(), settings, CTX, _no_progress)
    assert timed_out.kind is OutcomeKind.UNKNOWN
    klap_api.hang = False
    # Nobody listening: provably no order.
    port = klap_api.port
    await klap_api.stop()
    closed = KlapSettings(
        mode="checkout",
        api_base_url=f"http://127.0.0.1:{port}/payment-gateway/v1",
        api_key="k",
        webhook_url="http://127.0.0.1:9/w",
        request_timeout_s=0.5,
    )
    assert (await provider.charge(request(), closed, CTX, _no_progress)).kind is OutcomeKind.UNAVAILABLE
    assert (await provider.health(closed, CTX)).kind is OutcomeKind.UNAVAILABLE


async def test_health(klap_api):
    provider = KlapProvider()
    assert (await provider.health(checkout(klap_api), CTX)).kind is OutcomeKind.APPROVED
    assert (await provider.health(checkout(klap_api, api_key="nope"), CTX)).kind is OutcomeKind.UNAVAILABLE
    assert (await provider.health(KlapSettings(), CTX)).kind is OutcomeKind.APPROVED


def test_parse_paid_and_rejected_webhooks():
    provider = KlapProvider()
    paid = provider.parse_webhook(
        {},
        json.dumps(
            {
                "order_id": "KLAP-1",
                "reference_id": "12",
                "amount": 12000,
                "brand": "visa",
                "last_digits": "4111111111111111",
                "card_type": "DEBIT",
                "quotas": 0,
                "mc_code": "ab12cd",
            }
        ).encode(),
    )
    assert paid.external_id == "KLAP-1" and paid.reference == "12"
    assert paid.outcome.kind is OutcomeKind.APPROVED and paid.outcome.amount == 12000
    # Only the last four digits survive, whatever was sent.
    assert paid.outcome.card.last4 == "1111" and paid.outcome.card.authorization_code == "AB12CD"
    assert "4111111111111111" not in json.dumps(msgspec.to_builtins(paid))
    nested = provider.parse_webhook({}, b'{"order_id":"K2","reference_id":"3","amount":{"total":900}}')
    assert nested.outcome.amount == 900
    rejected = provider.parse_webhook(
        {}, json.dumps({"order_id": "KLAP-2", "reference_id": "13", "code": "R01", "message": "Rechazado"}).encode()
    )
    assert rejected.outcome.kind is OutcomeKind.DECLINED and rejected.outcome.code == "R01"
    for body in (b"not json", b"[]", b'{"order_id":"x"}', b'{"order_id":"x","reference_id":"1"}'):
        with pytest.raises(ValidationFailed):
            provider.parse_webhook({}, body)


def test_verify_webhook_hashed_api_key_and_shared_secret():
    provider = KlapProvider()
    body = json.dumps({"order_id": "KLAP-1", "reference_id": "12", "amount": 100}).encode()
    hashed = KlapSettings(
        mode="checkout",
        api_base_url="https://k.example/v1",
        api_key="k-123",
        webhook_url="https://c.example/webhooks/klap",
    )
    good = webhook_signature("12", "KLAP-1", "k-123")
    assert provider.verify_webhook({"Apikey": good}, body, hashed)
    assert not provider.verify_webhook({}, body, hashed)
    assert not provider.verify_webhook({"apikey": webhook_signature("12", "KLAP-1", "other")}, body, hashed)
    assert not provider.verify_webhook({"apikey": "k-123"}, body, hashed)
    shared = KlapSettings(
        mode="checkout",
        api_base_url="https://k.example/v1",
        api_key="k-123",
        webhook_url="https://c.example/webhooks/klap",
        webhook_auth="shared_secret",
        webhook_auth_header="X-Klap-Secret",
        webhook_secret="s3cret",
    )
    assert provider.verify_webhook({"x-klap-secret": "s3cret"}, body, shared)
    assert not provider.verify_webhook({"x-klap-secret": "s3cret2"}, body, shared)
    assert not provider.verify_webhook({"apikey": good}, body, shared)
