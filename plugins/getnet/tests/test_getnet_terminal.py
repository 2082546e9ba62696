"""What the terminal says about itself and its batch, and when its silence is not proof.

* A terminal still busy with the acquirer (``acquirer_busy``): its lists do not show the sale yet (or it answers
  "busy"); reconciliation must say UNKNOWN until the sale's fate is known, never UNAVAILABLE.
* ``device_key`` does not depend on how an address is spelled; ``identify`` reads the terminal's serial number.
* ``terminal_report`` (Totals + Details) and ``close_batch`` (then Close) over TCP and over a serial port.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

import msgspec
import pytest

from caja_core.providers import Capability, OutcomeKind
from caja_getnet.protocol import Command
from caja_getnet.provider import GetnetError, GetnetProvider, GetnetSettings
from caja_getnet.simulator import Fault, Simulator


async def wait_for(predicate, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"no ocurrió a tiempo: {what}"
        await asyncio.sleep(0.02)


# --- a terminal still busy with the acquirer -----------------------------------------------------------------
@pytest.mark.parametrize("answer", ["stale", "busy"])
async def test_a_sale_still_with_the_acquirer_is_unknown_until_it_is_approved(
    answer, make_request, sim, provider, tcp_settings, ctx, progress
):
    earlier = make_request(amount=900)
    assert (await provider.charge(earlier, tcp_settings, ctx, progress)).kind is OutcomeKind.APPROVED
    sim.add_fault(Fault(kind="acquirer_busy", answer=answer, delay_s=1.2, charged=True))
    request = make_request(amount=4000)
    settings = msgspec.structs.replace(tcp_settings, sale_timeout_s=10)
    outcome = await provider.charge(request, settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN and "cerró la conexión" in outcome.message
    assert sim.acquirer_busy  # the terminal is still waiting for the acquirer
    status = await provider.status(request, settings, ctx)
    assert status.kind is OutcomeKind.UNKNOWN, status  # "not there yet" is not "not charged"
    assert request.ticket not in sim.charged()
    await wait_for(lambda: not sim.acquirer_busy, 10, "respuesta del adquirente")
    status = await provider.status(request, settings, ctx)
    assert status.kind is OutcomeKind.APPROVED and status.amount == 4000
    assert sim.charged() == {earlier.ticket: 900, request.ticket: 4000}


async def test_a_sale_the_acquirer_refused_is_not_charged_once_the_terminal_deadline_has_passed(
    make_request, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="acquirer_busy", delay_s=0.8, charged=False))
    request = make_request(amount=4100)
    settings = msgspec.structs.replace(tcp_settings, sale_timeout_s=2.0)
    started = time.monotonic()
    assert (await provider.charge(request, settings, ctx, progress)).kind is OutcomeKind.UNKNOWN
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.UNKNOWN
    await wait_for(lambda: not sim.acquirer_busy, 10, "respuesta del adquirente")
    # The acquirer said no, but until the terminal's own sale deadline has passed its lists are not proof.
    if time.monotonic() - started < settings.sale_timeout_s - 0.3:
        assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.UNKNOWN
    await wait_for(lambda: time.monotonic() - started > settings.sale_timeout_s, 10, "plazo de venta del terminal")
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.UNAVAILABLE
    assert sim.charged() == {}


async def test_a_terminal_that_answers_busy_or_an_incomplete_list_is_never_proof(
    make_request, sim, provider, tcp_settings, ctx
):
    request = make_request(amount=700)
    fresh = GetnetProvider()  # no memory of any sale: only the terminal's answers count
    sim.add_fault(Fault(kind="acquirer_busy", answer="busy", delay_s=1.0, charged=False))
    await fresh.charge(make_request(amount=1), tcp_settings, ctx, _ignore)
    assert sim.acquirer_busy
    status = await fresh.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.UNKNOWN and "ocupado" in status.message
    await wait_for(lambda: not sim.acquirer_busy, 10, "respuesta del adquirente")
    original = sim._answer

    def without_list(command, request_data):
        answer = original(command, request_data)
        if command == Command.DETAILS:
            answer.pop("SaleDetails")
        return answer

    sim._answer = without_list
    status = await fresh.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.UNKNOWN and "detalle completo" in status.message
    sim._answer = original
    # A sale this provider never sent: its "not found" is proof only after the terminal's whole sale deadline.
    status = await fresh.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.UNKNOWN and "puede seguir" in status.message
    await until_proof(fresh, request, tcp_settings, ctx)


async def until_proof(provider, request, settings, ctx):
    deadline = time.monotonic() + settings.sale_timeout_s + 10
    while (status := await provider.status(request, settings, ctx)).kind is not OutcomeKind.UNAVAILABLE:
        assert status.kind is OutcomeKind.UNKNOWN and time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    return status


async def test_a_sale_another_process_sent_is_not_proof_while_the_terminal_may_still_work_on_it(
    make_request, sim, provider, tcp_settings, ctx, progress
):
    """The instance that sent the sale died with it on the terminal (with the acquirer, its lists do not show it
    yet); another process asking about it has no memory of the send: its "not found" is no proof until the
    terminal's whole sale deadline has passed on its own clock, and the late approval is found."""
    sim.add_fault(Fault(kind="acquirer_busy", answer="stale", delay_s=1.5, charged=True))
    request = make_request(amount=4200)
    settings = msgspec.structs.replace(tcp_settings, sale_timeout_s=10)
    assert (await provider.charge(request, settings, ctx, progress)).kind is OutcomeKind.UNKNOWN
    other = GetnetProvider()  # another instance, or this one after a restart
    status = await other.status(request, settings, ctx)
    assert status.kind is OutcomeKind.UNKNOWN and "puede seguir" in status.message, status
    await wait_for(lambda: not sim.acquirer_busy, 10, "respuesta del adquirente")
    status = await other.status(request, settings, ctx)
    assert status.kind is OutcomeKind.APPROVED and status.amount == 4200
    assert sim.charged() == {request.ticket: 4200}


