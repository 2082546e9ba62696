"""Every page renders as a full page and as an HTMX partial for a role that may see it."""

import pytest
from webkit import text_of

ADMIN_PAGES = [
    "/admin/",
    "/admin/cajas/",
    "/admin/cajas/crear",
    "/admin/cajas/1/editar",
    "/admin/cajas/reportes",
    "/admin/cajas/reportes/jornada/1",
    "/admin/cajas/reportes/jornada/1/z",
    "/admin/productos",
    "/admin/productos/1/editar",
    "/admin/limites",
    "/admin/modificadores",
    "/admin/usuarios",
    "/admin/usuarios/3/editar",
    "/admin/celulares",
    "/admin/salud",
    "/jornada",
    "/caja/",
    "/caja/session/open",
]


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_admin_sees_every_page_full_and_partial(admin, path):
    full = await admin.get(path)
    assert full.status_code == 200, text_of(full.text)[:500]
    assert "<html" in full.text and 'id="main"' in full.text
    partial = await admin.get(path, htmx=True)
    assert partial.status_code == 200, text_of(partial.text)[:500]
    assert "<html" not in partial.text


async def test_plugin_template_dirs_come_first(tmp_path, settings, sqlite_db, setup, fakes):
    from conftest import ProvidersPlugin
    from litestar.testing import AsyncTestClient

    from caja_core import hookimpl
    from caja_core.plugins import make_plugin_manager
    from caja_web.app import create_app

    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "error.html").write_text(
        "{% extends layout %}{% block content %}<p id='venue-brand'>Página propia: {{ message }}</p>{% endblock %}"
    )

    class Branding:
        @hookimpl
        def template_dirs(self):
            return [str(tmp_path)]

    app = create_app(
        settings, db=sqlite_db, pm=make_plugin_manager(ProvidersPlugin(*fakes), Branding(), load_entrypoints=False)
    )
    async with AsyncTestClient(app=app) as c:
        r = await c.get("/no/existe")
    assert r.status_code == 404 and "Página propia: La página o el objeto que busca no existe." in r.text
