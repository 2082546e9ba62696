"""docs/reliability.md cases 25 and 26: KLAP Checkout webhooks on real SQLite and PostgreSQL.

25. Webhook delivered twice → one state change; answered 2xx within 10 s even with a slow database.
26. Webhook with unknown order/reference or a mismatched amount → rejected, no state change, alert.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import func, select, text

from caja_core.audit.models import AuditEvent, Incident
from caja_core.payments.models import PaymentAttempt, WebhookEvent
from caja_core.payments.webhooks import receive_webhook, wait_for_pending_webhooks
from caja_core.providers import ChargeRequest, ProviderContext
from caja_core.sales.models import Sale
from caja_core.sessions.models import CashSession
from caja_klap.fake_server import FakeKlapServer
from caja_klap.provider import KlapProvider, KlapSettings

from .helpers import add_attempt, klap_setup, new_sale, open_session

API_KEY = "k-webhook-test"


@pytest.fixture
async def klap_api():
    async with FakeKlapServer(api_key=API_KEY) as server:
        yield server


class Shop:
    """A venue whose register uses KLAP Checkout as backup, with an open session and a sale being paid."""

    def __init__(self, db, setup, registry, session_id, server):
        self.db, self.setup, self.registry, self.session_id, self.server = db, setup, registry, session_id, server

    async def checkout_attempt(self, product: str = "Piscola") -> tuple[int, int, str]:
        """A sale, its KLAP attempt in ``awaiting`` and the order really created at (fake) KLAP."""
        sale_id, total = await new_sale(self.db, self.setup, self.session_id, product)
        attempt_id = await add_attempt(self.db, self.setup, self.session_id, sale_id, total, state="awaiting")
        settings = KlapSettings(**self.settings_raw())
        outcome = await KlapProvider().charge(
            ChargeRequest(
                attempt_id=attempt_id,
                ticket=f"T{attempt_id}",
                amount=total,
                register_id=self.setup.register_id,
                register_code="CAJA1",
                venue_id=self.setup.venue_id,
                device_key="klap:checkout:CAJA1",
            ),
            settings,
            ProviderContext(register_id=self.setup.register_id, venue_id=self.setup.venue_id),
            _no_progress,
        )
        async with self.db.session() as s:
            (await s.get(PaymentAttempt, attempt_id)).provider_reference = outcome.reference
        return sale_id, attempt_id, outcome.reference

    def settings_raw(self) -> dict:
        return {
            "mode": "checkout",
            "api_base_url": self.server.api_base_url,
            "api_key": API_KEY,
            "webhook_url": "http://127.0.0.1:9/webhooks/klap",
        }

    async def deliver(self, payload: dict, headers: dict | None = None, **kw):
        return await receive_webhook(
            self.db,
            self.registry,
            "klap",
            self.server.signed_headers(payload) if headers is None else headers,
            json.dumps(payload).encode(),
            **kw,
        )


async def _no_progress(_):
    return None


@pytest.fixture
async def shop(any_db, klap_api):
    raw = {
        "mode": "checkout",
        "api_base_url": klap_api.api_base_url,
        "api_key": API_KEY,
        "webhook_url": "http://127.0.0.1:9/webhooks/klap",
    }
    setup, registry = await klap_setup(any_db, klap_settings=raw)
    session_id = await open_session(any_db, setup)
    return Shop(any_db, setup, registry, session_id, klap_api)


async def _state(db, attempt_id: int, sale_id: int, session_id: int):
    async with db.reader() as s:
        attempt = await s.get(PaymentAttempt, attempt_id)
        sale = await s.get(Sale, sale_id)
        session = await s.get(CashSession, session_id)
        events = (await s.scalars(select(WebhookEvent).order_by(WebhookEvent.id))).all()
        return attempt, sale, session, events


async def _incidents(db, kind: str) -> list[Incident]:
    async with db.reader() as s:
        return list((await s.scalars(select(Incident).where(Incident.kind == kind))).all())


async def test_paid_webhook_delivered_twice_changes_state_once(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    payload = shop.server.pay(order_id, brand="VISA", last4="4242", card_type="CREDIT", auth_code="Z9Y8X7")
    first = await shop.deliver(payload)
    second = await shop.deliver(payload)
    assert (first.status_code, first.body) == (200, {"status": "ok"})
    assert (second.status_code, second.body) == (200, {"status": "ok"})
    attempt, sale, session, events = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "approved" and not attempt.active
    assert (attempt.last4, attempt.card_type, attempt.authorization_code) == ("4242", "credito", "Z9Y8X7")
    assert sale.status == "paid" and sale.provider_id == "klap" and sale.paid_via == "backup"
    assert session.ticket_count == 1 and session.card_sales_total == sale.total and session.backup_count == 1
    assert [(e.external_id, e.status) for e in events] == [(order_id, "applied")]


async def test_concurrent_deliveries_apply_once(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    payload = shop.server.pay(order_id)
    replies = await asyncio.gather(*(shop.deliver(payload) for _ in range(4)))
    assert all(r.status_code == 200 for r in replies)
    _attempt, sale, session, events = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert sale.status == "paid" and session.ticket_count == 1 and len(events) == 1


async def test_answered_quickly_while_the_database_is_slow(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    payload = shop.server.pay(order_id)
    blocker_ready, release = asyncio.Event(), asyncio.Event()

    async def hold_the_database():
        # Another writer holds the attempt (PostgreSQL row lock; SQLite write lock) for a while.
        async with shop.db.session() as s:
            await s.execute(select(PaymentAttempt).where(PaymentAttempt.id == attempt_id).with_for_update())
            await s.execute(
                text("UPDATE payment_attempts SET progress_message = 'ocupado' WHERE id = :i"), {"i": attempt_id}
            )
            blocker_ready.set()
            await release.wait()

    blocker = asyncio.create_task(hold_the_database())
    await blocker_ready.wait()
    started = time.monotonic()
    reply = await shop.deliver(payload, reply_within_s=0.3)
    elapsed = time.monotonic() - started
    assert reply.status_code == 202 and reply.body == {"status": "ok"}
    assert elapsed < 1.5
    if shop.db.dialect == "postgresql":  # (SQLite readers queue behind the writer too)
        _, sale, _, _ = await _state(shop.db, attempt_id, sale_id, shop.session_id)
        assert sale.status == "pending_payment"  # not applied yet: the database is busy
    release.set()
    await blocker
    await wait_for_pending_webhooks(10)
    again = await shop.deliver(payload)
    assert again.status_code == 200
    attempt, sale, session, events = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "approved" and sale.status == "paid" and session.ticket_count == 1
    assert len(events) == 1


async def test_unknown_reference_is_rejected_with_one_bounded_row(shop):
    sale_id, attempt_id, _order_id = await shop.checkout_attempt()
    payload = {
        "order_id": "KLAP-404404",
        "reference_id": "999999",
        "amount": 6000,
        "brand": "VISA",
        "last_digits": "1111",
        "card_type": "DEBIT",
        "quotas": 0,
    }
    reply = await shop.deliver(payload)
    assert reply.status_code == 404 and reply.body["status"] == "rejected"
    attempt, sale, session, events = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "awaiting" and sale.status == "pending_payment" and session.ticket_count == 0
    assert [e.status for e in events] == ["rejected"] and "999999" in events[0].error
    async with shop.db.reader() as s:  # found: a forged notice wrote two rows; now one, and no incident
        assert not (await s.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.rejected"))).all()
    assert await _incidents(shop.db, "webhook_unauthenticated") == []


async def test_mismatched_amount_is_rejected_no_state_change_and_an_incident(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    payload = shop.server.pay(order_id, amount=1000)  # the order was for the sale's total
    reply = await shop.deliver(payload)
    assert reply.status_code == 409 and reply.body["status"] == "rejected" and "Monto" in reply.body["reason"]
    attempt, sale, session, events = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "awaiting" and sale.status == "pending_payment" and session.ticket_count == 0
    assert [e.status for e in events] == ["rejected"]
    incidents = await _incidents(shop.db, "webhook_mismatch")
    assert len(incidents) == 1 and incidents[0].attempt_id == attempt_id
    assert incidents[0].jornada_id == shop.setup.jornada_id
    # A repeat of the same notice is answered the same way and opens nothing new.
    assert (await shop.deliver(payload)).status_code == 409
    assert len(await _incidents(shop.db, "webhook_mismatch")) == 1


async def test_mismatched_reference_for_a_known_order_is_rejected(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    other_sale, other_attempt, _ = await shop.checkout_attempt("Agua")
    payload = shop.server.pay(order_id)
    payload["reference_id"] = str(other_attempt)  # order of one attempt, reference of another
    reply = await shop.deliver(payload)
    assert reply.status_code == 409
    for a_id, s_id in ((attempt_id, sale_id), (other_attempt, other_sale)):
        attempt, sale, _, _ = await _state(shop.db, a_id, s_id, shop.session_id)
        assert attempt.state == "awaiting" and sale.status == "pending_payment"


async def test_unsigned_calls_change_nothing_and_do_not_block_the_genuine_one(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    payload = shop.server.pay(order_id)
    for headers in ({}, {"apikey": "not-the-hash"}):
        reply = await shop.deliver(payload, headers=headers)
        assert reply.status_code == 401
    attempt, sale, _, _ = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "awaiting" and sale.status == "pending_payment"
    assert await _incidents(shop.db, "webhook_unauthenticated") == []  # anyone can send one: never an incident
    assert (await shop.deliver(payload)).status_code == 200
    _, sale, _, _ = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert sale.status == "paid"


async def test_rejected_payment_declines_the_attempt(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    reply = await shop.deliver(shop.server.reject(order_id, code="R05", message="Fondos insuficientes"))
    assert reply.status_code == 200
    attempt, sale, session, _ = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "declined" and not attempt.active and attempt.response_code == "R05"
    assert sale.status == "pending_payment" and session.ticket_count == 0


async def test_late_paid_notice_after_the_sale_was_paid_otherwise_is_a_suspected_double_charge(shop):
    sale_id, attempt_id, order_id = await shop.checkout_attempt()
    async with shop.db.session() as s:
        from caja_core.sales.service import pay_cash

        attempt = await s.get(PaymentAttempt, attempt_id)
        attempt.state, attempt.active = "cancelled", False  # given up on; the customer paid cash
        await s.flush()
        await pay_cash(
            s, venue_id=shop.setup.venue_id, sale_id=sale_id, cash_received=10000, user_id=shop.setup.cashier_id
        )
    reply = await shop.deliver(shop.server.pay(order_id))
    assert reply.status_code == 409  # KLAP reverses the card payment by itself
    attempt, sale, session, _ = await _state(shop.db, attempt_id, sale_id, shop.session_id)
    assert attempt.state == "cancelled" and sale.payment_method == "cash" and session.ticket_count == 1
    assert len(await _incidents(shop.db, "double_charge_suspected")) == 1


async def test_malformed_and_unknown_provider(shop):
    reply = await receive_webhook(shop.db, shop.registry, "klap", {}, b"{not json")
    assert reply.status_code == 400
    reply = await receive_webhook(shop.db, shop.registry, "nope", {}, b"{}")
    assert reply.status_code == 404
    reply = await receive_webhook(shop.db, shop.registry, "cash", {}, b"{}")
    assert reply.status_code == 404
    async with shop.db.reader() as s:
        assert await s.scalar(select(func.count()).select_from(WebhookEvent)) == 0


async def test_a_full_card_number_in_a_notice_is_never_stored(shop, caplog):
    _sale_id, attempt_id, order_id = await shop.checkout_attempt()
    payload = shop.server.pay(order_id)
    payload["last_digits"] = "4111111111111111"
    payload["card_number"] = "4111 1111 1111 1111"
    assert (await shop.deliver(payload)).status_code == 200
    async with shop.db.reader() as s:
        event = (await s.scalars(select(WebhookEvent))).one()
        attempt = await s.get(PaymentAttempt, attempt_id)
    stored = json.dumps(event.payload) + repr([getattr(attempt, c.key) for c in PaymentAttempt.__table__.columns])
    assert "4111111111111111" not in stored and "4111 1111" not in stored
    assert attempt.last4 == "1111"
    assert "4111111111111111" not in caplog.text
