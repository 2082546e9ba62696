"""Every remaining route: its happy path, wrong role (403) and another venue's objects (404)."""

import pytest

from caja_core.providers import OutcomeKind
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import Step

ADMIN_POSTS = [
    "/admin/cajas/crear",
    "/admin/cajas/1/editar",
    "/admin/cajas/1/probar",
    "/admin/cajas/1/token",
    "/admin/productos",
    "/admin/productos/categorias",
    "/admin/productos/categorias/1/activa",
    "/admin/productos/1/editar",
    "/admin/limites",
    "/admin/modificadores",
    "/admin/usuarios",
    "/admin/usuarios/1/editar",
    "/admin/celulares",
    "/admin/celulares/1/disponible",
    "/admin/celulares/1/eliminar",
]


@pytest.mark.parametrize("path", ADMIN_POSTS)
async def test_supervisor_cannot_post_any_admin_form(supervisor, path):
    r = await supervisor.post(path, {"name": "x"})
    assert r.status_code == 403 and "Acceso denegado" in r.text


@pytest.mark.parametrize("path", ["/jornada/abrir", "/jornada/cerrar", "/jornada/aprobar/1"])
async def test_cashier_cannot_touch_the_jornada(cashier, path):
    assert (await cashier.post(path, {"jornada_id": 1, "note": "x"})).status_code == 403


async def test_home_sends_each_role_to_its_page(client, setup):
    r = await client.get("/", follow_redirects=False)
    assert r.headers["location"] == "/login"
    await client.login("super", venue_id=setup.venue_id)
    assert (await client.get("/", follow_redirects=False)).headers["location"] == "/jornada"


async def test_category_toggle_and_phone_availability_and_delete(admin, setup):
    r = await admin.post(f"/admin/productos/categorias/{setup.category_id}/activa", {"active": "0"})
    assert r.status_code == 303 and "Inactiva" in (await admin.get("/admin/productos")).text
    page = await admin.get("/admin/celulares")
    assert "Celular 1" in page.text
    r = await admin.post("/admin/celulares/1/disponible", {"available": "0"})
    assert r.status_code == 303 and "Marcar disponible" in (await admin.get("/admin/celulares")).text
    await admin.post("/admin/celulares", {"name": "Sobra", "identifier": "SOBRA-1"})
    r = await admin.post("/admin/celulares/3/eliminar")
    assert r.status_code == 303 and "SOBRA-1" not in (await admin.get("/admin/celulares")).text


async def test_other_venue_pos_objects_are_404(cashier, setup, sqlite_db, registry):
    other = await make_setup(sqlite_db, registry, slug="otro")
    await cashier.post("/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "v"})
    r = await cashier.post("/caja/venta/item", {"product_id": other.products["Agua"]}, htmx=True)
    assert r.status_code == 404 and "El producto no existe" in r.text
    r = await cashier.post("/caja/session/resume", {"register_id": other.register_id})
    assert r.status_code in (404, 409)
    from caja_core.sales import service as sales
    from caja_core.sales.service import ItemInput
    from caja_core.sessions import service as sessions

    async with sqlite_db.session() as s:
        sess = await sessions.open_session(
            s,
            venue_id=other.venue_id,
            register_id=other.register_id,
            user_id=other.cashier_id,
            initial_cash=0,
            open_key="other",
        )
        sale = await sales.create_sale(
            s,
            venue_id=other.venue_id,
            session_id=sess.id,
            cashier_id=other.cashier_id,
            items=[ItemInput(product_id=other.products["Agua"])],
            idempotency_key="o",
        )
    for path in (f"/caja/venta/{sale.id}", f"/caja/venta/{sale.id}/pago"):
        assert (await cashier.get(path)).status_code == 404, path
    r = await cashier.post(f"/caja/venta/{sale.id}/efectivo", {"cash_received": "2000"}, htmx=True)
    assert r.status_code == 404
    r = await cashier.post(f"/caja/venta/{sale.id}/anular", {"reason": "ajena"}, htmx=True)
    assert r.status_code == 404


async def test_cashier_cancels_a_card_payment_waiting_on_the_terminal(cashier, setup, fakes):
    fakes[0].script("charge", Step(kind=OutcomeKind.APPROVED, hang=True, progress=["Inserte o acerque tarjeta"]))
    await cashier.post("/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "c"})
    await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
    r = await cashier.post("/caja/venta/cobrar", htmx=True)
    sale_id = int(r.text.split("/caja/venta/")[1].split("/")[0])
    r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    assert 'id="cancel-payment"' in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/cancelar-pago", htmx=True)
    assert r.status_code == 200
    import asyncio

    for _ in range(100):
        r = await cashier.get(f"/caja/venta/{sale_id}/pago", htmx=True)
        if 'id="pay"' in r.text:
            break
        await asyncio.sleep(0.05)
    assert 'id="pay"' in r.text and "NO SE COBRÓ" in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": ""}, htmx=True)
    assert "Siguiente venta" in r.text
