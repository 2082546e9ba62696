"""Verified backups of the caja database, on SQLite and PostgreSQL.

* SQLite: the online backup API (a consistent copy while the app keeps selling).
* PostgreSQL: ``pg_dump --format=custom`` run on a snapshot exported from a REPEATABLE READ transaction, so
  the row counts of the manifest describe exactly what the dump holds.

Each backup is two files in the backup folder: the data (``<id>.sqlite3`` or ``<id>.dump``) and its manifest
``<id>.json`` (SHA-256, size, schema revision, time, row counts per table, money totals). The manifest is
written last: a backup interrupted half-way never shows up in the list.

``verify`` recomputes the checksum and restores into a scratch database (a temporary SQLite file, or a
scratch PostgreSQL database that is dropped afterwards), then compares row counts and totals with the
manifest. ``restore`` checks the checksum, takes a safety backup of the current database, restores
atomically and compares the counts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ..clock import utcnow
from ..db.engine import normalise_url
from ..errors import CajaError, Conflict, NotFound

#: Money totals kept in the manifest (table, column): a restore must give back the same sums.
TOTAL_COLUMNS = (
    ("sales", "total"),
    ("sale_items", "line_total"),
    ("payment_attempts", "amount"),
    ("cash_sessions", "sales_total"),
    ("cash_movements", "amount"),
)
STATUS_FILE = "status.json"
PG_LOCK_KEY = 0x6361_6A61  # "caja": one scheduled backup at a time across instances


class BackupFailed(CajaError):
    status = 500
    code = "backup.failed"


class Verification(msgspec.Struct, kw_only=True):
    verified_at: datetime
    ok: bool
    checksum_ok: bool
    restore_ok: bool
    counts_ok: bool
    problems: list[str]
    duration_s: float


class BackupManifest(msgspec.Struct, kw_only=True):
    id: str
    file: str
    database: Literal["sqlite", "postgresql"]
    format: Literal["sqlite", "pg_custom"]
    database_name: str
    created_at: datetime
    duration_s: float
    size: int
    sha256: str
    schema_revision: str | None
    row_counts: dict[str, int]
    totals: dict[str, int]
    kind: str = "manual"
    caja_version: str = ""
    verification: Verification | None = None


class RestoreResult(msgspec.Struct, kw_only=True):
    backup_id: str
    safety_backup_id: str | None
    row_counts: dict[str, int]
    totals: dict[str, int]
    counts_ok: bool
    problems: list[str]


class BackupStatus(msgspec.Struct, kw_only=True):
    #: ok / stale (newest older than the limit) / failed (last run failed) / none (no backup yet)
    status: str
    count: int
    newest_id: str | None
    last_success_at: datetime | None
    age_hours: float | None
    last_attempt_at: datetime | None
    last_error: str
    newest_verified: bool | None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)


# --------------------------------------------------------------------------------------------- helpers


def _dialect(url: str) -> str:
    return make_url(normalise_url(url)).get_backend_name()


def _sqlite_path(url: str) -> Path:
    database = make_url(normalise_url(url)).database
    if not database or database == ":memory:":
        raise BackupFailed("Una base SQLite en memoria no se puede respaldar.", code="backup.memory")
    return Path(database)


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore/psql connection arguments; the password goes in the environment, never argv."""
    parsed = make_url(normalise_url(url))
    args = ["-w"]
    if parsed.host:
        args += ["-h", parsed.host]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    if parsed.username:
        args += ["-U", parsed.username]
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return args, env


def _pg_url_for(url: str, database: str) -> str:
    return make_url(normalise_url(url)).set(database=database).render_as_string(hide_password=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _caja_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("caja-core")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0"


def _table_names() -> list[str]:
    from ..db.models import metadata

    return [t.name for t in metadata.sorted_tables]


def _new_id(now: datetime) -> str:
    return f"caja-{now.astimezone(UTC):%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:4]}"


async def _run(*argv: str, env: dict[str, str] | None = None, timeout_s: float = 3600) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BackupFailed(f"{Path(argv[0]).name} no terminó en {timeout_s:.0f} s.") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise BackupFailed(
            f"{Path(argv[0]).name} falló (código {proc.returncode}): {message[-1] if message else 'sin mensaje'}"
        )


# ------------------------------------------------------------------------------------ counting rows


def _sqlite_counts(path: Path) -> tuple[dict[str, int], dict[str, int], str | None]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in _table_names() if t in existing}
        totals = {
            f"{t}.{c}": int(conn.execute(f'SELECT coalesce(sum("{c}"), 0) FROM "{t}"').fetchone()[0])
            for t, c in TOTAL_COLUMNS
            if t in existing
        }
        revision = None
        if "alembic_version" in existing:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        return counts, totals, revision
    finally:
        conn.close()


