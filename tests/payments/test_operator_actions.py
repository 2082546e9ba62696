"""docs/reliability.md cases 31–38 — payments that hold under what operators do — through the real stack: the real
Litestar app (one or two instances, each with its own orchestrator), the GETNET provider talking to terminal
simulators over TCP, and the cashier's, supervisor's and admin's own pages and forms."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from caja_core.audit.models import AuditEvent, Incident
from caja_core.db import Database
from caja_core.errors import Conflict
from caja_core.fallback.policy import FallbackPolicy
from caja_core.payments import terminal_ops
from caja_core.payments.models import PaymentAttempt, PaymentDevice, TerminalCheck, TerminalClose
from caja_core.sales.models import Sale
from caja_getnet.protocol import Command

from .stack import (
    POLICY,
    TERMINAL,
    Stack,
    checkout,
    edit_terminal,
    open_session,
    pay_card,
    progress,
    set_methods,
    shows,
    text_of,
    wait_for,
)

DETAILS = (Command.LAST_VOUCHER, Command.DETAILS)


async def _stack(request, kind: str):
    if kind == "sqlite":
        url = request.getfixturevalue("sqlite_url")
        db = Database(url)
    else:
        database = request.getfixturevalue("pg_test_database")
        url = database.url
        db = Database(url, pool_size=25)
        await database.truncate(db)
    return Stack(db, url)


@pytest.fixture(params=["sqlite", "postgres"])
async def stack(request):
    s = await _stack(request, request.param)
    yield s
    await s.close()
    await s.db.dispose()


@pytest.fixture
async def sqlite_stack(request):
    s = await _stack(request, "sqlite")
    yield s
    await s.close()
    await s.db.dispose()


async def attempts(stack: Stack, sale_id: int) -> list[PaymentAttempt]:
    async with stack.db.reader() as s:
        return list(
            (
                await s.execute(
                    select(PaymentAttempt).where(PaymentAttempt.sale_id == sale_id).order_by(PaymentAttempt.id)
                )
            ).scalars()
        )


async def sale_status(stack: Stack, sale_id: int) -> str:
    async with stack.db.reader() as s:
        return (await s.execute(select(Sale.status).where(Sale.id == sale_id))).scalar_one()


async def charged_in_doubt(stack: Stack, cashier, sim) -> int:
    """A card sale the terminal charges, then goes silent and dies before answering: in doubt."""
    sale_id = await checkout(cashier, stack)
    sim.add_fault({"kind": "receipt_then_silence", "charged": True})
    port, before = sim.tcp_address[1], sim.charge_count()

    async def dropped():
        return sim.charge_count() == before + 1

    await pay_card(cashier, sale_id)
    await wait_for(dropped, "the terminal charged the card")
    await sim.stop()  # the terminal dies (or its cable is pulled) with the charge made
    sim.port_to_restore = port
    page = await shows(cashier, sale_id, "EN DUDA")
    assert "No cobre de nuevo" in text_of(page) and "Cobrar con respaldo" not in page, text_of(page)[:300]
    return sale_id


async def revive(sim) -> None:
    await sim.start_tcp(port=sim.port_to_restore)


# 31 ---------------------------------------------------------------------------------------------------------
async def test_31_a_spare_terminal_is_never_asked_about_an_attempt_sent_to_the_dead_one(stack):
    dead = await stack.simulator("SN-ORIGINAL")
    spare = await stack.simulator("SN-REPUESTO")
    await stack.build(dead)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, dead)

    # The admin points the register at the spare terminal (another address, another serial number).
    await edit_terminal(admin, stack, port=spare.tcp_address[1])
    (attempt,) = await attempts(stack, sale_id)

    async def asked_a_few_times():
        (a,) = await attempts(stack, sale_id)
        return a.reconcile_tries >= attempt.reconcile_tries + 2

    await wait_for(asked_a_few_times, "reconciliation goes on")
    # It keeps asking its own terminal (the settings it was sent with), never the register's new one.
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.device_settings["port"] == dead.port_to_restore and attempt.state in ("in_doubt", "reconciling")
    page = await progress(cashier, sale_id)
    assert "EN DUDA" in page and "No cobre de nuevo" in text_of(page), text_of(page)[:300]
    assert "Cobrar con respaldo" not in page, text_of(page)[:300]
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", htmx=True)
    assert r.status_code == 409 and "posible doble cobro" in text_of(r.text)
    assert not [c for c in spare.commands if c["Command"] in DETAILS], "the spare was asked about the attempt"
    assert await sale_status(stack, sale_id) == "pending_payment"

    # The original terminal comes back: it is the one asked, and it says the card was charged.
    await revive(dead)
    await shows(cashier, sale_id, 'id="receipt"')
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and attempt.classification == "reconciled"
    assert dead.charged() == {attempt.ticket: attempt.amount} and spare.charged() == {}

    # New sales go to the spare.
    second = await checkout(cashier, stack)
    await pay_card(cashier, second)
    await shows(cashier, second, 'id="receipt"')
    assert len(spare.charged()) == 1 and len(dead.charged()) == 1


async def test_31_a_spare_plugged_in_where_the_dead_terminal_was_is_no_proof_either(stack):
    """The spare takes the dead terminal's very address: caja asks the terminal at that address who it is before
    trusting its "never seen that ticket"; another serial number is no proof, and a supervisor is called."""
    dead = await stack.simulator("SN-ORIGINAL")
    await stack.build(dead)
    app = await stack.instance()
    cashier = await app.cashier()
    await open_session(cashier, stack)
    first = await checkout(cashier, stack)
    await pay_card(cashier, first)
    await shows(cashier, first, 'id="receipt"')

    async def identified():
        async with stack.db.reader() as s:
            return (
                await s.execute(select(PaymentDevice.identity).where(PaymentDevice.identity.is_not(None)))
            ).scalar_one_or_none()

    identity = await wait_for(identified, "caja asked the terminal who it is after its first sale")
    sale_id = await charged_in_doubt(stack, cashier, dead)
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.device_identity == identity

    spare = await stack.simulator("SN-REPUESTO", port=dead.port_to_restore)

    async def decision_asked():
        (a,) = await attempts(stack, sale_id)
        return a if a.needs_decision else None

    attempt = await wait_for(decision_asked, "the spare's answer is no proof: a supervisor is called")
    assert attempt.state in ("in_doubt", "reconciling")
    assert "otro terminal" in (attempt.details or {}).get("not_proof", ""), attempt.details
    page = await progress(cashier, sale_id)
    assert "EN DUDA" in page and "un supervisor lo resuelve" in text_of(page), text_of(page)[:300]
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", htmx=True)
    assert r.status_code == 409 and "posible doble cobro" in text_of(r.text)
    assert await sale_status(stack, sale_id) == "pending_payment" and spare.charged() == {}

    # The original terminal is put back in its place: it is asked, and it says the card was charged.
    await spare.stop()
    await revive(dead)
    await shows(cashier, sale_id, 'id="receipt"')
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and attempt.classification == "reconciled" and not attempt.needs_decision
    assert len(dead.charged()) == 2 and dead.charged()[attempt.ticket] == attempt.amount


async def test_31_a_spare_at_the_same_address_is_never_taken_for_the_terminal_of_its_first_sale(stack):
    """The first sale ever on a terminal ends in doubt; the dead unit is replaced by a spare at the very same
    address. The spare says it never saw the ticket — but it is not the terminal the sale went to (caja asked
    the terminal who it was before its first charge), so that is no proof and the backup is not offered."""
    dead = await stack.simulator("SN-ORIGINAL")
    await stack.build(dead)
    app = await stack.instance()
    cashier = await app.cashier()
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, dead)
    (attempt,) = await attempts(stack, sale_id)
    sent = attempt.sent_at.replace(tzinfo=UTC)
    spare = await stack.simulator("SN-REPUESTO", port=dead.port_to_restore)

    def asked() -> int:
        return len([c for c in spare.commands if c["Command"] in DETAILS])

    async def a_sale_would_have_ended():  # past the terminal's own limit, "not in its list" would count as proof
        return datetime.now(UTC) - sent > timedelta(seconds=TERMINAL["sale_timeout_s"] + 1)

    await wait_for(a_sale_would_have_ended, "the terminal's sale limit passes", timeout_s=60)
    before = asked()

    async def asked_twice_more_or_settled():
        (a,) = await attempts(stack, sale_id)
        return asked() >= before + 4 or a.state not in ("in_doubt", "reconciling")

    await wait_for(asked_twice_more_or_settled, "reconciliation asks at the address")
    page = await progress(cashier, sale_id)
    assert "EN DUDA" in page and "Cobrar con respaldo" not in page, text_of(page)[:300]
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state in ("in_doubt", "reconciling") and await sale_status(stack, sale_id) == "pending_payment"
    r = await cashier.post(f"/caja/venta/{sale_id}/respaldo", htmx=True)
    assert r.status_code == 409 and "posible doble cobro" in text_of(r.text)
    assert dead.charged() == {attempt.ticket: attempt.amount} and spare.charged() == {}
    assert attempt.device_identity == "getnet:SN-ORIGINAL"


# 32 ---------------------------------------------------------------------------------------------------------
async def test_32_reaching_the_terminal_at_another_address_never_lets_an_old_charge_pay_a_new_sale(stack):
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    first = await checkout(cashier, stack)
    await pay_card(cashier, first)
    await shows(cashier, first, 'id="receipt"')

    # The same terminal under another address: another spelling of its host and another of its ports (the
    # device key changes; before, the ticket counter started again at 1).
    _, other_port = await sim.start_tcp()
    await edit_terminal(admin, stack, host="localhost", port=other_port)
    second = await checkout(cashier, stack)  # the same amount as the first
    sim.add_fault({"kind": "no_receipt"})  # the terminal never sees this sale
    await pay_card(cashier, second)
    page = await shows(cashier, second, "Cobrar con respaldo")
    assert "No se cobró" in text_of(page) or "no hubo cobro" in text_of(page)
    assert await sale_status(stack, second) == "pending_payment"
    a1, a2 = (await attempts(stack, first))[0], (await attempts(stack, second))[0]
    assert a1.ticket != a2.ticket and a1.device_key != a2.device_key
    assert sim.charged() == {a1.ticket: a1.amount}


@pytest.mark.parametrize("spelling", ["LOCALHOST", "::ffff:127.0.0.1"])  # a name; the IPv4-mapped IPv6 address
async def test_32_two_registers_spelling_one_terminal_differently_share_its_lock(stack, spelling):
    from caja_core.registers import service as registers

    sim = await stack.simulator()
    await stack.build(sim, policy={"max_wait_s": 30})
    async with stack.db.session() as s:
        other = await registers.create_register(
            s,
            venue_id=stack.setup.venue_id,
            registry=stack.registry,
            actor_id=stack.setup.admin_id,
            data=registers.RegisterInput(
                code="CAJA2",
                name="Caja 2",
                payment_methods=["cash", "card"],
                primary_provider="getnet",
                backup_provider="respaldo",
                policy=FallbackPolicy(**POLICY),
                provider_settings={"getnet": stack.settings_for(sim, host=spelling)},
            ),
        )
        from caja_core.registers.models import BackupPhone

        s.add(BackupPhone(venue_id=stack.setup.venue_id, name="Celular 2", identifier="tel-2", register_id=other.id))
    app = await stack.instance()
    one, two = await app.cashier(), await app.cashier()
    await open_session(one, stack)
    r = await two.post("/caja/session/open", {"register_id": other.id, "initial_cash": "0", "open_key": "otra"})
    assert r.status_code == 303, text_of(r.text)
    sim.add_fault({"kind": "late_answer", "delay_s": 8.0})  # the first charge holds the terminal meanwhile
    first = await checkout(one, stack)
    await pay_card(one, first)
    await shows(one, first, "COBRANDO")
    second = await checkout(two, stack)
    r = await pay_card(two, second)
    assert r.status_code == 409 and "Terminal ocupado" in text_of(r.text)
    await shows(one, first, 'id="receipt"')


async def test_32_a_database_restore_never_hands_out_a_ticket_again(sqlite_stack, tmp_path):
    from caja_core.ops import backups

    stack = sqlite_stack
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier = await app.cashier()
    await open_session(cashier, stack)
    first = await checkout(cashier, stack)
    await pay_card(cashier, first)
    await shows(cashier, first, 'id="receipt"')
    manifest = await backups.create_backup(stack.url, tmp_path)
    after = await checkout(cashier, stack)  # charged after the backup: lost with the restore
    await pay_card(cashier, after)
    await shows(cashier, after, 'id="receipt"')
    lost_ticket = (await attempts(stack, after))[0].ticket
    await app.close()  # the app stops (a restore needs it stopped)
    await stack.db.dispose()
    await backups.restore_backup(tmp_path, manifest.id, stack.url, safety_backup=False)

    # The app starts again on the restored database; the same sale number is charged again.
    again = await stack.instance("caja-restaurada")
    cashier = await again.cashier()
    await open_session(cashier, stack)  # the same opening (idempotent): back to the open session
    sale_id = await checkout(cashier, stack)
    assert sale_id == after  # the restore rolled the sale back
    sim.add_fault({"kind": "no_receipt"})
    await pay_card(cashier, sale_id)
    await shows(cashier, sale_id, "Cobrar con respaldo")
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.ticket != lost_ticket and attempt.state == "failed_not_sent"
    assert await sale_status(stack, sale_id) == "pending_payment"


# 33 ---------------------------------------------------------------------------------------------------------
async def test_33_a_batch_close_is_refused_while_the_terminal_has_a_payment_in_doubt(stack):
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, sim)
    await revive(sim)
    sim.add_fault({"kind": "frozen"})  # it answers nothing while the admin tries
    r = await admin.post(f"/admin/terminales/{stack.setup.register_id}/cierre-lote")
    assert r.status_code == 409, text_of(r.text)[:400]
    assert "cobros sin resolver" in text_of(r.text) and "Intento #" in text_of(r.text)
    # The same refusal for the command line (``caja getnet close --tcp …`` goes through this function).
    with pytest.raises(Conflict) as refused:
        await terminal_ops.close_device_batch(stack.db, stack.registry, "getnet", stack.settings_for(sim, "localhost"))
    assert refused.value.code == "terminal.close_refused" and "cobros sin resolver" in refused.value.message
    assert Command.CLOSE not in sim.command_codes()
    sim.clear_faults()
    await shows(cashier, sale_id, 'id="receipt"')  # the proof was kept: reconciliation finds the charge
    r = await admin.post(f"/admin/terminales/{stack.setup.register_id}/cierre-lote")
    assert r.status_code == 200 and "Cierre de lote de" in text_of(r.text), re.findall(
        r"alert[^>]*>(.*?)</div>", r.text, re.S
    )
    assert sim.closes == 1
    async with stack.db.reader() as s:
        audit = (await s.execute(select(AuditEvent).where(AuditEvent.action == "terminal.batch_closed"))).scalar_one()
    assert audit.payload["count"] == 1


async def test_33_a_batch_close_through_another_address_of_the_terminal_is_refused_too(stack):
    """The terminal with a payment in doubt is reached at another address (another port, a new IP) while the
    address the payment went to does not answer: the close asks the device who it is, cannot rule out that the
    payment in doubt is on it, and refuses; the proof stays."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, sim)
    _, other_port = await sim.start_tcp()  # the address the payment was sent to stays dead
    other = {**stack.settings_for(sim), "port": other_port}
    with pytest.raises(Conflict) as refused:  # ``caja getnet close --tcp 127.0.0.1:<other port>``
        await terminal_ops.close_device_batch(stack.db, stack.registry, "getnet", other)
    assert refused.value.code == "terminal.close_refused" and "Intento #" in refused.value.message
    # The admin points the register at that address and presses the close on its page: refused as well.
    await edit_terminal(admin, stack, port=other_port)
    r = await admin.post(f"/admin/terminales/{stack.setup.register_id}/cierre-lote")
    assert r.status_code == 409 and "cobros sin resolver" in text_of(r.text), text_of(r.text)[:400]
    assert Command.CLOSE not in sim.command_codes()
    await revive(sim)
    await shows(cashier, sale_id, 'id="receipt"')  # reconciliation still finds the charge: paid once
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and sim.charged() == {attempt.ticket: attempt.amount}


