"""Core CLI commands: ``check-config``, ``db``, ``backup``, ``venue``, ``user``, ``plugins``, ``plugin new``.
(``serve``/``demo`` come from the web package, a provider's own commands from its plugin.)

Every command reads its settings from ``CAJA_*``; a missing or invalid value prints one line per problem
and exits with code 2 before anything is touched.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .cli import cli
from .settings import VARIABLES, Settings, settings_or_exit

if TYPE_CHECKING:  # imported where used, to keep the command line quick to start
    from sqlalchemy.ext.asyncio import AsyncSession

    from .ops.backups import Verification
    from .ops.heartbeats import ProcessInfo
    from .users.service import UserOut
    from .venues.service import VenueOut

T = TypeVar("T")


def _settings(database_url: str | None = None) -> Settings:
    return settings_or_exit(database_url=database_url or None)


def _fmt_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover


# ------------------------------------------------------------------------------------- check-config


@cli.command("check-config")
def check_config() -> None:
    """Valida las variables CAJA_* (código 2 y una línea por problema si algo falta o no es válido)."""
    settings = _settings()
    click.echo(f"Configuración válida (entorno {settings.env}).")
    shown = {"CAJA_SECRET_KEY", "CAJA_METRICS_TOKEN", "CAJA_REDIS_URL", "CAJA_DATABASE_URL"}
    from .ops.logging import Redactor

    redact = Redactor([settings.secret_key, settings.metrics_token or ""])
    for key in VARIABLES:
        value = getattr(settings, key[len("CAJA_") :].lower(), None)
        if "SECRET" in key or "TOKEN" in key:
            value = "(definida)" if value else "(no definida)"
        elif key in shown:
            value = redact(str(value)) if value else "(no definida)"
        click.echo(f"  {key}={value}")


# ----------------------------------------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Migraciones del esquema de la base de datos."""


async def _current(url: str) -> str | None:
    from .db import migrate
    from .db.engine import Database

    database = Database(url)
    try:
        return await migrate.current_revision(database.engine)
    finally:
        await database.dispose()


def _current_or_fail(url: str) -> str | None:
    try:
        return asyncio.run(_current(url))
    except Exception as exc:  # noqa: BLE001 - any connection problem: one clear line
        raise click.ClickException(
            f"No se pudo conectar a la base de datos ({type(exc).__name__}). "
            "Revise CAJA_DATABASE_URL y que el servidor esté en marcha."
        ) from None


def _database_exists(settings: Settings) -> bool:
    if settings.is_sqlite:
        from .ops.backups import BackupFailed, _sqlite_path

        try:
            return _sqlite_path(settings.database_url).exists()
        except BackupFailed:  # in-memory
            return False
    return True


@db.command("status")
@click.option("--check", is_flag=True, help="Termina con código 1 si hay migraciones pendientes.")
def db_status(check: bool) -> None:
    """Muestra la versión actual del esquema, la última disponible y las pendientes."""
    from .db import migrate

    settings = _settings()
    current = _current_or_fail(settings.database_url) if _database_exists(settings) else None
    head = migrate.head_revision()
    pending = migrate.pending_revisions(current) if current != head else []
    click.echo(f"Versión actual: {current or '(vacía)'}")
    click.echo(f"Última versión: {head}")
    if pending:
        click.echo(f"Pendientes ({len(pending)}): {', '.join(pending)}")
        click.echo("Ejecute `caja db upgrade` para aplicarlas.")
    else:
        click.echo("El esquema está al día.")
    if check and pending:
        sys.exit(1)