async def _pg_counts(conn) -> tuple[dict[str, int], dict[str, int], str | None]:
    existing = set(
        (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))).scalars()
    )
    counts = {}
    for t in _table_names():
        if t in existing:
            counts[t] = int((await conn.execute(text(f'SELECT count(*) FROM "{t}"'))).scalar())
    totals = {}
    for t, c in TOTAL_COLUMNS:
        if t in existing:
            totals[f"{t}.{c}"] = int((await conn.execute(text(f'SELECT coalesce(sum("{c}"), 0) FROM "{t}"'))).scalar())
    revision = None
    if "alembic_version" in existing:
        revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    return counts, totals, revision


async def count_rows(database_url: str) -> tuple[dict[str, int], dict[str, int], str | None]:
    """Row counts per table, money totals and schema revision of a live database."""
    if _dialect(database_url) == "sqlite":
        return await asyncio.to_thread(_sqlite_counts, _sqlite_path(database_url))
    engine = create_async_engine(normalise_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await _pg_counts(conn)
    finally:
        await engine.dispose()


# -------------------------------------------------------------------------------------------- create


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.exists():
        raise BackupFailed(f"No existe la base SQLite {source}.", code="backup.no_database")
    src = sqlite3.connect(str(source), timeout=30)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)  # whole database in one step: a consistent snapshot even while the app writes
        dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file (no -wal beside it)
        dst.commit()
    finally:
        dst.close()
        src.close()


async def create_backup(
    database_url: str, backup_dir: str | Path, *, kind: str = "manual", now: datetime | None = None
) -> BackupManifest:
    """Back up the database at ``database_url`` into ``backup_dir`` and write its manifest."""
    folder = Path(backup_dir)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    now = now or utcnow()
    backup_id = _new_id(now)
    started = time.monotonic()
    dialect = _dialect(database_url)
    fmt: Literal["sqlite", "pg_custom"]
    db_kind: Literal["sqlite", "postgresql"]
    if dialect == "sqlite":
        source = _sqlite_path(database_url)
        final = folder / f"{backup_id}.sqlite3"
        part = folder / f"{backup_id}.sqlite3.part"
        try:
            await asyncio.to_thread(_sqlite_backup, source, part)
            counts, totals, revision = await asyncio.to_thread(_sqlite_counts, part)
        except sqlite3.Error as exc:
            part.unlink(missing_ok=True)
            raise BackupFailed(f"El respaldo SQLite falló: {exc}") from exc
        database_name, fmt, db_kind = source.name, "sqlite", "sqlite"
    else:
        final = folder / f"{backup_id}.dump"
        part = folder / f"{backup_id}.dump.part"
        args, env = _pg_args(database_url)
        database_name = make_url(normalise_url(database_url)).database or ""
        engine = create_async_engine(normalise_url(database_url), poolclass=NullPool, isolation_level="REPEATABLE READ")
        try:
            async with engine.connect() as conn:
                snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar()
                counts, totals, revision = await _pg_counts(conn)
                await _run(
                    "pg_dump",
                    *args,
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    "--no-owner",
                    "--no-privileges",
                    "-f",
                    str(part),
                    "-d",
                    database_name,
                    env=env,
                )
                await conn.rollback()
        except BackupFailed:
            part.unlink(missing_ok=True)
            raise
        except Exception as exc:
            part.unlink(missing_ok=True)
            raise BackupFailed(f"El respaldo PostgreSQL falló: {type(exc).__name__}: {exc}") from exc
        finally:
            await engine.dispose()
        fmt, db_kind = "pg_custom", "postgresql"
    os.replace(part, final)
    manifest = BackupManifest(
        id=backup_id,
        file=final.name,
        database=db_kind,
        format=fmt,
        database_name=database_name,
        created_at=now,
        duration_s=round(time.monotonic() - started, 3),
        size=final.stat().st_size,
        sha256=await asyncio.to_thread(_sha256, final),
        schema_revision=revision,
        row_counts=counts,
        totals=totals,
        kind=kind,
        caja_version=_caja_version(),
    )
    _write_manifest(folder, manifest)
    return manifest


