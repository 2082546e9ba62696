"""/health, /health/live, /metrics, /metrics/prometheus and the admin backups page, through the real app."""

import io
import json
import logging
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from caja_core.clock import utcnow
from caja_core.db.engine import Database
from caja_core.ops import backups as backup_ops
from caja_core.ops.logging import configure_logging
from caja_core.ops.workers import WORKERS
from caja_core.payments.models import BreakerState
from caja_core.settings import load_settings
from caja_web.ops.routes import install

TOKEN = "metrics-token-5f2c9a7e1b"


@pytest.fixture
def settings(sqlite_url, tmp_path):
    return load_settings(
        {
            "CAJA_ENV": "demo",
            "CAJA_DATABASE_URL": sqlite_url,
            "CAJA_METRICS_TOKEN": TOKEN,
            "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
            "CAJA_SECRET_KEY": "s" * 8 + "ecret-0123456789abcdef",
        }
    )


@pytest.fixture(autouse=True)
def no_workers():
    WORKERS.clear()
    yield
    WORKERS.clear()


async def test_health_ok_with_a_fresh_verified_backup(client, settings, sqlite_url):
    manifest = await backup_ops.create_backup(sqlite_url, settings.backup_dir)
    await backup_ops.verify_backup(settings.backup_dir, manifest)
    public = await client.get("/health")
    assert public.status_code == 200 and public.json()["status"] == "ok", public.json()
    r = await client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok", body
    assert body["services"]["database"] == "connected"
    assert body["services"]["redis"] == "not_configured"
    assert body["services"]["migrations"]["status"] == "at_head"
    assert body["services"]["backups"]["status"] == "ok"
    assert body["services"]["registers"]["CAJA1"]["mode"] == "normal"
    text = r.text
    assert TOKEN not in text and settings.secret_key not in text and sqlite_url not in text


async def test_health_breaker_open_is_degraded_200(client, setup, sqlite_db, settings, sqlite_url):
    await backup_ops.create_backup(sqlite_url, settings.backup_dir)
    async with sqlite_db.session() as s:
        s.add(
            BreakerState(
                device_key="fake:CAJA1",
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                state="open",
                failure_count=3,
                opened_at=utcnow(),
            )
        )
    r = await client.get("/health")
    assert r.status_code == 200
    public = r.json()
    # Anyone sees the overall state only: no register code, device, venue or problem text.
    assert set(public) == {"status", "checked_at"} and public["status"] == "degraded"
    assert "CAJA1" not in r.text and "fake" not in r.text
    r = await client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
    body = r.json()
    assert body["services"]["registers"]["CAJA1"]["mode"] == "contingency"
    assert body["services"]["registers"]["CAJA1"]["allowed_methods"] == ["cash", "backup"]
    assert body["services"]["registers"]["CAJA1"]["breakers"] == {"fake:CAJA1": "open"}
    assert body["problems"] == ["Caja CAJA1: corte open en fake:CAJA1."]


async def test_health_database_down_is_error_503(app, client):
    running = app.state.db
    app.state.db = Database("postgresql://caja:pw-not-shown@127.0.0.1:1/caja")
    try:
        r = await client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
        public = await client.get("/health")
        live = await client.get("/health/live")
    finally:
        await app.state.db.dispose()
        app.state.db = running
    assert r.status_code == 503 and public.status_code == 503 and public.json()["status"] == "error"
    assert r.json()["status"] == "error" and r.json()["services"]["database"] == "unreachable"
    assert "pw-not-shown" not in r.text
    assert live.status_code == 200 and live.json()["status"] == "ok"


async def test_metrics_need_the_token(client):
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        for path in ("/metrics", "/metrics/prometheus"):
            r = await client.get(path, headers=dict(headers))
            assert r.status_code == 401, (path, headers)
            assert r.content == b""
            assert r.headers["www-authenticate"].startswith("Bearer")


