"""One migration history for SQLite and PostgreSQL: up, down, up again, and no drift from the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from caja_core.db import migrate
from caja_core.db.engine import make_engine
from caja_core.db.models import metadata


async def _diff(url):
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()


async def _tables(url):
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names())) - {"alembic_version"}
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    db = request.getfixturevalue("pg_test_database")
    return db.url


async def test_upgrade_downgrade_upgrade_and_no_drift(empty_url):
    await migrate.upgrade_async(empty_url)
    assert await _tables(empty_url) == set(metadata.tables)
    await migrate.downgrade_async(empty_url, "base")
    assert await _tables(empty_url) == set()
    await migrate.upgrade_async(empty_url)
    assert await _diff(empty_url) == []
    engine = make_engine(empty_url)
    try:
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()
