"""“Probar terminal”: the check lives in caja_core (payments/terminal_probe.py); the admin page only shows it."""

import pytest
from webkit import text_of

from caja_core.errors import NotFound, ValidationFailed
from caja_core.payments.terminal_probe import probe_terminal as check_terminal
from caja_core.providers import OutcomeKind
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import Step


async def test_ready_terminal_answers_with_latency(sqlite_db, registry, setup, fakes):
    fakes[0].script("health", Step(kind=OutcomeKind.APPROVED, message="Terminal listo", delay_s=0.05))
    result = await check_terminal(sqlite_db, registry, setup.venue_id, setup.register_id)
    assert result.ok and result.message == "Terminal listo" and result.provider_id == "fake"
    assert result.latency_ms is not None and result.latency_ms >= 50
    assert fakes[0].calls[-1] == ("health", None)  # a health check, never a charge


async def test_silent_terminal_times_out_and_broken_transport_is_one_line(sqlite_db, registry, setup, fakes):
    fakes[0].script("health", Step(kind=OutcomeKind.APPROVED, hang=True))
    result = await check_terminal(sqlite_db, registry, setup.venue_id, setup.register_id, timeout_s=0.2)
    assert not result.ok and result.latency_ms is None and "no respondió" in result.message
    fakes[0].script("health", Step(kind=OutcomeKind.APPROVED, raise_exc=True))
    result = await check_terminal(sqlite_db, registry, setup.venue_id, setup.register_id)
    assert not result.ok and "No se pudo conectar con el terminal" in result.message


async def test_backup_provider_can_be_checked_but_not_a_foreign_one(sqlite_db, registry, setup, fakes):
    fakes[1].script("health", Step(kind=OutcomeKind.APPROVED, message="Respaldo listo"))
    result = await check_terminal(sqlite_db, registry, setup.venue_id, setup.register_id, "fakebackup")
    assert result.ok and result.provider_id == "fakebackup"
    with pytest.raises(ValidationFailed, match="no está configurado"):
        await check_terminal(sqlite_db, registry, setup.venue_id, setup.register_id, "cash")
    other = await make_setup(sqlite_db, registry, slug="otro")
    with pytest.raises(NotFound):
        await check_terminal(sqlite_db, registry, setup.venue_id, other.register_id)


async def test_admin_button_shows_the_result_and_guards(client, admin, setup, fakes, sqlite_db, registry):
    fakes[0].script("health", Step(kind=OutcomeKind.APPROVED, message="Terminal listo"))
    r = await admin.post(f"/admin/cajas/{setup.register_id}/probar", htmx=True)
    assert r.status_code == 200
    assert "Terminal responde: Terminal listo" in text_of(r.text) and " ms" in r.text
    other = await make_setup(sqlite_db, registry, slug="otro")
    r = await admin.post(f"/admin/cajas/{other.register_id}/probar", htmx=True)
    assert r.status_code == 404
    await admin.post("/logout")
    await client.login("super", venue_id=setup.venue_id)
    r = await client.post(f"/admin/cajas/{setup.register_id}/probar", htmx=True)
    assert r.status_code == 403
