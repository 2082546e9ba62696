"""Jornada open/close by supervisors, refused while sessions are open, banner on every page."""


async def test_supervisor_closes_and_opens_the_jornada(supervisor, setup):
    r = await supervisor.get("/jornada")
    assert "Cerrar jornada" in r.text and 'id="jornada-banner"' in r.text
    r = await supervisor.post("/jornada/cerrar", {"jornada_id": setup.jornada_id})
    assert r.status_code == 303
    r = await supervisor.get("/jornada")
    assert "No hay jornada abierta" in r.text
    r = await supervisor.post("/jornada/abrir")
    assert r.status_code == 303
    assert "Jornada abierta" in (await supervisor.get("/caja/")).text


async def test_close_refused_while_a_session_is_open(supervisor, setup):
    await supervisor.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "j1"}
    )
    r = await supervisor.post("/jornada/cerrar", {"jornada_id": setup.jornada_id})
    assert r.status_code == 409 and "sesi" in r.text.lower()


async def test_open_twice_is_refused(supervisor, setup):
    r = await supervisor.post("/jornada/abrir")
    assert r.status_code == 409


async def test_bad_jornada_id_is_not_a_crash(supervisor):
    r = await supervisor.post("/jornada/cerrar", {"jornada_id": "abc"})
    assert r.status_code == 400 and "no son válidos" in r.text


async def test_supervisor_approves_a_pending_close_from_the_jornada_page(cashier, client, setup):
    await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "10000", "open_key": "p1"}
    )
    r = await cashier.post("/caja/session/close", {"count_1000": "2"})
    assert "pendiente de aprobación" in r.text
    await cashier.post("/logout")
    await client.login("super", venue_id=setup.venue_id)
    page = await client.get("/jornada")
    assert 'id="pending-closes"' in page.text and "-$8.000" in page.text
    r = await client.post("/jornada/aprobar/1", {"note": ""})
    assert r.status_code == 422 and "nota" in r.text
    r = await client.post("/jornada/aprobar/1", {"note": "Retiro no registrado"})
    assert r.status_code == 303
    assert 'id="pending-closes"' not in (await client.get("/jornada")).text
    r = await client.post("/jornada/cerrar", {"jornada_id": setup.jornada_id})
    assert r.status_code == 303
