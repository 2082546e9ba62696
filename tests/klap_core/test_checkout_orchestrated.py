"""A VIRTUAL register paid through KLAP Checkout: the orchestrator creates the order at (fake) KLAP, the customer
pays, KLAP's webhook pays the sale once; the orchestrator's reconciliation agrees."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from sqlalchemy import select

from caja_core import hookimpl
from caja_core.payments.models import PaymentAttempt
from caja_core.payments.service import PaymentOrchestrator
from caja_core.payments.webhooks import receive_webhook
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup
from caja_core.testing.waiting import count_calls, wait_until
from caja_klap.fake_server import FakeKlapServer
from caja_klap.provider import KlapProvider


class Providers:
    @hookimpl
    def register_providers(self, add_provider):
        add_provider(KlapProvider())


@pytest.fixture
async def virtual(any_db):
    async with FakeKlapServer(api_key="k-virtual") as klap_api:
        pm = make_plugin_manager(Providers(), load_entrypoints=False)
        registry = ProviderRegistry.from_plugin_manager(pm)
        setup = await make_setup(
            any_db,
            registry,
            register_type="VIRTUAL",
            primary="klap",
            backup=None,
            phones=0,
            provider_settings={
                "klap": {
                    "mode": "checkout",
                    "api_base_url": klap_api.api_base_url,
                    "api_key": "k-virtual",
                    "webhook_url": "http://127.0.0.1:9/webhooks/klap",
                    "request_timeout_s": 1.0,
                }
            },
        )
        async with any_db.session() as s:
            session = await sessions.open_session(
                s,
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                user_id=setup.cashier_id,
                initial_cash=0,
                open_key="virtual",
            )
        orch = PaymentOrchestrator(
            any_db,
            registry,
            pm,
            instance_id="virtual",
            worker_interval_s=0.05,
            status_timeout_s=1.0,
            health_timeout_s=1.0,
            reconcile_backoff_s=(0.05, 0.2),
        )
        await orch.start()
        yield any_db, registry, setup, session.id, orch, klap_api
        await orch.stop()


async def test_checkout_order_paid_by_webhook(virtual):
    db, registry, setup, session_id, orch, klap_api = virtual
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=session_id,
            cashier_id=setup.cashier_id,
            idempotency_key=uuid.uuid4().hex,
            items=[sales.ItemInput(product_id=setup.products["Piscola"], quantity=1)],
        )
    await orch.start_payment(setup.venue_id, sale.id, setup.cashier_id)
    deadline = time.monotonic() + 10
    while True:
        async with db.reader() as s:
            attempt = (await s.scalars(select(PaymentAttempt).where(PaymentAttempt.sale_id == sale.id))).one()
        if attempt.provider_reference:
            break
        assert time.monotonic() < deadline, attempt.state
        await asyncio.sleep(0.02)
    order = klap_api.orders[attempt.provider_reference]
    assert order["reference_id"] == str(attempt.id) and order["amount"] == 6000
    assert not (await orch.poll(setup.venue_id, sale.id)).paid

    payload = klap_api.pay(attempt.provider_reference)
    for _ in range(2):
        reply = await receive_webhook(
            db, registry, "klap", klap_api.signed_headers(payload), json.dumps(payload).encode()
        )
        assert reply.status_code == 200
    passes = count_calls(orch, "run_once")
    progress = await orch.poll(setup.venue_id, sale.id)
    assert progress.paid and progress.paid_via == "primary" and progress.state == "approved"
    # The orchestrator keeps reconciling meanwhile: after three more passes of its worker it must agree, not pay twice.
    await wait_until(lambda: passes() >= 3, timeout_s=10, what="tres pasadas más del orquestador")
    async with db.reader() as s:
        report = await sessions.get_session(s, setup.venue_id, session_id)
    assert report.ticket_count == 1 and report.card_sales_total == 6000
