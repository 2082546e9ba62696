"""docs/reliability.md cases 1–12 against the simulated terminal over a real TCP socket (provider level).

Each test checks the Outcome the core gets and what the terminal's own ledger says was charged.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from caja_core.errors import ValidationFailed
from caja_core.providers import CardData, OutcomeKind
from caja_core.testing.waiting import wait_until
from caja_getnet.provider import GetnetSettings
from caja_getnet.simulator import Fault, Simulator


async def test_happy_path_approves_with_masked_card_data(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    request = make_request(amount=4500)
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED
    assert (outcome.ticket, outcome.amount, outcome.code) == (request.ticket, 4500, "0")
    entry = sim.ledger[-1]
    assert outcome.card.authorization_code == entry.authorization_code
    assert outcome.card.last4 == "0119" and outcome.card.terminal_id == "SIM00001"
    assert outcome.card.brand in ("VI", "MC") and outcome.card.card_type in ("DB", "CR")
    assert sim.tickets() == {request.ticket: 4500}


# 1 ------------------------------------------------------------------------------------------------------
async def test_case1_response_split_byte_by_byte_is_reassembled(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="split_bytes", gap_s=0.002))
    request = make_request(amount=1200)
    patient = msgspec.structs.replace(tcp_settings, sale_timeout_s=20)  # ~650 writes: slow on a loaded machine
    outcome = await provider.charge(request, patient, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 1200
    assert sim.tickets() == {request.ticket: 1200}


async def test_case1_response_split_with_150ms_gaps_is_reassembled(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="split_bytes", gap_s=0.15, chunk=64))
    request = make_request(amount=1300)
    started = time.monotonic()
    patient = msgspec.structs.replace(tcp_settings, sale_timeout_s=20)
    outcome = await provider.charge(request, patient, ctx, progress)
    assert time.monotonic() - started > 1.0  # the answer really arrived in pieces over time
    assert outcome.kind is OutcomeKind.APPROVED and outcome.ticket == request.ticket


async def test_case1_messages_glued_in_one_read_are_all_handled_in_order_and_acknowledged(
    make_request, fast, provider, ctx, progress
):
    sim = Simulator(step_delay_s=0.01, keep_open=True)
    host, port = await sim.start_tcp()
    try:
        sim.add_fault(Fault(kind="glued"))
        settings = GetnetSettings(host=host, port=port, **fast)
        outcome = await provider.charge(make_request(), settings, ctx, progress)
        assert outcome.kind is OutcomeKind.APPROVED
        assert progress.codes == [None, 78, 79, 81, 82]
        for _ in range(50):
            if sim.host_receipts >= 5:
                break
            await asyncio.sleep(0.01)
        assert sim.host_receipts == 5  # each intermediate message and the final response acknowledged
    finally:
        await sim.stop()


# 2 ------------------------------------------------------------------------------------------------------
async def test_case2_noise_and_truncated_object_before_the_answer_are_discarded(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="noise_before"))
    request = make_request(amount=2000)
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 2000


# 3 ------------------------------------------------------------------------------------------------------
async def test_case3_unterminated_message_is_bounded_and_ends_in_doubt_after_the_deadline(
    make_request, fast, sim, provider, ctx, progress
):
    host, port = sim.tcp_address
    settings = GetnetSettings(host=host, port=port, max_message_bytes=65536, **(fast | {"sale_timeout_s": 1.0}))
    sim.add_fault(Fault(kind="unterminated", size=3_000_000))
    request = make_request()
    started = time.monotonic()
    outcome = await provider.charge(request, settings, ctx, progress)
    elapsed = time.monotonic() - started
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert 1.0 <= elapsed < 8.0
    # the terminal did charge: reconciliation finds it
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.APPROVED


# 4 ------------------------------------------------------------------------------------------------------
async def test_case4_bad_sign_is_not_applied_and_ends_in_doubt_never_declined(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="wrong_sign"))
    request = make_request(amount=3000)
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert outcome.card is None and outcome.amount is None
    status = await provider.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.APPROVED and status.amount == 3000
    assert sim.tickets() == {request.ticket: 3000}


# 5 ------------------------------------------------------------------------------------------------------
async def test_case5_no_receipt_reconciles_and_reports_not_sent_without_a_second_sale(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    earlier = make_request(amount=900)
    assert (await provider.charge(earlier, tcp_settings, ctx, progress)).kind is OutcomeKind.APPROVED
    sim.commands.clear()
    sim.add_fault(Fault(kind="no_receipt"))
    request = make_request(amount=1000)
    started = time.monotonic()
    settings = msgspec.structs.replace(tcp_settings, sale_timeout_s=30)
    outcome = await provider.charge(request, settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNAVAILABLE
    assert time.monotonic() - started < 10  # decided after the receipt wait, not the 30 s sale deadline
    assert request.ticket not in sim.tickets()
    assert sim.command_codes().count(100) == 1  # no blind second sale
    assert sim.command_codes()[0] == 100 and 101 in sim.command_codes()  # reconciled after


# 6 ------------------------------------------------------------------------------------------------------
async def test_case6_receipt_then_silence_then_reconciliation_finds_our_ticket_approved(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="receipt_then_silence", charged=True))
    request = make_request(amount=5000)
    started = time.monotonic()
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert time.monotonic() - started >= fast["sale_timeout_s"]
    status = await provider.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.APPROVED and status.amount == 5000
    assert status.card.authorization_code == sim.ledger[-1].authorization_code


async def test_case6_receipt_then_silence_and_the_terminal_shows_another_ticket_is_not_charged(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    earlier = make_request(amount=700)
    assert (await provider.charge(earlier, tcp_settings, ctx, progress)).kind is OutcomeKind.APPROVED
    sim.add_fault(Fault(kind="receipt_then_silence", charged=False))
    request = make_request(amount=5000)
    assert (await provider.charge(request, tcp_settings, ctx, progress)).kind is OutcomeKind.UNKNOWN
    status = await provider.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.UNAVAILABLE
    assert sim.tickets() == {earlier.ticket: 700}


# 7 ------------------------------------------------------------------------------------------------------
async def test_case7_approval_for_a_different_amount_is_never_approved(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="different_amount", amount=15000))
    request = make_request(amount=1500)
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert outcome.amount == 15000 and "monto distinto" in outcome.message
    assert (await provider.status(request, tcp_settings, ctx)).kind is OutcomeKind.UNKNOWN
    assert sim.tickets() == {request.ticket: 15000}


# 8 ------------------------------------------------------------------------------------------------------
async def test_case8_a_response_for_an_earlier_ticket_is_not_applied(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    first = make_request(amount=1000)
    first_outcome = await provider.charge(first, tcp_settings, ctx, progress)
    sim.add_fault(Fault(kind="earlier_ticket", then_real=True))
    second = make_request(amount=2000)
    outcome = await provider.charge(second, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED
    assert outcome.ticket == second.ticket and outcome.amount == 2000
    assert outcome.card.authorization_code != first_outcome.card.authorization_code


async def test_case8_only_an_earlier_tickets_response_leaves_the_sale_in_doubt(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    first = make_request(amount=1000)
    await provider.charge(first, tcp_settings, ctx, progress)
    sim.add_fault(Fault(kind="earlier_ticket", then_real=False))
    second = make_request(amount=2000)
    outcome = await provider.charge(second, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN and outcome.ticket == second.ticket


# 9 ------------------------------------------------------------------------------------------------------
async def test_case9_a_duplicate_final_response_is_applied_once(make_request, fast, provider, ctx, progress):
    sim = Simulator(step_delay_s=0.01, keep_open=True)
    host, port = await sim.start_tcp()
    try:
        settings = GetnetSettings(host=host, port=port, **fast)
        sim.add_fault(Fault(kind="duplicate_response"))
        first = make_request(amount=1000)
        assert (await provider.charge(first, settings, ctx, progress)).kind is OutcomeKind.APPROVED
        second = make_request(amount=2500)
        outcome = await provider.charge(second, settings, ctx, progress)
        assert outcome.kind is OutcomeKind.APPROVED and outcome.ticket == second.ticket and outcome.amount == 2500
        assert sim.tickets() == {first.ticket: 1000, second.ticket: 2500}
    finally:
        await sim.stop()


# 10 -----------------------------------------------------------------------------------------------------
async def test_case10_intermediate_messages_are_progress_never_a_result(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    outcome = await provider.charge(make_request(), tcp_settings, ctx, progress)
    assert progress.codes == [None, 78, 79, 81, 82]  # the receipt first ("awaiting"), then the terminal's steps
    assert [p.message for p in progress.items][:2] == ["Venta enviada al terminal", "Leyendo tarjeta"]
    assert outcome.kind is OutcomeKind.APPROVED


async def test_case10_without_send_message_only_the_receipt_is_reported(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    settings = GetnetSettings(host=tcp_settings.host, port=tcp_settings.port, send_messages=False, **fast)
    outcome = await provider.charge(make_request(), settings, ctx, progress)
    assert outcome.kind is OutcomeKind.APPROVED and progress.codes == [None]
    assert sim.commands[-1]["SendMessage"] is False


async def test_no_receipt_reports_no_progress(make_request, sim, provider, tcp_settings, ctx, progress):
    sim.add_fault(Fault(kind="no_receipt"))
    assert (await provider.charge(make_request(), tcp_settings, ctx, progress)).kind is OutcomeKind.UNAVAILABLE
    assert progress.items == []  # the attempt never looked "awaiting"


# 11 -----------------------------------------------------------------------------------------------------
async def test_case11_connection_refused_is_unavailable_at_once(make_request, fast, provider, ctx, progress):
    sim = Simulator()
    host, port = await sim.start_tcp()
    await sim.stop()  # nothing listens there any more
    settings = GetnetSettings(host=host, port=port, **fast)
    started = time.monotonic()
    outcome = await provider.charge(make_request(), settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNAVAILABLE and "rechazó" in outcome.message
    assert time.monotonic() - started < fast["receipt_timeout_s"]  # no wait for a receipt
    assert (await provider.health(settings, ctx)).kind is OutcomeKind.UNAVAILABLE


async def test_case11_missing_serial_port_is_unavailable_at_once(make_request, fast, provider, ctx, progress):
    settings = GetnetSettings(connection="serial", serial_path="/dev/ttyNO_SUCH_TERMINAL", **fast)
    outcome = await provider.charge(make_request(), settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNAVAILABLE and "No existe el puerto" in outcome.message


# 12 -----------------------------------------------------------------------------------------------------
async def test_case12_unplugged_after_receipt_is_in_doubt_and_reconciles_once_back(
    make_request, fast, provider, ctx, progress
):
    sim = Simulator(step_delay_s=0.01)
    host, port = await sim.start_tcp()
    settings = GetnetSettings(host=host, port=port, **fast)
    sim.add_fault(Fault(kind="disconnect_after_receipt", charged=True))
    request = make_request(amount=8000)
    started = time.monotonic()
    outcome = await provider.charge(request, settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN and "cerró la conexión" in outcome.message
    assert time.monotonic() - started < fast["sale_timeout_s"]  # no wait for the deadline
    await sim.stop()  # terminal off
    assert (await provider.status(request, settings, ctx)).kind is OutcomeKind.UNKNOWN
    await sim.start_tcp(host, port)  # back again, with its memory
    try:
        status = await provider.status(request, settings, ctx)
        assert status.kind is OutcomeKind.APPROVED and status.amount == 8000
    finally:
        await sim.stop()


# more: decline, late answer, cancel, refund, health, totals/close --------------------------------------------
async def test_a_decline_keeps_the_code_and_message(make_request, fast, sim, provider, tcp_settings, ctx, progress):
    sim.add_fault(Fault(kind="decline", code=5))
    request = make_request()
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.DECLINED and outcome.code == "5"
    assert "Fondos insuficientes" in outcome.message
    assert sim.tickets() == {}
    assert (await provider.status(request, tcp_settings, ctx)).kind is OutcomeKind.UNAVAILABLE


async def test_a_late_answer_past_the_deadline_is_in_doubt_then_reconciled(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="late_answer", delay_s=2.5))
    request = make_request(amount=6000)
    assert (await provider.charge(request, tcp_settings, ctx, progress)).kind is OutcomeKind.UNKNOWN
    status = await provider.status(request, tcp_settings, ctx)
    assert status.kind is OutcomeKind.APPROVED and status.amount == 6000


async def test_cancel_sale_during_a_sale_ends_it_declined(make_request, fast, provider, ctx, progress):
    sim = Simulator(step_delay_s=0.3)
    host, port = await sim.start_tcp()
    try:
        settings = GetnetSettings(host=host, port=port, **fast)
        request = make_request()
        charge = asyncio.create_task(provider.charge(request, settings, ctx, progress))
        await wait_until(lambda: progress.items, timeout_s=5, what="el terminal recibió la venta")
        cancelled = await provider.cancel(request, settings, ctx)
        outcome = await charge
        assert cancelled.kind is OutcomeKind.APPROVED
        assert outcome.kind is OutcomeKind.DECLINED and outcome.code == "2"
        assert sim.tickets() == {}
        idle = await provider.cancel(request, settings, ctx)
        assert idle.kind is OutcomeKind.DECLINED and idle.code == "13"
    finally:
        await sim.stop()


async def test_refund_by_operation_id_and_return_by_authorization_code(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    a, b = make_request(amount=1000), make_request(amount=2000)
    approved_a = await provider.charge(a, tcp_settings, ctx, progress)
    approved_b = await provider.charge(b, tcp_settings, ctx, progress)
    refund_a = await provider.refund(
        make_request(amount=1000, ticket=a.ticket, card=approved_a.card), tcp_settings, ctx
    )
    assert refund_a.kind is OutcomeKind.APPROVED
    by_auth = CardData(authorization_code=approved_b.card.authorization_code, operation_id="0")
    refund_b = await provider.refund(make_request(amount=2000, ticket=b.ticket, card=by_auth), tcp_settings, ctx)
    assert refund_b.kind is OutcomeKind.APPROVED
    assert 102 in sim.command_codes() and 108 in sim.command_codes()
    totals = sim.totals()
    # The terminal counts a Refund among the voids (Cancel*) and a Return among the returns; caja's report of the
    # batch counts both as sales undone.
    assert sim.tickets() == {} and totals["TotalCancelCredit"] + totals["TotalCancelDebit"] == 1000
    assert (totals["CountReturns"], totals["TotalReturns"]) == (1, 2000)
    report = await provider.terminal_report(tcp_settings, ctx)
    assert (report.count, report.voided_count, report.voided_total) == (0, 2, 3000)
    again = await provider.refund(make_request(amount=1000, ticket=a.ticket, card=approved_a.card), tcp_settings, ctx)
    assert again.kind is OutcomeKind.DECLINED


async def test_health_is_a_poll(make_request, fast, sim, provider, tcp_settings, ctx):
    assert (await provider.health(tcp_settings, ctx)).kind is OutcomeKind.APPROVED
    assert sim.command_codes() == [106]


async def test_seeded_random_faults_never_lose_or_invent_a_charge(
    make_request, fast, sim, provider, tcp_settings, ctx, progress
):
    host, port = sim.tcp_address
    settings = GetnetSettings(host=host, port=port, **(fast | {"receipt_timeout_s": 0.3, "sale_timeout_s": 1.0}))
    sim.add_fault(Fault(kind="random", scope="run", seed=2024, rate=0.5))
    approved: dict[str, int] = {}
    for i in range(30):
        request = make_request(amount=1000 + i)
        outcome = await provider.charge(request, settings, ctx, progress)
        if outcome.kind is OutcomeKind.UNKNOWN:
            outcome = await provider.status(request, settings, ctx)
            assert outcome.kind in (OutcomeKind.APPROVED, OutcomeKind.UNAVAILABLE)
        assert outcome.kind is not OutcomeKind.PENDING
        if outcome.kind is OutcomeKind.APPROVED:
            assert outcome.ticket == request.ticket and outcome.amount == request.amount
            approved[request.ticket] = request.amount
    await wait_until(lambda: sim.idle, timeout_s=10, what="el terminal terminó sus respuestas tardías")
    assert approved == sim.tickets()
    assert 0 < len(approved) < 30


async def test_silence_then_a_late_answer_reconciles_to_the_real_outcome(
    make_request, fast, sim, provider, ctx, progress
):
    host, port = sim.tcp_address
    settings = GetnetSettings(host=host, port=port, send_messages=False, **fast)
    sim.add_fault(Fault(kind="late_answer", receipt=False, delay_s=1.5))
    request = make_request(amount=2700)
    outcome = await provider.charge(request, settings, ctx, progress)
    # no receipt in time: the provider asked the terminal (LastVoucher), which answered once the sale finished
    assert outcome.kind is OutcomeKind.APPROVED and outcome.amount == 2700
    assert sim.command_codes() == [100, 101]


async def test_malformed_ticket_or_amount_never_reaches_the_terminal(
    make_request, sim, provider, tcp_settings, ctx, progress
):
    for bad in (
        make_request(ticket='T1"|<b>'),
        make_request(ticket="T\x071"),
        make_request(amount=0),
        make_request(amount=100_000_000),
    ):
        with pytest.raises(ValidationFailed):
            await provider.charge(bad, tcp_settings, ctx, progress)
    assert sim.commands == []


async def test_health_during_a_sale_does_not_wait_for_the_customer(make_request, fast, provider, ctx, progress):
    sim = Simulator(step_delay_s=0.3)
    host, port = await sim.start_tcp()
    try:
        settings = GetnetSettings(host=host, port=port, **fast)
        charge = asyncio.create_task(provider.charge(make_request(), settings, ctx, progress))
        await wait_until(lambda: progress.items, timeout_s=5, what="el terminal recibió la venta")
        started = time.monotonic()
        health = await provider.health(settings, ctx)
        assert health.kind is OutcomeKind.APPROVED and time.monotonic() - started < 0.25
        assert (await charge).kind is OutcomeKind.APPROVED
    finally:
        await sim.stop()


async def test_case5_a_hung_terminal_that_answers_nothing_leaves_the_sale_in_doubt(
    make_request, sim, provider, tcp_settings, ctx, progress
):
    sim.add_fault(Fault(kind="frozen"))
    request = make_request()
    outcome = await provider.charge(request, tcp_settings, ctx, progress)
    assert outcome.kind is OutcomeKind.UNKNOWN  # nobody proved the terminal never saw it
    assert sim.command_codes().count(100) == 1
    assert (await provider.health(tcp_settings, ctx)).kind is OutcomeKind.UNAVAILABLE
    sim.clear_faults()  # the terminal is restarted
    assert (await provider.status(request, tcp_settings, ctx)).kind is OutcomeKind.UNAVAILABLE


async def test_back_to_back_sales_with_no_gaps_lose_no_answer(make_request, fast, provider, ctx, progress):
    # The terminal closes right after its answer while the host's receipts are still arriving: that close must
    # never become a reset that destroys the answer.
    sim = Simulator(step_delay_s=0, message_gap_s=0)
    host, port = await sim.start_tcp()
    try:
        settings = GetnetSettings(host=host, port=port, **fast)
        outcomes = [await provider.charge(make_request(amount=100 + i), settings, ctx, progress) for i in range(60)]
        assert [o.kind for o in outcomes] == [OutcomeKind.APPROVED] * 60
        assert len(sim.tickets()) == 60
    finally:
        await sim.stop()
