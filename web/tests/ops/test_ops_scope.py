"""Who sees what of operations (venue admins, install operators, the metrics token, anyone), requests that
never reach a route (404s counted), the JSON access log, and what an instance answers while it starts or
drains."""

import io
import json
import logging

import pytest
from litestar.testing import AsyncTestClient

from caja_core.ops import metrics
from caja_core.ops.logging import configure_logging
from caja_core.plugins import make_plugin_manager
from caja_core.settings import load_settings
from caja_core.testing.factories import make_setup
from caja_web.app import create_app

from ..conftest import ProvidersPlugin, WebClient

TOKEN = "metrics-token-5f2c9a7e1b"


@pytest.fixture
async def two_venues(sqlite_db, registry):
    first = await make_setup(sqlite_db, registry, slug="luna")
    second = await make_setup(sqlite_db, registry, slug="sol", open_jornada=False)
    return first, second


def app_for(sqlite_url, sqlite_db, fakes, tmp_path, **env):
    settings = load_settings(
        {
            "CAJA_ENV": "demo",
            "CAJA_DATABASE_URL": sqlite_url,
            "CAJA_METRICS_TOKEN": TOKEN,
            "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
            **env,
        }
    )
    pm = make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False)
    return create_app(settings, db=sqlite_db, pm=pm)


async def test_a_venue_admin_sees_only_her_venue(two_venues, sqlite_url, sqlite_db, fakes, tmp_path):
    luna, sol = two_venues
    app = app_for(sqlite_url, sqlite_db, fakes, tmp_path)
    async with AsyncTestClient(app=app) as raw:
        client = WebClient(raw)
        await client.login("admin", venue_id=sol.venue_id)
        health = (await client.get("/health")).json()
        assert {r["venue_id"] for r in health["services"]["registers"].values()} == {sol.venue_id}
        assert "processes" not in health["services"] and "instance" not in health
        summary = (await client.get("/metrics")).json()
        assert set(summary["registers"]) == {"CAJA1"} and "requests" not in summary
        # The install's series and its backups are not hers.
        assert (await client.get("/metrics/prometheus")).status_code == 401
        page = await client.get("/admin/respaldos/")
        assert page.status_code == 200 and 'id="backup-operator-only"' in page.text
        assert "Respaldar ahora" not in page.text
        refused = await client.post("/admin/respaldos/crear")
        assert refused.status_code == 403 and "toda la instalación" in refused.text
        assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").glob("caja-*"))

        # The metrics token sees every venue.
        everything = (await client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert {r["venue_id"] for r in everything["services"]["registers"].values()} == {
            luna.venue_id,
            sol.venue_id,
        }
        assert "processes" in everything["services"]


async def test_install_operators_named_in_the_settings_see_the_whole_install(
    two_venues, sqlite_url, sqlite_db, fakes, tmp_path
):
    luna, sol = two_venues
    app = app_for(sqlite_url, sqlite_db, fakes, tmp_path, CAJA_INSTALL_OPERATORS="luna/admin")
    async with AsyncTestClient(app=app) as raw:
        client = WebClient(raw)
        await client.login("admin", venue_id=luna.venue_id)
        health = (await client.get("/health")).json()
        assert {r["venue_id"] for r in health["services"]["registers"].values()} == {luna.venue_id, sol.venue_id}
        assert (await client.get("/metrics/prometheus")).status_code == 200
        assert "Respaldar ahora" in (await client.get("/admin/respaldos/")).text
        made = await client.post("/admin/respaldos/crear")
        assert made.status_code == 200 and "creado y verificado" in made.text
        await client.post("/logout")
        await client.login("admin", venue_id=sol.venue_id)  # an admin, but not named: her venue only
        assert (await client.get("/metrics/prometheus")).status_code == 401


async def test_anyone_gets_only_the_overall_state(two_venues, sqlite_url, sqlite_db, fakes, tmp_path):
    app = app_for(sqlite_url, sqlite_db, fakes, tmp_path)
    async with AsyncTestClient(app=app) as client:
        r = await client.get("/health")
    assert set(r.json()) == {"status", "checked_at"}
    assert "CAJA1" not in r.text and "luna" not in r.text and "sol" not in r.text


async def test_404s_are_counted_and_every_request_has_one_json_access_line(app, client):
    def count(status: str) -> float:
        return metrics.HTTP_REQUESTS.labels(method="GET", route="unmatched", status=status)._value.get()

    stream = io.StringIO()
    handler = configure_logging(load_settings({"CAJA_ENV": "demo"}), stream=stream)
    try:
        before = count("404")
        missing = await client.get("/no-existe", headers={"X-Request-ID": "req-404-abc"})
        assert missing.status_code == 404 and count("404") == before + 1
        ok = await client.get("/login")
        logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[36mStarted\x1b[0m"})
    finally:
        logging.getLogger().removeHandler(handler)
    output = stream.getvalue()
    assert "\x1b[" not in output  # no ANSI colour codes in the JSON
    lines = [json.loads(line) for line in output.splitlines()]
    access = [line for line in lines if line["logger"] == "caja.access"]
    first = next(line for line in access if line["path"] == "/no-existe")
    assert first["request_id"] == "req-404-abc" and first["status"] == 404 and first["route"] == "unmatched"
    second = next(line for line in access if line["path"] == "/login")
    assert second["request_id"] == ok.headers["x-request-id"] and second["method"] == "GET"


async def test_while_draining_reads_go_elsewhere_and_writes_are_still_served(app, client, setup):
    lifecycle = app.state.lifecycle
    assert lifecycle.state == "serving" and (await client.get("/health/ready")).status_code == 200
    lifecycle.begin_drain()
    page = await client.get("/login")
    assert page.status_code == 503 and "reiniciando" in page.text
    assert page.headers["connection"] == "close" and page.headers["retry-after"]
    assert (await client.get("/health/ready")).status_code == 503
    assert (await client.get("/health/live")).status_code == 200
    # A POST (a sale, a payment, a login) is served: nginx would not replay it on another instance.
    login = await client.post("/login", {"venue_id": setup.venue_id, "username": "admin", "password": "x"})
    assert login.status_code != 503 and login.headers["connection"] == "close"


async def test_while_starting_pages_say_so_and_health_reports_it(app, client):
    app.state.lifecycle.state = "starting"
    page = await client.get("/login")
    assert page.status_code == 503 and "arrancando" in page.text and "<html" in page.text
    partial = await client.get("/login", htmx=True)
    assert partial.status_code == 503 and "arrancando" in partial.text and "<html" not in partial.text
    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "error"
    assert (await client.get("/static/css/caja.css")).status_code == 200