async def _ignore(_progress) -> None:
    return None


# --- identity -------------------------------------------------------------------------------------------------
def test_the_device_key_does_not_depend_on_how_the_address_is_spelled(tmp_path):
    provider = GetnetProvider()

    def tcp(host: str, port: int = 9100) -> str:
        return provider.device_key(GetnetSettings(host=host, port=port), "CAJA1")

    assert tcp("localhost") == tcp("127.0.0.1") == tcp("LOCALHOST") == tcp("localhost.") == tcp(" 127.0.0.1 ")
    assert tcp("127.0.0.1") == "getnet:tcp:127.0.0.1:9100"
    assert tcp("::1") == tcp("[0:0:0:0:0:0:0:1]") == "getnet:tcp:[::1]:9100"
    assert tcp("127.0.0.1", 9101) != tcp("127.0.0.1") and tcp("10.0.0.5") != tcp("127.0.0.1")

    device = tmp_path / "ttyUSB0"
    device.write_text("")
    (tmp_path / "by-id").mkdir()
    link = tmp_path / "by-id" / "usb-GETNET_POS-if00"
    os.symlink(device, link)

    def serial(path: str) -> str:
        return provider.device_key(GetnetSettings(connection="serial", serial_path=path), "CAJA1")

    assert serial(str(link)) == serial(str(device)) == serial(f"{tmp_path}/by-id/../ttyUSB0")
    device.unlink()  # unplugged: the link dangles, the key stays the same
    assert serial(str(link)) == f"getnet:serial:{device}"
    assert serial("com3") == serial("COM3") == "getnet:serial:COM3"


async def test_identify_reads_the_serial_number_the_same_over_tcp_and_serial(provider, ctx, fast):
    sim = Simulator(step_delay_s=0.01, serial_number="8231-774-001", model="A920")
    host, port = await sim.start_tcp()
    path = await sim.start_pty()
    try:
        by_tcp = await provider.identify(GetnetSettings(host="localhost", port=port, **fast), ctx)
        by_serial = await provider.identify(GetnetSettings(connection="serial", serial_path=path, **fast), ctx)
        assert by_tcp == by_serial
        assert by_tcp.identity == "getnet:8231-774-001" and by_tcp.clock is None
        assert "A920" in by_tcp.label and "SIM00001" in by_tcp.label
        assert Capability.IDENTIFY in provider.capabilities
        await sim.stop()
        with pytest.raises(GetnetError) as info:
            await provider.identify(GetnetSettings(host=host, port=port, **fast), ctx)
        assert "no respondió" in info.value.message
    finally:
        await sim.stop()


# --- the terminal's report and batch close ----------------------------------------------------------------------
@pytest.fixture(params=["tcp", "serial"])
async def terminal_and_settings(request, fast):
    sim = Simulator(step_delay_s=0.01, message_gap_s=0.002, seed=3)
    if request.param == "tcp":
        host, port = await sim.start_tcp()
        settings = GetnetSettings(host=host, port=port, **fast)
    else:
        settings = GetnetSettings(connection="serial", serial_path=await sim.start_pty(), **fast)
    yield sim, settings
    await sim.stop()