def _pre_migration_backup(settings: Settings, current: str | None, kind: str) -> None:
    from .ops.backups import create_backup

    if current is None:
        click.echo("Base vacía: no hace falta respaldo previo.")
        return
    manifest = asyncio.run(create_backup(settings.database_url, settings.backup_dir, kind=kind))
    click.echo(f"Respaldo previo: {manifest.id} ({_fmt_size(manifest.size)}, esquema {manifest.schema_revision}).")


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Versión destino.")
@click.option("--no-backup", is_flag=True, help="No respaldar la base antes de migrar.")
def db_upgrade(revision: str, no_backup: bool) -> None:
    """Aplica las migraciones pendientes (respalda antes; ejecutarlo dos veces no hace daño)."""
    from .db import migrate

    settings = _settings()
    current = _current_or_fail(settings.database_url) if _database_exists(settings) else None
    target = migrate.head_revision() if revision == "head" else revision
    if current == target:
        click.echo(f"El esquema ya está en {current}: nada que hacer.")
        return
    if not no_backup:
        _pre_migration_backup(settings, current, "pre-upgrade")
    if settings.is_sqlite and current is None:
        from .ops.backups import _sqlite_path

        _sqlite_path(settings.database_url).parent.mkdir(parents=True, exist_ok=True)
    try:
        migrate.upgrade(settings.database_url, revision)
    except Exception as exc:  # noqa: BLE001 - whatever the migration raised: one clear line
        raise click.ClickException(f"La migración falló: {type(exc).__name__}: {exc}") from None
    click.echo(f"Esquema migrado: {current or '(vacía)'} → {_current_or_fail(settings.database_url)}.")


async def _live_processes(settings: Settings) -> list[ProcessInfo]:
    from .db.engine import Database
    from .ops.heartbeats import live_instances

    database = Database(settings.database_url)
    try:
        return await live_instances(database)
    finally:
        await database.dispose()


def _refuse_if_live(settings: Settings, action: str, *, force_hint: bool) -> None:
    """Stop here, with the list, when app instances or workers are running on this database."""
    if settings.is_sqlite and not _database_exists(settings):
        return
    try:
        live = asyncio.run(_live_processes(settings))
    except Exception:  # noqa: BLE001 - the database does not answer: the command itself will say so
        return
    if not live:
        return
    names = ", ".join(f"{p.name} ({'caja worker' if p.kind == 'worker' else 'instancia'})" for p in live)
    hint = " o agregue --force si sabe que no atienden a nadie" if force_hint else ""
    raise click.ClickException(
        f"Hay procesos en marcha sobre esta base: {names}. Deténgalos antes de {action}"
        f" (sudo systemctl stop 'caja@*' caja-worker){hint}."
    )


class _Revision(click.ParamType[str]):
    """A revision argument that may start with '-' (``-1``: one migration back)."""

    name = "versión"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


@db.command("downgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision", type=_Revision())
@click.option("--no-backup", is_flag=True, help="No respaldar la base antes de revertir.")
@click.option(
    "--destroy-data",
    is_flag=True,
    help="Revertir aunque se borren tablas o columnas con datos (se respalda antes igual).",
)
@click.option("--dry-run", is_flag=True, help="Solo decir qué datos borraría la vuelta atrás; no cambia nada.")
def db_downgrade(revision: str, no_backup: bool, destroy_data: bool, dry_run: bool) -> None:
    """Revierte el esquema a REVISION: una versión (p. ej. 0001), -1 (una migración atrás) o base.

    Se niega mientras haya instancias o workers en marcha, y si la vuelta atrás borraría tablas o columnas
    que tienen datos (salvo --destroy-data). Respalda antes (salvo --no-backup).
    """
    from .db import migrate

    settings = _settings()
    current = _current_or_fail(settings.database_url)
    if current is None:
        raise click.ClickException("La base no tiene esquema: no hay nada que revertir.")
    try:
        target = migrate.resolve_target(current, revision)
    except migrate.UnknownRevision as exc:
        raise click.ClickException(f"No se puede revertir a {revision}: {exc}.") from None
    if target == current:
        click.echo(f"El esquema ya está en {current}: nada que hacer.")
        return
    lost = asyncio.run(_data_lost(settings.database_url, target))
    if dry_run:
        if lost:
            click.echo(f"Revertir {current} → {target or 'base'} borraría: {'; '.join(lost)}. No se cambió nada.")
        else:
            click.echo(f"Revertir {current} → {target or 'base'} no borraría datos. No se cambió nada.")
        return
    _refuse_if_live(settings, "revertir el esquema", force_hint=False)
    if lost and not destroy_data:
        raise click.ClickException(
            f"Revertir a {target or 'base'} borraría datos: {'; '.join(lost)}. No se cambió nada. Si es lo que "
            "quiere, repita con --destroy-data (se toma un respaldo antes)."
        )
    if not no_backup:
        _pre_migration_backup(settings, current, "pre-downgrade")
    try:
        migrate.downgrade(settings.database_url, target or "base")
    except Exception as exc:  # noqa: BLE001 - whatever the migration raised: one clear line
        raise click.ClickException(f"No se pudo revertir a {revision}: {type(exc).__name__}: {exc}") from None
    click.echo(f"Esquema revertido: {current} → {_current_or_fail(settings.database_url) or '(vacía)'}.")


