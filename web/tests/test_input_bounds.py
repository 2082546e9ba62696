"""Bad input gives a 4xx, never a 500: ids beyond a database integer on every route, digits that are not
ASCII, 5 000-digit numbers and 20 000-deep arrays in webhooks and the agent API."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text
from test_pos import checkout, open_session

from caja_core.registers import service as registers

HUGE_IDS = [str(2**63), str(2**64), "9" * 40, "-" + str(2**63 + 1)]


def int_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route with an integer path parameter."""
    return [
        (method, route.path)
        for route in app.routes
        if re.search(r"\{\w+:int\}", route.path)
        for method in sorted(set(getattr(route, "methods", {"GET"})) - {"HEAD", "OPTIONS"})
    ]


async def count(db, table):
    async with db.session() as s:
        return (await s.execute(text(f"select count(*) from {table}"))).scalar()


async def test_every_route_with_an_id_answers_4xx_to_ids_beyond_the_database(admin, app, sqlite_db):
    """Found: ids ≥ 2^63 crashed 28 of 31 routes with a 500."""
    routes = int_routes(app)
    assert len(routes) >= 25
    before = await count(sqlite_db, "audit_events")
    for method, template in routes:
        for huge in HUGE_IDS[:2]:
            path = re.sub(r"\{\w+:int\}", huge, template)
            if method == "GET":
                r = await admin.get(path)
            else:
                r = await admin.post(path, {"reason": "x", "note": "x"})
            assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])
            assert "Traceback" not in r.text
    assert await count(sqlite_db, "audit_events") == before


@pytest.mark.parametrize("huge", HUGE_IDS)
async def test_anonymous_login_with_a_huge_venue_or_user_id_is_a_4xx(client, huge):
    r = await client.post("/login", {"venue_id": huge, "username": "admin", "password": "clave-cualquiera"})
    assert 400 <= r.status_code < 500 and "Traceback" not in r.text
    r = await client.post("/login/pin", {"venue_id": "1", "user_id": huge, "pin": "482915"})
    assert 400 <= r.status_code < 500
    assert (await client.get(f"/login/pin/{huge}")).status_code in (400, 404)
    assert (await client.get(f"/login?local={huge}")).status_code == 422


@pytest.mark.parametrize("huge", HUGE_IDS[:2])
async def test_huge_ids_in_query_strings_and_forms(admin, setup, huge):
    assert (await admin.get(f"/admin/cajas/reportes?jornada_id={huge}")).status_code == 422
    assert (await admin.get(f"/caja/session/open?register_id={huge}")).status_code == 422
    r = await admin.post("/caja/session/open", {"register_id": huge, "initial_cash": "0", "open_key": "k"})
    assert r.status_code == 422 and "demasiado grande" in r.text
    r = await admin.post("/admin/celulares", {"name": "Cel", "identifier": "X-1", "register_id": huge})
    assert r.status_code == 422


@pytest.mark.parametrize("value", ["²", "٣٠٠٠", "１０００", "1²"])
async def test_digits_that_are_not_ascii_are_a_field_error(cashier, setup, value):
    """Found: "²" passed ``isdigit`` and crashed the amount fields with a 500."""
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": value, "open_key": "k1"}
    )
    assert r.status_code == 422 and "número entero" in r.text
    r = await cashier.post("/caja/session/open", {"register_id": value, "initial_cash": "0", "open_key": "x"})
    assert 400 <= r.status_code < 500
    await open_session(cashier, setup, cash="10000")
    r = await cashier.post("/caja/movimientos", {"kind": "out", "amount": value, "reason": "retiro"})
    assert r.status_code == 422
    r = await cashier.post("/caja/session/close", {"count_5000": value})
    assert r.status_code == 422 and "número entero" in r.text
    sale_id, _ = await checkout(cashier, setup, "Agua")
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": value}, htmx=True)
    assert r.status_code == 422
    r = await cashier.post("/caja/venta/item", {"product_id": value}, htmx=True)
    assert 400 <= r.status_code < 500