async def test_33_a_close_run_on_the_terminal_itself_never_makes_a_payment_in_doubt_not_charged(stack):
    """The terminal charged and went silent (in doubt); then someone ran the batch close on the terminal itself
    (its keypad, or its automatic close), which caja is never told of. Its list of sales now starts after that
    close, so not finding the ticket there proves nothing. caja sees the list no longer has a charge it
    approved on that terminal before, records the close, and the payment waits for a supervisor, who resolves
    it with the voucher: the backup is never offered, and the customer is charged once."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, supervisor = await app.cashier(), await app.staff("super")
    await open_session(cashier, stack)
    earlier = await checkout(cashier, stack, "Cerveza")
    await pay_card(cashier, earlier)
    await shows(cashier, earlier, 'id="receipt"')
    sale_id = await charged_in_doubt(stack, cashier, sim)
    (attempt,) = await attempts(stack, sale_id)
    sim.close_batch()  # on the terminal's own keypad, while caja cannot reach it
    assert attempt.ticket not in sim.tickets() and attempt.ticket in sim.charged()
    await revive(sim)

    async def decision_asked():
        (a,) = await attempts(stack, sale_id)
        return a if a.needs_decision else None

    try:
        attempt = await wait_for(decision_asked, "a supervisor is called")
    except AssertionError as exc:
        (a,) = await attempts(stack, sale_id)
        raise AssertionError(f"{exc}; the payment is {a.state}: {a.response_message}") from None
    assert Command.DETAILS in sim.command_codes()  # the terminal was asked, and its list did not have the ticket
    assert attempt.state in ("in_doubt", "reconciling") and "cierre de lote" in attempt.response_message
    page = await progress(cashier, sale_id)
    assert "un supervisor lo resuelve" in text_of(page) and "Cobrar con respaldo" not in page, text_of(page)[:300]
    async with stack.db.reader() as s:
        close = (await s.execute(select(TerminalClose))).scalar_one()
        incident = (await s.execute(select(Incident).where(Incident.kind == "payment_needs_decision"))).scalar_one()
    assert close.source == "terminal" and close.closed_at > attempt.sent_at
    assert incident.attempt_id == attempt.id and "cierre de lote" in incident.description
    # It stays that way: asked again, the terminal's list still proves nothing.
    tries = attempt.reconcile_tries

    async def asked_again():
        (a,) = await attempts(stack, sale_id)
        return a if a.reconcile_tries > tries and a.state != "reconciling" else None

    attempt = await wait_for(asked_again, "asked again")
    assert attempt.state == "in_doubt" and attempt.backup_offered_at is None
    # The supervisor resolves it with the voucher the terminal printed before the close.
    r = await supervisor.post(
        f"/jornada/cobros/{attempt.id}/resolver",
        {"outcome": "cobrado", "voucher": "AUT333444", "note": "voucher impreso antes del cierre"},
    )
    assert r.status_code == 303, text_of(r.text)[:400]
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and attempt.classification == "resolved_by_hand"
    assert await sale_status(stack, sale_id) == "paid" and sim.charge_count() == 2


async def in_doubt_not_charged(stack: Stack, cashier, sim, *, dies: bool) -> int:
    """A card sale the terminal confirms and never answers, without charging the card: in doubt. With ``dies``
    the terminal goes away too (caja loses sight of it) and comes back later (``revive``)."""
    sale_id = await checkout(cashier, stack)
    sim.add_fault({"kind": "receipt_then_silence", "charged": False})
    before = len(sim.commands)

    async def sent():
        return Command.SALE in [int(c["Command"]) for c in sim.commands[before:]]

    await pay_card(cashier, sale_id)
    await wait_for(sent, "the terminal received the sale")
    if dies:
        port = sim.tcp_address[1]
        await sim.stop()
        sim.port_to_restore = port
        page = await shows(cashier, sale_id, "EN DUDA")
        assert "Cobrar con respaldo" not in page, text_of(page)[:300]
    return sale_id


async def test_33_a_void_on_the_terminals_keypad_is_a_difference_on_that_ticket_not_a_batch_close(stack):
    """A customer's earlier card sale is voided (anulación) on the terminal's own keypad; caja is not told. Later
    a payment ends in doubt (the terminal went away mid-sale, without charging) and the terminal, back, does not
    list it. That earlier ticket is missing from its list too, but a sale caja approved after it is still
    listed and the terminal counts one void of that amount: a void, not a batch close. So the payment in doubt
    is not charged (the backup is offered at once, no supervisor needed), and the void is a difference on that
    ticket — an incident, and in the admin's terminal check — while caja's sale stays as it was."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    first = await checkout(cashier, stack, "Cerveza")
    await pay_card(cashier, first)
    await shows(cashier, first, 'id="receipt"')
    second = await checkout(cashier, stack)
    await pay_card(cashier, second)
    await shows(cashier, second, 'id="receipt"')
    (voided,) = await attempts(stack, first)
    sim.void_on_keypad(voided.ticket)  # on the terminal itself: the customer got the money back there
    assert voided.ticket not in sim.tickets() and sim.totals()["TxCount"] == 1

    sale_id = await in_doubt_not_charged(stack, cashier, sim, dies=True)
    await revive(sim)
    await shows(cashier, sale_id, "Cobrar con respaldo")
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "failed_not_sent" and not attempt.needs_decision, attempt.response_message
    async with stack.db.reader() as s:
        closes = (await s.execute(select(TerminalClose))).scalars().all()
        incidents = (await s.execute(select(Incident).where(Incident.kind == "terminal_difference"))).scalars().all()
    assert closes == [], [(c.source, c.sales) for c in closes]  # no batch close was made up
    (incident,) = incidents
    assert incident.attempt_id == voided.id and "anulado en el terminal" in incident.description
    assert voided.ticket in incident.description
    # caja's sale is not changed by the terminal's word: still paid by card, once.
    assert await sale_status(stack, first) == "paid"
    (again,) = await attempts(stack, first)
    assert again.state == "approved"
    # The admin's terminal check names the void on that ticket.
    r = await admin.post("/admin/terminales/revisar")
    text = text_of(r.text)
    assert r.status_code == 200 and f"ticket {voided.ticket}" in text and "el terminal lo anuló" in text, text[-800:]
    async with stack.db.reader() as s:
        check = (await s.execute(select(TerminalCheck).order_by(TerminalCheck.id.desc()))).scalars().first()
    assert [d["kind"] for d in check.differences] == ["voided"]
    # One void, one incident: the check (tonight's and the next while the void stays in the terminal's batch)
    # points at the incident the reconciliation opened instead of opening another.
    r = await admin.post("/admin/terminales/revisar")
    assert r.status_code == 200
    async with stack.db.reader() as s:
        incidents = (await s.execute(select(Incident).where(Incident.kind == "terminal_difference"))).scalars().all()
        checks = (await s.execute(select(TerminalCheck))).scalars().all()
    assert [i.id for i in incidents] == [incident.id], [i.description for i in incidents]
    assert len(checks) == 2 and {c.incident_id for c in checks} == {incident.id}


