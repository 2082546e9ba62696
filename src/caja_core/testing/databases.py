"""Real test databases: a migrated SQLite file per test (copied from a template migrated once) and a
PostgreSQL database per test run (migrated once, emptied between tests)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ..db import migrate
from ..db.engine import Database, normalise_url
from ..db.models import metadata

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def pg_admin_url() -> str:
    return normalise_url(os.environ.get("CAJA_TEST_DATABASE_URL", DEFAULT_PG_URL))


class SqliteTemplate:
    """Migrate once, copy per test: every test gets its own real, migrated SQLite file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.template = workdir / "template.db"

    def ensure(self) -> None:
        if not self.template.exists():
            migrate.upgrade(f"sqlite:///{self.template}")

    def fresh_url(self) -> str:
        self.ensure()
        target = self.workdir / f"t-{uuid.uuid4().hex[:10]}.db"
        shutil.copyfile(self.template, target)
        return f"sqlite+aiosqlite:///{target}"


class PostgresTestDatabase:
    """A database of its own for this test run (name carries the pid), migrated once."""

    def __init__(self) -> None:
        admin = pg_admin_url()
        base, _, _ = admin.rpartition("/")
        self.admin_url = admin
        self.name = f"caja_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.url = f"{base}/{self.name}"
        self._created = False

    async def _admin(self, sql: str) -> None:
        engine = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    def create(self) -> str:
        if not self._created:
            _run_sync(self._admin(f'CREATE DATABASE "{self.name}"'))
            migrate.upgrade(self.url)
            self._created = True
        return self.url

    def drop(self) -> None:
        if self._created:
            _run_sync(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self._created = False

    async def truncate(self, db: Database) -> None:
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        async with db.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def make_tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="caja-test-"))


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion from sync code, even when an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()
