"""Demo data: one venue with the seed's registers, a product list, users and an open jornada.

Idempotent: running it on a database that already has the demo venue changes nothing.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import select, update

from .catalog import service as catalog
from .db.engine import Database
from .errors import CajaError
from .jornadas import service as jornadas
from .plugins import make_plugin_manager
from .providers import ProviderRegistry
from .registers import service as registers
from .registers.models import BackupPhone, CashRegister
from .users import service as users
from .venues import service as venues
from .venues.models import Venue

DEMO_SLUG = "demo"


class DemoLogin(msgspec.Struct):
    role: str
    username: str
    display_name: str
    secret: str
    authorization_pin: str | None = None  # a supervisor's quick authorization at the register


class DemoInfo(msgspec.Struct):
    venue_id: int
    venue_name: str
    created: bool
    logins: list[DemoLogin]


DEMO_LOGINS = [
    DemoLogin("admin", "admin", "Administración", "admin-demo-1234"),
    DemoLogin("supervisor", "supervisor", "Sofía Supervisora", "super-demo-1234", "590317"),
    DemoLogin("cashier", "camila", "Camila Cajera", "461937"),
    DemoLogin("cashier", "diego", "Diego Cajero", "728405"),
]

# (code, name, type, location, payment methods)
DEMO_REGISTERS = [
    ("LUNA1", "TOTEM LUNA 1", "TOTEM", "Barra Luna", ["card"]),
    ("LUNA2", "TOTEM LUNA 2", "TOTEM", "Barra Luna", ["card"]),
    ("TERRAZA", "TOTEM TERRAZA", "TOTEM", "Terraza", ["card"]),
    ("PUERTA", "PUERTA", "HUMANA", "Entrada", ["cash", "card"]),
    ("PISTA", "PISTA", "HUMANA", "Barra pista", ["cash", "card"]),
    ("OFICINA", "OFICINA", "OFICINA", "Oficina", ["cash", "card"]),
    ("VIRTUAL", "VIRTUAL", "VIRTUAL", "Venta en línea", ["card"]),
]

DEMO_CATALOG = {
    "Entradas": [("Entrada general", 8000), ("Entrada VIP", 15000)],
    "Cervezas": [("Cerveza lata", 3500), ("Cerveza schop", 4500), ("Cerveza sin alcohol", 3000)],
    "Tragos": [("Piscola", 6000), ("Ron cola", 6000), ("Mojito", 7000), ("Pisco sour", 5500)],
    "Sin alcohol": [("Agua mineral", 2000), ("Bebida", 2500), ("Energética", 3500)],
}


async def demo_logins_in_use(db: Database) -> list[str]:
    """The users that still log in (or authorize) with a password or PIN this module publishes, as
    "usuario (local)": production refuses to start while there is one."""
    known = {d.username: [d.secret, *([d.authorization_pin] if d.authorization_pin else [])] for d in DEMO_LOGINS}
    async with db.reader() as s:
        found = await users.users_with_known_secrets(s, known)
        names = dict((await s.execute(select(Venue.id, Venue.slug))).all())
    return sorted(f"{u.username} ({names.get(u.venue_id, u.venue_id)})" for u in found)


def demo_logins_message(found: list[str]) -> str:
    return (
        f"en producción no se aceptan usuarios con la clave o el PIN publicados de la demostración: {', '.join(found)}; "
        "cámbielos o desactívelos (caja demo es solo para probar)"
    )


async def seed_demo(db: Database, *, public_url: str = "http://127.0.0.1:8000") -> DemoInfo:
    """Create (or reuse) the demo venue. Each register gets the providers and settings the installed plugins
    propose for a demo (hook ``provider_defaults`` with ``demo_url=public_url``): devices and fake servers
    that run on this machine, with webhooks sent back to ``public_url``."""
    async with db.session() as s:
        existing = await s.scalar(select(Venue).where(Venue.slug == DEMO_SLUG))
        if existing is not None:
            return DemoInfo(venue_id=existing.id, venue_name=existing.name, created=False, logins=DEMO_LOGINS)
        registry = ProviderRegistry.from_plugin_manager(make_plugin_manager())
        venue = await venues.create_venue(s, slug=DEMO_SLUG, name="Club Demo")
        ids = {}
        for login in DEMO_LOGINS:
            user = await users.create_user(
                s,
                venue_id=venue.id,
                username=login.username,
                display_name=login.display_name,
                role=login.role,
                secret=login.secret,
                authorization_pin=login.authorization_pin,
            )
            ids[login.username] = user.id
        for order, (category, products) in enumerate(DEMO_CATALOG.items()):
            cat = await catalog.create_category(s, venue_id=venue.id, name=category, sort_order=order)
            for n, (name, price) in enumerate(products):
                await catalog.create_product(
                    s, venue_id=venue.id, category_id=cat.id, name=name, price=price, sort_order=n
                )
        for code, name, rtype, location, methods in DEMO_REGISTERS:
            defaults = registry.defaults_for(rtype, demo_url=public_url)
            data = registers.RegisterInput(
                code=code,
                name=name,
                register_type=rtype,
                location=location,
                payment_methods=methods,
                primary_provider=defaults.primary_provider,
                backup_provider=defaults.backup_provider,
                provider_settings=defaults.provider_settings,
            )
            try:
                await registers.create_register(
                    s, venue_id=venue.id, data=data, registry=registry, actor_id=ids["admin"]
                )
            except CajaError:
                # A provider plugin that is not installed (or rejects these demo settings) still leaves a
                # working register: cash only, no card provider.
                data = registers.RegisterInput(
                    code=code,
                    name=name,
                    register_type=rtype,
                    location=location,
                    payment_methods=["cash"],
                    primary_provider=None,
                    backup_provider=None,
                )
                if rtype == "VIRTUAL":  # a VIRTUAL register takes no cash: without a provider it is a HUMANA one
                    data.register_type = "HUMANA"
                await registers.create_register(
                    s, venue_id=venue.id, data=data, registry=registry, actor_id=ids["admin"]
                )
        # Tickets through the browser (the demo has no printer): "Imprimir ticket" and copies at the POS.
        await s.execute(
            update(CashRegister)
            .where(CashRegister.venue_id == venue.id, CashRegister.register_type != "VIRTUAL")
            .values(printer_config={"printer": "browser", "name": "Navegador", "paper_width": 80, "auto_print": False})
        )
        for n in (1, 2):
            s.add(
                BackupPhone(venue_id=venue.id, name=f"Celular respaldo {n}", identifier=f"CEL-DEMO-{n}", available=True)
            )
        await jornadas.open_jornada(s, venue_id=venue.id, user_id=ids["supervisor"])
        return DemoInfo(venue_id=venue.id, venue_name=venue.name, created=True, logins=DEMO_LOGINS)
