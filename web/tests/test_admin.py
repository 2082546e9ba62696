"""Admin pages: registers (policy, provider settings with write-only secrets, terminal test, agent token),
reports (CSV, Z), products, users, backup phones, health; bad input re-renders in Spanish."""

import re

from adminforms import register_form
from webkit import text_of

from caja_core.providers import OutcomeKind
from caja_core.registers import service as registers
from caja_core.testing.fake import Step

REGISTER_FORM = register_form(
    "TEST-01",
    "TEST GETNET+KLAP",
    location="Barra",
    **{"settings.fake.device": "t-9", "settings.fake.webhook_secret": "muy-secreto-123"},
)


async def test_create_page_shows_seed_defaults(admin):
    r = await admin.get("/admin/cajas/crear")
    assert 'name="policy.max_wait_s" inputmode="numeric" value="60"' in r.text
    assert 'name="policy.backup_phones_required" inputmode="numeric" value="2"' in r.text
    assert 'data-provider="fake"' in r.text and 'name="settings.fake.webhook_secret"' in r.text


async def test_create_register_with_policy_and_secret_is_write_only(admin, sqlite_db, setup):
    r = await admin.post(
        "/admin/cajas/crear", {**REGISTER_FORM, "policy.max_wait_s": "45", "policy.require_supervisor": "1"}
    )
    assert r.status_code == 303, text_of(r.text)
    register_id = int(re.search(r"/admin/cajas/(\d+)/editar", r.headers["location"]).group(1))
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, setup.venue_id, register_id)
    assert reg.policy.max_wait_s == 45 and reg.policy.require_supervisor
    assert reg.provider_settings["fake"]["device"] == "t-9"
    assert reg.provider_settings["fake"]["webhook_secret"] == "muy-secreto-123"
    page = await admin.get(f"/admin/cajas/{register_id}/editar")
    assert "muy-secreto-123" not in page.text and "configurado" in page.text
    # saving again with the secret left blank keeps it
    r = await admin.post(
        f"/admin/cajas/{register_id}/editar",
        {**REGISTER_FORM, "settings.fake.webhook_secret": "", "name": "Renombrada"},
    )
    assert r.status_code == 303
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, setup.venue_id, register_id)
    assert reg.name == "Renombrada" and reg.provider_settings["fake"]["webhook_secret"] == "muy-secreto-123"
    listing = await admin.get("/admin/cajas/")
    assert "Renombrada" in listing.text and "Respaldo de prueba" in listing.text  # providers by name


async def test_bad_register_form_rerenders_with_spanish_field_errors(admin):
    r = await admin.post(
        "/admin/cajas/crear",
        {**REGISTER_FORM, "code": "mal código!", "policy.max_wait_s": "abc", "policy.breaker_failures": "500"},
    )
    assert r.status_code == 422
    assert "Debe ser un número entero" in r.text
    r = await admin.post(
        "/admin/cajas/crear",
        {**REGISTER_FORM, "code": "mal código!", "policy.max_wait_s": "500", "backup_provider": "fake"},
    )
    assert r.status_code == 422
    text = text_of(r.text)
    assert "El código debe tener" in text and "La espera máxima debe estar entre 5 y 120" in text
    assert "El respaldo debe ser distinto" in text
    assert 'value="mal código!"' in r.text and "muy-secreto-123" not in r.text
    # A crafted form with a trigger or offline method the policy does not know: said in Spanish, nothing saved.
    r = await admin.post(
        "/admin/cajas/crear",
        {**REGISTER_FORM, "code": "CAJA9", "policy.triggers": ["timeout", "bogus"], "policy.offline_methods": "x"},
    )
    assert r.status_code == 422
    text = text_of(r.text)
    assert "Política inválida: motivo 2: valor no permitido" in text, text[:600]
    assert "Invalid" not in text and "Expected" not in text


async def test_decline_codes_are_numbers(admin):
    r = await admin.post("/admin/cajas/crear", {**REGISTER_FORM, "policy.decline_codes": "5, x"})
    assert r.status_code == 422
    assert "Código de rechazo inválido: «x»" in text_of(r.text)
    r = await admin.get("/admin/cajas/")
    assert "TEST-01" not in r.text  # nothing was saved
    r = await admin.post("/admin/cajas/crear", {**REGISTER_FORM, "policy.decline_codes": "5, 51"})
    assert r.status_code in (200, 303), text_of(r.text)


