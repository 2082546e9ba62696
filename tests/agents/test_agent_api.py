"""The agent API as ``caja agent`` sees it: tokens, long poll, progress, idempotent results, heartbeats, and
the provider side (``DbAgentChannel``) meeting it through the database."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from caja_core.agents.service import AgentNoAnswer, AgentNotReached, DbAgentChannel
from caja_core.payments.models import AgentCommand
from caja_core.providers import Progress
from caja_core.registers.models import CashRegister

from .conftest import FAST_TIMING, bearer

NEXT = "/api/agent/v1/commands/next"
SALE = {
    "Command": 100,
    "Amount": 3500,
    "TicketNumber": "77",
    "PrintOnPos": True,
    "SaleType": 0,
    "SendMessage": True,
    "EmployeeId": "",
    "DateTime": "2026-01-01T23:00:00",
}


def channel(db, venue, **kw) -> DbAgentChannel:
    return DbAgentChannel(db, venue.register_id, venue.venue_id, timing=kw.pop("timing", FAST_TIMING))


async def take(api, token, wait=2):
    r = await api.get(NEXT, params={"wait": wait}, headers=bearer(token))
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


async def command_row(db, command_id) -> AgentCommand:
    async with db.reader() as s:
        return (await s.execute(select(AgentCommand).where(AgentCommand.id == command_id))).scalar_one()


async def test_missing_or_wrong_token_is_refused_in_spanish(api, venue):
    for headers in (
        {},
        {"Authorization": "Bearer no-es-un-token"},
        {"Authorization": venue.token},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        for method, url, body in (
            ("GET", NEXT + "?wait=0", None),
            ("POST", "/api/agent/v1/heartbeat", {"terminal": "ok", "detail": ""}),
            ("POST", "/api/agent/v1/commands/1/result", {"result": {"ResponseCode": 0}}),
            ("POST", "/api/agent/v1/commands/1/progress", {"message": "x", "code": 78}),
        ):
            r = await api.request(method, url, json=body, headers=headers)
            assert r.status_code == 401, (headers, url, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert "token" in r.json()["error"].lower() or "authorization" in r.json()["error"].lower()


async def test_a_rotated_token_stops_working(api, venue, sqlite_db):
    from caja_core.registers import service as registers

    assert (await api.get(NEXT, params={"wait": 0}, headers=bearer(venue.token))).status_code == 204
    async with sqlite_db.session() as s:
        new = await registers.rotate_agent_token(
            s, venue_id=venue.venue_id, register_id=venue.register_id, actor_id=None
        )
    assert (await api.get(NEXT, params={"wait": 0}, headers=bearer(venue.token))).status_code == 401
    assert (await api.get(NEXT, params={"wait": 0}, headers=bearer(new))).status_code == 204


async def test_long_poll_waits_then_answers_204(api, venue):
    started = time.monotonic()
    r = await api.get(NEXT, params={"wait": 0.6}, headers=bearer(venue.token))
    assert r.status_code == 204 and r.content == b""
    assert 0.5 <= time.monotonic() - started < 3


async def test_a_sale_goes_through_the_queue_with_progress_and_its_result(live, venue, sqlite_db):
    seen: list[Progress] = []

    async def progress(p: Progress) -> None:
        seen.append(p)

    # The provider waits; the agent long-polls, confirms receipt, reports messages, posts the result.
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(dict(SALE), deadline_s=8, progress=progress))
    command = await take(live, venue.token)
    assert command["payload"] == SALE and 0 < command["deadline_s"] <= 8
    cid = command["command_id"]
    for message, code in (("Venta enviada al terminal", None), ("Leyendo tarjeta", 78), ("Ingreso de PIN", 81)):
        r = await live.post(
            f"/api/agent/v1/commands/{cid}/progress",
            json={"message": message, "code": code},
            headers=bearer(venue.token),
        )
        assert r.status_code == 200 and r.json() == {"status": "stored"}
    result = {
        "ResponseCode": 0,
        "Ticket": "77",
        "Amount": 3500,
        "AuthorizationCode": "A1B2C3",
        "Last4Digits": "1111",
        "AccountNumber": "4111111111111111",
    }
    r = await live.post(f"/api/agent/v1/commands/{cid}/result", json={"result": result}, headers=bearer(venue.token))
    assert r.status_code == 200 and r.json() == {"status": "stored"}
    answer = await asyncio.wait_for(exchange, 5)
    assert answer["ResponseCode"] == 0 and answer["AuthorizationCode"] == "A1B2C3"
    assert "AccountNumber" not in answer  # never stored, even if an agent sent it
    assert [p.code for p in seen] == [None, 78, 81]
    assert seen[0].message == "Venta enviada al terminal"
    # Posting the same result again (the agent did not get our 200) changes nothing.
    r = await live.post(f"/api/agent/v1/commands/{cid}/result", json={"result": result}, headers=bearer(venue.token))
    assert r.status_code == 200 and r.json() == {"status": "duplicate"}
    # A different result for the same command is refused; the first one stays.
    r = await live.post(
        f"/api/agent/v1/commands/{cid}/result",
        json={"result": {**result, "ResponseCode": 5}},
        headers=bearer(venue.token),
    )
    assert r.status_code == 409 and "primero" in r.json()["error"]
    row = await command_row(sqlite_db, cid)
    assert row.status == "done" and row.result["ResponseCode"] == 0 and "4111111111111111" not in str(row.result)
    assert await take(live, venue.token, wait=0) is None  # nothing left to hand out


async def test_another_registers_command_is_not_found(live, venue, sqlite_db):
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=4))
    # The other register's agent sees nothing of CAJA1's queue …
    assert await take(live, venue.other_token, wait=0.3) is None
    command = await take(live, venue.token)
    cid = command["command_id"]
    # … and cannot post into CAJA1's command, nor learn that it exists.
    for suffix, body in (("result", {"result": {"ResponseCode": 0}}), ("progress", {"message": "x", "code": 78})):
        r = await live.post(f"/api/agent/v1/commands/{cid}/{suffix}", json=body, headers=bearer(venue.other_token))
        assert r.status_code == 404 and r.json()["error"] == "El comando no existe para esta caja."
        for unknown in (999999, 0, 2**70):
            r = await live.post(f"/api/agent/v1/commands/{unknown}/{suffix}", json=body, headers=bearer(venue.token))
            assert r.status_code == 404, r.text
    assert (await command_row(sqlite_db, cid)).result is None
    r = await live.post(
        f"/api/agent/v1/commands/{cid}/result",
        json={"result": {"ResponseCode": 0, "Ticket": "9"}},
        headers=bearer(venue.token),
    )
    assert r.status_code == 200
    assert (await asyncio.wait_for(exchange, 5))["Ticket"] == "9"


async def test_malformed_bodies_get_a_clear_400(live, venue, sqlite_db):
    h = bearer(venue.token)
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=4))
    cid = (await take(live, venue.token))["command_id"]
    cases = [
        (f"/api/agent/v1/commands/{cid}/result", b"{no es json", "JSON"),
        (f"/api/agent/v1/commands/{cid}/result", b"[1, 2]", "objeto"),
        (f"/api/agent/v1/commands/{cid}/result", b'{"resultado": {}}', "result"),
        (f"/api/agent/v1/commands/{cid}/result", b'{"result": "aprobado"}', "result"),
        (f"/api/agent/v1/commands/{cid}/progress", b'{"code": 78}', "message"),
        (f"/api/agent/v1/commands/{cid}/progress", b'{"message": "PIN", "code": "ochenta"}', "code"),
        ("/api/agent/v1/heartbeat", b'{"terminal": "quizas"}', "terminal"),
        ("/api/agent/v1/heartbeat", b"", "JSON"),
    ]
    for url, body, mentions in cases:
        r = await live.post(url, content=body, headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 400, (url, body, r.status_code, r.text)
        error = r.json()["error"]
        assert error.startswith("Solicitud mal formada") and mentions in error, (body, error)
    r = await live.get(NEXT, params={"wait": "mucho"}, headers=h)
    assert r.status_code == 400 and "wait" in r.json()["error"]
    r = await live.post(f"/api/agent/v1/commands/{cid}/result", json={"result": {}}, headers=h)
    assert r.status_code == 422 and "vacío" in r.json()["error"]
    r = await live.post("/api/agent/v1/commands/abc/result", json={"result": {"a": 1}}, headers=h)
    assert r.status_code in (400, 404) and r.headers["content-type"].startswith("application/json")
    assert (await command_row(sqlite_db, cid)).result is None  # nothing half-written
    await live.post(f"/api/agent/v1/commands/{cid}/result", json={"result": {"ResponseCode": 0}}, headers=h)
    await asyncio.wait_for(exchange, 5)


async def test_heartbeat_records_the_terminal_status_shown_in_health(api, venue, sqlite_db):
    r = await api.post(
        "/api/agent/v1/heartbeat",
        json={"terminal": "unreachable", "detail": "Puerto ocupado"},
        headers=bearer(venue.token),
    )
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    async with sqlite_db.reader() as s:
        register = await s.get(CashRegister, venue.register_id)
    assert register.agent_status == {"terminal": "unreachable", "detail": "Puerto ocupado"}
    assert register.agent_last_seen_at is not None
    # /health: CAJA1's agent reports; CAJA2 has a token but its agent never connected.
    api.app.state.settings.metrics_token = token = "metrics-token-for-the-operator"  # the full report
    registers = (await api.get("/health", headers={"Authorization": f"Bearer {token}"})).json()["services"]["registers"]
    by_code = {key.split(":")[-1].split("/")[-1]: value for key, value in registers.items()}
    assert by_code["CAJA1"]["agent"]["status"] == "ok", registers
    assert by_code["CAJA2"]["agent"]["status"] == "never_seen", registers


async def test_no_agent_means_not_sent_and_the_command_never_runs_later(live, venue, sqlite_db):
    started = time.monotonic()
    try:
        await channel(sqlite_db, venue).exchange(dict(SALE), deadline_s=8)
        raise AssertionError("sin agente no hay respuesta")
    except AgentNotReached as exc:
        assert exc.not_sent is True
    assert time.monotonic() - started < 4  # the pick-up time (2 s here), not the sale's 8 s
    assert await take(live, venue.token, wait=0) is None  # an agent that shows up later never gets it


async def test_taken_but_unanswered_is_in_doubt_never_declined(live, venue, sqlite_db):
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(dict(SALE), deadline_s=2))
    command = await take(live, venue.token)
    cid = command["command_id"]
    r = await live.post(
        f"/api/agent/v1/commands/{cid}/claim", json={"fence": command["fence"]}, headers=bearer(venue.token)
    )
    assert r.status_code == 200 and r.json() == {"status": "claimed"}  # the agent started it on the terminal
    try:
        await asyncio.wait_for(exchange, 8)
        raise AssertionError("sin resultado no hay respuesta")
    except AgentNoAnswer as exc:
        assert exc.not_sent is False
    assert (await command_row(sqlite_db, cid)).status == "expired"
    # The agent's late answer is still kept for the record.
    r = await live.post(
        f"/api/agent/v1/commands/{cid}/result", json={"result": {"ResponseCode": 0}}, headers=bearer(venue.token)
    )
    assert r.status_code == 200 and r.json() == {"status": "late"}


async def test_a_command_whose_delivery_was_lost_is_handed_out_again(live, venue, sqlite_db):
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=6))
    first = await take(live, venue.token)  # … and this answer never reached the agent
    assert await take(live, venue.token, wait=0) is None  # not at once: it may still be running
    again = await take(live, venue.token, wait=3)  # after redeliver_after_s
    assert again["command_id"] == first["command_id"] and again["fence"] == first["fence"] + 1
    assert again["expires_in_s"] < first["expires_in_s"] and again["deadline_s"] == first["deadline_s"]
    await live.post(
        f"/api/agent/v1/commands/{again['command_id']}/result",
        json={"result": {"ResponseCode": 0}},
        headers=bearer(venue.token),
    )
    assert (await asyncio.wait_for(exchange, 5)) == {"ResponseCode": 0}


async def test_the_agent_api_is_documented_in_the_openapi_schema(api):
    schema = (await api.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/api/agent/v1/commands/next"]["get"]["responses"]) >= {"200", "204", "400", "401"}
    result = paths["/api/agent/v1/commands/{command_id}/result"]["post"]
    assert set(result["responses"]) >= {"200", "400", "401", "404", "409"}
    assert "requestBody" in result
    assert "/api/agent/v1/commands/{command_id}/progress" in paths and "/api/agent/v1/heartbeat" in paths


async def test_finished_commands_are_kept_a_month_then_pruned(live, venue, sqlite_db):
    from datetime import timedelta

    from caja_core.clock import utcnow

    old = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=4))
    cid = (await take(live, venue.token))["command_id"]
    await live.post(
        f"/api/agent/v1/commands/{cid}/result", json={"result": {"ResponseCode": 0}}, headers=bearer(venue.token)
    )
    await asyncio.wait_for(old, 5)
    async with sqlite_db.session() as s:
        (await s.get(AgentCommand, cid)).created_at = utcnow() - timedelta(days=31)
    fresh = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=4))
    new_id = (await take(live, venue.token))["command_id"]
    await live.post(
        f"/api/agent/v1/commands/{new_id}/result", json={"result": {"ResponseCode": 0}}, headers=bearer(venue.token)
    )
    await asyncio.wait_for(fresh, 5)
    async with sqlite_db.reader() as s:
        ids = list((await s.execute(select(AgentCommand.id))).scalars())
    assert ids == [new_id]
