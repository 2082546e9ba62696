"""Building blocks for KLAP tests: a ready venue with a KLAP backup, sales, and attempts in a given state."""

from __future__ import annotations

import itertools

from caja_core.clock import utcnow
from caja_core.payments.models import PaymentAttempt
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_registry, make_setup
from caja_core.testing.fake import FakeProvider
from caja_klap.provider import KlapProvider

_keys = itertools.count(1)


def klap_registry(klap: KlapProvider | None = None):
    return make_registry(FakeProvider("fake"), klap or KlapProvider())


async def klap_setup(
    db, *, klap_settings: dict | None = None, register_type: str = "HUMANA", phones: int = 2, slug: str = "local"
):
    registry = klap_registry()
    setup = await make_setup(
        db,
        registry,
        primary="fake",
        backup="klap",
        register_type=register_type,
        phones=phones,
        slug=slug,
        provider_settings={"klap": klap_settings} if klap_settings else None,
    )
    return setup, registry


async def open_session(db, setup) -> int:
    async with db.session() as s:
        session = await sessions.open_session(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            user_id=setup.cashier_id,
            initial_cash=0,
            open_key=f"open-{next(_keys)}",
        )
    return session.id


async def new_sale(db, setup, session_id: int, product: str = "Piscola", quantity: int = 1) -> tuple[int, int]:
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=session_id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products[product], quantity=quantity)],
            idempotency_key=f"sale-{next(_keys)}",
        )
    return sale.id, sale.total


async def add_attempt(
    db,
    setup,
    session_id: int,
    sale_id: int,
    amount: int,
    *,
    state: str,
    provider_id: str = "klap",
    role: str = "backup",
    auth: str | None = None,
    last4: str | None = None,
    brand: str | None = "VISA",
    card_type: str | None = "debito",
    provider_reference: str | None = None,
    pay_sale: bool = False,
) -> int:
    """An attempt as the orchestrator leaves it (e.g. ``approved_manual`` after a cashier's confirmation)."""
    async with db.session() as s:
        n = next(_keys)
        attempt = PaymentAttempt(
            venue_id=setup.venue_id,
            sale_id=sale_id,
            session_id=session_id,
            register_id=setup.register_id,
            provider_id=provider_id,
            device_key=f"{provider_id}:test:CAJA1",
            role=role,
            amount=amount,
            ticket=f"T{n}",
            reference=f"REF{n:03d}"[:6],
            state=state,
            active=state not in ("approved_manual", "verified", "disputed", "approved", "declined"),
            card_brand=brand if auth else None,
            card_type=card_type if auth else None,
            last4=last4,
            authorization_code=auth,
            provider_reference=provider_reference,
            created_at=utcnow(),
            finished_at=utcnow() if auth else None,
        )
        s.add(attempt)
        await s.flush()
        if pay_sale:
            await sales.mark_paid(s, sale_id=sale_id, provider_id=provider_id, method="card", paid_via=role)
        return attempt.id
