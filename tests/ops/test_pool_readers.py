"""PostgreSQL connections and readers: a pooled connection whose server side died while it rested is replaced
before anyone uses it (no failed request after a database restart), a snapshot reader sees one instant, and an
autocommit reader runs each statement on its own."""

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.db import engine as db_engine
from caja_core.db.engine import Database

pytestmark = pytest.mark.postgres


async def test_a_connection_killed_while_resting_in_the_pool_is_replaced(pg_test_database, monkeypatch):
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as after a rest
    db = Database(pg_test_database.url, pool_size=1)
    admin = create_async_engine(pg_test_database.admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with db.reader() as s:
            first = await s.scalar(text("SELECT pg_backend_pid()"))
        async with admin.connect() as conn:  # the server restarts, or a firewall drops the idle connection
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        async with db.reader() as s:
            second = await s.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await admin.dispose()
        await db.dispose()


async def test_a_connection_back_a_moment_ago_is_reused_as_it_is(pg_test_database, monkeypatch):
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_S", 3600.0)
    db = Database(pg_test_database.url, pool_size=1)
    try:
        pids = []
        for _ in range(3):
            async with db.reader(autocommit=True) as s:
                pids.append(await s.scalar(text("SELECT pg_backend_pid()")))
        assert len(set(pids)) == 1
    finally:
        await db.dispose()


async def test_snapshot_reader_sees_one_instant_and_autocommit_reader_each_statement(pg_db):
    async with pg_db.session() as s:
        await s.execute(text("CREATE TABLE IF NOT EXISTS reader_probe (n int)"))
        await s.execute(text("DELETE FROM reader_probe"))
    try:
        async with pg_db.reader(snapshot=True) as s:
            assert await s.scalar(text("SELECT count(*) FROM reader_probe")) == 0
            async with pg_db.session() as w:
                await w.execute(text("INSERT INTO reader_probe VALUES (1)"))
            assert await s.scalar(text("SELECT count(*) FROM reader_probe")) == 0  # still the first instant
            assert await s.scalar(text("SHOW transaction_isolation")) == "repeatable read"
        async with pg_db.reader(autocommit=True) as s:
            assert await s.scalar(text("SELECT count(*) FROM reader_probe")) == 1
            async with pg_db.session() as w:
                await w.execute(text("INSERT INTO reader_probe VALUES (2)"))
            assert await s.scalar(text("SELECT count(*) FROM reader_probe")) == 2
            # No transaction around the statements: each one gets its own transaction id.
            ids = [await s.scalar(text("SELECT txid_current()")) for _ in range(2)]
            assert ids[0] != ids[1]
        with pytest.raises(ValueError):
            async with pg_db.reader(snapshot=True, autocommit=True):
                pass
    finally:
        async with pg_db.session() as s:
            await s.execute(text("DROP TABLE IF EXISTS reader_probe"))