async def test_33_a_void_is_told_from_a_close_by_the_terminals_count_of_voids(stack):
    """The only sale caja approved on the terminal since its last close is voided on the keypad; then a payment
    ends in doubt without a charge while the terminal keeps answering. Nothing of caja's is listed any more, but
    the terminal's totals count one void of that very amount: not a close. The payment is not charged (backup
    at once) and the void is an incident on its ticket."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier = await app.cashier()
    await open_session(cashier, stack)
    first = await checkout(cashier, stack, "Cerveza")
    await pay_card(cashier, first)
    await shows(cashier, first, 'id="receipt"')
    (voided,) = await attempts(stack, first)
    sim.void_on_keypad(voided.ticket)
    sale_id = await in_doubt_not_charged(stack, cashier, sim, dies=False)
    await shows(cashier, sale_id, "Cobrar con respaldo", timeout_s=60)
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "failed_not_sent" and not attempt.needs_decision, attempt.response_message
    async with stack.db.reader() as s:
        assert (await s.execute(select(TerminalClose))).scalars().all() == []
        incident = (await s.execute(select(Incident).where(Incident.kind == "terminal_difference"))).scalar_one()
    assert incident.attempt_id == voided.id
    assert await sale_status(stack, first) == "paid"


async def test_33_a_keypad_close_with_nothing_of_cajas_to_miss_still_never_makes_a_payment_not_charged(stack):
    """The first card payment since the last close caja knows is charged and then in doubt (the terminal went
    away mid-sale); meanwhile someone runs the batch close on the terminal's keypad. The terminal's list has
    nothing of caja's to miss, so the close cannot be seen in it. But caja lost sight of the terminal after the
    send, so the empty list is no proof: the payment waits for a supervisor, whose screen says what to check on
    the terminal; the backup is never offered, and the customer is charged once."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, supervisor = await app.cashier(), await app.staff("super")
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, sim)
    (attempt,) = await attempts(stack, sale_id)
    sim.close_batch()  # on the terminal's own keypad, while caja cannot reach it
    assert sim.tickets() == {} and attempt.ticket in sim.charged()
    await revive(sim)

    async def decision_asked():
        (a,) = await attempts(stack, sale_id)
        return a if a.needs_decision else None

    try:
        attempt = await wait_for(decision_asked, "a supervisor is called", timeout_s=60)
    except AssertionError as exc:
        (a,) = await attempts(stack, sale_id)
        raise AssertionError(f"{exc}; the payment is {a.state}: {a.response_message}") from None
    assert Command.DETAILS in sim.command_codes()
    assert attempt.state in ("in_doubt", "reconciling") and attempt.backup_offered_at is None
    page = await progress(cashier, sale_id)
    assert "un supervisor lo resuelve" in text_of(page) and "Cobrar con respaldo" not in page, text_of(page)[:300]
    jornada = text_of((await supervisor.get("/jornada")).text)
    assert "caja no puede resolverlo sola" in jornada, jornada[:600]
    assert "Revise en el terminal si hubo un cierre de lote después del envío y busque el voucher" in jornada
    r = await supervisor.post(
        f"/jornada/cobros/{attempt.id}/resolver",
        {"outcome": "cobrado", "voucher": "AUT555666", "note": "voucher impreso; cierre de lote en el terminal"},
    )
    assert r.status_code == 303, text_of(r.text)[:400]
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and await sale_status(stack, sale_id) == "paid"
    assert sim.charge_count() == 1


