"""Markup in register, product and user names renders inert everywhere it is shown."""

from caja_core.catalog import service as catalog
from caja_core.registers import service as registers
from caja_core.users import service as users

PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def test_markup_in_names_is_escaped(admin, sqlite_db, setup, registry):
    async with sqlite_db.session() as s:
        await catalog.create_product(
            s, venue_id=setup.venue_id, category_id=setup.category_id, name=PAYLOAD, price=1000
        )
        await users.create_user(
            s, venue_id=setup.venue_id, username="malo", display_name=PAYLOAD, role="cashier", secret="305718"
        )
        await registers.create_register(
            s,
            venue_id=setup.venue_id,
            registry=registry,
            actor_id=setup.admin_id,
            data=registers.RegisterInput(
                code="XSS", name=PAYLOAD, payment_methods=["cash"], primary_provider=None, backup_provider=None
            ),
        )
    await admin.post("/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "x"})
    pages = [
        "/admin/productos",
        "/admin/usuarios",
        "/admin/cajas/",
        "/caja/",
        "/caja/venta",
        "/admin/salud",
        "/admin/cajas/reportes",
    ]
    for path in pages:
        r = await admin.get(path)
        assert r.status_code == 200, path
        assert "<script>alert" not in r.text and "<img src=x" not in r.text, path
    assert "&lt;script&gt;alert" in (await admin.get("/admin/productos")).text
    r = await admin.client.get("/login")
    assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text
