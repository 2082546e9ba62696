"""Login, logout, rate limit, sessions (shared store, cookie flags), CSRF, role guards."""

import pytest
from litestar.testing import AsyncTestClient
from webkit import text_of

from caja_core.plugins import make_plugin_manager
from caja_core.testing.factories import PASSWORD, PIN
from caja_core.users import service as users
from caja_web.app import create_app


async def test_staff_login_redirects_by_role_and_sets_safe_cookie(client, setup):
    r = await client.post("/login", {"venue_id": setup.venue_id, "username": "admin", "password": "clave-segura-123"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("caja_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie


async def test_wrong_password_is_a_spanish_error_not_a_crash(client, setup):
    r = await client.post("/login", {"venue_id": setup.venue_id, "username": "admin", "password": "nope"})
    assert r.status_code == 401 and "Usuario o clave incorrectos" in r.text and 'value="admin"' in r.text


async def test_cashier_logs_in_with_pin_keypad(client, setup):
    page = await client.get(f"/login/pin/{setup.cashier_id}")
    assert 'data-keypad-for="pin"' in page.text and "Cajera" in page.text
    r = await client.post("/login/pin", {"venue_id": setup.venue_id, "user_id": setup.cashier_id, "pin": "975310"})
    assert r.status_code == 401 and "Usuario o clave incorrectos" in r.text
    r = await client.post("/login/pin", {"venue_id": setup.venue_id, "user_id": setup.cashier_id, "pin": PIN})
    assert r.status_code == 303 and r.headers["location"] == "/caja/"


async def test_wrong_passwords_lock_the_login_and_leave_a_trace(client, setup, sqlite_db):
    """Found: the failure count and audit event were rolled back with the error: after 7 wrong passwords the
    right one still worked, and failures left no trace."""
    from sqlalchemy import func, select

    from caja_core.audit.models import AuditEvent

    statuses = []
    for _ in range(7):
        r = await client.post("/login", {"venue_id": setup.venue_id, "username": "super", "password": "x" * 12})
        statuses.append(r.status_code)
    assert statuses == [401] * 4 + [429] * 3 and "Demasiados intentos" in r.text
    r = await client.post("/login", {"venue_id": setup.venue_id, "username": "super", "password": PASSWORD})
    assert r.status_code == 429
    async with sqlite_db.session() as s:
        failed = await s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.login_failed")
        )
    assert failed == 5


async def test_logout_ends_the_session(admin):
    assert (await admin.get("/admin/")).status_code == 200
    r = await admin.post("/logout")
    assert r.status_code == 303
    r = await admin.get("/admin/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"


async def test_anonymous_htmx_request_is_sent_to_login(client):
    r = await client.get("/caja/venta", htmx=True)
    assert r.headers.get("hx-redirect") == "/login"


async def test_post_without_csrf_token_is_refused(admin):
    r = await admin.post("/jornada/abrir", csrf=False)
    assert r.status_code == 403 and "El formulario expiró" in r.text


async def test_sessions_live_in_the_database_and_are_shared_by_instances(admin, settings, sqlite_db, fakes):
    from conftest import ProvidersPlugin

    other = create_app(settings, db=sqlite_db, pm=make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False))
    async with AsyncTestClient(app=other) as second:
        second.cookies.set("caja_session", admin.client.cookies.get("caja_session"))
        r = await second.get("/admin/", follow_redirects=False)
    assert r.status_code == 200 and "Administración" in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/cajas/",
        "/admin/cajas/crear",
        "/admin/productos",
        "/admin/usuarios",
        "/admin/celulares",
        "/admin/salud",
        "/jornada",
        "/admin/cajas/reportes",
    ],
)
async def test_cashier_gets_403_outside_the_pos(cashier, path):
    r = await cashier.get(path)
    assert r.status_code == 403 and "Acceso denegado" in r.text and "Traceback" not in r.text


@pytest.mark.parametrize("path", ["/admin/", "/admin/cajas/", "/admin/cajas/1/editar", "/admin/usuarios"])
async def test_supervisor_gets_403_on_admin_pages(supervisor, path):
    assert (await supervisor.get(path)).status_code == 403


@pytest.mark.parametrize("path", ["/admin/cajas/reportes", "/jornada", "/caja/"])
async def test_supervisor_reaches_reports_jornada_and_pos(supervisor, path):
    assert (await supervisor.get(path)).status_code == 200


async def test_supervisor_cannot_post_admin_forms(supervisor):
    r = await supervisor.post("/admin/cajas/crear", {"code": "X", "name": "X"})
    assert r.status_code == 403


async def test_unknown_page_is_a_spanish_404(admin):
    r = await admin.get("/no/existe")
    assert r.status_code == 404 and "No encontrado" in text_of(r.text)


async def test_login_rotates_the_session_id(client, setup, sqlite_db):
    from caja_core.users import web_sessions

    await client.login("super", venue_id=setup.venue_id)
    first = client.client.cookies.get("caja_session")
    await client.login("admin", venue_id=setup.venue_id)
    second = client.client.cookies.get("caja_session")
    assert first and second and first != second
    async with sqlite_db.session() as s:
        assert await web_sessions.get_data(s, first) is None
        assert await web_sessions.get_data(s, second) is not None


