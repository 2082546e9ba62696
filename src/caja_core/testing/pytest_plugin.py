"""pytest fixtures for caja and its plugins (registered through the ``pytest11`` entry point).

* ``sqlite_db`` — a migrated SQLite file of its own (``Database``).
* ``pg_db`` — the real PostgreSQL (``CAJA_TEST_DATABASE_URL``), migrated, emptied before the test.
* ``any_db`` — runs the test on both.
* ``make_caja_pm(*plugins)`` — a plugin manager with the defaults, installed plugins and ``plugins``.
* ``fake_provider`` — a scriptable payment provider (see ``caja_core.testing.FakeProvider``).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
import pytest

from ..db.engine import Database
from .databases import PostgresTestDatabase, SqliteTemplate, make_tempdir

if TYPE_CHECKING:
    from .fake import FakeProvider


@pytest.fixture(scope="session")
def caja_tmp_root() -> Iterator[Path]:
    root = make_tempdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_template(caja_tmp_root: Path) -> SqliteTemplate:
    template = SqliteTemplate(caja_tmp_root)
    template.ensure()
    return template


@pytest.fixture(scope="session")
def pg_test_database() -> Iterator[PostgresTestDatabase]:
    database = PostgresTestDatabase()
    try:
        database.create()
    except Exception as exc:  # noqa: BLE001 - the suite requires PostgreSQL: whatever failed, fail loudly, never skip
        pytest.fail(f"PostgreSQL de pruebas no disponible ({database.admin_url}): {exc}")
    yield database
    database.drop()


@pytest.fixture
def sqlite_url(sqlite_template: SqliteTemplate) -> str:
    return sqlite_template.fresh_url()


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    db = Database(sqlite_url)
    yield db
    await db.dispose()


@pytest.fixture
async def pg_db(pg_test_database: PostgresTestDatabase) -> AsyncIterator[Database]:
    db = Database(pg_test_database.url, pool_size=25)
    await pg_test_database.truncate(db)
    yield db
    await db.dispose()


@pytest.fixture
def pg_url(pg_test_database: PostgresTestDatabase) -> str:
    return pg_test_database.url


@pytest.fixture(params=["sqlite", "postgres"])
async def any_db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = Database(request.getfixturevalue("sqlite_url"))
    else:
        database = request.getfixturevalue("pg_test_database")
        db = Database(database.url, pool_size=25)
        await database.truncate(db)
    yield db
    await db.dispose()


@pytest.fixture
def make_caja_pm() -> Callable[..., pluggy.PluginManager]:
    from ..plugins import make_plugin_manager

    def factory(*plugins: Any, load_entrypoints: bool = True) -> pluggy.PluginManager:
        return make_plugin_manager(*plugins, load_entrypoints=load_entrypoints)

    return factory


@pytest.fixture
def fake_provider() -> FakeProvider:
    from .fake import FakeProvider

    return FakeProvider()
