"""Telling a database outage apart from any other refused connection: the first is a Spanish 503 and one
back-off line, the second (a terminal, a printer, a provider) is that device's problem and never makes
the instance look as if its database were gone."""

import socket

import pytest
from sqlalchemy import text

from caja_core.db.engine import Database
from caja_core.ops.dbstate import database_unavailable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_database_that_refuses_is_an_outage():
    db = Database(f"postgresql://caja@127.0.0.1:{closed_port()}/caja")
    try:
        with pytest.raises(Exception) as caught:  # whatever the driver raises, it is an outage
            async with db.session() as s:
                await s.execute(text("SELECT 1"))
        assert database_unavailable(caught.value), repr(caught.value)
    finally:
        await db.dispose()
