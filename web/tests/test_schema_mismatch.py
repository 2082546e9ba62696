"""A server whose database was upgraded (or restored to another schema) while it ran: every page that reads what
changed answers a Spanish 503 that the POS treats as offline, not a 500 with a traceback."""

from __future__ import annotations

from conftest import ProvidersPlugin, WebClient
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from caja_core.db import Database
from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_core.testing.factories import make_setup
from caja_core.testing.waiting import wait_until
from caja_web.app import create_app


async def test_a_database_upgraded_under_the_running_server_is_a_spanish_503(any_db, fakes, registry, caplog):
    db: Database = any_db
    await make_setup(db, registry)
    settings = load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": db.url})
    # The app opens its own pool on its own event loop (the test client runs it in a thread).
    app = create_app(settings, pm=make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False))
    async with AsyncTestClient(app=app) as raw:
        client = WebClient(raw)

        async def ready():
            return (await raw.get("/health/ready")).status_code == 200 or None

        await wait_until(ready, timeout_s=30, what="el servidor conectado a su base")
        assert (await client.get("/login")).status_code == 200
        # What a migration of the next version does to a column this server reads.
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE venues RENAME COLUMN timezone TO time_zone"))
        try:
            page = await client.get("/login")
            hx = await raw.get("/login", headers={"HX-Request": "true"})
        finally:
            async with db.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE venues RENAME COLUMN time_zone TO timezone"))
    assert page.status_code == 503 and "reiniciar el servidor" in page.text
    assert page.headers.get("retry-after") == "5"
    assert hx.status_code == 503
    assert "Traceback" not in caplog.text and "otra versión del esquema" in caplog.text
