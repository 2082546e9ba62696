"""Verified backups of the caja database, on SQLite and PostgreSQL.

* SQLite: the online backup API (a consistent copy while the app keeps selling).
* PostgreSQL: ``pg_dump --format=custom`` run on a snapshot exported from a REPEATABLE READ transaction, so
  the row counts of the manifest describe exactly what the dump holds.

Each backup is two files in the backup folder: the data (``<id>.sqlite3`` or ``<id>.dump``) and its manifest
``<id>.json`` (SHA-256, size, schema revision, time, row counts per table, money totals). Both are written
under a ``.part`` name and renamed when complete, the manifest last: a backup interrupted half-way never shows
up, and a failed one leaves nothing behind. Neither file changes after that: the result of each verification
goes beside them, in ``<id>.verify.json``.

``verify`` recomputes the checksum and restores into a scratch database (a temporary SQLite file, or a
scratch PostgreSQL database that is dropped afterwards), then compares row counts and totals with the
manifest. ``restore`` checks the checksum, takes a safety backup of the current database, restores
atomically and compares the counts again. A manifest that cannot be read is listed as damaged, never
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ..clock import utcnow
from ..db.engine import async_engine, normalise_url
from ..errors import CajaError, Conflict, NotFound

log = logging.getLogger("caja.backups")

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
_ID = re.compile(r"^caja-(\d{8}T\d{6})Z-[0-9a-f]{4,32}$")
_DATA_SUFFIXES = (".sqlite3", ".dump")


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
    #: Filled when read, from ``<id>.verify.json`` (never written into the manifest).
    verification: Verification | None = None


class BackupEntry(msgspec.Struct, kw_only=True):
    """One backup found in the folder: its manifest, or why it cannot be used (``damaged``)."""

    id: str
    created_at: datetime | None
    manifest: BackupManifest | None
    damaged: str = ""
    verification: Verification | None = None

    @property
    def verified_ok(self) -> bool:
        return self.verification is not None and self.verification.ok and not self.damaged

    @property
    def rank(self) -> int:
        """Which copy to keep first: 2 verified, 1 not verified yet, 0 failed or damaged."""
        if self.damaged or (self.verification is not None and not self.verification.ok):
            return 0
        return 2 if self.verification is not None else 1


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
    damaged: int = 0

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


def _libpq_uri(url: str, database: str | None = None) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for pg_dump/pg_restore/psql (TLS and other libpq parameters kept) and the
    environment to run them in; the password goes in the environment, never in argv."""
    parsed = make_url(normalise_url(url))
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    target = parsed.set(drivername="postgresql", password=None)
    if database is not None:
        target = target.set(database=database)
    return target.render_as_string(hide_password=False), env


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


def _id_time(backup_id: str) -> datetime | None:
    match = _ID.match(backup_id)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def describe_os_error(exc: OSError, folder: Path | str) -> str:
    """One Spanish line for a file-system failure in the backup folder."""
    reason = {
        errno.ENOSPC: "el disco está lleno",
        errno.EDQUOT: "se acabó la cuota de disco",
        errno.EROFS: "la carpeta está en un sistema de archivos de solo lectura",
        errno.EACCES: "sin permiso de escritura",
        errno.EPERM: "operación no permitida",
        errno.ENOENT: "no existe",
        errno.EFBIG: "el archivo superó el tamaño máximo permitido",
        errno.EIO: "error de entrada/salida del disco",
    }.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return f"No se pudo escribir en la carpeta de respaldos {folder}: {reason}."