async def test_duplicate_code_is_refused(admin, setup):
    r = await admin.post("/admin/cajas/crear", {**REGISTER_FORM, "code": "CAJA1"})
    assert r.status_code == 422 and "Ya existe una caja con el código CAJA1" in r.text


async def test_terminal_test_and_agent_token_once(admin, setup, fakes):
    fakes[0].script("health", Step(kind=OutcomeKind.APPROVED, message="Terminal listo"))
    r = await admin.post(f"/admin/cajas/{setup.register_id}/probar", htmx=True)
    assert "Terminal responde" in r.text and "Terminal listo" in r.text
    assert "Probado con la configuración guardada" in r.text
    fakes[0].script("health", Step(kind=OutcomeKind.UNAVAILABLE, message="Sin conexión"))
    r = await admin.post(f"/admin/cajas/{setup.register_id}/probar", htmx=True)
    assert "Terminal sin respuesta" in r.text
    r = await admin.post(f"/admin/cajas/{setup.register_id}/token", htmx=True)
    token = re.search(r"caja_\d+_[\w-]+", r.text).group(0)
    page = await admin.get(f"/admin/cajas/{setup.register_id}/editar")
    assert token not in page.text and "Token configurado" in page.text
    assert "configuración guardada" in text_of(page.text)  # it says what it tests


async def test_reports_csv_and_z(admin, setup):
    await admin.post("/caja/session/open", {"register_id": setup.register_id, "initial_cash": "1000", "open_key": "r1"})
    r = await admin.get("/admin/cajas/reportes")
    assert r.status_code == 200 and "Caja 1" in r.text and 'id="sessions"' in r.text
    csv = await admin.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}/csv")
    assert csv.headers["content-type"] == "text/csv; charset=utf-8" and "CAJA1" in csv.text  # one charset, once
    z = await admin.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}/z")
    assert "Reporte Z" in z.text and "data-print-page" in z.text
    log = await admin.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}?provider=fake&estado=declined", htmx=True)
    assert 'id="attempt-log"' in log.text and "<html" not in log.text
    session = await admin.get("/admin/cajas/reportes/sesion/1")
    assert "Fondo inicial" in session.text and "$1.000" in session.text


async def test_products_create_edit_and_bad_price(admin, setup):
    r = await admin.post("/admin/productos", {"category_id": setup.category_id, "name": "Mojito", "price": "7.000"})
    assert r.status_code == 303
    page = await admin.get("/admin/productos")
    assert "Mojito" in page.text and "$7.000" in page.text
    r = await admin.post("/admin/productos", {"category_id": setup.category_id, "name": "Gratis", "price": "0"})
    assert r.status_code == 422 and "El precio debe ser mayor que cero" in r.text
    r = await admin.post(
        f"/admin/productos/{setup.products['Agua']}/editar",
        {"category_id": setup.category_id, "name": "Agua con gas", "price": "2500", "active": "1"},
    )
    assert r.status_code == 303 and "Agua con gas" in (await admin.get("/admin/productos")).text
    r = await admin.post("/admin/productos/categorias", {"name": ""})
    assert r.status_code == 422 and "El nombre es obligatorio" in r.text


async def test_users_create_and_bad_pin(admin, setup):
    r = await admin.post(
        "/admin/usuarios", {"username": "nuevo", "display_name": "Nuevo Cajero", "role": "cashier", "secret": "12"}
    )
    assert r.status_code == 422 and "El PIN debe tener exactamente 6 dígitos" in r.text
    assert 'value="12"' not in r.text
    r = await admin.post(
        "/admin/usuarios", {"username": "nuevo", "display_name": "Nuevo Cajero", "role": "cashier", "secret": "123456"}
    )
    assert r.status_code == 422 and "demasiado fácil" in r.text
    r = await admin.post(
        "/admin/usuarios", {"username": "nuevo", "display_name": "Nuevo Cajero", "role": "cashier", "secret": "482915"}
    )
    assert r.status_code == 409 and "Ese PIN ya lo usa otra persona" in r.text  # the other cashier's PIN
    r = await admin.post(
        "/admin/usuarios", {"username": "nuevo", "display_name": "Nuevo Cajero", "role": "cashier", "secret": "305718"}
    )
    assert r.status_code == 303
    assert "Nuevo Cajero" in (await admin.get("/admin/usuarios")).text
    r = await admin.post(f"/admin/usuarios/{setup.admin_id}/editar", {"display_name": "Admin", "role": "admin"})
    assert r.status_code == 409 and "No puede desactivar su propio usuario" in r.text


