"""Telling "the database does not answer" apart from a bug, for the web layer (503 instead of 500) and the
background workers (one line per back-off step instead of a traceback)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

#: asyncpg's errors that mean the server is gone, refusing or full (checked by name: no import of asyncpg).
_UNAVAILABLE_NAMES = {
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "CannotConnectNowError",
    "TooManyConnectionsError",
    "AdminShutdownError",
    "CrashShutdownError",
    "ConnectionRejectionError",
    "InterfaceError",
    "InternalClientError",
}


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the database cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeout):
            return True
        if isinstance(current, DBAPIError):
            if current.connection_invalidated or isinstance(current, (OperationalError, InterfaceError)):
                return True
            if current.orig is not None and type(current.orig).__name__ in _UNAVAILABLE_NAMES:
                return True
        if isinstance(current, (ConnectionError, TimeoutError)) and _raised_by_database_driver(current):
            return True
        if type(current).__name__ in _UNAVAILABLE_NAMES and _raised_by_database_driver(current):
            return True
        current = current.__cause__ or current.__context__
    return False


#: asyncpg's errors, and SQLite's messages, that mean the database's tables are not the ones this code was written
#: for: the schema was upgraded (or restored to an older one) under a running server.
_SCHEMA_NAMES = {"UndefinedColumnError", "UndefinedTableError"}
_SCHEMA_MESSAGES = ("no such column", "no such table", "has no column named")


def schema_mismatch(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a table or column this code uses is not in the database."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _SCHEMA_NAMES:
            return True
        if isinstance(current, DBAPIError) and current.orig is not None:
            if type(current.orig).__name__ in _SCHEMA_NAMES or any(m in str(current.orig) for m in _SCHEMA_MESSAGES):
                return True
            current = current.orig
            continue
        current = current.__cause__ or current.__context__
    return False


#: caja's own packages: the core, the web app and the plugins (packages named ``caja_<name>``).
_CAJA = ("/caja_",)
_DRIVERS = ("/sqlalchemy/", "/asyncpg/", "/aiosqlite/")


def _raised_by_database_driver(exc: BaseException) -> bool:
    """A socket error that came out of the database driver, not out of a terminal or a provider: below the
    innermost caja frame of its traceback (where caja called a library) there is SQLAlchemy or a driver. A
    context manager that re-raises adds its frames above, so frames above the innermost caja one do not count."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    innermost_caja = max((i for i, name in enumerate(frames) if any(c in name for c in _CAJA)), default=-1)
    return any(d in name for name in frames[innermost_caja + 1 :] for d in _DRIVERS)


def describe(exc: BaseException) -> str:
    """A short name for the log line (no message: it may hold the connection URL)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return type(exc.orig).__name__
    return type(exc).__name__
