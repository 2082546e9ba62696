"""/health computed by the core: each state and its HTTP status, on SQLite and PostgreSQL."""

import asyncio
import json
import shutil
import socket
import subprocess
from datetime import timedelta

from sqlalchemy import update

from caja_core.clock import utcnow
from caja_core.db import migrate
from caja_core.db.engine import Database
from caja_core.ops.backups import create_backup, record_run
from caja_core.ops.health import check_health
from caja_core.ops.workers import WorkerRegistry
from caja_core.payments.models import BreakerState
from caja_core.registers.models import CashRegister
from caja_core.testing.factories import make_setup


async def test_all_well_is_ok_200(any_db):
    await make_setup(any_db)
    report = await check_health(any_db, provider_ids=["cash", "fake", "fakebackup"])
    assert report.status == "ok", report.problems
    assert report.http_status == 200
    assert report.services["database"] == "connected"
    assert report.services["migrations"]["status"] == "at_head"
    assert report.services["redis"] == "not_configured"
    caja1 = report.services["registers"]["CAJA1"]
    assert caja1["mode"] == "normal"
    assert caja1["providers"]["primary"] == {"id": "fake", "installed": True}
    assert caja1["allowed_methods"] == ["cash", "card", "backup"]


async def test_database_down_is_error_503():
    db = Database("postgresql://caja:topsecret-pw@127.0.0.1:1/nowhere")
    try:
        report = await check_health(db, timeout_s=2)
    finally:
        await db.dispose()
    assert report.status == "error"
    assert report.http_status == 503
    assert report.services["database"] == "unreachable"
    assert "registers" not in report.services
    text = json.dumps(report.to_dict())
    assert "topsecret-pw" not in text and "caja:" not in text


async def test_open_breaker_is_degraded_and_register_in_contingency(any_db):
    st = await make_setup(any_db)
    async with any_db.session() as s:
        s.add(
            BreakerState(
                device_key="fake:CAJA1",
                venue_id=st.venue_id,
                register_id=st.register_id,
                state="open",
                failure_count=3,
                opened_at=utcnow(),
                last_failure="sin respuesta",
            )
        )
    report = await check_health(any_db)
    assert report.status == "degraded"
    assert report.http_status == 200
    caja1 = report.services["registers"]["CAJA1"]
    assert caja1["breakers"] == {"fake:CAJA1": "open"}
    assert caja1["mode"] == "contingency"
    assert caja1["allowed_methods"] == ["cash", "backup"]
    assert any("corte open" in p for p in report.problems)


async def test_schema_behind_head_is_error(sqlite_url):
    migrate.downgrade(sqlite_url, "base")
    db = Database(sqlite_url)
    try:
        report = await check_health(db)
    finally:
        await db.dispose()
    assert report.status == "error"
    assert report.services["migrations"]["status"] == "pending"
    pending = report.services["migrations"]["pending"]
    assert pending == migrate.pending_revisions(None) and pending[-1] == migrate.head_revision()
    assert any("caja db upgrade" in p for p in report.problems)


async def test_stale_and_failing_workers_are_degraded(sqlite_db):
    workers = WorkerRegistry()
    workers.register("reconciliation", interval_s=1, stale_after_s=5)
    workers.beat("reconciliation")
    report = await check_health(sqlite_db, workers=workers)
    assert report.status == "ok"
    assert report.services["workers"]["reconciliation"]["status"] == "ok"

    later = utcnow() + timedelta(seconds=30)
    report = await check_health(sqlite_db, workers=workers, now=later)
    assert report.status == "degraded"
    assert report.services["workers"]["reconciliation"]["status"] == "stale"

    workers.beat("reconciliation", error="terminal CAJA1 no responde")
    report = await check_health(sqlite_db, workers=workers)
    assert report.status == "degraded"
    assert report.services["workers"]["reconciliation"]["status"] == "failing"
    assert report.services["workers"]["reconciliation"]["last_error"] == "terminal CAJA1 no responde"


