"""The cashier's POS through the Litestar test client: open, sell (cash, card, backup), cancel, cash in/out,
incidents, blind close with approval, and every refusal in Spanish."""

import asyncio
import re
import time

from webkit import cart_version, text_of

from caja_core.fallback.policy import FallbackPolicy
from caja_core.providers import OutcomeKind
from caja_core.registers import service as registers
from caja_core.sessions import service as sessions
from caja_core.testing.factories import PIN, SUPERVISOR_PIN
from caja_core.testing.fake import Step


async def open_session(client, setup, cash="10000", key="open-1"):
    r = await client.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": cash, "open_key": key}
    )
    assert r.status_code == 303, text_of(r.text)
    assert r.headers["location"] == "/caja/venta"
    return r


async def checkout(client, setup, *products):
    r = await client.get("/caja/venta", htmx=True)
    for name in products:
        r = await client.post("/caja/venta/item", {"product_id": setup.products[name]}, htmx=True)
        assert r.status_code == 200
    r = await client.post("/caja/venta/cobrar", {"v": cart_version(r.text)}, htmx=True)
    assert r.status_code == 200, text_of(r.text)
    return int(re.search(r"/caja/venta/(\d+)/", r.text).group(1)), r


async def poll_until(client, sale_id, marker, timeout_s=20.0):
    """Poll the progress partial like the page does (faster) until ``marker`` shows; generous on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = await client.get(f"/caja/venta/{sale_id}/pago", htmx=True)
        assert r.status_code == 200
        if marker in r.text:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never shown; last: {text_of(r.text)[:400]}")
        await asyncio.sleep(0.05)


async def test_home_lists_registers_and_open_page_has_denominations(cashier, setup):
    r = await cashier.get("/caja/")
    assert r.status_code == 200 and "Caja 1" in r.text and "Abrir caja" in r.text
    r = await cashier.get(f"/caja/session/open?register_id={setup.register_id}")
    assert "$20.000" in r.text and 'name="count_500"' in r.text


async def test_open_with_count_by_denomination(cashier, setup, sqlite_db):
    r = await cashier.post(
        "/caja/session/open",
        {"register_id": setup.register_id, "open_key": "c1", "count_10000": "2", "count_1000": "5"},
    )
    assert r.status_code == 303
    async with sqlite_db.session() as s:
        session = await sessions.current_session(s, setup.venue_id, setup.register_id)
    assert session.initial_cash == 25000 and session.initial_count == {"10000": 2, "1000": 5}


async def test_open_bad_amount_rerenders_form_in_spanish(cashier, setup):
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "12,5", "open_key": "x"}
    )
    assert r.status_code == 422
    assert "El fondo inicial debe ser un número entero" in r.text and 'value="12,5"' in r.text


async def test_open_refused_without_jornada(cashier, setup, sqlite_db):
    from caja_core.jornadas import service as jornadas

    async with sqlite_db.session() as s:
        await jornadas.close_jornada(
            s, venue_id=setup.venue_id, jornada_id=setup.jornada_id, user_id=setup.supervisor_id
        )
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "x"}
    )
    assert r.status_code == 409 and "No hay una jornada abierta" in r.text


async def test_open_refused_when_register_in_maintenance(cashier, setup, sqlite_db):
    async with sqlite_db.session() as s:
        await registers.set_operational_status(
            s, venue_id=setup.venue_id, register_id=setup.register_id, status="maintenance", actor_id=setup.admin_id
        )
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "x"}
    )
    assert r.status_code == 409 and "no está operativa" in r.text


async def test_open_refused_when_already_open_and_resume_works(cashier, setup):
    await open_session(cashier, setup)
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "other"}
    )
    assert r.status_code == 409 and "ya tiene una sesión abierta" in r.text
    r = await cashier.post("/caja/session/resume", {"register_id": setup.register_id})
    assert r.status_code == 303 and r.headers["location"] == "/caja/venta"


async def test_open_refused_when_backup_phones_missing(cashier, setup, sqlite_db, registry):
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, setup.venue_id, setup.register_id)
        data = registers.RegisterInput(
            code=reg.code,
            name=reg.name,
            register_type=reg.register_type,
            payment_methods=reg.payment_methods,
            primary_provider=reg.primary_provider,
            backup_provider=reg.backup_provider,
            policy=FallbackPolicy(backup_phones_required=3),
        )
        await registers.update_register(
            s, venue_id=setup.venue_id, register_id=reg.id, data=data, registry=registry, actor_id=setup.admin_id
        )
    r = await cashier.post(
        "/caja/session/open", {"register_id": setup.register_id, "initial_cash": "0", "open_key": "x"}
    )
    assert r.status_code == 409 and "celular(es) de respaldo" in r.text


async def test_cash_sale_shows_change_and_next_sale_resets(cashier, setup):
    await open_session(cashier, setup)
    sale_id, r = await checkout(cashier, setup, "Cerveza", "Cerveza", "Agua")
    assert "$9.000" in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": "10000"}, htmx=True)
    assert r.status_code == 200 and "Vuelto" in r.text and "$1.000" in r.text
    r = await cashier.post("/caja/venta/siguiente", htmx=True)
    assert r.headers["hx-redirect"] == "/caja/venta"
    r = await cashier.get("/caja/venta")
    assert "Toque un producto" in r.text


async def test_cash_below_total_is_refused_in_spanish(cashier, setup):
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": "5000"}, htmx=True)
    assert r.status_code == 422 and "es menor que el total" in r.text


async def test_free_amount_line_needs_amount_and_reason(cashier, setup):
    await open_session(cashier, setup)
    r = await cashier.post("/caja/venta/libre", {"name": "Descorche", "amount": "-5", "reason": ""}, htmx=True)
    assert r.status_code == 422 and "El monto libre" in r.text
    r = await cashier.post(
        "/caja/venta/libre", {"name": "Descorche", "amount": "5.000", "reason": "botella propia"}, htmx=True
    )
    assert r.status_code == 200 and "Descorche" in r.text and "$5.000" in r.text


async def test_quantity_changes_and_empty_cart_cannot_be_charged(cashier, setup):
    await open_session(cashier, setup)
    r = await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
    r = await cashier.post("/caja/venta/linea", {"index": 0, "delta": 2, "v": cart_version(r.text)}, htmx=True)
    assert "3×" in r.text and "$6.000" in r.text
    r = await cashier.post("/caja/venta/vaciar", {"v": cart_version(r.text)}, htmx=True)
    r = await cashier.post("/caja/venta/cobrar", {"v": cart_version(r.text)}, htmx=True)
    assert r.status_code == 422 and "no tiene productos" in r.text


async def test_reload_resumes_pending_sale(cashier, setup):
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    r = await cashier.client.get("/caja/venta", follow_redirects=True)
    assert f"Cobrar venta #{sale_id}" in r.text and "<html" in r.text


async def test_cart_is_locked_while_a_sale_is_being_charged(cashier, setup):
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    r = await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
    assert r.headers["hx-redirect"] == f"/caja/venta/{sale_id}"
    page = await cashier.get(f"/caja/venta/{sale_id}")
    assert "$3.500" in page.text and "Cobrar venta" in page.text


async def test_cancel_sale_needs_reason(cashier, setup):
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    r = await cashier.post(f"/caja/venta/{sale_id}/anular", {"reason": ""}, htmx=True)
    assert r.status_code == 422 and "motivo de la anulación" in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/anular", {"reason": "cliente se arrepintió"}, htmx=True)
    assert r.headers["hx-redirect"] == "/caja/venta"


async def test_card_sale_approved_on_primary(cashier, setup, fakes):
    fakes[0].script("charge", Step(kind=OutcomeKind.APPROVED, progress=["Inserte o acerque tarjeta"], delay_s=0.2))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    r = await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    assert r.status_code == 200 and 'hx-trigger="every 1s" data-poll-holds' in r.text
    r = await poll_until(cashier, sale_id, "Siguiente venta")
    assert "****4242" in r.text and "Aut. A1B2C3" in r.text


async def test_card_unavailable_offers_backup_and_backup_pays(cashier, setup, fakes):
    fakes[0].script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    r = await poll_until(cashier, sale_id, "Cobrar con respaldo")
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", htmx=True)
    assert r.status_code == 200, text_of(r.text)
    r = await poll_until(cashier, sale_id, "Siguiente venta")
    assert "(respaldo)" in r.text


async def test_in_doubt_is_never_shown_as_approved(cashier, setup, fakes):
    fakes[0].script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=False))
    fakes[0].script(
        "status",
        Step(kind=OutcomeKind.UNKNOWN),
        Step(kind=OutcomeKind.UNKNOWN),
        Step(kind=OutcomeKind.UNKNOWN),
        Step(kind=OutcomeKind.UNKNOWN),
    )
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    r = await poll_until(cashier, sale_id, "EN DUDA")
    assert "APROBADO" not in r.text and "Siguiente venta" not in r.text
    r = await cashier.post("/caja/session/close", {"count_10000": "1"})
    assert r.status_code == 409 and 'id="unresolved"' in r.text and f"venta #{sale_id}" in r.text


async def test_cash_movements_and_incidents(cashier, setup):
    await open_session(cashier, setup)
    r = await cashier.post("/caja/movimientos", {"kind": "out", "amount": "999999", "reason": "retiro"})
    assert r.status_code == 409 and "No hay suficiente efectivo" in r.text
    r = await cashier.post("/caja/movimientos", {"kind": "in", "amount": "5000", "reason": "sencillo"})
    assert r.status_code == 303
    r = await cashier.get("/caja/movimientos")
    assert "sencillo" in r.text and "$5.000" in r.text
    r = await cashier.post("/caja/incidentes", {"kind": "printer", "description": "x"})
    assert r.status_code == 422 and "Describa la incidencia" in r.text
    r = await cashier.post("/caja/incidentes", {"kind": "printer", "description": "Sin papel en la impresora"})
    assert r.status_code == 303
    assert "Sin papel en la impresora" in (await cashier.get("/caja/incidentes")).text


async def test_blind_close_within_tolerance(cashier, setup):
    await open_session(cashier, setup, cash="10000")
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": "3500"}, htmx=True)
    page = await cashier.get("/caja/session/close")
    assert "$13.500" not in page.text and "esperado" not in page.text.lower()
    r = await cashier.post(
        "/caja/session/close", {"count_10000": "1", "count_2000": "1", "count_1000": "1", "count_500": "1"}
    )
    assert r.status_code == 200 and "Caja cerrada" in r.text and "$0" in r.text


async def test_blind_close_over_tolerance_needs_supervisor_note(cashier, setup):
    await open_session(cashier, setup, cash="10000")
    r = await cashier.post("/caja/session/close", {"count_5000": "1"})
    assert "pendiente de aprobación" in r.text and "-$5.000" in r.text
    r = await cashier.post("/caja/session/close/aprobar", {"supervisor_code": "975310", "note": "x"})
    assert r.status_code == 401 and "PIN o tarjeta de supervisor incorrecto" in r.text
    r = await cashier.post("/caja/session/close/aprobar", {"supervisor_code": SUPERVISOR_PIN, "note": "no"})
    assert r.status_code == 422 and "nota" in r.text
    r = await cashier.post(
        "/caja/session/close/aprobar", {"supervisor_code": SUPERVISOR_PIN, "note": "Vuelto mal entregado"}
    )
    assert r.status_code == 200 and "Caja cerrada" in r.text


async def test_close_bad_count_rerenders(cashier, setup):
    await open_session(cashier, setup)
    r = await cashier.post("/caja/session/close", {"count_5000": "dos"})
    assert r.status_code == 422 and "debe ser un número entero" in r.text and 'value="dos"' in r.text


async def test_pos_without_session_is_refused_clearly(cashier, setup):
    r = await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
    assert r.status_code == 409 and "No hay una caja abierta" in r.text
    r = await cashier.get("/caja/venta", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/caja/"


async def test_override_then_late_primary_approval_offers_the_refund(cashier, setup, fakes):
    """The primary turns out charged after the backup paid: caja tries to refund it through the terminal at once;
    when the terminal refuses, the receipt shows the duplicate and a supervisor returns it from the POS."""
    fakes[0].script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
    fakes[0].set_default("status", Step(kind=OutcomeKind.UNKNOWN))  # the terminal silent until the override
    fakes[0].script("refund", Step(kind=OutcomeKind.DECLINED, message="Anulación rechazada"))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    r = await poll_until(cashier, sale_id, "forzar-respaldo")
    r = await cashier.post(
        f"/caja/venta/{sale_id}/forzar-respaldo",
        {"supervisor_code": PIN, "note": "cliente apurado"},
        htmx=True,
    )
    assert r.status_code == 401  # the cashier's own PIN authorizes nothing
    r = await cashier.post(
        f"/caja/venta/{sale_id}/forzar-respaldo",
        {"supervisor_code": SUPERVISOR_PIN, "note": "terminal colgado"},
        htmx=True,
    )
    assert r.status_code == 200, text_of(r.text)
    fakes[0].set_default("status", None)  # back: it tells the truth, the primary was charged
    r = await poll_until(cashier, sale_id, 'name="attempt_id"')  # once caja's own refund was refused
    assert "Cobro duplicado" in r.text
    attempt_id = int(re.search(r'name="attempt_id" value="(\d+)"', r.text).group(1))
    # The charge is refunded only from its own sale's screen: another sale's URL refuses it.
    other_sale_id, _ = await checkout(cashier, setup, "Agua")
    r = await cashier.post(
        f"/caja/venta/{other_sale_id}/devolver",
        {"attempt_id": attempt_id, "supervisor_code": SUPERVISOR_PIN},
        htmx=True,
    )
    assert r.status_code == 404 and not fakes[0].refunded
    r = await poll_until(cashier, sale_id, "Cobro duplicado")
    r = await cashier.post(
        f"/caja/venta/{sale_id}/devolver",
        {"attempt_id": attempt_id, "supervisor_code": SUPERVISOR_PIN},
        htmx=True,
    )
    assert r.status_code == 200, text_of(r.text)
    assert "Cobro duplicado" not in r.text
    assert fakes[0].refunded


async def test_a_duplicate_whose_refund_the_terminal_never_answered_offers_no_refund_button(cashier, setup, fakes):
    """The automatic refund of the duplicate goes unanswered: it may have been done, so the receipt says what the
    supervisor checks on the terminal instead of a «Devolver cobro» button that could only be refused."""
    fakes[0].script("charge", Step(kind=OutcomeKind.UNKNOWN, charged=True))
    fakes[0].set_default("status", Step(kind=OutcomeKind.UNKNOWN))  # the terminal silent until the override
    fakes[0].script("refund", Step(kind=OutcomeKind.UNKNOWN, message="Sin respuesta"))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Piscola")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    await poll_until(cashier, sale_id, "forzar-respaldo")
    r = await cashier.post(
        f"/caja/venta/{sale_id}/forzar-respaldo",
        {"supervisor_code": SUPERVISOR_PIN, "note": "terminal colgado"},
        htmx=True,
    )
    assert r.status_code == 200, text_of(r.text)
    fakes[0].set_default("status", None)  # back: it tells the truth, the primary was charged
    r = await poll_until(cashier, sale_id, "no respondió")
    text = text_of(r.text)
    assert "Cobro duplicado" in text and "caja no la envía de nuevo" in text, text[-600:]
    assert "Devolver cobro" not in text and 'name="attempt_id"' not in r.text


async def test_courtesy_at_oficina_needs_a_reason_and_counts_apart(client, sqlite_db, registry, settings, fakes):
    from conftest import ProvidersPlugin, WebClient
    from litestar.testing import AsyncTestClient

    from caja_core.plugins import make_plugin_manager
    from caja_core.testing.factories import make_setup
    from caja_web.app import create_app

    office = await make_setup(sqlite_db, registry, slug="oficina", register_type="OFICINA", phones=1)
    app = create_app(settings, db=sqlite_db, pm=make_plugin_manager(ProvidersPlugin(*fakes), load_entrypoints=False))
    async with AsyncTestClient(app=app) as c:
        web = WebClient(c)
        await web.login_cashier(office.cashier_id, venue_id=office.venue_id)
        await web.post("/caja/session/open", {"register_id": office.register_id, "initial_cash": "0", "open_key": "of"})
        r = await web.post("/caja/venta/item", {"product_id": office.products["Piscola"]}, htmx=True)
        assert 'id="courtesy"' in r.text
        r = await web.post("/caja/venta/cortesia", {"reason": ""}, htmx=True)
        assert r.status_code == 422 and "motivo de la cortesía" in r.text
        r = await web.post("/caja/venta/cortesia", {"reason": "Artista invitado"}, htmx=True)
        assert r.status_code == 200 and "Artista invitado" in r.text and "Vuelto" not in r.text
    async with sqlite_db.session() as s:
        session = await sessions.current_session(s, office.venue_id, office.register_id)
    assert session.courtesy_count == 1 and session.courtesy_total == 6000 and session.ticket_count == 0


async def test_pos_forms_work_without_javascript(cashier, setup):
    await open_session(cashier, setup)
    await cashier.post("/caja/venta/item", {"product_id": setup.products["Agua"]}, htmx=True)
    sale_id, r = await checkout(cashier, setup)
    assert f'action="/caja/venta/{sale_id}/efectivo"' in r.text and 'name="_csrf_token"' in r.text
    token = re.search(r'name="_csrf_token" value="([^"]+)"', r.text).group(1)
    r = await cashier.client.post(
        f"/caja/venta/{sale_id}/efectivo", data={"cash_received": "5000", "_csrf_token": token}
    )
    assert r.status_code == 200 and "<html" in r.text and "$3.000" in r.text


async def test_backup_needs_a_supervisor_when_the_policy_says_so(cashier, setup, sqlite_db, registry, fakes):
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, setup.venue_id, setup.register_id)
        data = registers.RegisterInput(
            code=reg.code,
            name=reg.name,
            register_type=reg.register_type,
            payment_methods=reg.payment_methods,
            primary_provider=reg.primary_provider,
            backup_provider=reg.backup_provider,
            policy=FallbackPolicy(require_supervisor=True),
        )
        await registers.update_register(
            s, venue_id=setup.venue_id, register_id=reg.id, data=data, registry=registry, actor_id=setup.admin_id
        )
    fakes[0].script("charge", Step(kind=OutcomeKind.UNAVAILABLE, message="Terminal desconectado"))
    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    await cashier.post(f"/caja/venta/{sale_id}/tarjeta", htmx=True)
    await poll_until(cashier, sale_id, "Cobrar con respaldo")
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", htmx=True)
    assert r.status_code == 403 and 'id="backup-supervisor"' in r.text and "data-hold" in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", {"supervisor_code": "975310"}, htmx=True)
    assert r.status_code == 401 and 'id="backup-supervisor"' in r.text
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", {"supervisor_code": SUPERVISOR_PIN}, htmx=True)
    assert r.status_code == 200, text_of(r.text)
    r = await poll_until(cashier, sale_id, "Siguiente venta")
    assert "(respaldo)" in r.text


async def test_a_discount_refused_after_the_supervisor_typed_their_code_leaves_no_authorization(
    cashier, setup, sqlite_db
):
    """The owner's log says a supervisor authorized a discount only when that discount was given."""
    from sqlalchemy import func, select

    from caja_core.audit.models import AuditEvent
    from caja_core.permissions.models import Authorization

    async def granted():
        async with sqlite_db.reader() as s:
            rows = await s.scalar(select(func.count()).select_from(Authorization))
            audited = await s.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "authorization.granted")
            )
        return rows, audited

    await open_session(cashier, setup)
    sale_id, _ = await checkout(cashier, setup, "Cerveza")
    form = {"kind": "percent", "reason": "Cliente frecuente", "supervisor_code": SUPERVISOR_PIN}
    r = await cashier.post(f"/caja/venta/{sale_id}/descuento", {**form, "value": "150"}, htmx=True)
    assert r.status_code == 422 and "entre 1 y 100" in text_of(r.text), text_of(r.text)
    assert await granted() == (0, 0)
    r = await cashier.post(f"/caja/venta/{sale_id}/descuento", {**form, "value": "10"}, htmx=True)
    assert r.status_code == 200, text_of(r.text)
    assert await granted() == (1, 1)
