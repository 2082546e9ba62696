"""The web app on the real PostgreSQL: database-backed sessions and a cash sale end to end."""

import pytest
from conftest import ProvidersPlugin, WebClient
from litestar.testing import AsyncTestClient

from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_core.testing.factories import make_setup
from caja_core.users import web_sessions
from caja_web.app import create_app

pytestmark = pytest.mark.postgres


async def test_login_and_cash_sale_on_postgres(pg_db, pg_url, fakes, registry):
    setup = await make_setup(pg_db, registry)
    # The test client serves the app from a loop of its own: the app gets its own engine (asyncpg
    # connections belong to one event loop).
    app = create_app(
        load_settings({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": pg_url}),
        pm=make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False),
    )
    async with AsyncTestClient(app=app) as c:
        web = WebClient(c)
        await web.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
        async with pg_db.session() as s:
            assert await web_sessions.get_data(s, c.cookies.get("caja_session")) is not None
        r = await web.post(
            "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "5000", "open_key": "pg-1"}
        )
        assert r.status_code == 303
        await web.post("/caja/venta/item", {"product_id": setup.products["Piscola"]}, htmx=True)
        r = await web.post("/caja/venta/cobrar", htmx=True)
        sale_id = int(r.text.split("/caja/venta/")[1].split("/")[0])
        r = await web.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": "10.000"}, htmx=True)
        assert r.status_code == 200 and "$4.000" in r.text
        r = await web.post("/caja/session/close", {"count_10000": "1", "count_1000": "1"})
        assert "Caja cerrada" in r.text
