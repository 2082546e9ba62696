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
    await supervisor.post("/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0",
                                                 "open_key": "j1"})
    r = await supervisor.post("/jornada/cerrar", {"jornada_id": setup.jornada_id})
    assert r.status_code == 409 and "sesi" in r.text.lower()


async def test_open_twice_is_refused(supervisor, setup):
    r = await supervisor.post("/jornada/abrir")
    assert r.status_code == 409


async def test_bad_jornada_id_is_not_a_crash(supervisor):
    r = await supervisor.post("/jornada/cerrar", {"jornada_id": "abc"})
    assert r.status_code == 400 and "no son válidos" in r.text
