"""Shared helpers for the benchmarks: temporary databases, timing, the ratio table."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.db import migrate
from caja_core.db.engine import Database

PG_ADMIN = os.environ.get("CAJA_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


class TempDatabase:
    """A migrated database of its own: a SQLite file, or a PostgreSQL database dropped afterwards."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"caja_bench_{uuid.uuid4().hex[:8]}"
        if kind == "sqlite":
            self.dir = Path(tempfile.mkdtemp(prefix="caja-bench-"))
            self.url = f"sqlite+aiosqlite:///{self.dir / 'bench.db'}"
        else:
            self.url = PG_ADMIN.rpartition("/")[0] + "/" + self.name

    async def __aenter__(self) -> Database:
        if self.kind == "postgres":
            await _admin(f'CREATE DATABASE "{self.name}"')
        await migrate.upgrade_async(self.url)
        self.db = Database(self.url, pool_size=60)
        return self.db

    async def __aexit__(self, *exc) -> None:
        await self.db.dispose()
        if self.kind == "postgres":
            await _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def _admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def rate(fn, seconds: float) -> float:
    """Operations per second of ``await fn(i)`` run back to back for about ``seconds``."""
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await fn(n)
        n += 1
    return n / (time.perf_counter() - start)


def table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("benchmark", "measured", "baseline", "ratio / goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def run(coro):
    return asyncio.run(coro)
