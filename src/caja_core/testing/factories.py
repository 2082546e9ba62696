"""Build a ready-to-sell venue for tests: venue, users, catalogue, a register with a primary and a backup
provider, backup phones and an open jornada."""

from __future__ import annotations

from typing import Any

import msgspec

from ..catalog import service as catalog
from ..db.engine import Database
from ..fallback.policy import FallbackPolicy
from ..jornadas import service as jornadas
from ..providers import PaymentProvider, ProviderRegistry
from ..registers import service as registers
from ..registers.models import BackupPhone
from ..users import service as users
from ..venues import service as venues
from .fake import FakeProvider

PASSWORD = "clave-segura-123"
PIN = "482915"
#: The supervisor's quick authorization at the register (and the admin's).
SUPERVISOR_PIN = "730614"
ADMIN_PIN = "591372"


class Setup(msgspec.Struct, kw_only=True):
    venue_id: int
    admin_id: int
    supervisor_id: int
    cashier_id: int
    register_id: int
    jornada_id: int | None
    category_id: int
    products: dict[str, int]  # name -> id
    prices: dict[str, int]  # name -> price


def make_registry(*providers: PaymentProvider) -> ProviderRegistry:
    found: dict[str, PaymentProvider] = {}
    for p in providers or (FakeProvider("fake"), FakeProvider("fakebackup")):
        found[p.id] = p
    return ProviderRegistry(found)


async def make_setup(
    db: Database,
    registry: ProviderRegistry | None = None,
    *,
    slug: str = "local",
    register_type: str = "HUMANA",
    primary: str | None = "fake",
    backup: str | None = "fakebackup",
    policy: FallbackPolicy | None = None,
    phones: int = 2,
    open_jornada: bool = True,
    close_tolerance: int = 1000,
    provider_settings: dict[str, Any] | None = None,
) -> Setup:
    registry = registry or make_registry()
    async with db.session() as s:
        venue = await venues.create_venue(s, slug=slug, name=f"Local {slug}", close_tolerance=close_tolerance)
        admin = await users.create_user(
            s,
            venue_id=venue.id,
            username="admin",
            display_name="Admin",
            role="admin",
            secret=PASSWORD,
            authorization_pin=ADMIN_PIN,
        )
        sup = await users.create_user(
            s,
            venue_id=venue.id,
            username="super",
            display_name="Supervisora",
            role="supervisor",
            secret=PASSWORD,
            authorization_pin=SUPERVISOR_PIN,
        )
        cashier = await users.create_user(
            s, venue_id=venue.id, username="cajera", display_name="Cajera", role="cashier", secret=PIN
        )
        cat = await catalog.create_category(s, venue_id=venue.id, name="Bar")
        prices = {"Cerveza": 3500, "Piscola": 6000, "Agua": 2000}
        products = {}
        for name, price in prices.items():
            products[name] = (
                await catalog.create_product(s, venue_id=venue.id, category_id=cat.id, name=name, price=price)
            ).id
        register = await registers.create_register(
            s,
            venue_id=venue.id,
            registry=registry,
            actor_id=admin.id,
            data=registers.RegisterInput(
                code="CAJA1",
                name="Caja 1",
                register_type=register_type,
                payment_methods=["cash", "card"] if register_type != "VIRTUAL" else ["card"],
                primary_provider=primary,
                backup_provider=backup,
                policy=policy,
                provider_settings=provider_settings or {},
            ),
        )
        for n in range(phones):
            s.add(
                BackupPhone(
                    venue_id=venue.id,
                    name=f"Celular {n + 1}",
                    identifier=f"{slug}-tel-{n + 1}",
                    register_id=register.id,
                    available=True,
                )
            )
        jornada_id = None
        if open_jornada:
            jornada_id = (await jornadas.open_jornada(s, venue_id=venue.id, user_id=sup.id)).id
    return Setup(
        venue_id=venue.id,
        admin_id=admin.id,
        supervisor_id=sup.id,
        cashier_id=cashier.id,
        register_id=register.id,
        jornada_id=jornada_id,
        category_id=cat.id,
        products=products,
        prices=prices,
    )


async def cash_sale(
    db: Database,
    *,
    venue_id: int,
    session_id: int,
    cashier_id: int,
    items: list[Any],
    idempotency_key: str | None = None,
    cash_received: object = None,
) -> Any:
    """A cash sale as the POS rings it: the sale created («Cobrar»), then paid in cash («Efectivo»)."""
    import uuid

    from ..sales import service as sales

    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=venue_id,
            session_id=session_id,
            cashier_id=cashier_id,
            items=items,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
    async with db.session() as s:
        return await sales.pay_cash(
            s, venue_id=venue_id, sale_id=sale.id, cash_received=cash_received, user_id=cashier_id
        )