async def _data_lost(url: str, target: str | None) -> list[str]:
    from .db import migrate
    from .db.engine import Database

    database = Database(url)
    try:
        return await migrate.data_lost_by_downgrade(database.engine, target)
    finally:
        await database.dispose()


# ------------------------------------------------------------------------------------------- backup


@cli.group()
def backup() -> None:
    """Respaldos verificados de la base (SQLite o PostgreSQL)."""


_dir_option = click.option(
    "--dir", "backup_dir", default=None, help="Carpeta de respaldos (por defecto CAJA_BACKUP_DIR)."
)


def _folder(settings: Settings, backup_dir: str | None) -> str:
    return backup_dir or settings.backup_dir


@backup.command("create")
@_dir_option
@click.option("--verify/--no-verify", default=True, show_default=True, help="Verificar al terminar.")
def backup_create(backup_dir: str | None, verify: bool) -> None:
    """Crea un respaldo consistente (la app puede seguir vendiendo) y su manifiesto."""
    from .ops.backups import create_backup, verify_backup

    settings = _settings()
    folder = _folder(settings, backup_dir)
    manifest = asyncio.run(create_backup(settings.database_url, folder, kind="manual"))
    rows = sum(manifest.row_counts.values())
    click.echo(f"Respaldo creado: {manifest.id}")
    click.echo(f"  archivo: {Path(folder) / manifest.file} ({_fmt_size(manifest.size)})")
    click.echo(f"  sha256: {manifest.sha256}")
    click.echo(f"  esquema: {manifest.schema_revision}; {rows} filas en {len(manifest.row_counts)} tablas")
    if verify:
        result = asyncio.run(verify_backup(folder, manifest, database_url=settings.database_url))
        _print_verification(manifest.id, result)
        if not result.ok:
            sys.exit(1)


@backup.command("list")
@_dir_option
def backup_list(backup_dir: str | None) -> None:
    """Lista los respaldos, del más reciente al más antiguo (los dañados también, con el motivo)."""
    from .ops.backups import scan_backups

    settings = _settings()
    folder = Path(_folder(settings, backup_dir))
    if folder.exists() and not folder.is_dir():
        click.echo(
            f"Error: {folder} no es una carpeta; indique la carpeta de respaldos (CAJA_BACKUP_DIR o --dir).", err=True
        )
        sys.exit(2)
    entries = scan_backups(folder)
    if not entries:
        click.echo("No hay respaldos." if folder.is_dir() else f"No hay respaldos: la carpeta {folder} no existe.")
        return
    click.echo(f"{'ID':<32} {'FECHA (UTC)':<20} {'TIPO':<13} {'TAMAÑO':>9}  {'ESQUEMA':<24} VERIFICADO")
    for entry in entries:
        when = f"{entry.created_at:%Y-%m-%d %H:%M:%S}" if entry.created_at else "-"
        m = entry.manifest
        if m is None:
            click.echo(f"{entry.id:<32} {when:<20} {'DAÑADO':<13} {'-':>9}  {'-':<24} {entry.damaged}")
            continue
        verified = "—" if entry.verification is None else ("sí" if entry.verification.ok else "FALLÓ")
        click.echo(
            f"{m.id:<32} {when:<20} {m.kind:<13} {_fmt_size(m.size):>9}  {(m.schema_revision or '-'):<24} {verified}"
        )


def _print_verification(backup_id: str, result: Verification) -> None:
    if result.ok:
        click.echo(
            f"Verificación de {backup_id}: correcta (suma SHA-256, restauración de prueba y conteo "
            f"de filas; {result.duration_s:.1f} s)."
        )
    else:
        if len(result.problems) == 1:
            click.echo(f"Verificación de {backup_id}: FALLÓ: {result.problems[0]}", err=True)
            return
        click.echo(f"Verificación de {backup_id}: FALLÓ", err=True)
        for problem in result.problems:
            click.echo(f"  - {problem}", err=True)


