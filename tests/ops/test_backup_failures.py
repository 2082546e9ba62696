"""Backups an operator can rely on: every failure shows (health, metric, one log line, nothing left half
written), a damaged manifest is listed and reported, verification never rewrites what it verifies, and the
retention keeps the verified copies."""

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from caja_core.ops import metrics
from caja_core.ops.backups import (
    BackupFailed,
    BackupManifest,
    BackupScheduler,
    Verification,
    apply_retention,
    create_backup,
    list_backups,
    scan_backups,
    verify_backup,
)
from caja_core.ops.health import check_health
from caja_core.ops.heartbeats import Heartbeat
from caja_core.ops.workers import WorkerRegistry

from .conftest import sell, tmpfs

CAJA = str(Path(sys.executable).parent / "caja")


def caja(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CAJA, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def scrape_value(name: str, **labels: str) -> float | None:
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def _runner_fails_and_everyone_sees_it(db, folder: Path, caplog) -> str:
    """A scheduled run into ``folder`` fails; another instance (no access to the folder) sees it."""
    workers = WorkerRegistry()
    scheduler = BackupScheduler(db.url, folder, interval_s=3600, workers=workers)
    heartbeat = Heartbeat(db, name="srv1-worker", kind="worker", workers=workers, backup_info=scheduler.report)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="caja.backups"), pytest.raises(BackupFailed) as failed:
        await scheduler.run_once()
    errors = [r for r in caplog.records if r.name == "caja.backups" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None  # one clear line, no traceback
    assert failed.value.message in errors[0].getMessage()
    await heartbeat.beat_once()

    # Another app instance: no backup folder of its own, only the database.
    report = await check_health(db, backups_expected=True, instance="srv2-8001")
    assert report.status == "degraded", report.problems
    assert report.services["backups"]["status"] == "failed"
    assert report.services["backups"]["runner"] == "srv1-worker"
    assert any(p.startswith("El último respaldo falló") for p in report.problems)
    await metrics.collect(db, backups_expected=True, instance="srv2-8001")
    assert scrape_value("caja_backup_last_run_failed") == 1
    return report.services["backups"]["last_error"]


async def test_a_full_backup_disk_shows_in_health_metrics_and_log_and_leaves_nothing(any_db, tmp_path, caplog):
    await sell(any_db)
    folder = tmp_path / "full"
    with tmpfs(folder, size="16k"):
        error = await _runner_fails_and_everyone_sees_it(any_db, folder, caplog)
        leftovers = [p.name for p in folder.iterdir() if p.name not in (".scheduler.lock", "status.json")]
        assert leftovers == [], leftovers  # no partial data file, no manifest without data
        assert not [p for p in folder.iterdir() if p.stat().st_size == 0 and p.name != ".scheduler.lock"]
    assert "lleno" in error or "full" in error or "No space" in error, error


async def test_a_read_only_backup_folder_shows_the_same_way(sqlite_db, tmp_path, caplog):
    await sell(sqlite_db)
    folder = tmp_path / "readonly"
    with tmpfs(folder, read_only=True):
        error = await _runner_fails_and_everyone_sees_it(sqlite_db, folder, caplog)
    assert "solo lectura" in error, error


async def test_backup_age_is_exported_only_where_backups_run(sqlite_db, tmp_path):
    await sell(sqlite_db)
    # No process takes backups and this instance does not either: no age series (the alert on its absence
    # fires), never a reassuring 0.
    await metrics.collect(sqlite_db, backups_expected=False, instance="srv2-8001")
    text = metrics.prometheus_text().decode()
    assert "caja_backup_age_seconds" not in text.replace("# HELP caja_backup_age_seconds", "")
    # A runner reports: every instance exports its age.
    workers = WorkerRegistry()
    scheduler = BackupScheduler(sqlite_db.url, tmp_path / "b", interval_s=3600, workers=workers)
    await scheduler.run_once()
    await Heartbeat(
        sqlite_db, name="srv1-worker", kind="worker", workers=workers, backup_info=scheduler.report
    ).beat_once()
    await metrics.collect(sqlite_db, backups_expected=False, instance="srv2-8001")
    age = scrape_value("caja_backup_age_seconds")
    assert age is not None and 0 <= age < 120
    assert scrape_value("caja_backup_last_run_failed") == 0


async def test_a_damaged_manifest_is_listed_as_damaged_and_verify_says_so(sqlite_db, tmp_path):
    await sell(sqlite_db)
    older = await create_backup(sqlite_db.url, tmp_path, now=datetime.now(UTC) - timedelta(hours=2))
    assert (await verify_backup(tmp_path, older.id)).ok
    newer = await create_backup(sqlite_db.url, tmp_path)
    manifest = tmp_path / f"{newer.id}.json"
    manifest.write_bytes(manifest.read_bytes()[:40])  # a torn write

    entries = scan_backups(tmp_path)
    assert [e.id for e in entries] == [newer.id, older.id]
    assert entries[0].damaged.startswith(f"El manifiesto {newer.id}.json está dañado")
    # "latest" is the newest backup, damaged or not: never silently an older one.
    latest = await verify_backup(tmp_path, "latest")
    assert not latest.ok and len(latest.problems) == 1 and "dañado" in latest.problems[0]

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.update({"CAJA_SECRET_KEY": "x" * 40, "CAJA_DATABASE_URL": sqlite_db.url.replace("+aiosqlite", "")})
    env["CAJA_BACKUP_DIR"] = str(tmp_path)
    listing = await asyncio.to_thread(caja, env, "backup", "list")
    assert listing.returncode == 0 and newer.id in listing.stdout and "DAÑADO" in listing.stdout
    checked = await asyncio.to_thread(caja, env, "backup", "verify", newer.id)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stderr.strip().count("\n") == 0 and "dañado" in checked.stderr  # one line


async def test_verify_never_rewrites_the_backup_it_verifies(sqlite_db, tmp_path):
    await sell(sqlite_db)
    manifest = await create_backup(sqlite_db.url, tmp_path)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    for _ in range(2):
        assert (await verify_backup(tmp_path, manifest.id)).ok
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in files} == files  # data and manifest untouched
    assert set(after) - set(files) == {f"{manifest.id}.verify.json"}  # the verdict goes beside them
    assert list_backups(tmp_path)[0].verification.ok


