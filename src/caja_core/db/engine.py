from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool
from sqlalchemy.util import await_

T = TypeVar("T")
P = ParamSpec("P")

#: libpq connection parameters accepted in a ``postgresql://`` URL (``?sslmode=verify-full&sslrootcert=…``).
#: The app translates them for asyncpg; ``pg_dump``/``pg_restore``/``psql`` get them as they are.
LIBPQ_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "application_name", "connect_timeout")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


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


def _tls_context(mode: str, params: dict[str, str]) -> ssl.SSLContext | bool | str:
    """asyncpg's ``ssl`` argument for a libpq ``sslmode`` (and root certificate, client certificate)."""
    if mode == "disable":
        return False
    if mode in ("allow", "prefer") and not params.get("sslrootcert"):
        return "prefer"
    verify = mode in ("verify-ca", "verify-full")
    root = params.get("sslrootcert")
    if verify:
        context = ssl.create_default_context(cafile=root) if root else ssl.create_default_context()
        context.check_hostname = mode == "verify-full"
    else:  # require (and allow/prefer with a root certificate): encrypted, certificate not checked
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if params.get("sslcert"):
        context.load_cert_chain(params["sslcert"], params.get("sslkey"), params.get("sslpassword"))
    return context


def split_libpq_params(url: str) -> tuple[URL, dict[str, str]]:
    """The URL without its libpq parameters, and those parameters (``sslmode``, ``sslrootcert``…)."""
    parsed = make_url(normalise_url(url))
    params = {k: str(v) for k, v in parsed.query.items() if k in LIBPQ_PARAMS}
    return parsed.difference_update_query(list(params)), params


def pg_connect_args(url: str, *, application_name: str | None = None) -> tuple[URL, dict[str, Any]]:
    """A PostgreSQL URL for asyncpg and its ``connect_args``: libpq TLS parameters become an SSL context,
    ``application_name`` a server setting (shown in ``pg_stat_activity``)."""
    clean, params = split_libpq_params(url)
    args: dict[str, Any] = {}
    mode = params.get("sslmode") or os.environ.get("PGSSLMODE")
    if mode:
        if mode not in SSLMODES:
            raise ValueError(f"sslmode={mode!r} no es válido: se espera uno de {', '.join(SSLMODES)}")
        if "sslrootcert" not in params and os.environ.get("PGSSLROOTCERT"):
            params["sslrootcert"] = os.environ["PGSSLROOTCERT"]
        args["ssl"] = _tls_context(mode, params)
    name = params.get("application_name") or application_name
    if name:
        args["server_settings"] = {"application_name": name[:63]}
    if params.get("connect_timeout"):
        args["timeout"] = float(params["connect_timeout"])
    return clean, args


def async_engine(url: str, *, application_name: str | None = None, **kwargs: Any) -> AsyncEngine:
    """``create_async_engine`` for a caja URL (SQLite or PostgreSQL with libpq TLS parameters)."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "postgresql":
        clean, connect_args = pg_connect_args(url, application_name=application_name)
        connect_args.update(kwargs.pop("connect_args", {}))
        return create_async_engine(clean, connect_args=connect_args, **kwargs)
    return create_async_engine(url, **kwargs)


def make_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, application_name: str | None = None
) -> AsyncEngine:
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
    engine = async_engine(
        url, application_name=application_name, echo=echo, pool_size=pool_size, max_overflow=pool_size
    )
    _ping_idle_connections(engine.sync_engine)
    return engine


#: A pooled PostgreSQL connection that rested this long is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0
_RESTED_SINCE = "caja_rested_since"


def _ping_idle_connections(engine: Engine) -> None:
    """A connection taken from the pool after resting ``PING_AFTER_IDLE_S`` or more is first pinged with one
    empty statement (one round trip), and replaced if the server is gone (restarted, connection cut), so the
    first request after a quiet spell never fails on a dead connection. A connection handed back a moment ago is
    given out as it is: under load (a venue's POS screens polling every second) requests do not pay for pings;
    if the server dies meanwhile, the statement that finds out invalidates the whole pool, as with any
    disconnect."""

    @event.listens_for(engine.pool, "checkin")
    def _rested(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info[_RESTED_SINCE] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        since = record.info.get(_RESTED_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return  # a new connection, or one in use a moment ago
        try:
            await_(dbapi_conn.driver_connection.fetchrow(";"))  # outside a transaction: one round trip
        except Exception as exc:  # whatever the driver says, the connection is not usable
            raise DisconnectionError(f"pooled connection unusable: {type(exc).__name__}") from exc


#: The execution option of a SQLite connection that emits no BEGIN (``Database.autocommit``).
AUTOCOMMIT_OPTION = "caja_autocommit"


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
        # Readers (Database.reader) begin deferred, so many POS screens polling never queue behind writers; an
        # autocommit connection (Database.autocommit) begins nothing: each statement is its own transaction.
        options = conn.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION):
            return
        conn.exec_driver_sql("BEGIN" if options.get("caja_read_only") else "BEGIN IMMEDIATE")


def database_from_settings(settings: Any, *, role: str = "app") -> Database:
    """The database of a process, sized and named by its settings (``CAJA_DATABASE_POOL_SIZE``,
    ``CAJA_DATABASE_APPLICATION_NAME``, default ``caja <role> <instance>``)."""
    name = getattr(settings, "database_application_name", None) or f"caja {role} {settings.instance_id}"
    return Database(settings.database_url, pool_size=getattr(settings, "database_pool_size", 10), application_name=name)


class Database:
    """An engine and its session factory. ``async with db.session() as s`` commits on success."""

    def __init__(
        self, url: str, *, echo: bool = False, pool_size: int = 10, application_name: str | None = None
    ) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, echo=echo, pool_size=pool_size, application_name=application_name)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def reader(self, *, snapshot: bool = False, autocommit: bool = False) -> AsyncIterator[AsyncSession]:
        """A session for reads (on SQLite it does not take the write lock; writes in it may fail).

        On PostgreSQL, ``snapshot=True`` makes every read see the database as of one instant (one REPEATABLE READ
        transaction); ``autocommit=True`` runs each statement on its own, with no BEGIN/ROLLBACK round trips
        (for a single read, or reads that need no common snapshot: under READ COMMITTED each statement of a
        transaction takes its own snapshot anyway). Writes in an autocommit reader would be committed at once:
        use ``session()`` for those."""
        if snapshot and autocommit:
            raise ValueError("a reader is either one snapshot or autocommit")
        async with self.sessionmaker() as session:
            if self.dialect == "sqlite":
                await session.connection(execution_options={"caja_read_only": True})
            elif snapshot:
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            elif autocommit:
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A bare connection (no ORM session) on which each statement is its own transaction: no BEGIN, and
        nothing to commit (the driver's closing ROLLBACK, if any, is a no-op without a round trip on PostgreSQL).
        For work that is one statement, or statements that need no common snapshot and no all-or-nothing (a web
        session's row, the login guard's read of the user): two to four statements fewer than a transaction."""
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                await conn.execution_options(**{AUTOCOMMIT_OPTION: True})
            else:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextlib.asynccontextmanager
    async def statement_reader(self) -> AsyncIterator[AsyncSession]:
        """A session for reads that are each a single statement, and so each its own snapshot: on PostgreSQL
        the connection is in autocommit (no BEGIN and no ROLLBACK: two round trips fewer for a page polled
        every few seconds); on SQLite the same as ``reader``."""
        if self.dialect != "postgresql":
            async with self.reader() as session:
                yield session
            return
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            async with self.sessionmaker(bind=conn) as session:
                yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