async def test_backup_phones(admin, setup):
    r = await admin.post("/admin/celulares", {"name": "Celular 3", "identifier": "KLAP-03", "register_id": ""})
    assert r.status_code == 303
    page = await admin.get("/admin/celulares")
    assert "KLAP-03" in page.text and "Compartido" in page.text
    r = await admin.post("/admin/celulares", {"name": "", "identifier": "KLAP-03"})
    assert r.status_code == 422 and 'class="field-error"' in r.text


async def test_health_dashboard_links_ops_endpoints(admin):
    r = await admin.get("/admin/salud")
    assert 'href="/health"' in r.text and "Caja 1" in r.text


async def test_health_page_names_a_terminal_fault_in_plain_words(admin, sqlite_db, setup):
    from caja_core.payments.models import BreakerState

    async with sqlite_db.session() as s:
        s.add(
            BreakerState(
                device_key="tcp:10.0.0.9:9000",
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                state="open",
                failure_count=3,
                last_failure="transport_error: el terminal no confirmó la recepción del comando 101 en 3 s",
            )
        )
    r = await admin.get("/admin/salud")
    shown = text_of(re.sub(r"<details class=\"tech\">.*?</details>", "", r.text, flags=re.S))
    assert "Error de comunicación con el terminal" in shown
    assert "transport_error" not in shown and "comando 101" not in shown


async def test_other_venue_objects_are_404(admin, sqlite_db, registry, setup):
    from caja_core.testing.factories import make_setup

    other = await make_setup(sqlite_db, registry, slug="otro")
    for path in (
        f"/admin/cajas/{other.register_id}/editar",
        f"/admin/productos/{other.products['Agua']}/editar",
        f"/admin/usuarios/{other.cashier_id}/editar",
        f"/admin/cajas/reportes/jornada/{other.jornada_id}/z",
    ):
        r = await admin.get(path)
        assert r.status_code == 404, path
        assert "no existe" in r.text
    r = await admin.post(f"/admin/cajas/{other.register_id}/editar", REGISTER_FORM)
    assert r.status_code == 404
    r = await admin.post(
        "/caja/session/open", {"register_id": other.register_id, "initial_cash": "0", "open_key": "o1"}
    )
    assert r.status_code == 404 and "La caja no existe" in r.text


async def test_a_register_whose_provider_is_not_loaded_here_keeps_it_when_saved(settings, sqlite_db, fakes, setup):
    """A server started without a provider's plugin: the register's form shows that provider as not loaded (not
    «— ninguno —»), and saving the register for its name keeps the provider and its settings."""
    from conftest import ProvidersPlugin, WebClient
    from litestar.testing import AsyncTestClient

    from caja_core.plugins import make_plugin_manager
    from caja_web.app import create_app

    async with sqlite_db.session() as s:
        before = await registers.get_register(s, setup.venue_id, setup.register_id)
    app = create_app(settings, db=sqlite_db, pm=make_plugin_manager(ProvidersPlugin(fakes[1]), load_entrypoints=False))
    async with AsyncTestClient(app=app) as raw:
        admin = WebClient(raw)
        await admin.login("admin", venue_id=setup.venue_id)
        page = await admin.get(f"/admin/cajas/{setup.register_id}/editar")
        assert page.status_code == 200
        assert re.search(r'<option value="fake" selected>FAKE \(no cargado\)</option>', page.text), page.text
        assert "este servidor no cargó su plugin" in text_of(page.text)
        form = {k: v for k, v in REGISTER_FORM.items() if not k.startswith("settings.fake.")}
        r = await admin.post(f"/admin/cajas/{setup.register_id}/editar", {**form, "name": "Barra norte"})
        assert r.status_code == 303, text_of(r.text)
        r = await admin.post(
            f"/admin/cajas/{setup.register_id}/editar", {**form, "name": "Barra norte", "backup_provider": "otro"}
        )
        assert r.status_code == 422 and "no cargado" in text_of(r.text)
    async with sqlite_db.session() as s:
        after = await registers.get_register(s, setup.venue_id, setup.register_id)
    assert after.name == "Barra norte" and after.primary_provider == "fake"
    assert after.provider_settings["fake"] == before.provider_settings["fake"]