async def test_reading_pages_does_not_rewrite_the_session(admin, sqlite_db, setup):
    from caja_core.users.models import WebSession

    key = admin.client.cookies.get("caja_session")
    async with sqlite_db.session() as s:
        before = (await s.get(WebSession, key)).expires_at
    r = await admin.get("/admin/")
    assert r.status_code == 200
    assert not any(v.startswith("caja_session=") for k, v in r.headers.multi_items() if k == "set-cookie")
    async with sqlite_db.session() as s:
        assert (await s.get(WebSession, key)).expires_at == before


async def test_pages_refuse_framing_and_static_files_are_cached(client):
    page = await client.get("/login")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    js = await client.get("/static/vendor/htmx.min.js")
    assert js.status_code == 200 and "max-age=3600" in js.headers["cache-control"]


async def test_cookies_are_secure_behind_https(sqlite_url, sqlite_db, setup, fakes):
    from conftest import ProvidersPlugin

    from caja_core.settings import load_settings

    settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url, "CAJA_SECURE_COOKIES": "1"})
    app = create_app(settings, db=sqlite_db, pm=make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False))
    async with AsyncTestClient(app=app, base_url="https://testserver.local") as c:
        page = await c.get("/login")
        csrf = next(v for k, v in page.headers.multi_items() if k == "set-cookie" and v.startswith("caja_csrf="))
        r = await c.post(
            "/login",
            data={"venue_id": setup.venue_id, "username": "admin", "password": "clave-segura-123"},
            headers={"x-csrftoken": c.cookies.get("caja_csrf")},
            follow_redirects=False,
        )
    session = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("caja_session="))
    assert "Secure" in csrf and "Secure" in session and "HttpOnly" in session


async def _second_admin(sqlite_db, setup):
    async with sqlite_db.session() as s:
        other = await users.create_user(
            s, venue_id=setup.venue_id, username="admin2", display_name="Admin 2", role="admin", secret=PASSWORD
        )
    return other.id


async def test_a_deactivated_admin_loses_access_on_the_next_request(admin, app, setup, sqlite_db):
    """Found: a deactivated admin's open session kept full access (it created a new admin)."""
    admin_two = await _second_admin(sqlite_db, setup)
    async with AsyncTestClient(app=app) as raw:
        from conftest import WebClient

        other = WebClient(raw)
        await other.login("admin2", venue_id=setup.venue_id)
        assert (await other.get("/admin/usuarios")).status_code == 200
        r = await admin.post(
            f"/admin/usuarios/{admin_two}/editar", {"display_name": "Admin 2", "role": "admin", "active": ""}
        )
        assert r.status_code == 303
        r = await other.get("/admin/usuarios", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        r = await other.post(
            "/admin/usuarios",
            {"username": "intruso", "display_name": "Intruso", "role": "admin", "secret": "clave-intrusa-99"},
        )
        assert r.status_code in (303, 403) and r.headers.get("location") in (None, "/login")
    async with sqlite_db.session() as s:
        assert "intruso" not in {u.username for u in await users.list_users(s, setup.venue_id)}


async def test_a_demoted_supervisor_loses_supervisor_pages(supervisor, setup, sqlite_db):
    """Found: a supervisor demoted to cashier kept the supervisor pages."""
    assert (await supervisor.get("/jornada")).status_code == 200
    async with sqlite_db.session() as s:
        await users.update_user(
            s, setup.venue_id, setup.supervisor_id, actor_id=setup.admin_id, role="cashier", secret="305718"
        )
    r = await supervisor.get("/jornada", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = await supervisor.get("/caja/", follow_redirects=False)  # the session is gone, not just one page
    assert r.status_code == 303


async def test_a_new_password_ends_the_other_sessions(admin, app, setup, sqlite_db):
    async with AsyncTestClient(app=app) as raw:
        from conftest import WebClient

        phone = WebClient(raw)
        await phone.login("super", venue_id=setup.venue_id)
        async with sqlite_db.session() as s:
            await users.update_user(
                s, setup.venue_id, setup.supervisor_id, actor_id=setup.admin_id, secret="otra-clave-segura-7"
            )
        assert (await phone.get("/jornada", follow_redirects=False)).status_code == 303


async def test_log_out_everywhere(app, setup, sqlite_db):
    from conftest import WebClient

    async with AsyncTestClient(app=app) as a, AsyncTestClient(app=app) as b:
        first, second = WebClient(a), WebClient(b)
        await first.login("super", venue_id=setup.venue_id)
        await second.login("super", venue_id=setup.venue_id)
        r = await first.post("/logout/todos")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert (await second.get("/jornada", follow_redirects=False)).status_code == 303
        await second.login("super", venue_id=setup.venue_id)  # logging in again works
        assert (await second.get("/jornada")).status_code == 200


async def test_admin_ends_a_users_sessions_everywhere(admin, app, setup):
    from conftest import WebClient

    async with AsyncTestClient(app=app) as raw:
        till = WebClient(raw)
        await till.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
        assert (await till.get("/caja/")).status_code == 200
        r = await admin.post(f"/admin/usuarios/{setup.cashier_id}/cerrar-sesiones")
        assert r.status_code == 303
        assert (await till.get("/caja/", follow_redirects=False)).status_code == 303
