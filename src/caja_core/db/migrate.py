"""Run Alembic programmatically (the CLI, the demo, the tests and ``/health`` use this)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

from .engine import normalise_url

#: Where the built ``caja-core`` wheel carries the migrations (``alembic/`` of the source tree).
PACKAGED = Path(__file__).resolve().parent.parent / "migrations"


def alembic_dir() -> Path:
    """The migrations: ``CAJA_ALEMBIC_DIR``, else the ones inside the installed package, else the source
    tree's ``alembic/`` (a development checkout)."""
    env = os.environ.get("CAJA_ALEMBIC_DIR")
    if env:
        return Path(env)
    if (PACKAGED / "env.py").exists():
        return PACKAGED
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "alembic" / "env.py").exists() and (parent / "alembic.ini").exists():
            return parent / "alembic"
    raise RuntimeError("No se encontró el directorio de migraciones (alembic/); defina CAJA_ALEMBIC_DIR.")


def alembic_config(url: str) -> Config:
    directory = alembic_dir()
    ini = directory.parent / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(directory))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["url"] = normalise_url(url)
    return cfg


def _in_thread_if_loop(fn: Callable[..., None], *args: Any) -> None:
    """Alembic's env.py runs its own event loop; inside a running loop, run it in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def upgrade(url: str, revision: str = "head") -> None:
    _in_thread_if_loop(command.upgrade, alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    _in_thread_if_loop(command.downgrade, alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


async def downgrade_async(url: str, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)


def head_revision() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def pending_revisions(current: str | None) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    revs = []
    for rev in script.iterate_revisions(head, current or "base"):
        if rev.revision != current:
            revs.append(rev.revision)
    return list(reversed(revs))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


# ------------------------------------------------------------------------------------- safe downgrade

#: Tables whose rows are operational state, not the venue's data (dropping them loses nothing of value).
DISPOSABLE_TABLES = {"ops_processes"}


class UnknownRevision(ValueError):
    pass


def resolve_target(current: str | None, target: str) -> str | None:
    """The revision a downgrade to ``target`` ends at: an id (or a unique prefix), ``base`` (None) or a
    relative ``-N`` from ``current``. Raises :class:`UnknownRevision` with the known ids."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    known = [rev.revision for rev in script.walk_revisions()]
    if target == "base":
        return None
    if target.startswith("-") and target[1:].isdigit():
        revision = current
        for _ in range(int(target[1:])):
            if revision is None:
                raise UnknownRevision(f"no hay {target[1:]} versiones anteriores a {current}")
            script_revision = script.get_revision(revision)
            down = script_revision.down_revision if script_revision is not None else None
            revision = down if isinstance(down, str) or down is None else down[0]
        return revision
    matches = [rev for rev in known if rev == target] or [rev for rev in known if rev.startswith(target)]
    if len(matches) != 1:
        raise UnknownRevision(f"la versión {target!r} no existe; las versiones son: {', '.join(reversed(known))}, base")
    return matches[0]


def _columns_by_table(sync_conn: Connection) -> dict[str, set[str]]:
    return {table: set(columns) for table, columns in _column_defaults(sync_conn).items()}


def _column_defaults(sync_conn: Connection) -> dict[str, dict[str, str | None]]:
    """Every table's columns and their server default as a plain value (``'{}'::jsonb`` → ``{}``)."""
    import re

    from sqlalchemy import inspect

    inspector = inspect(sync_conn)
    out: dict[str, dict[str, str | None]] = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        out[table] = {}
        for column in inspector.get_columns(table):
            default = column.get("default")
            if default is not None:
                match = re.fullmatch(r"\(*'(.*)'(?:::[\w ]+)?\)*", str(default).strip(), re.S)
                default = match.group(1).replace("''", "'") if match else str(default).strip()
            out[table][column["name"]] = default
    return out


def schema_at(revision: str | None) -> dict[str, set[str]]:
    """Tables and their columns at ``revision`` (built on a scratch SQLite file)."""
    import tempfile

    from sqlalchemy import create_engine

    if revision is None:
        return {}
    with tempfile.TemporaryDirectory(prefix="caja-schema-") as tmp:
        url = f"sqlite:///{tmp}/schema.db"
        _in_thread_if_loop(command.upgrade, alembic_config(url), revision)
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return _columns_by_table(conn)
        finally:
            engine.dispose()


async def data_lost_by_downgrade(engine: AsyncEngine, target: str | None) -> list[str]:
    """What a downgrade to ``target`` would destroy in the live database: one Spanish line per table with
    rows or column with values that the target schema does not have."""
    from sqlalchemy import text

    target_schema = await asyncio.to_thread(schema_at, target)
    async with engine.connect() as conn:
        defaults = await conn.run_sync(_column_defaults)
        live = {table: set(columns) for table, columns in defaults.items()}
        lost: list[str] = []
        for table, columns in sorted(live.items()):
            if table in DISPOSABLE_TABLES:
                continue
            if table not in target_schema:
                rows = (await conn.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar_one()
                if rows:
                    lost.append(f"la tabla {table} ({rows} filas)")
                continue
            for column in sorted(columns - target_schema[table]):
                # A value equal to the column's default (``{}`` for an empty setting) is not data.
                default = defaults[table][column]
                query = f'SELECT count(*) FROM "{table}" WHERE "{column}" IS NOT NULL'
                params = {}
                if default is not None:
                    query += f' AND CAST("{column}" AS TEXT) <> :default'
                    params["default"] = default
                values = (await conn.execute(text(query), params)).scalar_one()
                if values:
                    lost.append(f"la columna {table}.{column} ({values} valores)")
    return lost
