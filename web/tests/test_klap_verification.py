"""End-of-night KLAP verification pages: upload KLAP's sales report, see the result, verify by hand or dispute."""

from __future__ import annotations

import itertools

import pytest
from webkit import text_of

from caja_core.audit import service as audit
from caja_core.clock import to_local, utcnow
from caja_core.payments.models import PaymentAttempt
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import make_setup
from caja_core.testing.fake import FakeProvider
from caja_klap.provider import KlapProvider

_keys = itertools.count(1)
HEADER = "Fecha;Hora;Monto;Código de autorización;Últimos 4 dígitos;Marca;Tipo;Estado\n"
PAGE = "/admin/cajas/reportes/verificacion"


@pytest.fixture
def fakes():
    """KLAP reads its sales report (``Capability.SALES_REPORT``) and verifies its manual payments with it."""
    return FakeProvider("fake", "Terminal de prueba"), FakeProvider("fakebackup", "Respaldo de prueba"), KlapProvider()


def report(*rows: tuple[int, str, str]) -> bytes:
    now = to_local(utcnow(), "America/Santiago")
    lines = [
        f"{now:%d-%m-%Y};{now:%H:%M};${amount:,};{auth};****{last4};Visa;Débito;Aprobada".replace(",", ".")
        for amount, auth, last4 in rows
    ]
    return (HEADER + "\n".join(lines) + "\n").encode()


async def manual_payment(db, setup, session_id: int, product: str, auth: str, last4: str) -> int:
    """A sale paid on the backup phone and confirmed by the cashier (``approved_manual``)."""
    async with db.session() as s:
        sale = await sales.create_sale(
            s,
            venue_id=setup.venue_id,
            session_id=session_id,
            cashier_id=setup.cashier_id,
            items=[sales.ItemInput(product_id=setup.products[product], quantity=1)],
            idempotency_key=f"sale-{next(_keys)}",
        )
        attempt = PaymentAttempt(
            venue_id=setup.venue_id,
            sale_id=sale.id,
            session_id=session_id,
            register_id=setup.register_id,
            provider_id="klap",
            device_key="klap:phone:CAJA1",
            role="backup",
            amount=sale.total,
            ticket=f"T{next(_keys)}",
            reference="R7K2Q9",
            state="approved_manual",
            active=False,
            card_brand="VISA",
            card_type="debito",
            last4=last4,
            authorization_code=auth,
            created_at=utcnow(),
            finished_at=utcnow(),
        )
        s.add(attempt)
        await s.flush()
        await sales.mark_paid(s, sale_id=sale.id, provider_id="klap", method="card", paid_via="backup")
        return attempt.id


async def open_session(db, setup) -> int:
    async with db.session() as s:
        return (
            await sessions.open_session(
                s,
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                user_id=setup.cashier_id,
                initial_cash=0,
                open_key=f"open-{next(_keys)}",
            )
        ).id


@pytest.fixture
async def night(sqlite_db, setup):
    """Three manual KLAP payments in the open jornada: Piscola $6.000, Cerveza $3.500, Agua $2.000."""
    session_id = await open_session(sqlite_db, setup)
    return [
        await manual_payment(sqlite_db, setup, session_id, product, auth, last4)
        for product, auth, last4 in (
            ("Piscola", "A1B2C3", "4242"),
            ("Cerveza", "D4E5F6", "1111"),
            ("Agua", "G7H8J9", "5555"),
        )
    ]


async def states(db, ids):
    async with db.reader() as s:
        return [(await s.get(PaymentAttempt, i)).state for i in ids]


async def upload(client, jornada_id: int, data: bytes, name: str = "ventas-klap.csv"):
    return await client.post(f"{PAGE}/{jornada_id}/reporte", files={"reporte": (name, data, "text/csv")})