async def _run(*argv: str, env: dict[str, str] | None = None, timeout_s: float = 3600) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
    except FileNotFoundError:
        raise BackupFailed(
            f"No se encontró {argv[0]}: instale el cliente de PostgreSQL (paquete postgresql-client).",
            code="backup.tool_missing",
        ) from None
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


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a ``.part`` file; on any failure nothing is left behind."""
    tmp = target.with_name(target.name + ".part")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
    engine = async_engine(database_url, application_name="caja backup", poolclass=NullPool)
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


async def _create_data(database_url: str, part: Path) -> tuple[str, str, str, dict, dict, str | None]:
    """Write the data file to ``part``; return (database kind, format, name, counts, totals, revision)."""
    if _dialect(database_url) == "sqlite":
        source = _sqlite_path(database_url)
        await asyncio.to_thread(_sqlite_backup, source, part)
        counts, totals, revision = await asyncio.to_thread(_sqlite_counts, part)
        return "sqlite", "sqlite", source.name, counts, totals, revision
    uri, env = _libpq_uri(database_url)
    database_name = make_url(normalise_url(database_url)).database or ""
    engine = async_engine(
        database_url, application_name="caja backup", poolclass=NullPool, isolation_level="REPEATABLE READ"
    )
    try:
        async with engine.connect() as conn:
            snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar()
            counts, totals, revision = await _pg_counts(conn)
            await _run(
                "pg_dump",
                "-w",
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-owner",
                "--no-privileges",
                "-f",
                str(part),
                "-d",
                uri,
                env=env,
            )
            await conn.rollback()
    finally:
        await engine.dispose()
    return "postgresql", "pg_custom", database_name, counts, totals, revision


async def create_backup(
    database_url: str, backup_dir: str | Path, *, kind: str = "manual", now: datetime | None = None
) -> BackupManifest:
    """Back up the database at ``database_url`` into ``backup_dir`` and write its manifest.

    Any failure (database, ``pg_dump``, a full disk, a read-only folder) raises :class:`BackupFailed` with one
    clear line, and leaves no file behind."""
    folder = Path(backup_dir)
    now = now or utcnow()
    backup_id = _new_id(now)
    started = time.monotonic()
    suffix = ".sqlite3" if _dialect(database_url) == "sqlite" else ".dump"
    final = folder / f"{backup_id}{suffix}"
    part = folder / f"{backup_id}{suffix}.part"
    try:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        db_kind, fmt, database_name, counts, totals, revision = await _create_data(database_url, part)
        os.replace(part, final)
        manifest = BackupManifest(
            id=backup_id,
            file=final.name,
            database=db_kind,  # type: ignore[arg-type]
            format=fmt,  # type: ignore[arg-type]
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
        _write_atomically(folder / f"{backup_id}.json", msgspec.json.format(msgspec.json.encode(manifest), indent=2))
        return manifest
    except BaseException as exc:
        for leftover in (part, final):
            with contextlib.suppress(OSError):
                leftover.unlink()
        if isinstance(exc, BackupFailed):
            raise
        if isinstance(exc, OSError):
            raise BackupFailed(describe_os_error(exc, folder), code="backup.io") from exc
        if isinstance(exc, sqlite3.Error):
            raise BackupFailed(f"El respaldo SQLite falló: {exc}") from exc
        if isinstance(exc, DBAPIError):
            raise BackupFailed(
                f"El respaldo falló: la base de datos no respondió ({type(exc.orig).__name__})."
            ) from exc
        if isinstance(exc, Exception):
            raise BackupFailed(f"El respaldo falló: {type(exc).__name__}: {exc}") from exc
        raise


# ------------------------------------------------------------------------------------------ listing


def _read_verification(folder: Path, backup_id: str) -> Verification | None:
    path = folder / f"{backup_id}.verify.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=Verification)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return Verification(
            verified_at=utcnow(),
            ok=False,
            checksum_ok=False,
            restore_ok=False,
            counts_ok=False,
            problems=[f"El resultado de la última verificación ({path.name}) no se puede leer."],
            duration_s=0,
        )


def _read_entry(folder: Path, backup_id: str) -> BackupEntry:
    path = folder / f"{backup_id}.json"
    verification = _read_verification(folder, backup_id)
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=BackupManifest)
    except FileNotFoundError:
        return BackupEntry(
            id=backup_id,
            created_at=_id_time(backup_id),
            manifest=None,
            damaged="Falta el manifiesto (el respaldo no terminó de escribirse).",
            verification=verification,
        )
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return BackupEntry(
            id=backup_id,
            created_at=_id_time(backup_id),
            manifest=None,
            damaged=f"El manifiesto {path.name} está dañado ({reason}).",
            verification=verification,
        )
    if manifest.id != backup_id:
        return BackupEntry(
            id=backup_id,
            created_at=_id_time(backup_id),
            manifest=None,
            damaged=f"El manifiesto {path.name} describe otro respaldo ({manifest.id}).",
            verification=verification,
        )
    if verification is None and manifest.verification is not None:
        verification = manifest.verification  # written by an older caja inside the manifest
    manifest.verification = verification
    return BackupEntry(id=backup_id, created_at=manifest.created_at, manifest=manifest, verification=verification)


def scan_backups(backup_dir: str | Path) -> list[BackupEntry]:
    """Every backup in the folder, newest first, damaged ones included (with the reason)."""
    folder = Path(backup_dir)
    if not folder.is_dir():
        return []
    ids: set[str] = set()
    for path in folder.iterdir():
        name = path.name
        if name.endswith(".part") or not name.startswith("caja-"):
            continue
        for suffix in (".verify.json", ".json", *_DATA_SUFFIXES):
            if name.endswith(suffix):
                stem = name[: -len(suffix)]
                if _ID.match(stem):
                    ids.add(stem)
                break
    entries = [_read_entry(folder, backup_id) for backup_id in ids]
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(entries, key=lambda e: (e.created_at or epoch, e.id), reverse=True)


def list_backups(backup_dir: str | Path) -> list[BackupManifest]:
    """Every backup whose manifest can be read, newest first (see :func:`scan_backups` for all)."""
    return [e.manifest for e in scan_backups(backup_dir) if e.manifest is not None]


def get_backup(backup_dir: str | Path, backup_id: str) -> BackupManifest:
    entry = _get_entry(Path(backup_dir), backup_id)
    if entry.manifest is None:
        raise Conflict(entry.damaged, code="backup.damaged")
    return entry.manifest


def _get_entry(folder: Path, backup_id: str) -> BackupEntry:
    if backup_id == "latest":
        entries = scan_backups(folder)
        if not entries:
            raise NotFound(f"No hay respaldos en {folder}.", code="backup.not_found")
        return entries[0]
    if not _ID.match(backup_id) or not any(
        (folder / f"{backup_id}{suffix}").exists() for suffix in (".json", *_DATA_SUFFIXES)
    ):
        raise NotFound(f"No existe el respaldo {backup_id!r} en {folder}.", code="backup.not_found")
    return _read_entry(folder, backup_id)


def _resolve(backup_dir: str | Path, backup: str | BackupManifest) -> BackupManifest:
    if isinstance(backup, BackupManifest):
        return backup
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
    """Create a scratch database on the same server; return (name, drop coroutine factory)."""
    name = f"caja_verify_{uuid.uuid4().hex[:10]}"
    admin = async_engine(
        database_url, application_name="caja backup verify", poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        hint = " (el rol de CAJA_DATABASE_URL necesita CREATEDB)" if "permission" in detail.lower() else ""
        raise BackupFailed(f"No se pudo crear la base de prueba{hint}: {detail}", code="backup.scratch") from None
    finally:
        await admin.dispose()

    async def drop() -> None:
        engine = async_engine(
            database_url, application_name="caja backup verify", poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await engine.dispose()

    return name, drop


def _failed(problem: str, started: float) -> Verification:
    return Verification(
        verified_at=utcnow(),
        ok=False,
        checksum_ok=False,
        restore_ok=False,
        counts_ok=False,
        problems=[problem],
        duration_s=round(time.monotonic() - started, 3),
    )


async def verify_backup(
    backup_dir: str | Path, backup: str | BackupManifest, *, database_url: str | None = None, save: bool = True
) -> Verification:
    """Recompute the checksum, test-restore into a scratch database and compare counts and totals.

    ``backup``: an id, ``latest`` (the newest backup, damaged or not) or a manifest. ``database_url``
    (PostgreSQL backups): the server where the scratch database is created (the live one). The verdict is
    saved beside the backup (``<id>.verify.json``); the backup's own files are never written.
    """
    folder = Path(backup_dir)
    started = time.monotonic()
    if isinstance(backup, BackupManifest):
        manifest = backup
    else:
        entry = _get_entry(folder, backup)
        if entry.manifest is None:
            verification = _failed(entry.damaged, started)
            if save:
                _save_verification(folder, entry.id, verification)
            return verification
        manifest = entry.manifest
    problems: list[str] = []
    data = folder / manifest.file
    checksum_ok = restore_ok = counts_ok = False
    counts: dict[str, int] = {}
    totals: dict[str, int] = {}
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
                except (sqlite3.Error, OSError) as exc:
                    problems.append(f"La restauración de prueba falló: {exc}")
        elif not database_url or _dialect(database_url) != "postgresql":
            problems.append(
                "Para verificar un respaldo PostgreSQL se necesita el servidor PostgreSQL (CAJA_DATABASE_URL)."
            )
        else:
            try:
                name, drop = await _scratch_pg(database_url)
            except BackupFailed as exc:
                problems.append(exc.message)
            else:
                try:
                    uri, env = _libpq_uri(database_url, name)
                    await _run(
                        "pg_restore",
                        "-w",
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        "-d",
                        uri,
                        str(data),
                        env=env,
                    )
                    restore_ok = True
                    counts, totals, _ = await count_rows(_pg_url_for(database_url, name))
                except BackupFailed as exc:
                    problems.append(f"La restauración de prueba falló: {exc.message}")
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
    if save and (folder / f"{manifest.id}.json").exists():
        _save_verification(folder, manifest.id, verification)
    return verification


def _save_verification(folder: Path, backup_id: str, verification: Verification) -> None:
    try:
        _write_atomically(folder / f"{backup_id}.verify.json", msgspec.json.encode(verification))
    except OSError as exc:
        log.warning("no se pudo guardar el resultado de la verificación de %s: %s", backup_id, exc)


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

    Stop the app instances first (``caja backup restore`` refuses while they are live; on PostgreSQL the
    restore waits at most ``lock_timeout_s`` for locks, then gives up without changing anything). A backup
    of the current database is taken first unless ``safety_backup`` is False.
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
            safety = await create_backup(database_url, folder, kind="pre-restore")
            check = await verify_backup(folder, safety, database_url=database_url)
            if not check.ok:
                raise BackupFailed(
                    "El respaldo de seguridad de la base actual no pasó la verificación; no se restauró nada: "
                    + "; ".join(check.problems),
                    code="backup.safety_failed",
                )
            safety_id = safety.id
    if dialect == "sqlite":
        await asyncio.to_thread(_sqlite_restore, data, _sqlite_path(database_url))
    else:
        uri, env = _libpq_uri(database_url)
        with tempfile.TemporaryDirectory(prefix="caja-restore-") as tmp:
            script = Path(tmp) / "restore.sql"
            await _run("pg_restore", "--no-owner", "--no-privileges", "-f", str(script), str(data), env=env)
            # One transaction: drop the current schema, load the backup; any error leaves the database as it was.
            await _run(
                "psql",
                "-w",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-d",
                uri,
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


def _delete_entry(folder: Path, entry: BackupEntry) -> None:
    names = [f"{entry.id}{suffix}" for suffix in _DATA_SUFFIXES] + [f"{entry.id}.json", f"{entry.id}.verify.json"]
    if entry.manifest is not None:
        names.append(entry.manifest.file)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def apply_retention(
    backup_dir: str | Path,
    *,
    keep_daily: int,
    keep_weekly: int,
    timezone_name: str = "UTC",
    now: datetime | None = None,
) -> list[str]:
    """Keep every backup of the last 24 hours, one backup for each of the last ``keep_daily`` days and
    ``keep_weekly`` ISO weeks (days in the venue's zone), and always the newest verified one; delete the
    others. The copy kept for a day or week is its newest *verified* backup, or, when none is verified, its
    newest not yet verified, and only when neither exists a failed or damaged one. Returns the ids deleted."""
    folder = Path(backup_dir)
    entries = [e for e in scan_backups(folder) if e.created_at is not None]
    if not entries:
        return []
    tz = ZoneInfo(timezone_name)
    recent = (now or utcnow()) - timedelta(hours=24)
    keep: set[str] = {e.id for e in entries if e.created_at is not None and e.created_at > recent}
    verified = [e for e in entries if e.verified_ok]
    if verified:
        keep.add(verified[0].id)

    def choose(period_of: Callable[[BackupEntry], Any], limit: int) -> None:
        periods: dict[Any, BackupEntry] = {}
        for entry in entries:  # newest first
            period = period_of(entry)
            best = periods.get(period)
            if best is None or entry.rank > best.rank:
                periods[period] = entry
        for period in sorted(periods, reverse=True)[:limit]:
            keep.add(periods[period].id)

    def local(entry: BackupEntry) -> datetime:
        assert entry.created_at is not None
        return entry.created_at.astimezone(tz)

    choose(lambda e: local(e).date(), keep_daily)
    choose(lambda e: tuple(local(e).isocalendar()[:2]), keep_weekly)
    deleted = []
    for entry in entries:
        if entry.id in keep:
            continue
        _delete_entry(folder, entry)
        deleted.append(entry.id)
    return deleted


# -------------------------------------------------------------------------------------------- status


def record_run(backup_dir: str | Path, *, error: str = "", now: datetime | None = None) -> None:
    """Remember the outcome of the last scheduled run in the folder (best effort: a read-only or full
    folder cannot keep it; the runner's heartbeat in the database always does)."""
    folder = Path(backup_dir)
    now = now or utcnow()
    status = _read_status(folder)
    status["last_attempt_at"] = now.isoformat()
    status["last_error"] = error[:500]
    if not error:
        status["last_success_at"] = now.isoformat()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / STATUS_FILE, json.dumps(status, indent=2).encode())
    except OSError:
        pass


def _read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def folder_report(backup_dir: str | Path) -> dict[str, Any]:
    """What a backup runner tells the others about its folder (kept in its heartbeat row)."""
    folder = Path(backup_dir)
    try:
        entries = scan_backups(folder)
    except OSError as exc:
        return {"dir": str(folder), "count": 0, "scan_error": describe_os_error(exc, folder)}
    usable = [e for e in entries if e.manifest is not None]
    newest = usable[0] if usable else None
    return {
        "dir": str(folder),
        "count": len(entries),
        "damaged": sum(1 for e in entries if e.damaged),
        "newest_id": newest.id if newest else None,
        "newest_at": newest.created_at.isoformat() if newest and newest.created_at else None,
        "newest_verified": (newest.verification.ok if newest and newest.verification else None),
        "newest_problems": (newest.verification.problems if newest and newest.verification else []),
    }


def backup_status(
    backup_dir: str | Path | None = None,
    *,
    now: datetime | None = None,
    max_age_hours: float = 26.0,
    runner: dict[str, Any] | None = None,
) -> BackupStatus:
    """The state of the backups: from the runner's report (its heartbeat row) when given, else from the
    folder and its ``status.json``."""
    now = now or utcnow()
    if runner is None:
        if backup_dir is None:
            raise ValueError("backup_status needs a folder or a runner report")
        runner = {**folder_report(backup_dir), **_read_status(Path(backup_dir))}
    last_error = str(runner.get("last_error") or runner.get("scan_error") or "")
    newest_at = _parse_time(runner.get("newest_at"))
    age = (now - newest_at).total_seconds() / 3600 if newest_at else None
    newest_verified = runner.get("newest_verified")
    if last_error:
        state = "failed"
    elif newest_at is None:
        state = "none"
    elif age is not None and age > max_age_hours:
        state = "stale"
    elif newest_verified is False:
        state = "failed"
        last_error = "; ".join(runner.get("newest_problems") or []) or "verificación fallida"
    else:
        state = "ok"
    return BackupStatus(
        status=state,
        count=int(runner.get("count") or 0),
        newest_id=runner.get("newest_id"),
        last_success_at=newest_at,
        age_hours=round(age, 2) if age is not None else None,
        last_attempt_at=_parse_time(runner.get("last_attempt_at")),
        last_error=last_error,
        newest_verified=newest_verified,
        damaged=int(runner.get("damaged") or 0),
    )


# ----------------------------------------------------------------------------------------- scheduler


class BackupScheduler:
    """The backup job: every ``interval_s`` a backup, its verification and the retention.

    Run by ``caja worker`` (and, for a single SQLite instance, inside ``caja serve``). It beats the ``backup``
    worker every ``check_every_s``; :meth:`report` is what its process's heartbeat row tells the other
    processes (folder, last run, its error), so a failure of any kind shows in every instance's ``/health``
    and metrics. A failed run logs one line and the loop carries on. On PostgreSQL an advisory lock makes sure
    only one process runs a given backup.
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
        retry_after_s: float = 300.0,
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
        self.retry_after_s = retry_after_s
        self.failures = 0
        self.workers = workers if workers is not None else WORKERS
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        previous = _read_status(self.backup_dir)
        self.last_attempt_at: datetime | None = _parse_time(previous.get("last_attempt_at"))
        self.last_success_at: datetime | None = _parse_time(previous.get("last_success_at"))
        self.last_error: str = str(previous.get("last_error") or "")

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

    def report(self) -> dict[str, Any]:
        """This runner's state for its heartbeat row (read by every instance's /health and metrics)."""
        return {
            **folder_report(self.backup_dir),
            "interval_hours": round(self.interval_s / 3600, 3),
            "last_attempt_at": self.last_attempt_at.isoformat() if self.last_attempt_at else None,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_error": self.last_error,
        }

    def due(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        if self.last_error:
            # The last run failed: try again after a back-off (5 min, 10 min… up to the interval).
            if self.last_attempt_at is None:
                return True
            wait = min(self.interval_s, 3600.0, self.retry_after_s * 2 ** max(0, self.failures - 1))
            return (now - self.last_attempt_at) >= timedelta(seconds=wait)
        backups = [b for b in list_backups(self.backup_dir) if b.kind in ("scheduled", "manual")]
        if not backups:
            return True
        return (now - backups[0].created_at) >= timedelta(seconds=self.interval_s)

    def _record(self, error: str) -> None:
        now = utcnow()
        self.last_attempt_at = now
        self.last_error = error[:500]
        if error:
            self.failures += 1
        else:
            self.failures = 0
            self.last_success_at = now
        record_run(self.backup_dir, error=error, now=now)

    async def run_once(self) -> BackupManifest | None:
        """One backup + verification + retention, unless another process holds the lock."""
        from . import metrics

        started = time.monotonic()
        try:
            if not self.due():
                return None
        except OSError as exc:
            message = describe_os_error(exc, self.backup_dir)
            self._failure(message)
            raise BackupFailed(message, code="backup.io") from exc
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
                if isinstance(exc, CajaError):
                    message = exc.message
                elif isinstance(exc, OSError):
                    message = describe_os_error(exc, self.backup_dir)
                else:
                    message = f"{type(exc).__name__}: {exc}"
                self._failure(message)
                raise
            self._record("")
            metrics.BACKUP_RUNS.labels(result="ok").inc()
            metrics.BACKUP_DURATION.observe(time.monotonic() - started)
            log.info("respaldo programado %s creado y verificado (%.1f s)", manifest.id, time.monotonic() - started)
            return manifest

    def _failure(self, message: str) -> None:
        from . import metrics

        self._record(message)
        metrics.BACKUP_RUNS.labels(result="failed").inc()
        log.error("el respaldo programado falló: %s", message)

    @contextlib.asynccontextmanager
    async def _exclusive(self):
        """One run at a time: an advisory lock on PostgreSQL (across servers), a file lock on SQLite (the
        app and ``caja worker`` on the same server)."""
        if _dialect(self.database_url) != "postgresql":
            import fcntl

            try:
                self.backup_dir.mkdir(parents=True, exist_ok=True)
                lock = open(self.backup_dir / ".scheduler.lock", "a")  # noqa: SIM115, ASYNC230 - local, closed below
            except OSError as exc:
                message = describe_os_error(exc, self.backup_dir)
                self._failure(message)
                raise BackupFailed(message, code="backup.io") from exc
            with lock:
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
        engine = async_engine(self.database_url, application_name="caja backup", poolclass=NullPool)
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
        except DBAPIError as exc:
            message = f"La base de datos no respondió ({type(exc.orig).__name__}); el respaldo se reintentará."
            self._failure(message)
            raise BackupFailed(message) from None
        finally:
            await engine.dispose()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            error = ""
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - reported (one log line, the heartbeat), the loop carries on
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
