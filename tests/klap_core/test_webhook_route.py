"""KLAP Checkout end to end over real sockets: the provider creates the order at the fake KLAP API, the
customer pays, and fake KLAP delivers the webhook over HTTP to ``POST /webhooks/klap`` served by uvicorn."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvicorn
from litestar import Litestar
from litestar.datastructures import State
from sqlalchemy import select

from caja_core.payments.models import PaymentAttempt, WebhookEvent
from caja_core.providers import ChargeRequest, ProviderContext
from caja_core.sales.models import Sale
from caja_klap.fake_server import FakeKlapServer
from caja_klap.provider import KlapProvider, KlapSettings
from caja_web.webhooks.routes import route_handlers

from .helpers import add_attempt, klap_setup, new_sale, open_session

API_KEY = "k-route"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def served(any_db):
    """The webhook route on a real port, and the fake KLAP API calling it."""
    port = _free_port()
    klap_api = await FakeKlapServer(api_key=API_KEY).start()
    raw = {
        "mode": "checkout",
        "api_base_url": klap_api.api_base_url,
        "api_key": API_KEY,
        "webhook_url": f"http://127.0.0.1:{port}/webhooks/klap",
    }
    setup, registry = await klap_setup(any_db, klap_settings=raw)
    app = Litestar(route_handlers=route_handlers, state=State({"db": any_db, "registry": registry}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "uvicorn no arrancó"
        await asyncio.sleep(0.01)
    yield any_db, setup, klap_api, KlapSettings(**raw)
    server.should_exit = True
    await task
    await klap_api.stop()


async def test_checkout_paid_over_http_once_even_when_delivered_twice(served):
    db, setup, klap_api, settings = served
    session_id = await open_session(db, setup)
    sale_id, total = await new_sale(db, setup, session_id, "Cerveza", quantity=2)
    attempt_id = await add_attempt(db, setup, session_id, sale_id, total, state="awaiting")
    outcome = await KlapProvider().charge(
        ChargeRequest(
            attempt_id=attempt_id,
            ticket="T1",
            amount=total,
            register_id=setup.register_id,
            register_code="CAJA1",
            venue_id=setup.venue_id,
            device_key="klap:checkout:CAJA1",
        ),
        settings,
        ProviderContext(register_id=setup.register_id, venue_id=setup.venue_id),
        _no_progress,
    )
    order_id = outcome.reference
    klap_api.pay(order_id, brand="MASTERCARD", last4="5454", card_type="CREDIT", quotas=3)

    started = time.monotonic()
    first = await klap_api.deliver_webhook(order_id)  # to the webhook_confirm URL given with the order
    elapsed = time.monotonic() - started
    second = await klap_api.deliver_webhook(order_id)
    assert (first.status_code, first.json()) == (200, {"status": "ok"})
    assert (second.status_code, second.json()) == (200, {"status": "ok"})
    assert elapsed < 10

    forged = await klap_api.deliver_webhook(order_id, headers={"content-type": "application/json"})
    assert forged.status_code == 401 and forged.json()["status"] == "rejected"

    async with db.reader() as s:
        attempt = await s.get(PaymentAttempt, attempt_id)
        sale = await s.get(Sale, sale_id)
        applied = (await s.scalars(select(WebhookEvent).where(WebhookEvent.status == "applied"))).all()
    assert attempt.state == "approved" and attempt.provider_reference == order_id and attempt.last4 == "5454"
    assert sale.status == "paid" and sale.provider_id == "klap"
    assert len(applied) == 1


async def _no_progress(_):
    return None


async def test_the_full_web_app_accepts_klap_webhooks_without_login_or_csrf(any_db):
    """The real app factory (sessions, CSRF, auth guards) lets KLAP's call through and still authenticates it."""
    from caja_core import hookimpl
    from caja_core.plugins import make_plugin_manager
    from caja_core.settings import load_settings
    from caja_web.app import create_app

    class Providers:
        @hookimpl
        def register_providers(self, add_provider):
            add_provider(KlapProvider())

    port = _free_port()
    async with FakeKlapServer(api_key=API_KEY) as klap_api:
        raw = {
            "mode": "checkout",
            "api_base_url": klap_api.api_base_url,
            "api_key": API_KEY,
            "webhook_url": f"http://127.0.0.1:{port}/webhooks/klap",
        }
        setup, _ = await klap_setup(any_db, klap_settings=raw)
        settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": any_db.url})
        app = create_app(settings, db=any_db, pm=make_plugin_manager(Providers(), load_entrypoints=False))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve())
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                assert time.monotonic() < deadline and not task.done(), "uvicorn no arrancó"
                await asyncio.sleep(0.01)
            session_id = await open_session(any_db, setup)
            sale_id, total = await new_sale(any_db, setup, session_id, "Agua")
            attempt_id = await add_attempt(any_db, setup, session_id, sale_id, total, state="awaiting")
            outcome = await KlapProvider().charge(
                ChargeRequest(
                    attempt_id=attempt_id,
                    ticket="T1",
                    amount=total,
                    register_id=setup.register_id,
                    register_code="CAJA1",
                    venue_id=setup.venue_id,
                    device_key="klap:checkout:CAJA1",
                ),
                KlapSettings(**raw),
                ProviderContext(register_id=setup.register_id, venue_id=setup.venue_id),
                _no_progress,
            )
            klap_api.pay(outcome.reference)
            forged = await klap_api.deliver_webhook(outcome.reference, headers={"apikey": "x"})
            assert forged.status_code == 401
            reply = await klap_api.deliver_webhook(outcome.reference)
            assert (reply.status_code, reply.json()) == (200, {"status": "ok"})
            assert "set-cookie" not in reply.headers
        finally:
            server.should_exit = True
            await task
    async with any_db.reader() as s:
        assert (await s.get(Sale, sale_id)).status == "paid"