async def test_page_lists_the_manual_payments_and_is_linked_from_reports_and_jornada(supervisor, setup, night):
    page = await supervisor.get(f"{PAGE}?jornada={setup.jornada_id}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "A1B2C3" in text and "****4242" in text and "$6.000" in text and "Aprobado (manual)" in text
    assert page.text.count('/verificar"') == 3 and page.text.count('/disputar"') == 3
    assert f"{PAGE}?jornada={setup.jornada_id}" in (await supervisor.get("/admin/cajas/reportes")).text
    assert f"{PAGE}?jornada={setup.jornada_id}" in (await supervisor.get("/jornada")).text
    assert (await supervisor.get(PAGE)).status_code == 200  # without a jornada: the current one


async def test_upload_verifies_matches_and_opens_incidents_for_the_rest(supervisor, setup, night, sqlite_db):
    piscola, cerveza, agua = night
    r = await upload(
        supervisor,
        setup.jornada_id,
        report((6000, "A1B2C3", "4242"), (3500, "D4E5F6", "1111"), (9900, "Z9Z9Z9", "7777")),
    )
    assert r.status_code == 200, text_of(r.text)
    text = text_of(r.text)
    assert "Verificados ahora 2" in text and "Cobros sin respaldo en KLAP 1" in text
    assert "Ventas KLAP sin cobro en caja 1" in text and "Incidencias abiertas: 2" in text
    assert await states(sqlite_db, [piscola, cerveza, agua]) == ["verified", "verified", "approved_manual"]
    jornada_report = text_of((await supervisor.get(f"/admin/cajas/reportes/jornada/{setup.jornada_id}")).text)
    assert "KLAP: pago sin respaldo en el reporte" in jornada_report
    assert "KLAP: venta del reporte sin pago en caja" in jornada_report


async def test_report_with_bad_rows_says_which_and_changes_nothing(supervisor, setup, night, sqlite_db):
    bad = (
        report((6000, "A1B2C3", "4242"), (6000, "A1B2C3", "4242"))
        + "32-13-2026;23:10;$abc;XX;;Visa;Débito;Aprobada\n".encode()
    )
    r = await upload(supervisor, setup.jornada_id, bad)
    assert r.status_code == 422
    text = text_of(r.text)
    assert "El reporte tiene 2 fila(s) con errores" in text and "No se aplicó nada" in text
    assert "Fila duplicada: igual a la fila 2" in text and "fecha inexistente" in text and "monto ilegible" in text
    assert 'id="report-errors"' in r.text
    assert await states(sqlite_db, night) == ["approved_manual"] * 3
    async with sqlite_db.reader() as s:
        assert await audit.list_incidents(s, setup.venue_id, jornada_id=setup.jornada_id) == []


async def test_upload_bad_input_is_a_field_error_never_a_500(supervisor, setup, night):
    r = await supervisor.post(f"{PAGE}/{setup.jornada_id}/reporte", {"reporte": "no es un archivo"})
    assert r.status_code == 422 and "Elija el archivo CSV del reporte de ventas de KLAP" in text_of(r.text)
    r = await upload(supervisor, setup.jornada_id, b"   \n")
    assert r.status_code == 422 and "El archivo está vacío" in text_of(r.text)
    r = await upload(supervisor, setup.jornada_id, b"\x00\xff\xfe garbage \x01;;;\n1;2;3\n")
    assert r.status_code == 422 and "No se encontró la fila de encabezados" in text_of(r.text)
    r = await upload(supervisor, setup.jornada_id, b"x" * 5_100_000)
    assert r.status_code == 422 and "El archivo supera 5 MB" in text_of(r.text)
    r = await upload(supervisor, setup.jornada_id, b"y" * 6_000_000)  # over the request body limit
    assert r.status_code == 422 and "El archivo supera 5 MB" in text_of(r.text)


async def test_verify_by_hand_checks_the_authorization_code(supervisor, setup, night, sqlite_db):
    piscola = night[0]
    url = f"{PAGE}/{setup.jornada_id}/intentos/{piscola}/verificar"
    r = await supervisor.post(url, {"authorization_code": "ZZZZZZ"})
    assert r.status_code == 422 and "El código no coincide con el que confirmó el cajero" in text_of(r.text)
    r = await supervisor.post(url, {"authorization_code": "abc"})
    assert r.status_code == 422 and "6 letras o dígitos" in text_of(r.text)
    assert await states(sqlite_db, [piscola]) == ["approved_manual"]
    r = await supervisor.post(url, {"authorization_code": "a1b2c3", "note": "visto en el portal"})
    assert r.status_code == 303 and r.headers["location"].endswith(f"verificado={piscola}")
    assert await states(sqlite_db, [piscola]) == ["verified"]
    page = text_of((await supervisor.get(r.headers["location"])).text)
    assert f"Cobro #{piscola} verificado" in page and "código A1B2C3 visto en KLAP: visto en el portal" in page


async def test_dispute_needs_a_reason_and_opens_an_incident(supervisor, setup, night, sqlite_db):
    cerveza = night[1]
    url = f"{PAGE}/{setup.jornada_id}/intentos/{cerveza}/disputar"
    r = await supervisor.post(url, {"note": ""})
    assert r.status_code == 422 and "El motivo de la disputa es obligatorio" in text_of(r.text)
    r = await supervisor.post(url, {"note": "No aparece en la app KLAP"})
    assert r.status_code == 303
    assert await states(sqlite_db, [cerveza]) == ["disputed"]
    async with sqlite_db.reader() as s:
        kinds = [i.kind for i in await audit.list_incidents(s, setup.venue_id, jornada_id=setup.jornada_id)]
    assert kinds == ["klap_disputed"]
    r = await supervisor.post(
        f"{PAGE}/{setup.jornada_id}/intentos/{cerveza}/verificar", {"authorization_code": "D4E5F6"}
    )
    assert r.status_code == 409 and "en disputa" in text_of(r.text)


async def test_cashier_gets_403(cashier, setup, night):
    assert (await cashier.get(f"{PAGE}?jornada={setup.jornada_id}")).status_code == 403
    r = await upload(cashier, setup.jornada_id, report((6000, "A1B2C3", "4242")))
    assert r.status_code == 403
    r = await cashier.post(f"{PAGE}/{setup.jornada_id}/intentos/{night[0]}/verificar", {"authorization_code": "A1B2C3"})
    assert r.status_code == 403


async def test_other_venue_jornada_and_attempts_are_404(supervisor, setup, night, sqlite_db, registry):
    other = await make_setup(sqlite_db, registry, slug="otro")
    other_session = await open_session(sqlite_db, other)
    theirs = await manual_payment(sqlite_db, other, other_session, "Piscola", "Q1W2E3", "9999")
    assert (await supervisor.get(f"{PAGE}?jornada={other.jornada_id}")).status_code == 404
    r = await upload(supervisor, other.jornada_id, report((6000, "Q1W2E3", "9999")))
    assert r.status_code == 404
    r = await supervisor.post(
        f"{PAGE}/{other.jornada_id}/intentos/{theirs}/verificar", {"authorization_code": "Q1W2E3"}
    )
    assert r.status_code == 404
    r = await supervisor.post(f"{PAGE}/{setup.jornada_id}/intentos/{theirs}/disputar", {"note": "no es nuestro"})
    assert r.status_code == 404
    assert await states(sqlite_db, [theirs]) == ["approved_manual"]
