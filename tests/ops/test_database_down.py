"""Database down, served honestly: a real `caja serve` behind a TCP proxy to PostgreSQL that the test cuts.

While the database is gone pages answer a Spanish 503 (full page or HTMX partial), /health 503, the
background workers log one line per back-off step (no tracebacks); an instance that starts without its
database keeps running, answers 503 and starts serving once the database is back."""

import json
import re
import time
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.db import migrate
from caja_core.db.engine import Database
from caja_core.testing.factories import PASSWORD, make_setup

from .netkit import TOKEN, Serve, TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
async def proxied_database(pg_test_database):
    """A fresh, migrated PostgreSQL database with a venue, reached through a proxy the test can cut."""
    admin = pg_test_database.admin_url
    name = f"caja_down_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    direct = make_url(admin).set(database=name, drivername="postgresql").render_as_string(hide_password=False)
    await migrate.upgrade_async(direct)
    db = Database(direct)
    await make_setup(db)
    await db.dispose()
    parsed = make_url(direct)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    yield proxy, parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.cut()
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def login(client: httpx.Client) -> None:
    client.get("/login")
    r = client.post(
        "/login",
        data={"venue_id": "1", "username": "admin", "password": PASSWORD},
        headers={"x-csrftoken": client.cookies["caja_csrf"]},
    )
    assert r.status_code == 303, r.text


def log_records(serve: Serve) -> list[dict]:
    return [json.loads(line) for line in serve.log().splitlines() if line.startswith("{")]


def until(predicate, *, timeout_s: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"no ocurrió a tiempo: {what}"
        time.sleep(0.2)


def test_database_gone_while_serving_gives_spanish_503s_and_quiet_logs(proxied_database, tmp_path):
    proxy, url = proxied_database
    serve = Serve(tmp_path, "srv1-8001", CAJA_DATABASE_URL=url, CAJA_BACKUP_INTERVAL_HOURS="0")
    try:
        serve.wait("/health/ready")
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            login(client)
            assert client.get("/admin/").status_code == 200

            proxy.cut()
            for path in ("/login", "/admin/"):
                r = client.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text[:300])
                assert "La base de datos no responde" in r.text and "<html" in r.text
                assert "Error interno" not in r.text
            partial = client.get("/admin/", headers={"HX-Request": "true"})
            assert partial.status_code == 503 and "La base de datos no responde" in partial.text
            assert "<html" not in partial.text  # HTMX swaps a partial, not a page
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "error"

            def backoff_lines():
                lines = [
                    r["message"]
                    for r in log_records(serve)
                    if r["message"].startswith("reconciliation: la base de datos no responde")
                ]
                return lines if len(lines) >= 3 else None

            lines = until(backoff_lines, what="tres pasos de espera del proceso de conciliación")
            waits = [int(re.search(r"nuevo intento en (\d+) s", line).group(1)) for line in lines[:3]]
            assert waits == sorted(waits) and waits[-1] > waits[0], waits  # back-off, not every second
            text_log = serve.log()
            assert "Traceback" not in text_log and max(len(line) for line in text_log.splitlines()) < 1000

            proxy.restore()
            until(lambda: client.get("/health").status_code == 200, what="/health vuelve a 200")
            assert client.get("/admin/").status_code == 200  # the session survived the outage
    finally:
        assert serve.stop() == 0


def test_starting_without_the_database_serves_503_then_starts(proxied_database, tmp_path):
    proxy, url = proxied_database
    proxy.cut()
    serve = Serve(tmp_path, "srv1-8002", CAJA_DATABASE_URL=url, CAJA_BACKUP_INTERVAL_HOURS="0")
    try:
        serve.wait("/health/live")  # the process runs and answers
        health = httpx.get(serve.url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert health.status_code == 503
        assert health.json()["services"]["lifecycle"] == "starting"
        assert httpx.get(serve.url + "/health/ready", timeout=30).status_code == 503
        page = httpx.get(serve.url + "/login", timeout=30)
        assert page.status_code == 503 and "arrancando" in page.text

        def retries():
            return sum(1 for r in log_records(serve) if "nuevo intento en" in r["message"]) >= 2

        until(retries, what="dos reintentos registrados")
        assert serve.proc.poll() is None and "Traceback" not in serve.log()

        proxy.restore()
        serve.wait("/health/ready", timeout_s=90)
        assert httpx.get(serve.url + "/login", timeout=30).status_code == 200
    finally:
        assert serve.stop() == 0
