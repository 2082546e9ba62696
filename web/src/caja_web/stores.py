"""Session stores: Redis when ``CAJA_REDIS_URL`` is set, otherwise the core's ``web_sessions`` table, so
that several app instances share the sessions either way."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.base import Store
from litestar.types import Empty
from sqlalchemy.exc import IntegrityError

from caja_core.clock import utcnow
from caja_core.db import Database
from caja_core.users import web_sessions


def _seconds(value: int | timedelta | None) -> int | None:
    if value is None:
        return None
    return int(value.total_seconds()) if isinstance(value, timedelta) else int(value)


class DatabaseSessionStore(Store):
    """A Litestar ``Store`` backed by the database through ``caja_core.users.web_sessions``. Each operation is
    one statement on a connection in autocommit (no ORM session, no BEGIN/COMMIT): a request reads its
    session's row once and, when the session changed, writes it once."""

    #: Probability that a write also purges expired rows (keeps the table small without a job).
    purge_probability = 0.01

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        seconds = _seconds(expires_in)
        expires_at = utcnow() + timedelta(seconds=seconds) if seconds else None
        async with self.db.autocommit() as conn:
            try:
                await web_sessions.put_data(conn, key, data, expires_at=expires_at)
            except IntegrityError:  # two requests of one new session raced to insert: the second updates
                await web_sessions.put_data(conn, key, data, expires_at=expires_at)
            if random.random() < self.purge_probability:
                await web_sessions.purge_expired(conn)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        seconds = _seconds(renew_for)
        async with self.db.autocommit() as conn:
            return await web_sessions.get_data(
                conn, key, renew_until=utcnow() + timedelta(seconds=seconds) if seconds else None
            )

    async def delete(self, key: str) -> None:
        async with self.db.autocommit() as conn:
            await web_sessions.delete_data(conn, key)

    async def delete_all(self) -> None:
        async with self.db.autocommit() as conn:
            await web_sessions.delete_all(conn)

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        async with self.db.autocommit() as conn:
            when = await web_sessions.expires_at(conn, key)
        return None if when is None else max(0, int((when - utcnow()).total_seconds()))


def make_session_store(redis_url: str | None, db: Database) -> Store:
    if redis_url:
        from litestar.stores.redis import RedisStore

        return RedisStore.with_client(url=redis_url, namespace="caja-sessions")
    return DatabaseSessionStore(db)


SESSION_COOKIE = "caja_session"
NEW_SESSION_ID = "caja.new_session_id"


LOADED_DATA = "caja.session_loaded"


def _scope(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    """The ASGI scope with our own keys (litestar's ``Scope`` type lists only the standard ones)."""
    return cast(dict[str, Any], connection.scope)


class RotatingSessionBackend(ServerSideSessionBackend):
    """Server-side sessions whose id changes at login (no session fixation: ``rotate_session_id()`` makes the
    response store the session under a fresh id and drop the old one), written back only when they changed
    (most requests, the POS polls among them, only read their session)."""

    def get_session_id(self, connection: ASGIConnection) -> str:
        new_id: str | None = _scope(connection).get(NEW_SESSION_ID)
        return new_id or super().get_session_id(connection)

    async def load_from_connection(self, connection: ASGIConnection) -> dict[str, Any]:
        data = await super().load_from_connection(connection)
        _scope(connection)[LOADED_DATA] = self.serialize_data(data, connection.scope) if data else None
        return data

    async def store_in_message(self, scope_session: Any, message: Any, connection: ASGIConnection) -> None:
        if not scope_session and not _scope(connection).get(NEW_SESSION_ID):
            # Nobody is logged in: nothing is written. A stored session that was emptied (logout, a user no
            # longer valid) is deleted with its cookie, a cookie of an unknown session is dropped, and an
            # anonymous visitor gets no row and no cookie.
            if _scope(connection).get(LOADED_DATA) is not None:
                await super().store_in_message(Empty, message, connection)
            elif session_id_of_request(connection.cookies):
                MutableScopeHeaders.from_message(message).add(
                    "Set-Cookie",
                    Cookie(key=self.config.key, value="null", expires=0, path=self.config.path).to_header(header=""),
                )
            return
        unchanged = (
            scope_session is not Empty
            and scope_session
            and not _scope(connection).get(NEW_SESSION_ID)
            and connection.cookies.get(self.config.key)
            and self.serialize_data(scope_session, connection.scope) == _scope(connection).get(LOADED_DATA)
        )
        if not unchanged:
            await super().store_in_message(scope_session, message, connection)


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend


def session_id_of_request(cookies: Any) -> str:
    """The session id the request's cookie names ("" when there is none)."""
    value = cookies.get(SESSION_COOKIE) or ""
    return "" if value == "null" else value


def session_id_after_response(scope: Any, before: str) -> str:
    """The session id the browser will hold after this response: a new one after a login, none once the
    session was emptied (logout, a user no longer valid), else the one it came with."""
    if NEW_SESSION_ID in scope:
        return str(scope[NEW_SESSION_ID])
    if "session" not in scope:  # a path without browser sessions
        return before
    session = scope["session"]
    return before if session and session is not Empty else ""


async def rotate_session_id(connection: ASGIConnection) -> None:
    old = connection.cookies.get(SESSION_COOKIE)
    if old and old != "null":
        await connection.app.stores.get("sessions").delete(old)
    _scope(connection)[NEW_SESSION_ID] = secrets.token_hex(32)
