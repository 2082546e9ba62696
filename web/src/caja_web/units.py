"""One unit of work per request: the Litestar dependency ``unit``.

A handler that declares ``unit: Unit`` and builds ``Web(request, unit)`` runs every service it calls — and the
reads of the page it answers with — in one database transaction, committed once the response is rendered and
rolled back when anything raised (a refused form included), so a request never leaves half of what it did.
Handlers that do not declare it keep one transaction per service call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from caja_core.db import Database


class Unit:
    """The request's transaction, open until the request's end."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.session: AsyncSession | None = None
        self._open = db.session()

    async def begin(self) -> None:
        self.session = await self._open.__aenter__()

    async def end(self, error: BaseException | None) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if error is None:
            await self._open.__aexit__(None, None, None)
        else:
            await self._open.__aexit__(type(error), error, error.__traceback__)


async def provide_unit(state: State) -> AsyncIterator[Unit]:
    unit = Unit(state.db)
    await unit.begin()
    try:
        yield unit
    except BaseException as error:
        await unit.end(error)
        raise
    await unit.end(None)
