from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry


def test_default_and_installed_providers_register():
    registry = ProviderRegistry.from_plugin_manager(make_plugin_manager(environ={"CAJA_LOAD_PLUGINS": ""}))
    assert registry.ids() == []  # cash is no provider: the core records cash sales itself


async def test_sqlite_and_pg_fixtures(any_db):
    from sqlalchemy import text

    async with any_db.session() as s:
        assert (await s.execute(text("select count(*) from venues"))).scalar() == 0