async def test_terminal_report_and_close_batch(terminal_and_settings, provider, ctx, progress, make_request):
    sim, settings = terminal_and_settings
    before = datetime.now(UTC).replace(microsecond=0)
    first, second, voided = make_request(amount=1500), make_request(amount=2500), make_request(amount=700)
    for request in (first, second, voided):
        assert (await provider.charge(request, settings, ctx, progress)).kind is OutcomeKind.APPROVED
    approved_voided = await provider.status(voided, settings, ctx)
    refund = make_request(amount=700, ticket=voided.ticket, card=approved_voided.card)
    assert (await provider.refund(refund, settings, ctx)).kind is OutcomeKind.APPROVED

    report = await provider.terminal_report(settings, ctx)
    assert (report.count, report.total) == (2, 4000)
    assert [(s.ticket, s.amount, s.approved) for s in report.sales] == [
        (first.ticket, 1500, True),
        (second.ticket, 2500, True),
    ]
    for sale in report.sales:
        assert before <= sale.occurred_at <= datetime.now(UTC) and sale.authorization_code
        assert sale.card.last4 == "0119"
    assert sim.closes == 0  # a report closes nothing

    closed = await provider.close_batch(settings, ctx)
    assert (closed.count, closed.total, len(closed.sales)) == (2, 4000, 2)
    assert sim.closes == 1 and sim.tickets() == {}
    assert sim.charged() == {first.ticket: 1500, second.ticket: 2500}  # the customers' truth survives a close
    after = await provider.terminal_report(settings, ctx)
    assert (after.count, after.total, after.sales) == (0, 0, [])
    assert sim.command_codes()[-5:] == [Command.TOTALS, Command.DETAILS, Command.CLOSE, Command.TOTALS, Command.DETAILS]


async def test_close_batch_sends_no_close_when_the_terminal_cannot_report(provider, ctx, sim, tcp_settings):
    sim.add_fault(Fault(kind="acquirer_busy", answer="busy", delay_s=30))
    await provider.charge(_request(), tcp_settings, ctx, _ignore)
    with pytest.raises(GetnetError) as info:
        await provider.close_batch(tcp_settings, ctx)
    assert "ocupado" in info.value.message
    assert Command.CLOSE not in sim.command_codes() and sim.closes == 0


def _request():
    from caja_core.providers import ChargeRequest

    return ChargeRequest(
        attempt_id=1, ticket="B1", amount=100, register_id=1, register_code="CAJA1", venue_id=1, device_key="x"
    )


# --- a late result from the register's agent -----------------------------------------------------------------
def test_outcome_from_a_late_agent_result(fast):
    provider = GetnetProvider()
    settings = GetnetSettings(connection="agent", **fast)
    sale = {"Command": 100, "Amount": 4500, "TicketNumber": "K7"}
    approved = {
        "FunctionCode": 100,
        "ResponseCode": 0,
        "Ticket": "K7",
        "Amount": 4500,
        "AuthorizationCode": "123456",
        "Last4Digits": "0119",
        "OperationId": 3,
        "RealDate": "2025-07-01T22:30:05",
    }
    outcome = provider.outcome_from_agent_result(sale, approved, settings)
    assert outcome.kind is OutcomeKind.APPROVED and (outcome.ticket, outcome.amount) == ("K7", 4500)
    assert outcome.occurred_at == datetime(2025, 7, 2, 2, 30, 5, tzinfo=UTC)
    declined = provider.outcome_from_agent_result(sale, approved | {"ResponseCode": 5}, settings)
    assert declined.kind is OutcomeKind.DECLINED and declined.code == "5"
    other_amount = provider.outcome_from_agent_result(sale, approved | {"Amount": 9999}, settings)
    assert other_amount.kind is OutcomeKind.UNKNOWN and other_amount.amount == 9999
    assert provider.outcome_from_agent_result(sale, approved | {"Ticket": "K8"}, settings) is None
    unavailable = provider.outcome_from_agent_result(sale, {"AgentError": "unavailable", "Detail": "x"}, settings)
    assert unavailable.kind is OutcomeKind.UNAVAILABLE
    for error in ("in_doubt", "no_receipt", "refused", "invalid"):
        assert provider.outcome_from_agent_result(sale, {"AgentError": error}, settings) is None
    assert provider.outcome_from_agent_result({"Command": 101}, approved, settings) is None