def _write_manifest(folder: Path, manifest: BackupManifest) -> None:
    target = folder / f"{manifest.id}.json"
    tmp = folder / f"{manifest.id}.json.part"
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2))
    os.replace(tmp, target)


# ----------------------------------------------------------------------------------------- list/get


def list_backups(backup_dir: str | Path) -> list[BackupManifest]:
    """Every backup with a manifest, newest first."""
    folder = Path(backup_dir)
    if not folder.is_dir():
        return []
    manifests = []
    for path in folder.glob("caja-*.json"):
        try:
            manifests.append(msgspec.json.decode(path.read_bytes(), type=BackupManifest))
        except (msgspec.DecodeError, msgspec.ValidationError, OSError):
            continue
    return sorted(manifests, key=lambda m: (m.created_at, m.id), reverse=True)


def get_backup(backup_dir: str | Path, backup_id: str) -> BackupManifest:
    path = Path(backup_dir) / f"{backup_id}.json"
    if "/" in backup_id or not path.exists():
        raise NotFound(f"No existe el respaldo {backup_id!r} en {backup_dir}.", code="backup.not_found")
    return msgspec.json.decode(path.read_bytes(), type=BackupManifest)


def _resolve(backup_dir: str | Path, backup: str | BackupManifest) -> BackupManifest:
    if isinstance(backup, BackupManifest):
        return backup
    if backup == "latest":
        backups = list_backups(backup_dir)
        if not backups:
            raise NotFound(f"No hay respaldos en {backup_dir}.", code="backup.not_found")
        return backups[0]
    return get_backup(backup_dir, backup)


# -------------------------------------------------------------------------------------------- verify


def _compare(manifest: BackupManifest, counts: dict[str, int], totals: dict[str, int]) -> list[str]:
    problems = []
    for table, expected in manifest.row_counts.items():
        got = counts.get(table)
        if got != expected:
            problems.append(f"La tabla {table} tiene {got} filas; el manifiesto dice {expected}.")
    for name, expected in manifest.totals.items():
        got = totals.get(name)
        if got != expected:
            problems.append(f"La suma {name} es {got}; el manifiesto dice {expected}.")
    return problems


