"""The demo's registers get what the installed plugins propose for a demo (hook ``provider_defaults``)."""

from caja_core.demo import seed_demo
from caja_core.registers import service as registers
from tests.shipped import only_shipped


async def test_demo_registers_take_their_providers_from_the_plugins(sqlite_db, monkeypatch):
    for name, value in only_shipped().items():  # what caja ships proposes, whatever else is installed beside it
        monkeypatch.setenv(name, value)
    info = await seed_demo(sqlite_db, public_url="http://127.0.0.1:8123")
    async with sqlite_db.session() as s:
        by_code = {r.code: r for r in await registers.list_registers(s, info.venue_id)}
    door = by_code["PUERTA"]
    assert (door.primary_provider, door.backup_provider) == ("getnet", "klap")
    assert door.provider_settings["getnet"]["host"] == "127.0.0.1" and door.provider_settings["getnet"]["port"] == 9100
    online = by_code["VIRTUAL"]
    assert (online.primary_provider, online.backup_provider) == ("klap", None)
    assert online.provider_settings["klap"]["webhook_url"] == "http://127.0.0.1:8123/webhooks/klap"


async def test_the_demo_logins_are_found_until_each_is_changed_or_deactivated(sqlite_db):
    from caja_core.demo import demo_logins_in_use
    from caja_core.users import service as users

    info = await seed_demo(sqlite_db)
    assert await demo_logins_in_use(sqlite_db) == ["admin (demo)", "camila (demo)", "diego (demo)", "supervisor (demo)"]
    async with sqlite_db.session() as s:
        by_name = {u.username: u for u in await users.list_users(s, info.venue_id)}
        await users.update_user(s, info.venue_id, by_name["admin"].id, actor_id=None, secret="otra-clave-larga-2026")
        await users.update_user(s, info.venue_id, by_name["camila"].id, actor_id=None, active=False)
        await users.update_user(s, info.venue_id, by_name["diego"].id, actor_id=None, secret="583016")
        await users.update_user(
            s, info.venue_id, by_name["supervisor"].id, actor_id=None, secret="otra-clave-larga-2027"
        )
    assert await demo_logins_in_use(sqlite_db) == ["supervisor (demo)"]  # her authorization PIN is still the demo's
    async with sqlite_db.session() as s:
        await users.update_user(s, info.venue_id, by_name["supervisor"].id, actor_id=None, authorization_pin="604271")
    assert await demo_logins_in_use(sqlite_db) == []