# 35 + 38 ----------------------------------------------------------------------------------------------------
async def test_35_38_the_terminals_own_report_corrects_a_wrong_not_charged_at_jornada_close(stack):
    """The terminal charged; caja could not tell; a supervisor wrongly resolved it as not charged and the cashier
    took cash. At jornada close the terminal's report shows the charge: it is applied as the late approval it is
    — the duplicate is refunded through the terminal — and the difference stays in the Z report."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, supervisor = await app.cashier(), await app.staff("super")
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, sim)
    (attempt,) = await attempts(stack, sale_id)

    # The supervisor resolves it by hand (wrongly) as not charged, with the evidence they believed.
    page = (await supervisor.get("/jornada")).text
    assert f"/jornada/cobros/{attempt.id}/resolver" in page
    r = await supervisor.post(
        f"/jornada/cobros/{attempt.id}/resolver",
        {
            "outcome": "no_cobrado",
            "terminal_totals": "0 ventas, $0",
            "note": "el terminal no enciende, el cliente dice que no",
        },
    )
    assert r.status_code == 303, text_of(r.text)[:400]
    r = await cashier.post(f"/caja/venta/{sale_id}/efectivo", {"cash_received": ""}, htmx=True)
    assert r.status_code == 200 and await sale_status(stack, sale_id) == "paid"

    # The terminal is back; the cashier closes the register; the supervisor closes the night.
    await revive(sim)
    r = await cashier.post("/caja/session/close", {"count_5000": "1", "count_1000": "1", "note": ""})
    assert r.status_code == 200 and "La sesión quedó cerrada" in text_of(r.text), text_of(r.text)[:400]
    r = await supervisor.post("/jornada/cerrar", {"jornada_id": stack.setup.jornada_id})
    assert r.status_code == 303, text_of(r.text)[:400]
    # Before closing, the check found the charge and returned it through the terminal.
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "refunded" and attempt.classification == "duplicate", attempt.state
    assert sim.charged() == {} and sim.charge_count() == 1
    async with stack.db.reader() as s:
        check = (await s.execute(select(TerminalCheck))).scalars().all()
        incident = (await s.execute(select(Incident).where(Incident.kind == "terminal_difference"))).scalar_one()
    assert [c.ok for c in check] == [False] and "tenía como" in incident.description
    z = await supervisor.get(f"/admin/cajas/reportes/jornada/{stack.setup.jornada_id}/z")
    text = text_of(z.text)
    assert "Cobros resueltos a mano" in text and "el terminal no enciende" in text
    assert "Revisión de terminales" in text and "tenía como" in text
    assert "Cobros duplicados" in text and "Devuelto por el proveedor automáticamente" in text


# 36 ---------------------------------------------------------------------------------------------------------
async def test_36_a_terminal_gone_for_good_is_resolved_by_a_supervisor_and_the_session_closes(stack):
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, supervisor, admin = await app.cashier(), await app.staff("super"), await app.staff("admin")
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, sim)
    # The register is set to cash only: the attempt still asks its own terminal, with growing pauses.
    await set_methods(admin, stack, ["cash"], primary="")
    (attempt,) = await attempts(stack, sale_id)
    tries, started = attempt.reconcile_tries, time.monotonic()

    async def asked_three_more_times():
        (a,) = await attempts(stack, sale_id)
        return a if a.reconcile_tries >= tries + 3 else None

    attempt = await wait_for(asked_three_more_times, "its own terminal is still asked")
    # Three more questions took at least the two growing pauses between them (0.5 s, then 1 s, at the least);
    # a loop would ask on every worker pass (0.2 s).
    assert time.monotonic() - started >= 1.2 and attempt.state in ("in_doubt", "reconciling")
    # The session cannot close while it is unresolved.
    r = await cashier.post("/caja/session/close", {"note": ""})
    assert r.status_code == 409 and "sin resolver" in text_of(r.text)
    # The supervisor resolves it with the voucher the terminal printed before dying.
    r = await supervisor.post(
        f"/jornada/cobros/{attempt.id}/resolver",
        {"outcome": "cobrado", "voucher": "", "note": "voucher impreso a la vista"},
    )
    assert r.status_code == 422 and "comprobante" in text_of(r.text)
    r = await supervisor.post(
        f"/jornada/cobros/{attempt.id}/resolver",
        {"outcome": "cobrado", "voucher": "AUT123456", "note": "voucher impreso a la vista"},
    )
    assert r.status_code == 303, text_of(r.text)[:400]
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and attempt.classification == "resolved_by_hand"
    assert await sale_status(stack, sale_id) == "paid"
    async with stack.db.reader() as s:
        audit = (
            await s.execute(select(AuditEvent).where(AuditEvent.action == "payment.resolved_by_hand"))
        ).scalar_one()
    assert audit.payload["voucher"] == "AUT123456" and audit.user_id == stack.setup.supervisor_id
    r = await cashier.post("/caja/session/close", {"note": ""})
    assert r.status_code in (200, 303), text_of(r.text)[:400]


async def test_36_a_payment_whose_terminal_cannot_even_be_asked_waits_for_a_supervisor_without_looping(stack):
    """The app starts again without the GETNET plugin while a payment is in doubt: the question cannot even be
    asked. caja says so (the cashier's page, an incident, /health), asks again only after a long pause, and a
    supervisor resolves it with evidence."""
    from caja_core.ops.health import check_health

    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier = await app.cashier()
    await open_session(cashier, stack)
    sale_id = await charged_in_doubt(stack, cashier, sim)
    await app.close()
    again = await stack.instance("caja-sin-getnet", providers=("respaldo",))
    cashier, supervisor = await again.cashier(), await again.staff("super")

    async def decision_asked():
        (a,) = await attempts(stack, sale_id)
        return a if a.needs_decision else None

    attempt = await wait_for(decision_asked, "a supervisor is called")
    assert attempt.state in ("in_doubt", "reconciling") and "ya no está instalado" in (attempt.response_message or "")
    # Asked again only after a long pause (minutes), not on every pass of the worker.
    assert attempt.next_reconcile_at is not None
    assert (attempt.next_reconcile_at - datetime.now(UTC)).total_seconds() >= 60, attempt.next_reconcile_at
    page = await progress(cashier, sale_id)
    assert "un supervisor lo resuelve" in text_of(page) and "Cobrar con respaldo" not in page, text_of(page)[:300]
    async with stack.db.reader() as s:
        incident = (await s.execute(select(Incident).where(Incident.kind == "payment_needs_decision"))).scalar_one()
    assert incident.attempt_id == attempt.id and not incident.resolved
    health = (await check_health(stack.db)).to_dict()
    assert health["services"]["payments"]["needs_decision"] == 1
    assert any("un supervisor debe" in p for p in health["problems"]), health["problems"]

    r = await supervisor.post(
        f"/jornada/cobros/{attempt.id}/resolver",
        {"outcome": "cobrado", "voucher": "AUT777111", "note": "voucher impreso por el terminal"},
    )
    assert r.status_code == 303, text_of(r.text)[:400]
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and attempt.classification == "resolved_by_hand"
    assert not attempt.needs_decision and await sale_status(stack, sale_id) == "paid"
    async with stack.db.reader() as s:
        incident = (await s.execute(select(Incident).where(Incident.kind == "payment_needs_decision"))).scalar_one()
    assert incident.resolved
    assert (await check_health(stack.db)).to_dict()["services"]["payments"]["needs_decision"] == 0


# 35 ---------------------------------------------------------------------------------------------------------
async def test_35_the_admin_checks_the_terminals_now_and_every_difference_is_an_incident(stack):
    """On demand from the admin's page, each terminal's own report against caja's approved payments: a charge
    caja does not know and an approval the terminal does not have are each a difference, in an incident of the
    night, in /health and in the Z report."""
    from caja_core.ops.health import check_health

    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin, supervisor = await app.cashier(), await app.staff("admin"), await app.staff("super")
    await open_session(cashier, stack)
    sale_id = await checkout(cashier, stack)
    await pay_card(cashier, sale_id)
    await shows(cashier, sale_id, 'id="receipt"')
    (attempt,) = await attempts(stack, sale_id)

    r = await admin.post("/admin/terminales/revisar")
    assert r.status_code == 200 and "coincide con caja (1 ventas, $6.000)" in text_of(r.text), text_of(r.text)[-600:]

    # Someone charges on the terminal by hand, and the terminal loses caja's sale (annulled on it, say).
    (entry,) = sim.ledger
    sim._uncharge(entry)
    sim._charge("MANO01", 4321)
    r = await admin.post("/admin/terminales/revisar")
    text = text_of(r.text)
    assert r.status_code == 200 and "2 diferencia(s) con caja" in text, text[-800:]
    assert "MANO01, que caja no conoce" in text and "el terminal no lo registra" in text, text[-800:]
    async with stack.db.reader() as s:
        checks = (await s.execute(select(TerminalCheck).order_by(TerminalCheck.id))).scalars().all()
        incident = (await s.execute(select(Incident).where(Incident.kind == "terminal_difference"))).scalar_one()
    assert [c.ok for c in checks] == [True, False] and checks[-1].trigger == "admin"
    assert sorted(d["kind"] for d in checks[-1].differences) == ["missing_approval", "unknown_charge"]
    assert "MANO01" in incident.description and f"intento #{attempt.id}" in incident.description
    health = (await check_health(stack.db)).to_dict()
    assert health["services"]["payments"]["terminal_differences"] == 1
    assert any("diferencias contra caja" in p for p in health["problems"]), health["problems"]
    z = await supervisor.get(f"/admin/cajas/reportes/jornada/{stack.setup.jornada_id}/z")
    assert "Revisión de terminales" in text_of(z.text) and "MANO01" in text_of(z.text)
    # caja's own records are not changed by the terminal's word alone: the sale stays paid, once.
    assert await sale_status(stack, sale_id) == "paid"
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved"


async def test_35_a_late_approval_of_a_payment_given_up_as_not_charged_pays_the_waiting_sale(stack):
    """The terminal never confirmed the sale (not charged, the backup offered) but it did charge: its own report
    shows the ticket. The approval is applied, not filed away: the sale still waits, so it becomes paid and the
    cashier's screen says APROBADO."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    sale_id = await checkout(cashier, stack)
    sim.add_fault({"kind": "no_receipt"})
    await pay_card(cashier, sale_id)
    await shows(cashier, sale_id, "Cobrar con respaldo")
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "failed_not_sent" and await sale_status(stack, sale_id) == "pending_payment"

    sim._charge(attempt.ticket, attempt.amount)  # it went through on the terminal after all
    r = await admin.post("/admin/terminales/revisar")
    assert r.status_code == 200 and attempt.ticket in text_of(r.text), text_of(r.text)[-600:]
    page = await shows(cashier, sale_id, 'id="receipt"')
    assert "APROBADO" in page
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and attempt.classification == "late_approval"
    assert await sale_status(stack, sale_id) == "paid" and sim.charged() == {attempt.ticket: attempt.amount}
    async with stack.db.reader() as s:
        kinds = set((await s.execute(select(Incident.kind))).scalars())
    assert "terminal_difference" in kinds


# the admin's "Probar terminal" during a sale ---------------------------------------------------------------
async def test_probar_terminal_never_sends_a_command_to_a_terminal_busy_with_a_charge(stack):
    """The admin presses "Probar terminal" while a card sale is on the terminal (from another server, or after
    retyping the terminal's address): caja sends the terminal no second command in the middle of the sale, says
    it is busy (not "sin respuesta", which would send the admin looking for a broken cable), and the sale is
    charged once. Once the sale is over, the test reaches the terminal."""
    sim = await stack.simulator()
    await stack.build(sim)
    app = await stack.instance()
    cashier, admin = await app.cashier(), await app.staff("admin")
    await open_session(cashier, stack)
    sale_id = await checkout(cashier, stack)
    sim.add_fault({"kind": "late_answer", "delay_s": 4.0})
    await pay_card(cashier, sale_id)
    await shows(cashier, sale_id, "COBRANDO")
    await edit_terminal(admin, stack, host="localhost")  # the same terminal, its address typed another way
    r = await admin.post(f"/admin/cajas/{stack.setup.register_id}/probar", htmx=True)
    said = text_of(r.text)
    assert r.status_code == 200 and "Terminal ocupado" in said and "sin respuesta" not in said, said[:300]
    await shows(cashier, sale_id, 'id="receipt"')
    assert Command.POLL not in sim.command_codes()
    (attempt,) = await attempts(stack, sale_id)
    assert attempt.state == "approved" and sim.charged() == {attempt.ticket: attempt.amount}
    r = await admin.post(f"/admin/cajas/{stack.setup.register_id}/probar", htmx=True)
    assert "Terminal responde" in text_of(r.text), text_of(r.text)[:300]