@backup.command("verify")
@click.argument("backup_id", default="latest")
@_dir_option
def backup_verify(backup_id: str, backup_dir: str | None) -> None:
    """Recalcula la suma SHA-256, restaura en una base de prueba y compara filas (código 1 si falla)."""
    from .ops.backups import verify_backup

    settings = _settings()
    result = asyncio.run(verify_backup(_folder(settings, backup_dir), backup_id, database_url=settings.database_url))
    _print_verification(backup_id, result)
    if not result.ok:
        sys.exit(1)


@backup.command("restore")
@click.argument("backup_id")
@_dir_option
@click.option("--yes", is_flag=True, help="No pedir confirmación.")
@click.option("--no-safety-backup", is_flag=True, help="No respaldar la base actual antes de restaurar.")
@click.option("--force", is_flag=True, help="Restaurar aunque haya instancias en marcha (no lo haga con público).")
def backup_restore(backup_id: str, backup_dir: str | None, yes: bool, no_safety_backup: bool, force: bool) -> None:
    """Reemplaza la base actual por el respaldo BACKUP_ID (se niega con instancias en marcha; respalda y
    verifica la base actual antes)."""
    from .ops.backups import restore_backup

    settings = _settings()
    if not force:
        _refuse_if_live(settings, "restaurar", force_hint=True)
    if not yes:
        click.confirm(f"Esto reemplaza TODA la base actual por el respaldo {backup_id}. ¿Continuar?", abort=True)
    result = asyncio.run(
        restore_backup(
            _folder(settings, backup_dir), backup_id, settings.database_url, safety_backup=not no_safety_backup
        )
    )
    if result.safety_backup_id:
        click.echo(f"Respaldo de seguridad de la base anterior: {result.safety_backup_id}")
    click.echo(
        f"Restaurado {result.backup_id}: {sum(result.row_counts.values())} filas en {len(result.row_counts)} tablas."
    )
    if not result.counts_ok:
        for problem in result.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    click.echo("Filas y totales coinciden con el manifiesto. Ejecute `caja db upgrade` si el código es más nuevo.")


@backup.command("prune")
@_dir_option
def backup_prune(backup_dir: str | None) -> None:
    """Aplica la retención (CAJA_BACKUP_KEEP_DAILY diarios, CAJA_BACKUP_KEEP_WEEKLY semanales)."""
    from .ops.backups import apply_retention

    settings = _settings()
    deleted = apply_retention(
        _folder(settings, backup_dir),
        keep_daily=settings.backup_keep_daily,
        keep_weekly=settings.backup_keep_weekly,
        timezone_name=settings.timezone,
    )
    click.echo(f"Respaldos eliminados: {len(deleted)}")
    for backup_id in deleted:
        click.echo(f"  {backup_id}")


# ------------------------------------------------------------------------------------------- worker


@cli.command("worker")
@click.option("--check-every", default=60.0, show_default=True, help="Segundos entre revisiones.")
@click.option("--beat-every", default=5.0, show_default=True, help="Segundos entre latidos en la base.")
def worker(check_every: float, beat_every: float) -> None:
    """Proceso de fondo: respaldos programados (cada CAJA_BACKUP_INTERVAL_HOURS), verificación y retención.

    Registra su latido en la base: /health y las métricas de cualquier instancia lo muestran (y muestran
    cuando deja de latir)."""
    import logging
    import signal

    from .db.engine import database_from_settings
    from .ops.backups import BackupScheduler
    from .ops.heartbeats import Heartbeat
    from .ops.logging import configure_logging

    settings = _settings()
    configure_logging(settings)
    if settings.backup_interval_hours <= 0:
        raise click.ClickException("CAJA_BACKUP_INTERVAL_HOURS=0: los respaldos programados están desactivados.")
    log = logging.getLogger("caja.worker")
    scheduler = BackupScheduler.from_settings(settings, check_every_s=check_every)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        database = database_from_settings(settings, role="worker")
        heartbeat = Heartbeat(
            database, name=settings.instance_id, kind="worker", every_s=beat_every, backup_info=scheduler.report
        )
        heartbeat.set_state("serving")
        await heartbeat.start()
        await scheduler.start()
        log.info(
            "caja worker %s: respaldos cada %s h en %s",
            settings.instance_id,
            settings.backup_interval_hours,
            settings.backup_dir,
        )
        try:
            await stop.wait()
        finally:
            log.info("caja worker %s: deteniéndose", settings.instance_id)
            await scheduler.stop()
            await heartbeat.stop()
            await database.dispose()

    asyncio.run(run())


