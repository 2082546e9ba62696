"""One unit of work per request: the Litestar dependencies ``unit`` and ``web``.

A handler that declares ``web: NamedDependency[Web]`` gets a ``Web`` bound to the request's unit: every
service it calls, the orchestrator's reading of a payment (``Web.poll``) and the reads of the page it answers
with run in ONE database transaction, committed once the response is rendered and rolled back when anything
raised (a refused form included), so a request never leaves half of what it did and a page shows one moment.

* The transaction opens on the first database call, not before: a handler that first waits on a payment
  terminal (through the orchestrator, which keeps its own short transactions) holds no transaction while it
  waits, and the reads of the page that follows are the unit.
* A GET (or HEAD) reads: on SQLite its transaction begins deferred (it does not take the write lock, so the
  screens polling never queue behind a sale being written), on PostgreSQL it is one REPEATABLE READ snapshot.
  Any other method writes: on SQLite it takes the write lock at its first statement (``BEGIN IMMEDIATE``).
* What must happen only once the unit is committed (printing the paid sale's tickets, opening the drawer)
  is handed to ``Web.after_commit``: it runs after the commit, and never when the unit rolled back.
* What must stay written even when the request fails (a supervisor code typed wrong counts against the
  throttle) keeps its own transaction, and runs before the unit opens (``Web.apart``).

Handlers that build ``Web(request)`` themselves keep one transaction per service call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from caja_core.db import Database

from .context import Web

log = logging.getLogger(__name__)

READ_METHODS = ("GET", "HEAD")


class UnitOrderError(RuntimeError):
    """A separate transaction was asked for while the unit holds the SQLite write lock (it would wait on it)."""


class Unit:
    """The request's transaction: opened on first use, committed or rolled back at the request's end."""

    def __init__(self, db: Database, *, read_only: bool = False) -> None:
        self.db = db
        self.read_only = read_only
        self._stack: contextlib.AsyncExitStack | None = None
        self._session: AsyncSession | None = None
        self._after_commit: list[Callable[[], None]] = []

    @property
    def opened(self) -> bool:
        return self._session is not None

    async def session(self) -> AsyncSession:
        """The unit's session, its transaction begun on first use."""
        if self._session is None:
            stack = contextlib.AsyncExitStack()
            if self.read_only:
                # One snapshot for the whole page: the sale and its payment attempts as of the same instant.
                session = await stack.enter_async_context(self.db.reader(snapshot=True))
            else:
                session = await stack.enter_async_context(self.db.session())
            self._stack, self._session = stack, session
        return self._session

    def check_apart(self) -> None:
        """A separate transaction may run now (nothing of the unit holds SQLite's write lock)."""
        if self._session is not None and not self.read_only and self.db.dialect == "sqlite":
            raise UnitOrderError("a separate transaction after the request's unit took the write lock")

    def after_commit(self, fn: Callable[[], None]) -> None:
        self._after_commit.append(fn)

    async def end(self, error: BaseException | None) -> None:
        stack, self._stack, self._session = self._stack, None, None
        callbacks, self._after_commit = self._after_commit, []
        if stack is not None:
            if error is None:
                await stack.aclose()  # commits (the reader of a GET just ends)
            else:
                await stack.__aexit__(type(error), error, error.__traceback__)
        if error is None:
            for fn in callbacks:
                try:
                    fn()
                except Exception:  # an after-commit action never turns a committed request into an error
                    log.exception("after-commit action failed")


async def provide_unit(state: State, request: Request) -> AsyncIterator[Unit]:
    unit = Unit(state.db, read_only=request.method in READ_METHODS)
    try:
        yield unit
    except BaseException as error:
        await unit.end(error)
        raise
    await unit.end(None)


async def provide_web(request: Request, unit: NamedDependency[Unit]) -> Web:
    """The handler's ``Web``, bound to the request's unit."""
    return Web(request, unit)
