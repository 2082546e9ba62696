"""Every page renders as a full page and as an HTMX partial for a role that may see it."""

import pytest

from webkit import text_of

ADMIN_PAGES = ["/admin/", "/admin/cajas/", "/admin/cajas/crear", "/admin/cajas/1/editar", "/admin/cajas/reportes",
               "/admin/cajas/reportes/jornada/1", "/admin/cajas/reportes/jornada/1/z", "/admin/productos",
               "/admin/productos/1/editar", "/admin/usuarios", "/admin/usuarios/3/editar", "/admin/celulares",
               "/admin/salud", "/jornada", "/caja/", "/caja/session/open"]


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_admin_sees_every_page_full_and_partial(admin, path):
    full = await admin.get(path)
    assert full.status_code == 200, text_of(full.text)[:500]
    assert "<html" in full.text and 'id="main"' in full.text
    partial = await admin.get(path, htmx=True)
    assert partial.status_code == 200, text_of(partial.text)[:500]
    assert "<html" not in partial.text