# ------------------------------------------------------------------------------------ venue / user


async def _in_session(url: str, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from sqlalchemy.exc import DBAPIError

    from .db import models  # noqa: F401  (every table known to the ORM before the first query)
    from .db.engine import Database
    from .ops.backups import _dialect, _sqlite_path

    if _dialect(url) == "sqlite" and not _sqlite_path(url).exists():
        raise click.ClickException(f"No existe la base SQLite {_sqlite_path(url)}: créela con `caja db upgrade`.")
    database = Database(url)
    try:
        async with database.session() as s:
            return await fn(s)
    except (DBAPIError, OSError) as exc:
        raise click.ClickException(
            f"La base de datos no respondió como se esperaba ({type(exc).__name__}). Revise CAJA_DATABASE_URL "
            "y que el esquema esté al día: `caja db status`."
        ) from None
    finally:
        await database.dispose()


@cli.group()
def venue() -> None:
    """Locales."""


@venue.command("create")
@click.option("--slug", required=True, help="Identificador (minúsculas, números, guiones).")
@click.option("--name", required=True, help="Nombre del local.")
@click.option("--timezone", default=None, help="Zona horaria (por defecto CAJA_TIMEZONE).")
def venue_create(slug: str, name: str, timezone: str | None) -> None:
    """Crea un local."""
    from .venues.service import create_venue

    settings = _settings()
    out = asyncio.run(
        _in_session(
            settings.database_url,
            lambda s: create_venue(s, slug=slug, name=name, timezone=timezone or settings.timezone),
        )
    )
    click.echo(f"Local creado: {out.name} ({out.slug}, id {out.id}, {out.timezone}).")


@cli.group()
def user() -> None:
    """Usuarios."""


@user.command("create")
@click.option("--venue", "venue_slug", default=None, help="Local (slug); por defecto el único que hay.")
@click.option("--username", required=True)
@click.option("--name", "display_name", required=True, help="Nombre a mostrar.")
@click.option("--role", type=click.Choice(["admin", "supervisor", "cashier"]), required=True)
@click.option(
    "--secret",
    envvar="CAJA_NEW_USER_SECRET",
    default=None,
    help="Contraseña (admin/supervisor) o PIN (cajero); si falta, se pide sin mostrarla.",
)
def user_create(venue_slug: str | None, username: str, display_name: str, role: str, secret: str | None) -> None:
    """Crea un usuario (administradores y supervisores con contraseña, cajeros con PIN)."""
    from .errors import NotFound
    from .users.service import create_user
    from .venues.service import first_venue, get_venue_by_slug

    settings = _settings()
    if secret is None:
        label = "PIN (4 a 6 dígitos)" if role == "cashier" else "Contraseña (mínimo 8 caracteres)"
        secret = click.prompt(label, hide_input=True, confirmation_prompt=True)

    async def run(s: AsyncSession) -> tuple[VenueOut, UserOut]:
        venue = await get_venue_by_slug(s, venue_slug) if venue_slug else await first_venue(s)
        if venue is None:
            raise NotFound(
                "No hay ningún local: créelo con `caja venue create --slug ... --name ...`.", code="venue.not_found"
            )
        return venue, await create_user(
            s, venue_id=venue.id, username=username, display_name=display_name, role=role, secret=secret
        )

    venue_out, out = asyncio.run(_in_session(settings.database_url, run))
    click.echo(f"Usuario creado: {out.username} ({out.role_label}) en {venue_out.name}.")


# ---------------------------------------------------------------------------------------- registers


@cli.group("register")
def register_group() -> None:
    """Cajas."""


@register_group.command("rotate-agent-token")
@click.argument("code")
@click.option("--venue", "venue_slug", default=None, help="Local (slug); por defecto el único que hay.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Escribir el token nuevo en este archivo (permisos 600) en vez de mostrarlo.",
)
def rotate_agent_token(code: str, venue_slug: str | None, token_file: str | None) -> None:
    """Genera un token nuevo para el agente de la caja CODE (el anterior deja de servir)."""
    import os

    from sqlalchemy import select

    from .errors import NotFound, ValidationFailed
    from .registers.service import list_registers
    from .registers.service import rotate_agent_token as rotate
    from .venues.models import Venue
    from .venues.service import first_venue, get_venue_by_slug

    settings = _settings()

    async def run(s: AsyncSession) -> str:
        if venue_slug is None:
            slugs = list((await s.execute(select(Venue.slug).order_by(Venue.id))).scalars())
            if len(slugs) > 1:
                raise ValidationFailed(
                    f"Hay {len(slugs)} locales: indique cuál con --venue ({', '.join(slugs)}).", code="venue.ambiguous"
                )
        venue = await get_venue_by_slug(s, venue_slug) if venue_slug else await first_venue(s)
        if venue is None:
            raise NotFound("No hay ningún local.", code="venue.not_found")
        found = [r for r in await list_registers(s, venue.id) if r.code.lower() == code.lower()]
        if not found:
            raise NotFound(f"No existe la caja {code!r} en {venue.name}.", code="register.not_found")
        return await rotate(s, venue_id=venue.id, register_id=found[0].id, actor_id=None)

    token = asyncio.run(_in_session(settings.database_url, run))
    if token_file:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        click.echo(f"Token nuevo de la caja {code} escrito en {token_file}; el anterior ya no sirve.")
    else:
        click.echo(token)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="La misma información en JSON.")