async def test_agent_heartbeat_missing_is_degraded(any_db):
    st = await make_setup(any_db)
    async with any_db.session() as s:
        await s.execute(
            update(CashRegister)
            .where(CashRegister.id == st.register_id)
            .values(agent_token_hash="x", agent_last_seen_at=utcnow() - timedelta(minutes=10))
        )
    report = await check_health(any_db, agent_stale_after_s=120)
    assert report.status == "degraded"
    agent = report.services["registers"]["CAJA1"]["agent"]
    assert agent["status"] == "stale" and agent["age_s"] >= 600
    async with any_db.session() as s:
        await s.execute(
            update(CashRegister).where(CashRegister.id == st.register_id).values(agent_last_seen_at=utcnow())
        )
    report = await check_health(any_db, agent_stale_after_s=120)
    assert report.services["registers"]["CAJA1"]["agent"]["status"] == "ok"
    assert report.status == "ok"


async def test_register_naming_a_missing_provider_is_degraded(sqlite_db):
    await make_setup(sqlite_db)
    report = await check_health(sqlite_db, provider_ids=["cash", "fake"])
    assert report.status == "degraded"
    assert report.services["registers"]["CAJA1"]["providers"]["backup"] == {"id": "fakebackup", "installed": False}


async def test_backups_missing_old_or_failed_are_degraded(sqlite_db, sqlite_url, tmp_path):
    folder = tmp_path / "backups"
    report = await check_health(sqlite_db, backup_dir=str(folder))
    assert report.status == "degraded" and report.services["backups"]["status"] == "none"

    await create_backup(sqlite_url, folder)
    report = await check_health(sqlite_db, backup_dir=str(folder))
    assert report.status == "ok", report.problems
    assert report.services["backups"]["status"] == "ok"

    report = await check_health(sqlite_db, backup_dir=str(folder), now=utcnow() + timedelta(hours=27))
    assert report.status == "degraded" and report.services["backups"]["status"] == "stale"

    record_run(folder, error="pg_dump falló (código 1): disco lleno")
    report = await check_health(sqlite_db, backup_dir=str(folder))
    assert report.status == "degraded"
    assert report.services["backups"]["status"] == "failed"
    assert "disco lleno" in report.services["backups"]["last_error"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_redis_session_store_up_and_down(sqlite_db):
    server = shutil.which("redis-server")
    assert server, "redis-server is needed for this test"
    port = _free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "redis-secret-pw",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://:redis-secret-pw@127.0.0.1:{port}/0"
        for _ in range(50):
            report = await check_health(sqlite_db, redis_url=url, timeout_s=1)
            if report.services["redis"] == "connected":
                break
            await asyncio.sleep(0.1)
        assert report.services["redis"] == "connected"
        assert report.status == "ok"
        assert "redis-secret-pw" not in json.dumps(report.to_dict())
        wrong = await check_health(sqlite_db, redis_url=f"redis://:wrong@127.0.0.1:{port}/0", timeout_s=1)
        assert wrong.services["redis"] == "unreachable" and wrong.status == "error"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    report = await check_health(sqlite_db, redis_url=url, timeout_s=1)
    assert report.services["redis"] == "unreachable"
    assert report.status == "error" and report.http_status == 503


async def test_the_tls_certificate_expiry_shows_in_health_and_metrics(sqlite_db, tmp_path):
    from caja_core.ops import metrics
    from caja_core.ops.health import certificate_not_after

    cert = tmp_path / "fullchain.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=caja.example.cl",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    not_after = certificate_not_after(cert)
    assert timedelta(days=29) < not_after - utcnow() <= timedelta(days=30, minutes=5)

    report = await check_health(sqlite_db, tls_cert_file=str(cert))
    assert report.services["tls_certificate"]["status"] == "ok" and report.status == "ok", report.problems
    soon = await check_health(sqlite_db, tls_cert_file=str(cert), now=not_after - timedelta(days=10))
    assert soon.status == "degraded" and soon.services["tls_certificate"]["status"] == "expiring"
    assert any("vence en 10 días" in p for p in soon.problems), soon.problems
    expired = await check_health(sqlite_db, tls_cert_file=str(cert), now=not_after + timedelta(hours=1))
    assert expired.status == "error" and expired.http_status == 503

    await metrics.collect(sqlite_db, tls_cert_file=str(cert))
    exported = metrics.prometheus_text().decode()
    line = next(li for li in exported.splitlines() if li.startswith("caja_tls_certificate_expiry_timestamp_seconds "))
    assert float(line.split()[1]) == not_after.timestamp()

    unreadable = await check_health(sqlite_db, tls_cert_file=str(tmp_path / "key.pem"))
    assert unreadable.status == "degraded" and unreadable.services["tls_certificate"]["status"] == "unreadable"
