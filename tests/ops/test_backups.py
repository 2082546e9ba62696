"""Backups on both databases: create, verify (checksum + test restore + counts), corrupt, restore,
retention, the scheduled job and its failures."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from caja_core.db.engine import Database
from caja_core.errors import Conflict
from caja_core.ops import metrics
from caja_core.ops.backups import (
    BackupFailed,
    BackupManifest,
    BackupScheduler,
    apply_retention,
    backup_status,
    count_rows,
    create_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from caja_core.ops.workers import WorkerRegistry
from caja_core.sales import service as sales
from caja_core.testing.waiting import count_calls, wait_until

from .conftest import sell


def _corrupt_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


async def test_create_then_corrupt_one_byte_fails_verification(any_db, tmp_path):
    await sell(any_db)
    manifest = await create_backup(any_db.url, tmp_path)
    assert manifest.row_counts["sales"] == 3
    assert manifest.totals["sales.total"] > 0
    assert manifest.schema_revision is not None
    assert len(manifest.sha256) == 64 and manifest.size == (tmp_path / manifest.file).stat().st_size

    good = await verify_backup(tmp_path, manifest.id, database_url=any_db.url)
    assert good.ok, good.problems
    assert good.checksum_ok and good.restore_ok and good.counts_ok

    _corrupt_one_byte(tmp_path / manifest.file)
    bad = await verify_backup(tmp_path, manifest.id, database_url=any_db.url)
    assert not bad.ok and not bad.checksum_ok
    assert "SHA-256" in bad.problems[0]
    # The verdict is kept in the manifest (the admin page and /health read it).
    assert list_backups(tmp_path)[0].verification.ok is False
    assert backup_status(tmp_path).status == "failed"
    with pytest.raises(Conflict):
        await restore_backup(tmp_path, manifest.id, any_db.url)


async def test_verify_catches_a_backup_whose_rows_differ_from_its_manifest(any_db, tmp_path):
    await sell(any_db)
    manifest = await create_backup(any_db.url, tmp_path)
    # A manifest that lies about the rows (the data file is intact): the test restore must notice.
    manifest.row_counts["sales"] = 99
    (tmp_path / f"{manifest.id}.json").write_bytes(msgspec.json.encode(manifest))
    result = await verify_backup(tmp_path, manifest.id, database_url=any_db.url)
    assert result.checksum_ok and result.restore_ok and not result.counts_ok and not result.ok
    assert any("sales" in p and "99" in p for p in result.problems)


async def _new_pg_database(admin_url: str) -> str:
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"caja_restore_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(admin_url: str, url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    await engine.dispose()


async def test_create_restore_gives_same_rows_and_totals_postgres(pg_db, tmp_path):
    await sell(pg_db, sales_count=4)
    manifest = await create_backup(pg_db.url, tmp_path)
    source = await count_rows(pg_db.url)
    target = await _new_pg_database(pg_db.url)
    try:
        result = await restore_backup(tmp_path, manifest.id, target, safety_backup=False)
        assert result.counts_ok, result.problems
        restored = await count_rows(target)
        assert restored == source  # same row counts, same money totals, same schema revision
        assert restored[1]["sales.total"] == manifest.totals["sales.total"] > 0
        # The restored database works: the app's services read it.
        db = Database(target)
        try:
            async with db.session() as s:
                listed = await sales.list_sales(s, venue_id=1)
            assert len(listed) == 4
        finally:
            await db.dispose()
    finally:
        await _drop_pg_database(pg_db.url, target)


async def test_restore_in_place_brings_back_the_backed_up_state(any_db, tmp_path):
    st, session = await sell(any_db, sales_count=2)
    manifest = await create_backup(any_db.url, tmp_path)
    before = await count_rows(any_db.url)
    await sell_more(any_db, st, session)
    assert (await count_rows(any_db.url))[0]["sales"] == 3
    await any_db.dispose()  # the app is stopped for a restore
    result = await restore_backup(tmp_path, manifest.id, any_db.url)
    assert result.counts_ok, result.problems
    assert await count_rows(any_db.url) == before
    # The state replaced by the restore was backed up first.
    safety = next(m for m in list_backups(tmp_path) if m.id == result.safety_backup_id)
    assert safety.kind == "pre-restore" and safety.row_counts["sales"] == 3


async def sell_more(db, st, session):
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=st.venue_id,
            session_id=session.id,
            cashier_id=st.cashier_id,
            items=[sales.ItemInput(product_id=st.products["Agua"], quantity=2)],
            idempotency_key=str(uuid.uuid4()),
        )
        await sales.pay_cash(s, venue_id=st.venue_id, sale_id=sale.id, cash_received=None, user_id=st.cashier_id)


async def test_sqlite_backup_is_consistent_while_the_app_writes(sqlite_db, tmp_path):
    st, session = await sell(sqlite_db, sales_count=1)
    stop = asyncio.Event()

    async def keep_selling():
        while not stop.is_set():
            await sell_more(sqlite_db, st, session)

    writer = asyncio.create_task(keep_selling())
    try:
        manifests = []
        for _ in range(3):
            manifests.append(await create_backup(sqlite_db.url, tmp_path))
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await writer
    for manifest in manifests:
        result = await verify_backup(tmp_path, manifest.id)
        assert result.ok, result.problems
        # Each snapshot is internally consistent: the session's running total equals its paid sales.
        assert manifest.totals["cash_sessions.sales_total"] == manifest.totals["sales.total"]
    assert manifests[-1].row_counts["sales"] > manifests[0].row_counts["sales"]


def _fake_backup(folder: Path, created: datetime) -> str:
    backup_id = f"caja-{created:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:4]}"
    (folder / f"{backup_id}.sqlite3").write_bytes(b"x")
    manifest = BackupManifest(
        id=backup_id,
        file=f"{backup_id}.sqlite3",
        database="sqlite",
        format="sqlite",
        database_name="caja.db",
        created_at=created,
        duration_s=0,
        size=1,
        sha256="0" * 64,
        schema_revision="0001",
        row_counts={},
        totals={},
        kind="scheduled",
    )
    (folder / f"{backup_id}.json").write_bytes(msgspec.json.encode(manifest))
    return backup_id


def test_retention_keeps_n_daily_and_m_weekly(tmp_path):
    start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)  # a Thursday
    ids = {}
    for days_ago in range(60):
        for hour in (0, 12):
            created = start - timedelta(days=days_ago, hours=hour)
            ids[created] = _fake_backup(tmp_path, created)
    deleted = apply_retention(
        tmp_path, keep_daily=7, keep_weekly=4, timezone_name="UTC", now=start + timedelta(hours=1)
    )
    kept = list_backups(tmp_path)
    kept_days = {m.created_at.date() for m in kept}
    # The newest of each of the last 7 days…
    for days_ago in range(7):
        day = (start - timedelta(days=days_ago)).date()
        assert day in kept_days
    # …one per ISO week for the last 4 weeks, nothing older, and the files of the others are gone.
    assert len({m.created_at.isocalendar()[:2] for m in kept}) == 4
    assert min(m.created_at for m in kept) >= start - timedelta(weeks=4)
    assert len(kept) + len(deleted) == 120
    assert len(list(tmp_path.glob("*.sqlite3"))) == len(kept)
    assert kept[0].id == ids[start]
    # Everything of the last 24 hours stays (a manual backup taken a moment ago is never pruned).
    assert ids[start - timedelta(hours=12)] in {m.id for m in kept}


async def test_scheduler_backs_up_verifies_and_reports_failures(any_db, tmp_path):
    await sell(any_db)
    workers = WorkerRegistry()
    scheduler = BackupScheduler(any_db.url, tmp_path, interval_s=3600, check_every_s=0.05, workers=workers)
    checks = count_calls(scheduler, "run_once")
    await scheduler.start()
    try:
        await wait_until(  # up to 30 s on a busy machine
            lambda: (
                list_backups(tmp_path) and "backup" in workers.snapshot() and workers.snapshot()["backup"].last_ok_at
            ),
            timeout_s=30,
            what="el primer respaldo programado, verificado",
        )
        backups = list_backups(tmp_path)
        assert len(backups) == 1 and backups[0].kind == "scheduled" and backups[0].verification.ok
        done = checks()
        await wait_until(lambda: checks() >= done + 3, timeout_s=10, what="tres revisiones más del programador")
        assert len(list_backups(tmp_path)) == 1  # not due again for an hour
        assert workers.snapshot()["backup"].state() == "ok"
    finally:
        await scheduler.stop()
    assert backup_status(tmp_path).status == "ok"

    failed_before = metrics.BACKUP_RUNS.labels(result="failed")._value.get()
    broken = BackupScheduler(
        "sqlite:///" + str(tmp_path / "missing" / "nothing.db"), tmp_path / "other", interval_s=60, workers=workers
    )
    with pytest.raises(BackupFailed):
        await broken.run_once()
    status = backup_status(tmp_path / "other")
    assert status.status == "failed" and "No existe la base" in status.last_error
    assert metrics.BACKUP_RUNS.labels(result="failed")._value.get() == failed_before + 1


async def test_scheduled_backup_runs_once_across_two_postgres_instances(pg_db, tmp_path):
    await sell(pg_db)
    a = BackupScheduler(pg_db.url, tmp_path, interval_s=3600, workers=WorkerRegistry())
    b = BackupScheduler(pg_db.url, tmp_path, interval_s=3600, workers=WorkerRegistry())
    results = await asyncio.gather(a.run_once(), b.run_once())
    assert sum(1 for r in results if r is not None) == 1
    assert len(list_backups(tmp_path)) == 1
