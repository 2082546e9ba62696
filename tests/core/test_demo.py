"""The demo's registers get what the installed plugins propose for a demo (hook ``provider_defaults``)."""

from caja_core.demo import seed_demo
from caja_core.registers import service as registers


async def test_demo_registers_take_their_providers_from_the_plugins(sqlite_db):
    info = await seed_demo(sqlite_db, public_url="http://127.0.0.1:8123")
    async with sqlite_db.session() as s:
        by_code = {r.code: r for r in await registers.list_registers(s, info.venue_id)}
    door = by_code["PUERTA"]
    assert (door.primary_provider, door.backup_provider) == ("getnet", "klap")
    assert door.provider_settings["getnet"]["host"] == "127.0.0.1" and door.provider_settings["getnet"]["port"] == 9100
    online = by_code["VIRTUAL"]
    assert (online.primary_provider, online.backup_provider) == ("klap", None)
    assert online.provider_settings["klap"]["webhook_url"] == "http://127.0.0.1:8123/webhooks/klap"