@click.option(
    "--check", is_flag=True, help="Corre ahora las pruebas de conformidad de cada plugin con proveedores (pytest)."
)
def plugins_command(as_json: bool, check: bool) -> None:
    """Plugins instalados: si se cargan (CAJA_LOAD_PLUGINS), sus hooks, sus proveedores, su configuración y si
    sus pruebas de conformidad existen y pasan (--check las corre)."""
    import msgspec

    from .plugin_kit import describe_plugins

    found = describe_plugins(check=check)
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    for info in found:
        state = "cargado" if info.loaded else "instalado, no cargado (CAJA_LOAD_PLUGINS)"
        where = f"{info.source}" + (f", {info.distribution}" if info.distribution else "")
        click.echo(f"{info.name} — {state} ({where})")
        if info.hooks:
            click.echo(f"  hooks: {', '.join(info.hooks)}")
        for provider in info.providers:
            click.echo(
                f"  proveedor {provider.id} «{provider.name}»: {', '.join(provider.capabilities)}; "
                f"monto mínimo {provider.min_amount}"
            )
            for field in provider.settings:
                default = "" if field.default in (None, "") else f" = {field.default!r}"
                options = f" ({' | '.join(field.options)})" if field.options else ""
                click.echo(f"    {field.name}: {field.kind}{options}{default} — {field.title}")
        if info.conformance is not None:
            conformance = info.conformance
            detail = f": {conformance.detail}" if conformance.detail else ""
            click.echo(f"  conformidad: {conformance.status}{detail}")
            if conformance.command and conformance.status != "verificado":
                click.echo(f"    para verificar: {conformance.command}")


@cli.group("plugin")
def plugin_group() -> None:
    """Escribir un plugin: generar un paquete listo para probar."""


@plugin_group.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Carpeta donde crear caja-NAME.",
)
@click.option("--title", default=None, help="El nombre que ven las personas (por omisión, NAME con mayúscula).")
def plugin_new(name: str, directory: Path, title: str | None) -> None:
    """Genera caja-NAME: un proveedor de pago, un equipo falso y la prueba de conformidad (pasa en verde)."""
    from .plugin_kit import how_to_test, new_plugin

    root = new_plugin(name, directory, title=title)
    click.echo(f"Plugin creado en {root}.")
    for line in how_to_test(root, sys.executable):
        click.echo(line)
    click.echo(f"  Instalar:   .tools/bin/uv pip install -e {root}   (make demo y make test lo conservan)")
    click.echo("  Verlo:      caja plugins")
