"""Alembic environment for caja: async engines, batch mode for SQLite, URL from the caller or env."""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import pool

from alembic import context
from caja_core.db.engine import async_engine, normalise_url
from caja_core.db.models import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("CAJA_DATABASE_URL") or "sqlite:///caja.db"
    return normalise_url(url)


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=False,
    )


def _do_run(connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = async_engine(_url(), application_name="caja migrations", poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run)
    await engine.dispose()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _do_run(connection)
    else:
        asyncio.run(_run_async())
