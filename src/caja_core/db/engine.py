from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

T = TypeVar("T")
P = ParamSpec("P")


def normalise_url(url: str) -> str:
    """Accept the usual spellings and return one with an async driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///") or url == "sqlite://":
        url = "sqlite+aiosqlite" + url[len("sqlite") :]
    return url


def rowcount(result: Result[Any]) -> int:
    """How many rows an executed INSERT, UPDATE or DELETE matched (its result is a ``CursorResult``)."""
    return cast(CursorResult[Any], result).rowcount


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30},
            **({"poolclass": StaticPool} if memory else {}),
        )
        _sqlite_events(engine.sync_engine, memory)
        return engine
    return create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_events(engine: Engine, memory: bool) -> None:
    """WAL, foreign keys, busy timeout, and BEGIN IMMEDIATE so writers serialise at BEGIN (no lock
    upgrades that fail with "database is locked")."""

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - exercised by every sqlite test
        dbapi_conn.isolation_level = None  # take transaction control from the pysqlite driver
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:  # pragma: no cover - exercised by every sqlite test
        # Readers (Database.reader) begin deferred, so many POS screens polling never queue behind writers.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("caja_read_only") else "BEGIN IMMEDIATE")


class Database:
    """An engine and its session factory. ``async with db.session() as s`` commits on success."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, echo=echo, pool_size=pool_size)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)

        self._sync_sessionmaker: sessionmaker[Session] | None = None

    async def run_unit(self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(session, *args, **kwargs)`` — synchronous ORM code — as one committed transaction.

        On SQLite the whole unit runs in one worker thread on the sqlite3 driver (one thread hop instead
        of one per statement: aiosqlite's per-statement hop dominates short transactions); on PostgreSQL it
        runs on the async driver through ``AsyncSession.run_sync``. Used by the hot paths (a cash sale)."""
        if self.dialect == "sqlite" and ":memory:" not in self.url and not self.url.endswith("sqlite+aiosqlite://"):
            return await asyncio.to_thread(self._run_unit_in_thread, fn, args, kwargs)
        async with self.session() as session:
            return await session.run_sync(lambda s: fn(s, *args, **kwargs))

    def _run_unit_in_thread(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._sync_sessionmaker is None:
            sync_url = self.url.replace("sqlite+aiosqlite", "sqlite", 1)
            engine = create_engine(sync_url, connect_args={"timeout": 30, "check_same_thread": False})
            _sqlite_events(engine, memory=False)
            self._sync_sessionmaker = sessionmaker(engine, expire_on_commit=False)
        with self._sync_sessionmaker() as session, session.begin():
            return fn(session, *args, **kwargs)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (on SQLite it does not take the write lock; writes in it may fail)."""
        async with self.sessionmaker() as session:
            if self.dialect == "sqlite":
                await session.connection(execution_options={"caja_read_only": True})
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync_sessionmaker is not None:
            self._sync_sessionmaker.kw["bind"].dispose()
            self._sync_sessionmaker = None