async def test_metrics_json_summary(client, setup, sqlite_db):
    async with sqlite_db.session() as s:
        s.add(
            BreakerState(
                device_key="fake:CAJA1",
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                state="open",
                failure_count=3,
                opened_at=utcnow(),
            )
        )
    r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    body = r.json()
    assert body["breakers"]["open"] == 1
    assert body["breakers"]["by_register"] == {"CAJA1": {"fake:CAJA1": "open"}}
    assert body["registers"]["CAJA1"] == {
        "mode": "contingency",
        "allowed_methods": ["cash", "backup"],
        "operational_status": "active",
    }
    assert body["payments"]["in_doubt"] == 0
    assert body["sessions"]["open"] == 0
    assert body["backups"]["status"] == "none"
    assert set(body) >= {"requests", "payments", "breakers", "sessions", "backups", "workers", "status"}


async def test_prometheus_text_parses_and_has_the_series(client, setup, sqlite_db):
    async with sqlite_db.session() as s:
        s.add(
            BreakerState(
                device_key="fake:CAJA1",
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                state="half_open",
                failure_count=3,
                opened_at=utcnow(),
            )
        )
    r = await client.get("/metrics/prometheus", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    # One charset, and the classic format version that Prometheus 2 and 3 both accept without a fallback.
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "caja_http_requests",
        "caja_http_request_duration_seconds",
        "caja_payment_attempts",
        "caja_payment_time_to_approval_seconds",
        "caja_payment_time_to_fallback_seconds",
        "caja_breaker_state",
        "caja_payment_attempts_in_doubt",
        "caja_cash_sessions_open",
        "caja_backup_age_seconds",
        "caja_backup_last_run_failed",
        "caja_health_status",
    ):
        assert name in families, name
    breaker = list(families["caja_breaker_state"].samples)
    assert [(s.labels, s.value) for s in breaker] == [({"register": "CAJA1", "device": "fake:CAJA1"}, 1.0)]
    assert families["caja_health_status"].samples[0].value == 1.0  # degraded
    assert families["caja_backup_age_seconds"].samples[0].value == float("inf")


async def test_admin_backups_page_create_and_verify(admin, settings):
    page = await admin.get("/admin/respaldos/")
    assert page.status_code == 200 and "No hay respaldos." in page.text
    made = await admin.post("/admin/respaldos/crear")
    assert made.status_code == 200, made.text
    assert "creado y verificado" in made.text
    [manifest] = backup_ops.list_backups(settings.backup_dir)
    assert manifest.id in made.text and "correcta" in made.text

    data = backup_ops.list_backups(settings.backup_dir)[0]
    path = f"{settings.backup_dir}/{data.file}"
    raw = bytearray(Path(path).read_bytes())
    raw[200] ^= 0x01
    Path(path).write_bytes(bytes(raw))
    checked = await admin.post(f"/admin/respaldos/{manifest.id}/verificar")
    assert checked.status_code == 200
    assert "la verificación FALLÓ" in checked.text and "SHA-256" in checked.text


async def test_backups_page_is_for_admins_only(cashier):
    r = await cashier.get("/admin/respaldos/")
    assert r.status_code == 403


# ----------------------------------------------------------------- request middleware (install)


@get("/hola/{name:str}")
async def hola(name: FromPath[str]) -> dict:
    logging.getLogger("caja.test").info("saludo a %s", name)
    return {"hola": name}


@get("/falla")
async def falla() -> dict:
    raise RuntimeError("boom")


async def test_install_counts_requests_by_route_and_sets_request_id():
    from caja_core.ops import metrics

    def count(route, status):
        return metrics.HTTP_REQUESTS.labels(method="GET", route=route, status=status)._value.get()

    before_ok, before_500 = count("/hola/{name}", "200"), count("/falla", "500")
    stream = io.StringIO()
    handler = configure_logging(load_settings({"CAJA_ENV": "demo"}), stream=stream)
    try:
        app = Litestar(route_handlers=[hola, falla], on_app_init=[install])
        async with AsyncTestClient(app=app) as client:
            r1 = await client.get("/hola/ana", headers={"X-Request-ID": "abc-123"})
            r2 = await client.get("/hola/bea")
            r3 = await client.get("/falla")
    finally:
        logging.getLogger().removeHandler(handler)
    assert r1.headers["x-request-id"] == "abc-123"
    assert len(r2.headers["x-request-id"]) == 16
    assert r3.status_code == 500
    assert count("/hola/{name}", "200") == before_ok + 2
    assert count("/falla", "500") == before_500 + 1
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    greeting = next(rec for rec in logged if rec["message"] == "saludo a ana")
    assert greeting["request_id"] == "abc-123"


