"""The admin navigation reaches every admin area, the database backups page included."""


async def test_admin_nav_links_to_backups(admin):
    page = await admin.get("/admin/cajas/")
    assert 'href="/admin/respaldos/"' in page.text and "Copias de seguridad" in page.text
    backups = await admin.get("/admin/respaldos/")
    assert backups.status_code == 200


async def test_supervisor_nav_has_no_admin_only_links(supervisor):
    page = await supervisor.get("/admin/cajas/reportes")
    assert page.status_code == 200 and 'href="/admin/respaldos/"' not in page.text
    assert (await supervisor.get("/admin/respaldos/")).status_code == 403