async def _scratch_pg(database_url: str):
    """Create a scratch database on the same server; return (url, drop coroutine factory)."""
    name = f"caja_verify_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(normalise_url(database_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()

    async def drop() -> None:
        engine = create_async_engine(normalise_url(database_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await engine.dispose()

    return name, drop


async def verify_backup(
    backup_dir: str | Path, backup: str | BackupManifest, *, database_url: str | None = None
) -> Verification:
    """Recompute the checksum, test-restore into a scratch database and compare counts and totals.

    ``database_url`` (PostgreSQL backups): the server where the scratch database is created (the live one).
    The verdict is stored in the manifest.
    """
    folder = Path(backup_dir)
    manifest = _resolve(folder, backup)
    started = time.monotonic()
    problems: list[str] = []
    data = folder / manifest.file
    checksum_ok = restore_ok = counts_ok = False
    if not data.exists():
        problems.append(f"Falta el archivo {manifest.file}.")
    else:
        actual = await asyncio.to_thread(_sha256, data)
        checksum_ok = actual == manifest.sha256 and data.stat().st_size == manifest.size
        if not checksum_ok:
            problems.append(
                f"La suma SHA-256 no coincide (archivo {actual[:12]}…, manifiesto "
                f"{manifest.sha256[:12]}…): el archivo está dañado."
            )
    if checksum_ok:
        if manifest.format == "sqlite":
            with tempfile.TemporaryDirectory(prefix="caja-verify-") as tmp:
                scratch = Path(tmp) / "verify.sqlite3"
                try:
                    await asyncio.to_thread(shutil.copyfile, data, scratch)
                    check = await asyncio.to_thread(_sqlite_integrity, scratch)
                    if check != "ok":
                        problems.append(f"SQLite integrity_check: {check}")
                    counts, totals, _ = await asyncio.to_thread(_sqlite_counts, scratch)
                    restore_ok = check == "ok"
                except sqlite3.Error as exc:
                    problems.append(f"La restauración de prueba falló: {exc}")
                    counts, totals = {}, {}
        else:
            if not database_url or _dialect(database_url) != "postgresql":
                raise BackupFailed(
                    "Para verificar un respaldo PostgreSQL se necesita la URL del servidor (CAJA_DATABASE_URL).",
                    code="backup.needs_server",
                )
            name, drop = await _scratch_pg(database_url)
            try:
                args, env = _pg_args(database_url)
                await _run(
                    "pg_restore",
                    *args,
                    "--no-owner",
                    "--no-privileges",
                    "--exit-on-error",
                    "-d",
                    name,
                    str(data),
                    env=env,
                )
                restore_ok = True
                counts, totals, _ = await count_rows(_pg_url_for(database_url, name))
            except BackupFailed as exc:
                problems.append(f"La restauración de prueba falló: {exc.message}")
                counts, totals = {}, {}
            finally:
                await drop()
        if restore_ok:
            mismatches = _compare(manifest, counts, totals)
            counts_ok = not mismatches
            problems.extend(mismatches)
    verification = Verification(
        verified_at=utcnow(),
        ok=checksum_ok and restore_ok and counts_ok,
        checksum_ok=checksum_ok,
        restore_ok=restore_ok,
        counts_ok=counts_ok,
        problems=problems,
        duration_s=round(time.monotonic() - started, 3),
    )
    manifest.verification = verification
    if (folder / f"{manifest.id}.json").exists():
        _write_manifest(folder, manifest)
    return verification


def _sqlite_integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(r[0] for r in rows[:5])
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- restore


def _sqlite_restore(backup: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    dst = sqlite3.connect(str(target), timeout=30)
    try:
        src.backup(dst)  # replaces the target's content under its own lock, all or nothing
    finally:
        dst.close()
        src.close()


async def restore_backup(
    backup_dir: str | Path,
    backup: str | BackupManifest,
    database_url: str,
    *,
    safety_backup: bool = True,
    lock_timeout_s: int = 10,
) -> RestoreResult:
    """Replace the database at ``database_url`` with the backup's content.

    Stop the app instances first (on PostgreSQL the restore waits at most ``lock_timeout_s`` for their
    locks, then gives up without changing anything). A backup of the current database is taken first
    unless ``safety_backup`` is False.
    """
    folder = Path(backup_dir)
    manifest = _resolve(folder, backup)
    data = folder / manifest.file
    if not data.exists():
        raise NotFound(f"Falta el archivo {manifest.file} del respaldo.", code="backup.file_missing")
    if await asyncio.to_thread(_sha256, data) != manifest.sha256:
        raise Conflict(
            "La suma SHA-256 del respaldo no coincide: el archivo está dañado; no se restauró nada.",
            code="backup.corrupt",
        )
    dialect = _dialect(database_url)
    if (dialect == "sqlite") != (manifest.format == "sqlite"):
        raise Conflict(f"El respaldo es de {manifest.database} y la base destino no.", code="backup.mismatch")
    safety_id = None
    if safety_backup:
        exists = dialect != "sqlite" or _sqlite_path(database_url).exists()
        if exists:
            safety_id = (await create_backup(database_url, folder, kind="pre-restore")).id
    if dialect == "sqlite":
        await asyncio.to_thread(_sqlite_restore, data, _sqlite_path(database_url))
    else:
        args, env = _pg_args(database_url)
        database_name = make_url(normalise_url(database_url)).database or ""
        with tempfile.TemporaryDirectory(prefix="caja-restore-") as tmp:
            script = Path(tmp) / "restore.sql"
            await _run("pg_restore", "--no-owner", "--no-privileges", "-f", str(script), str(data), env=env)
            # One transaction: drop the current schema, load the backup; any error leaves the database as it was.
            await _run(
                "psql",
                *args,
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-d",
                database_name,
                "-c",
                f"SET lock_timeout = '{int(lock_timeout_s)}s'",
                "-c",
                "DROP SCHEMA IF EXISTS public CASCADE",
                "-c",
                "CREATE SCHEMA public",
                "-f",
                str(script),
                env=env,
            )
    counts, totals, _ = await count_rows(database_url)
    problems = _compare(manifest, counts, totals)
    return RestoreResult(
        backup_id=manifest.id,
        safety_backup_id=safety_id,
        row_counts=counts,
        totals=totals,
        counts_ok=not problems,
        problems=problems,
    )


# ----------------------------------------------------------------------------------------- retention


def apply_retention(
    backup_dir: str | Path,
    *,
    keep_daily: int,
    keep_weekly: int,
    timezone_name: str = "UTC",
    now: datetime | None = None,
) -> list[str]:
    """Keep every backup of the last 24 hours, the newest backup of each of the last ``keep_daily`` days and
    of each of the last ``keep_weekly`` ISO weeks (days in the venue's zone); delete the others. Returns the
    ids deleted."""
    folder = Path(backup_dir)
    backups = list_backups(folder)
    if not backups:
        return []
    tz = ZoneInfo(timezone_name)
    recent = (now or utcnow()) - timedelta(hours=24)
    keep: set[str] = {backups[0].id} | {m.id for m in backups if m.created_at > recent}
    days: list[Any] = []
    weeks: list[Any] = []
    for manifest in backups:  # newest first: the first seen of each day/week is that period's newest
        local = manifest.created_at.astimezone(tz)
        day = local.date()
        week = local.isocalendar()[:2]
        if day not in days and len(days) < keep_daily:
            days.append(day)
            keep.add(manifest.id)
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.append(week)
            keep.add(manifest.id)
    deleted = []
    for manifest in backups:
        if manifest.id in keep:
            continue
        (folder / manifest.file).unlink(missing_ok=True)
        (folder / f"{manifest.id}.json").unlink(missing_ok=True)
        deleted.append(manifest.id)
    return deleted


# -------------------------------------------------------------------------------------------- status


def record_run(backup_dir: str | Path, *, error: str = "", now: datetime | None = None) -> None:
    """Remember the outcome of the last scheduled run (read by /health and metrics, any process)."""
    folder = Path(backup_dir)
    folder.mkdir(parents=True, exist_ok=True)
    now = now or utcnow()
    status = _read_status(folder)
    status["last_attempt_at"] = now.isoformat()
    status["last_error"] = error[:500]
    if not error:
        status["last_success_at"] = now.isoformat()
    tmp = folder / f"{STATUS_FILE}.part"
    tmp.write_text(json.dumps(status, indent=2))
    os.replace(tmp, folder / STATUS_FILE)


def _read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def backup_status(backup_dir: str | Path, *, now: datetime | None = None, max_age_hours: float = 26.0) -> BackupStatus:
    folder = Path(backup_dir)
    now = now or utcnow()
    backups = list_backups(folder)
    status = _read_status(folder)
    last_error = status.get("last_error") or ""
    last_attempt = datetime.fromisoformat(status["last_attempt_at"]) if status.get("last_attempt_at") else None
    newest = backups[0] if backups else None
    age = (now - newest.created_at).total_seconds() / 3600 if newest else None
    if last_error:
        state = "failed"
    elif newest is None:
        state = "none"
    elif age is not None and age > max_age_hours:
        state = "stale"
    elif newest.verification is not None and not newest.verification.ok:
        state = "failed"
        last_error = "; ".join(newest.verification.problems) or "verificación fallida"
    else:
        state = "ok"
    return BackupStatus(
        status=state,
        count=len(backups),
        newest_id=newest.id if newest else None,
        last_success_at=newest.created_at if newest else None,
        age_hours=round(age, 2) if age is not None else None,
        last_attempt_at=last_attempt,
        last_error=last_error,
        newest_verified=(newest.verification.ok if newest and newest.verification else None),
    )


# ----------------------------------------------------------------------------------------- scheduler


def _open_lock_file(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")


class BackupScheduler:
    """The in-process backup job: every ``interval_s`` a backup, its verification and the retention.

    Started by the web app's lifespan (``await scheduler.start()`` / ``await scheduler.stop()``). It beats
    the ``backup`` worker every ``check_every_s``; failures go to ``status.json`` (seen by ``/health`` and the
    metrics) and the loop carries on. On PostgreSQL an advisory lock makes sure only one instance runs a
    given backup.
    """

    WORKER = "backup"

    def __init__(
        self,
        database_url: str,
        backup_dir: str | Path,
        *,
        interval_s: float,
        keep_daily: int = 7,
        keep_weekly: int = 4,
        timezone_name: str = "UTC",
        verify: bool = True,
        check_every_s: float = 60.0,
        stop_grace_s: float = 30.0,
        workers=None,
    ) -> None:
        from .workers import WORKERS

        self.database_url = database_url
        self.backup_dir = Path(backup_dir)
        self.interval_s = interval_s
        self.keep_daily = keep_daily
        self.keep_weekly = keep_weekly
        self.timezone_name = timezone_name
        self.verify = verify
        self.check_every_s = check_every_s
        self.stop_grace_s = stop_grace_s
        self.workers = workers if workers is not None else WORKERS
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    @classmethod
    def from_settings(cls, settings, **overrides) -> BackupScheduler:
        kwargs = {
            "interval_s": settings.backup_interval_hours * 3600,
            "keep_daily": settings.backup_keep_daily,
            "keep_weekly": settings.backup_keep_weekly,
            "timezone_name": settings.timezone,
        }
        kwargs.update(overrides)
        return cls(settings.database_url, settings.backup_dir, **kwargs)

    def due(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        backups = [b for b in list_backups(self.backup_dir) if b.kind in ("scheduled", "manual")]
        if not backups:
            return True
        return (now - backups[0].created_at) >= timedelta(seconds=self.interval_s)

    async def run_once(self) -> BackupManifest | None:
        """One backup + verification + retention, unless another instance holds the lock."""
        from . import metrics

        started = time.monotonic()
        async with self._exclusive() as acquired:
            if not acquired or not self.due():
                return None
            try:
                manifest = await create_backup(self.database_url, self.backup_dir, kind="scheduled")
                if self.verify:
                    verification = await verify_backup(self.backup_dir, manifest, database_url=self.database_url)
                    if not verification.ok:
                        raise BackupFailed("La verificación del respaldo falló: " + "; ".join(verification.problems))
                apply_retention(
                    self.backup_dir,
                    keep_daily=self.keep_daily,
                    keep_weekly=self.keep_weekly,
                    timezone_name=self.timezone_name,
                )
            except Exception as exc:
                message = exc.message if isinstance(exc, CajaError) else f"{type(exc).__name__}: {exc}"
                record_run(self.backup_dir, error=message)
                metrics.BACKUP_RUNS.labels(result="failed").inc()
                raise
            record_run(self.backup_dir)
            metrics.BACKUP_RUNS.labels(result="ok").inc()
            metrics.BACKUP_DURATION.observe(time.monotonic() - started)
            return manifest

    @contextlib.asynccontextmanager
    async def _exclusive(self):
        """One run at a time: an advisory lock on PostgreSQL (across servers), a file lock on SQLite (the
        app and ``caja worker`` on the same server)."""
        if _dialect(self.database_url) != "postgresql":
            import fcntl

            with await asyncio.to_thread(_open_lock_file, self.backup_dir / ".scheduler.lock") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                try:
                    yield True
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            return
        engine = create_async_engine(normalise_url(self.database_url), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                acquired = bool((await conn.execute(text(f"SELECT pg_try_advisory_lock({PG_LOCK_KEY})"))).scalar())
                await conn.commit()
                try:
                    yield acquired
                finally:
                    if acquired:
                        await conn.execute(text(f"SELECT pg_advisory_unlock({PG_LOCK_KEY})"))
                        await conn.commit()
        finally:
            await engine.dispose()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            error = ""
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - reported, the loop carries on
                error = exc.message if isinstance(exc, CajaError) else f"{type(exc).__name__}: {exc}"
            self.workers.beat(self.WORKER, error=error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.check_every_s)

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self.workers.register(self.WORKER, interval_s=self.check_every_s)
            self._task = asyncio.create_task(self._loop(), name="caja-backup-scheduler")

    async def stop(self) -> None:
        """Stop the loop; a backup in progress gets ``grace_s`` seconds to finish, then is cancelled."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.stop_grace_s)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
            self.workers.unregister(self.WORKER)
