"""The offline sync endpoint: logged-in cashiers only, with the CSRF token like every form; bounded JSON; bad input
is a 4xx with a Spanish message and writes nothing; a resent sale gets its first answer. The sale screen's poll
carries the device's unsynced count, and the close waits for it."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

from caja_core.clock import utcnow
from caja_core.sales import service as sales

SYNC = "/caja/sin-conexion/sincronizar"


def local_now() -> str:
    return (utcnow() - timedelta(seconds=30)).astimezone(ZoneInfo("America/Santiago")).isoformat()


async def open_register(client, setup) -> int:
    r = await client.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "open-offline"}
    )
    assert r.status_code == 303, r.text
    data = await client.get("/caja/sin-conexion/datos")
    assert data.status_code == 200
    return data.json()["session"]["id"]


def sale(setup, session_id, *, price=None, key=None) -> dict:
    price = setup.prices["Cerveza"] if price is None else price
    return {
        "key": key or str(uuid.uuid4()),
        "register_id": setup.register_id,
        "session_id": session_id,
        "cashier_id": setup.cashier_id,
        "local_time": local_now(),
        "method": "cash",
        "lines": [{"product_id": setup.products["Cerveza"], "quantity": 1, "unit_price": price}],
        "total": price,
    }


async def send(client, body, *, csrf=True):
    headers = {"content-type": "application/json"}
    if csrf:
        headers["x-csrftoken"] = await client.csrf()
    return await client.client.post(
        SYNC, content=body if isinstance(body, bytes) else json.dumps(body), headers=headers
    )


async def paid(sqlite_db, setup):
    async with sqlite_db.session() as s:
        return [x for x in await sales.list_sales(s, setup.venue_id) if x.status == "paid"]


async def test_the_register_data_for_offline_selling(cashier, setup):
    session_id = await open_register(cashier, setup)
    data = (await cashier.get("/caja/sin-conexion/datos")).json()
    assert data["session"] == {"id": session_id} and data["cashier"]["id"] == setup.cashier_id
    assert {p["name"]: p["price"] for p in data["products"]} == setup.prices
    assert data["rule"]["methods"] == ["cash", "backup"]  # never the integrated terminal
    assert data["csrf"]
    sw = await cashier.get("/caja-sw.js")
    assert sw.status_code == 200 and sw.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "/caja/sin-conexion" in sw.text


async def test_sync_takes_each_sale_once_and_reports_rejections(cashier, setup, sqlite_db):
    session_id = await open_register(cashier, setup)
    good, tampered = sale(setup, session_id), sale(setup, session_id, price=1)
    body = {"device_id": "tablet-1", "sales": [good, tampered]}
    first = await send(cashier, body)
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert "precio de Cerveza" in results[1]["reason"]
    again = await send(cashier, body)
    assert again.json()["results"] == results
    assert len(await paid(sqlite_db, setup)) == 1


async def test_bad_requests_are_4xx_in_spanish_and_write_nothing(client, cashier, setup, sqlite_db):
    session_id = await open_register(cashier, setup)
    good = sale(setup, session_id)
    no_csrf = await send(cashier, {"device_id": "t", "sales": [good]}, csrf=False)
    assert no_csrf.status_code == 403
    for body, status in (
        (b"{not json", 400),
        ({"device_id": "t", "sales": [{**good, "total": "mucho"}]}, 422),
        ({"device_id": "t", "sales": [{**good, "extra": 1}]}, 422),
        ({"device_id": "t", "sales": [{**good, "total": 10**30}]}, 422),
        ({"device_id": "t", "sales": [{**good, "total": -5}]}, 422),
        ({"device_id": "t\u0000", "sales": [good]}, 400),
        ({"device_id": "", "sales": [good]}, 422),
        ({"device_id": "t", "sales": [sale(setup, session_id) for _ in range(51)]}, 422),
        (b'{"device_id": "t", "sales": [' + b"1," * 200_000 + b"1]}", 413),
    ):
        r = await send(cashier, body)
        assert r.status_code == status, (body if isinstance(body, dict) else body[:40], r.status_code, r.text[:200])
        assert r.json().get("message") or r.json().get("error"), (status, r.text[:300])  # a Spanish message
    assert await paid(sqlite_db, setup) == []
    await cashier.post("/logout")
    anonymous = await send(cashier, {"device_id": "t", "sales": [good]})
    assert "results" not in anonymous.text  # sent to the login: nothing received
    assert await paid(sqlite_db, setup) == []


async def test_the_poll_carries_the_devices_unsynced_count_and_the_close_waits(cashier, setup):
    await open_register(cashier, setup)
    r = await cashier.get("/caja/estado?dispositivo=tablet-1&pendientes=2", htmx=True)
    assert r.status_code == 200
    close = await cashier.post("/caja/session/close", {"count_1000": "0", "note": ""})
    assert close.status_code == 409 and "2 ventas sin conexión por sincronizar" in close.text
    # the device sends its queue from the offline screen: its sync says what it still holds
    r = await send(cashier, {"device_id": "tablet-1", "sales": [], "register_id": setup.register_id, "unsynced": 0})
    assert r.status_code == 200
    close = await cashier.post("/caja/session/close", {"count_1000": "0", "note": ""})
    assert close.status_code == 200, close.text[:300]


async def test_a_supervisor_resolves_a_rejected_offline_sale_and_the_device_may_forget_it(
    client, cashier, setup, sqlite_db
):
    session_id = await open_register(cashier, setup)
    tampered = sale(setup, session_id, price=1)
    [result] = (await send(cashier, {"device_id": "tablet-1", "sales": [tampered]})).json()["results"]
    assert result["status"] == "rejected"
    await cashier.post("/logout")
    await client.login("super", venue_id=setup.venue_id)
    jornada = await client.get("/jornada")
    assert 'href="/jornada/sin-conexion"' in jornada.text
    page = await client.get("/jornada/sin-conexion")
    assert page.status_code == 200 and "precio de Cerveza" in page.text and "$1" in page.text
    offline_id = int(page.text.split('id="offline-sale-')[1].split('"')[0])
    short = await client.post(f"/jornada/sin-conexion/{offline_id}/resolver", {"note": "ok"})
    assert short.status_code == 422 and "entre 5 y 500" in short.text
    done = await client.post(f"/jornada/sin-conexion/{offline_id}/resolver", {"note": "Cobrado de nuevo en efectivo"})
    assert done.status_code == 303
    assert 'id="offline-none"' in (await client.get("/jornada/sin-conexion")).text
    again = await client.post(f"/jornada/sin-conexion/{offline_id}/resolver", {"note": "Cobrado de nuevo en efectivo"})
    assert again.status_code == 409
    await client.post("/logout")
    await client.login_cashier(setup.cashier_id, venue_id=setup.venue_id)
    [result] = (await send(client, {"device_id": "tablet-1", "sales": [tampered]})).json()["results"]
    assert result["status"] == "resolved"
    assert await paid(sqlite_db, setup) == []


async def test_cerrar_sin_esas_ventas_with_a_supervisor_and_the_late_sales_in_the_reports(client, cashier, setup):
    from caja_core.testing.factories import SUPERVISOR_PIN

    session_id = await open_register(cashier, setup)
    lost = [sale(setup, session_id) for _ in range(2)]
    await cashier.get("/caja/estado?dispositivo=tablet-perdida&pendientes=2", htmx=True)
    close = await cashier.post("/caja/session/close", {"count_1000": "0"})
    assert close.status_code == 409 and 'id="close-without-offline"' in close.text
    assert "Equipo <strong>tablet-perdi</strong>: 2 ventas por sincronizar" in close.text
    reason = "La tablet se perdió en la pista"
    wrong = await cashier.post(
        "/caja/session/close", {"count_1000": "0", "without_offline_reason": reason, "supervisor_code": "000000"}
    )
    assert wrong.status_code in (401, 403, 422) and "PIN o tarjeta de supervisor incorrecto" in wrong.text
    assert reason in wrong.text and "000000" not in wrong.text  # the reason is kept, the code is never echoed
    done = await cashier.post(
        "/caja/session/close", {"count_1000": "0", "without_offline_reason": reason, "supervisor_code": SUPERVISOR_PIN}
    )
    assert done.status_code == 200, done.text[:500]
    # The tablet comes back: its sales wait for a supervisor, the closed session does not change.
    results = (await send(cashier, {"device_id": "tablet-perdida", "sales": lost})).json()["results"]
    assert [r["status"] for r in results] == ["late", "late"]
    await cashier.post("/logout")
    await client.login("admin", venue_id=setup.venue_id)
    page = await client.get("/jornada/sin-conexion")
    assert page.status_code == 200 and 'id="offline-late"' in page.text and "después del cierre" in page.text
    for report in (f"/admin/cajas/reportes/jornada/{setup.jornada_id}/z", f"/admin/cajas/reportes/sesion/{session_id}"):
        z = await client.get(report)
        assert z.status_code == 200 and 'id="late-offline-sales"' in z.text and "Por resolver" in z.text
        assert "sin 2 ventas sin conexión del equipo tablet-perdi" in z.text and reason in z.text
    ticket = await client.get(f"/admin/cajas/reportes/sesion/{session_id}/ticket")  # the printed Z
    assert "Cerrada sin ventas sin conexión" in ticket.text and "Recibidas después del cierre (2)" in ticket.text


async def test_a_product_with_modifiers_sells_offline_as_it_is(cashier, setup, sqlite_db):
    """The offline screen sells from its cached catalogue without modifiers: a product that has some is sold
    plain, at its own price, and syncs like any other."""
    from caja_core.catalog import service as catalog

    async with sqlite_db.session() as s:
        await catalog.create_modifier(
            s, venue_id=setup.venue_id, name="Doble", price_delta=2000, product_id=setup.products["Cerveza"]
        )
    session_id = await open_register(cashier, setup)
    data = (await cashier.get("/caja/sin-conexion/datos")).json()
    assert {p["name"]: p["price"] for p in data["products"]}["Cerveza"] == setup.prices["Cerveza"]
    r = await send(cashier, {"device_id": "tablet-m", "sales": [sale(setup, session_id)]})
    assert r.status_code == 200 and [x["status"] for x in r.json()["results"]] == ["accepted"]
    (done,) = await paid(sqlite_db, setup)
    async with sqlite_db.session() as s:
        done = await sales.get_sale(s, setup.venue_id, done.id)
    assert done.total == setup.prices["Cerveza"] and done.items[0].modifiers == []


# ---- another cashier, a reused key, a bad sale in a batch ----------------------------------------------------------


async def diego_at_caja_2(app, sqlite_db, setup, registry):
    """A second cashier, logged in on his own client with his own open session on "Caja 2"."""
    from conftest import WebClient
    from litestar.testing import AsyncTestClient

    from caja_core.registers import service as registers
    from caja_core.users import service as users

    async with sqlite_db.session() as s:
        diego = await users.create_user(
            s, venue_id=setup.venue_id, username="diego", display_name="Diego", role="cashier", secret="305718"
        )
        register = await registers.create_register(
            s,
            venue_id=setup.venue_id,
            registry=registry,
            actor_id=setup.admin_id,
            data=registers.RegisterInput(code="CAJA2", name="Caja 2", primary_provider="fake"),
        )
    raw = AsyncTestClient(app=app)
    await raw.__aenter__()
    client = WebClient(raw)
    await client.login_cashier(diego.id, pin="305718", venue_id=setup.venue_id)
    r = await client.post("/caja/session/open", {"register_id": register.id, "initial_cash": "0", "open_key": "d-1"})
    assert r.status_code == 303, r.text
    own = (await client.get("/caja/sin-conexion/datos")).json()["session"]["id"]
    return client, diego, register, own


def his(setup, sale_body: dict, diego, register=None, session_id=None) -> dict:
    return {
        **sale_body,
        "cashier_id": diego.id,
        "register_id": register.id if register else sale_body["register_id"],
        "session_id": session_id or sale_body["session_id"],
    }


async def test_another_cashier_cannot_hold_a_registers_close_with_a_queue_report(
    app, cashier, setup, sqlite_db, registry
):
    await open_register(cashier, setup)
    other, _, _, _ = await diego_at_caja_2(app, sqlite_db, setup, registry)
    try:
        absurd = await send(
            other, {"device_id": "x", "sales": [], "register_id": setup.register_id, "unsynced": 99_999}
        )
        assert absurd.status_code == 422 and "menor o igual a 5000" in absurd.json()["message"]
        forged = await send(other, {"device_id": "x", "sales": [], "register_id": setup.register_id, "unsynced": 500})
        assert forged.status_code == 200, forged.text
        poll = await other.get("/caja/estado?dispositivo=y&pendientes=7", htmx=True)  # his own register: fine
        assert poll.status_code == 200
    finally:
        await other.client.__aexit__(None, None, None)
    close = await cashier.post("/caja/session/close", {"count_1000": "0", "note": ""})
    assert close.status_code == 200, close.text[:300]  # nothing of Diego's holds her close


async def test_sales_sent_into_another_cashiers_session_leave_nothing_on_it(app, cashier, setup, sqlite_db, registry):
    from caja_core.audit import service as audit

    session_id = await open_register(cashier, setup)
    other, diego, _, _ = await diego_at_caja_2(app, sqlite_db, setup, registry)
    try:
        forged = [his(setup, sale(setup, session_id, price=1), diego) for _ in range(50)]
        r = await send(other, {"device_id": "equipo-ajeno", "sales": forged})
    finally:
        await other.client.__aexit__(None, None, None)
    assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {"not_yours"}
    async with sqlite_db.session() as s:
        incidents = await audit.list_incidents(s, setup.venue_id, session_id=session_id)
    assert [i for i in incidents if i.kind.startswith("offline")] == []


async def test_a_reused_key_with_other_content_is_a_conflict_and_another_cashiers_key_is_his_own(
    app, cashier, setup, sqlite_db, registry
):
    session_id = await open_register(cashier, setup)
    first = sale(setup, session_id, key="k-1")
    [accepted] = (await send(cashier, {"device_id": "t", "sales": [first]})).json()["results"]
    changed = {**first, "lines": [{**first["lines"][0], "quantity": 2}], "total": 2 * first["total"]}
    r = await send(cashier, {"device_id": "t", "sales": [changed]})
    assert r.status_code == 200
    [conflict] = r.json()["results"]
    assert conflict["status"] == "conflict" and "otro contenido" in conflict["reason"]
    other, diego, register, own = await diego_at_caja_2(app, sqlite_db, setup, registry)
    try:
        mine = his(setup, sale(setup, own, key="k-1"), diego, register, own)
        [result] = (await send(other, {"device_id": "t", "sales": [mine]})).json()["results"]
    finally:
        await other.client.__aexit__(None, None, None)
    assert result["status"] == "accepted" and result["sale_id"] != accepted["sale_id"]
    assert len(await paid(sqlite_db, setup)) == 2


async def test_a_bad_sale_in_a_batch_is_answered_alone_and_the_others_are_received(cashier, setup, sqlite_db):
    session_id = await open_register(cashier, setup)
    bad = {**sale(setup, session_id), "register_id": 999_999}
    r = await send(cashier, {"device_id": "t", "sales": [sale(setup, session_id), bad, sale(setup, session_id)]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["accepted", "rejected", "accepted"]
    assert "La caja de la venta no existe" in results[1]["reason"]
    assert len(await paid(sqlite_db, setup)) == 2


async def test_refusals_are_spanish_json_for_a_json_client(cashier, setup, sqlite_db):
    session_id = await open_register(cashier, setup)
    good = sale(setup, session_id)
    for body, wanted in (
        ({"device_id": "t", "sales": [{**good, "total": "mucho"}]}, "venta 1, campo «total»: debe ser un número"),
        ({"device_id": "t", "sales": [{**good, "extra": 1}]}, "venta 1: el campo «extra» no existe"),
        ({"device_id": "t", "sales": [{**good, "total": -5}]}, "debe ser mayor o igual a 0"),
        ({"device_id": "t", "sales": [{**good, "method": "magia"}]}, "campo «method»: valor no permitido"),
        ({"device_id": "t", "sales": [{**good, "key": "k" * 61}]}, "como máximo 60 caracteres"),
        ({"device_id": "x" * 5000, "sales": [good]}, "demasiado largo"),
    ):
        r = await send(cashier, body)
        assert r.status_code == 422, r.text[:300]
        message = r.json()["message"]
        assert wanted in message, message
        assert not any(word in message for word in ("Expected", "Object", "got", "Invalid")), message
    huge = b'{"device_id": "t", "sales": [], "pad": "' + b"x" * 2_100_000 + b'"}'
    for response in (await send(cashier, huge), await send(cashier, {"device_id": "t", "sales": [good]}, csrf=False)):
        assert response.status_code in (403, 413)
        assert response.headers["content-type"].startswith("application/json"), response.text[:200]
        assert response.json()["message"]
    assert await paid(sqlite_db, setup) == []


async def test_a_body_too_deep_or_with_a_null_answers_in_the_syncs_own_shape(cashier, setup, sqlite_db):
    """The bodies refused before the handler (nesting too deep, a NUL character) answer like every other refusal of
    the sync: ``error`` is the code, ``message`` the Spanish text the device shows."""
    session_id = await open_register(cashier, setup)
    deep = b'{"device_id": "t", "sales": ' + b"[" * 100 + b"]" * 100 + b"}"
    nul = json.dumps({"device_id": "t", "sales": [sale(setup, session_id, key="clave\u0000x")]}).encode()
    for body in (deep, nul):
        r = await send(cashier, body)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text[:200]
        assert r.json()["error"] == "json.too_complex" and "JSON" in r.json()["message"], r.text[:200]
    assert await paid(sqlite_db, setup) == []
