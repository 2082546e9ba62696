"""Contingency mode on the POS: with the card terminal cut off (breaker open) the sale screen says so and offers
only what the register's offline rule allows (cash and the backup phone by default); nothing reaches the
terminal."""

from __future__ import annotations

import re

import msgspec
from webkit import text_of

from caja_core.clock import utcnow
from caja_core.fallback.policy import FallbackPolicy
from caja_core.payments.models import BreakerState
from caja_core.registers import service as registers
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup


async def open_breaker(db, setup, provider) -> None:
    async with db.session() as s:
        register = await registers.get_register(s, setup.venue_id, setup.register_id)
        device_key = provider.device_key(registers.provider_settings(register, provider), register.code)
        s.add(
            BreakerState(
                device_key=device_key,
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                state="open",
                failure_count=3,
                opened_at=utcnow(),
                last_failure="Sin conexión",
            )
        )


async def start_selling(client, setup, product: str = "Piscola") -> tuple[int, str]:
    r = await client.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "open-contingencia"}
    )
    assert r.status_code == 303, text_of(r.text)
    await client.post("/caja/venta/item", {"product_id": setup.products[product]}, htmx=True)
    r = await client.post("/caja/venta/cobrar", htmx=True)
    assert r.status_code == 200, text_of(r.text)
    return int(re.search(r"/caja/venta/(\d+)/", r.text).group(1)), r.text


async def test_normal_mode_offers_cash_and_card_without_a_banner(cashier, setup):
    page = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "open-normal"}
    )
    screen = await cashier.get("/caja/venta")
    assert "Modo contingencia" not in screen.text
    await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
    pay = await cashier.post("/caja/venta/cobrar", htmx=True)
    assert 'id="pay-card"' in pay.text and 'id="cash-form"' in pay.text and 'id="pay-backup"' not in pay.text
    assert page.status_code == 303


async def test_breaker_open_hides_the_card_shows_the_mode_and_the_backup_remains(cashier, setup, sqlite_db, fakes):
    await open_breaker(sqlite_db, setup, fakes[0])
    sale_id, pay = await start_selling(cashier, setup)
    text = text_of(pay)
    assert "Modo contingencia: solo efectivo, celular de respaldo." in text
    assert "El terminal de tarjetas no responde" in text
    assert 'id="pay-card"' not in pay and "Pagar con tarjeta" not in pay
    assert 'id="cash-form"' in pay and 'id="pay-backup"' in pay
    # the full sale screen (reload) shows the same choice
    page = await cashier.get(f"/caja/venta/{sale_id}")
    assert 'id="pay-card"' not in page.text and "Modo contingencia" in page.text
    # the backup: nothing is sent to the cut-off terminal, the backup phone is offered right away
    r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    assert r.status_code == 200 and 'id="start-backup"' in r.text
    assert not [c for c in fakes[0].calls if c[0] == "charge"]


async def test_cash_sale_in_contingency_and_banner_on_the_empty_cart(cashier, setup, sqlite_db, fakes):
    await open_breaker(sqlite_db, setup, fakes[0])
    sale_id, _ = await start_selling(cashier, setup, "Cerveza")
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": "5000"}, htmx=True)
    assert r.status_code == 200 and "$1.500" in text_of(r.text)  # change shown
    r = await cashier.post("/caja/venta/siguiente")
    screen = await cashier.get("/caja/venta")
    assert 'id="contingency-banner"' in screen.text
    assert "Modo contingencia: solo efectivo, celular de respaldo." in text_of(screen.text)


async def test_offline_rule_without_backup_offers_only_cash(cashier, setup, sqlite_db, fakes, registry):
    async with sqlite_db.session() as s:
        register = await registers.get_register(s, setup.venue_id, setup.register_id)
        data = msgspec.convert(
            {
                **msgspec.to_builtins(register),
                "policy": msgspec.to_builtins(msgspec.structs.replace(register.policy, offline_methods=["cash"])),
            },
            registers.RegisterInput,
            strict=False,
        )
        await registers.update_register(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            data=data,
            registry=registry,
            actor_id=setup.admin_id,
        )
    await open_breaker(sqlite_db, setup, fakes[0])
    _, pay = await start_selling(cashier, setup)
    assert "Modo contingencia: solo efectivo." in text_of(pay)
    assert 'id="pay-card"' not in pay and 'id="pay-backup"' not in pay and 'id="cash-form"' in pay


async def test_other_venue_sale_is_404_and_anonymous_goes_to_login(client, cashier, setup, sqlite_db, registry):
    other = await make_setup(sqlite_db, registry, slug="otro", policy=FallbackPolicy())
    async with sqlite_db.session() as s:
        session = await sessions.open_session(
            s,
            venue_id=other.venue_id,
            register_id=other.register_id,
            user_id=other.cashier_id,
            initial_cash=0,
            open_key="otro-1",
        )
        theirs = await sales.create_sale(
            s,
            venue_id=other.venue_id,
            session_id=session.id,
            cashier_id=other.cashier_id,
            idempotency_key="otro-venta-1",
            items=[sales.ItemInput(product_id=other.products["Agua"], quantity=1)],
        )
    r = await cashier.get(f"/caja/venta/{theirs.id}")
    assert r.status_code == 404 and "Modo contingencia" not in r.text
    await cashier.post("/logout")
    r = await client.get("/caja/venta", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