def _fake(folder: Path, created: datetime, verified: bool | None) -> str:
    backup_id = f"caja-{created:%Y%m%dT%H%M%S}Z-{os.urandom(2).hex()}"
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
    if verified is not None:
        result = Verification(
            verified_at=created,
            ok=verified,
            checksum_ok=verified,
            restore_ok=verified,
            counts_ok=verified,
            problems=[] if verified else ["La suma SHA-256 no coincide"],
            duration_s=0,
        )
        (folder / f"{backup_id}.verify.json").write_bytes(msgspec.json.encode(result))
    return backup_id


def test_retention_keeps_verified_copies_over_failed_ones(tmp_path):
    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    good_old = _fake(tmp_path, now - timedelta(days=3, hours=4), verified=True)
    failed_newer_same_day = _fake(tmp_path, now - timedelta(days=3, hours=1), verified=False)
    failed_recentish = [_fake(tmp_path, now - timedelta(days=d, hours=2), verified=False) for d in (1, 2)]
    deleted = apply_retention(tmp_path, keep_daily=1, keep_weekly=0, timezone_name="UTC", now=now)
    kept = {e.id for e in scan_backups(tmp_path)}
    # The newest verified copy is never deleted, even when newer failed ones fill the daily slots; the day's
    # copy is its verified one, not the failed one taken later that day.
    assert good_old in kept
    assert failed_newer_same_day in deleted
    assert failed_recentish[0] in kept  # the only copy of the last day (nothing better that day)
    assert not (tmp_path / f"{failed_newer_same_day}.verify.json").exists()