async def test_metrics_token_rotation_accepts_the_previous_token_until_removed(app, client):
    settings = app.state.settings
    new = "metrics-token-new-77c1d9e0"
    app.state.settings = load_settings(
        {
            "CAJA_ENV": "demo",
            "CAJA_DATABASE_URL": settings.database_url,
            "CAJA_METRICS_TOKEN": new,
            "CAJA_METRICS_TOKEN_PREVIOUS": TOKEN,
            "CAJA_BACKUP_INTERVAL_HOURS": "0",
        }
    )
    try:
        for token in (new, TOKEN):
            r = await client.get("/metrics/prometheus", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, token
        app.state.settings = load_settings(
            {
                "CAJA_ENV": "demo",
                "CAJA_DATABASE_URL": settings.database_url,
                "CAJA_METRICS_TOKEN": new,
                "CAJA_BACKUP_INTERVAL_HOURS": "0",
            }
        )
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {new}"})).status_code == 200
    finally:
        app.state.settings = settings


async def test_backup_scheduler_lifespan_backs_up_while_the_app_runs(tmp_path, sqlite_url):
    import asyncio

    from litestar.datastructures import State

    from caja_web.ops.routes import backup_scheduler_lifespan, health

    settings = load_settings(
        {
            "CAJA_ENV": "demo",
            "CAJA_DATABASE_URL": sqlite_url,
            "CAJA_BACKUP_DIR": str(tmp_path / "auto"),
            "CAJA_METRICS_TOKEN": TOKEN,
        }
    )
    db = Database(sqlite_url)
    app = Litestar(
        route_handlers=[health],
        state=State({"settings": settings, "db": db}),
        lifespan=[backup_scheduler_lifespan(settings, check_every_s=0.05)],
    )
    try:
        async with AsyncTestClient(app=app) as client:
            for _ in range(600):  # up to 30 s on a busy machine
                body = (await client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})).json()
                workers = body["services"]["workers"]
                if body["services"]["backups"]["status"] == "ok" and workers.get("backup", {}).get("status") == "ok":
                    verified = [m for m in backup_ops.list_backups(settings.backup_dir) if m.verification is not None]
                    if verified:  # the manifest is written first, its verification right after
                        break
                await asyncio.sleep(0.05)
            assert body["status"] == "ok", body
            assert body["services"]["workers"]["backup"]["status"] == "ok"
            [manifest] = backup_ops.list_backups(settings.backup_dir)
            assert manifest.kind == "scheduled" and manifest.verification.ok
        assert "backup" not in WORKERS.snapshot()  # stopped with the app
    finally:
        await db.dispose()


async def test_install_with_settings_configures_json_logs_and_in_app_backups(tmp_path, sqlite_url):
    import asyncio

    from litestar.datastructures import State

    from caja_web.ops.routes import health

    settings = load_settings(
        {"CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url, "CAJA_BACKUP_DIR": str(tmp_path / "inapp")}
    )
    db = Database(sqlite_url)
    root = logging.getLogger()
    try:
        app = Litestar(
            route_handlers=[health],
            state=State({"settings": settings, "db": db}),
            on_app_init=[lambda config: install(config, settings=settings, backups=True)],
        )
        assert any(h.get_name() == "caja" for h in root.handlers)
        async with AsyncTestClient(app=app) as client:
            for _ in range(600):  # up to 30 s on a busy machine
                if backup_ops.list_backups(settings.backup_dir):
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/health")).status_code == 200
        assert len(backup_ops.list_backups(settings.backup_dir)) == 1
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "caja"]:
            root.removeHandler(handler)
        await db.dispose()


async def test_metrics_with_an_admin_session_and_not_a_cashiers(client, setup):
    assert (await client.get("/metrics")).status_code == 401
    await client.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
    assert (await client.get("/metrics")).status_code == 401
    await client.post("/logout")
    await client.login("admin", venue_id=setup.venue_id)
    r = await client.get("/metrics")
    assert r.status_code == 200 and "payments" in r.json()
    assert (await client.get("/metrics/prometheus")).status_code == 200
    # An Authorization header decides on its own: a wrong token is 401 even for an admin.
    assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