async def test_a_webhook_with_a_monstrous_number_or_depth_is_refused_and_writes_nothing(client, sqlite_db):
    """Found: 5 000-digit numbers and 20 000-deep arrays in a webhook were a 500."""
    before = (await count(sqlite_db, "webhook_events"), await count(sqlite_db, "audit_events"))
    bodies = [
        b'{"order_id": "1", "amount": ' + b"9" * 5000 + b"}",
        b'{"order_id": "1", "x": ' + b"[" * 20000 + b"]" * 20000 + b"}",
        b'{"order_id": ' + b"{" * 20000 + b"}" * 20000 + b"}",
    ]
    for body in bodies:
        r = await client.post("/webhooks/klap", content=body, csrf=False, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, r.text[:200]
        assert r.json()["status"] == "rejected"
    assert (await count(sqlite_db, "webhook_events"), await count(sqlite_db, "audit_events")) == before


async def test_the_agent_api_refuses_monstrous_json_with_a_4xx(client, setup, sqlite_db):
    """Found: the same bodies crashed the agent API (results, progress, heartbeats)."""
    async with sqlite_db.session() as s:
        token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=setup.register_id, actor_id=setup.admin_id
        )
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    deep = b'{"terminal": "ok", "result": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    long_number = b'{"terminal": "ok", "result": {"Amount": ' + b"1" * 5000 + b"}}"
    for path in ("/api/agent/v1/heartbeat", "/api/agent/v1/commands/1/result", "/api/agent/v1/commands/1/progress"):
        for body in (deep, long_number):
            r = await client.post(path, content=body, csrf=False, headers=dict(headers))
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])


async def test_a_reasonable_json_body_still_goes_through(client, setup, sqlite_db):
    async with sqlite_db.session() as s:
        token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=setup.register_id, actor_id=setup.admin_id
        )
    r = await client.post(
        "/api/agent/v1/heartbeat",
        content=b'{"terminal": "ok", "detail": "[[1, 2], {\\"n\\": 123456789012}]"}',
        csrf=False,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert r.status_code < 300, r.text


async def test_the_agent_api_answers_huge_command_ids_with_a_4xx(client, setup, sqlite_db):
    async with sqlite_db.session() as s:
        token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=setup.register_id, actor_id=setup.admin_id
        )
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    for huge in HUGE_IDS[:3]:
        for path, body in (
            (f"/api/agent/v1/commands/{huge}/claim", b'{"fence": 1}'),
            (f"/api/agent/v1/commands/{huge}/progress", b'{"seq": 1, "code": 78, "text": "x"}'),
            (f"/api/agent/v1/commands/{huge}/result", b'{"outcome": {}}'),
        ):
            r = await client.post(path, content=body, csrf=False, headers=dict(headers))
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
            assert set(r.json()) >= {"error", "code"}
    r = await client.post(f"/api/agent/v1/commands/{2**64}/claim", content=b'{"fence": 1}', csrf=False)
    assert r.status_code == 401  # no token: the API says so before looking at the id


async def test_a_nul_character_never_reaches_the_database(admin, client, setup, sqlite_db):
    """PostgreSQL refuses NUL in text: a form or JSON carrying one is refused at the edge."""
    before = await count(sqlite_db, "products")
    r = await admin.post("/admin/productos", {"category_id": setup.category_id, "name": "Ron\x00", "price": "1000"})
    assert r.status_code == 422 and "caracteres no permitidos" in r.text
    assert await count(sqlite_db, "products") == before
    async with sqlite_db.session() as s:
        token = await registers.rotate_agent_token(
            s, venue_id=setup.venue_id, register_id=setup.register_id, actor_id=setup.admin_id
        )
    r = await client.post(
        "/api/agent/v1/heartbeat",
        content=b'{"terminal": "ok", "detail": "a\\u0000b"}',
        csrf=False,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["code"] == "json.too_complex"
